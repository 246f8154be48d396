"""The device-facing flags every script shares: precision/dtype, attention kernel, k-bit loading, TF32.

`TrainRuntimeArgs` (train.py, finetune_dpo.py) and `EvalRuntimeArgs` (test.py, generate.py,
membership_inference.py) are mixed into each script's argument dataclass, so the flags read the same
everywhere. `resolve_*` turns them into what is used on this machine (memlab.models holds the rules) and
returns the record that goes into config.json / results.json under "runtime".

Decisions: on CUDA, `auto` is bf16 where the GPU supports it (compute capability 8.0+), fp32 elsewhere
(CPU behaviour is unchanged); attention defaults to PyTorch's sdpa; TF32 matmuls are allowed on CUDA;
`--load_in_4bit` (NF4, double quantization, bf16 compute on a GPU: QLoRA) and `--load_in_8bit` need
bitsandbytes (pinned; its CPU backend also quantizes, so the suite runs a real tiny QLoRA on CPU), are
checked before any model loads, and for training need LoRA (`--lora_r > 0`). A LoRA base is loaded in
the training precision (bf16 on a GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

from memlab import models
from memlab.cli import arg


@dataclass
class ModelLoadArgs:
    attn_implementation: str = arg("sdpa", "attention kernel: sdpa (default), eager, or flash_attention_2 (needs "
                                   "the flash_attn package and an Ampere or newer GPU)")
    load_in_4bit: bool = arg(False, "load the base model in 4-bit NF4 with double quantization (bitsandbytes): "
                             "training then learns LoRA adapters on it (QLoRA: needs --lora_r > 0), evaluation "
                             "loads adapters onto the quantized base. Meant for CUDA GPUs; on a CPU bitsandbytes' "
                             "CPU backend also runs it (slowly; fine for tiny models). membership_inference.py's "
                             "gradnorm cannot differentiate a quantized full model (skipped)")
    load_in_8bit: bool = arg(False, "load the base model in 8-bit (LLM.int8, bitsandbytes; training needs --lora_r > "
                             "0). Meant for CUDA GPUs; on a CPU bitsandbytes' CPU backend also runs it, slowly")


@dataclass
class TrainRuntimeArgs(ModelLoadArgs):
    precision: str = arg("auto", "auto, fp32, bf16 or fp16 (mixed precision through accelerate): auto is bf16 on a "
                         "CUDA GPU of compute capability 8.0+ and fp32 otherwise (CPU); fp16 needs a GPU")


@dataclass
class EvalRuntimeArgs(ModelLoadArgs):
    dtype: str = arg("auto", "dtype the models are loaded in: auto (bfloat16 on a CUDA GPU of compute capability "
                     "8.0+, float32 otherwise), float32, bfloat16 or float16")


def _common(args, facts: dict) -> dict:
    quantization = models.quantization_of(args.load_in_4bit, args.load_in_8bit)
    models.check_quantization(quantization, facts)
    return {"attn_implementation": models.resolve_attn_implementation(args.attn_implementation, facts),
            "quantization": quantization, "device": facts["name"] or "cpu",
            "tf32": models.allow_tf32(facts)}


def resolve_train(args, lora: bool, facts: dict | None = None) -> dict:
    """{"precision", "compute_dtype", "attn_implementation", "quantization", "device", "tf32"} for a trainer
    (`lora`: whether it trains LoRA adapters); DataError for a combination this machine cannot run, before
    any model loads."""
    facts = models.cuda_facts() if facts is None else facts
    precision = models.resolve_precision(args.precision, facts)
    out = {"precision": precision, "compute_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32"),
           **_common(args, facts)}
    if out["quantization"] != "none" and not lora:
        raise models.DataError(f"--load_in_{out['quantization']} trains LoRA adapters on a frozen quantized base: "
                               "give --lora_r (e.g. 16)")
    return out


def resolve_eval(args, facts: dict | None = None) -> dict:
    """{"dtype", "attn_implementation", "quantization", "device", "tf32"} for an evaluation script."""
    facts = models.cuda_facts() if facts is None else facts
    return {"dtype": models.resolve_dtype(args.dtype, facts), **_common(args, facts)}


def pool_kwargs(rt: dict) -> dict:
    """The ModelPool / load_model settings of a resolved evaluation runtime."""
    return {"dtype": rt["dtype"], "attn_implementation": rt["attn_implementation"], "quantization": rt["quantization"]}


def prepare_kbit(model, rt: dict, gradient_checkpointing: bool):
    """peft's k-bit preparation of a quantized base before LoRA wraps it (norms in fp32, input grads
    enabled for gradient checkpointing); other models are returned as they are."""
    if rt["quantization"] == "none":
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def load_kwargs(rt: dict, device, lora: bool = False) -> dict:
    """The load_model settings of a resolved training runtime. Full fine-tuning keeps fp32 master weights
    under mixed precision; a LoRA base is frozen, so it is loaded in the training precision (bf16 on a GPU:
    half the memory; peft keeps the adapters themselves in fp32), and a k-bit base computes in it."""
    half_base = rt["quantization"] != "none" or lora
    return {"attn_implementation": rt["attn_implementation"], "quantization": rt["quantization"], "device": device,
            **({"dtype": rt["compute_dtype"]} if half_base else {})}


# -------------------------------------------------------------------------------- evaluation batch sizes
AUTO_START = {"score": 256, "generate": 128}  # first batch size tried by --batch_size auto
CPU_BATCH_SIZE = 16  # --batch_size auto without CUDA: there is no device memory to probe; the CPU default


def batch_size_error(value: str) -> tuple[bool, str]:
    """(ok, message) for validate: a positive integer or `auto`."""
    if str(value) == "auto":
        return True, ""
    try:
        n = int(value)
    except ValueError:
        return False, f"--batch_size must be a positive integer or auto, got '{value}'"
    return n >= 1, f"--batch_size must be >= 1, got {value}"


def _length_bucket(length: int) -> int:
    """Lengths are rounded up to a power of two (min 64), so similar inputs share one probe."""
    return max(64, 1 << (max(1, int(length)) - 1).bit_length())


def _batch_cache_key(model, kind: str, bucket: int, facts: dict) -> str:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(inner.config, "_name_or_path", "") or type(inner).__name__
    n = sum(p.numel() for p in inner.parameters())
    dtype = str(next(inner.parameters()).dtype).split(".")[-1]
    return f"{name}|{n}|{dtype}|{'kbit' if models.is_quantized(model) else 'full'}|{kind}|{bucket}|{facts['name']}"


def probe_batch(model, kind: str, length: int, batch_size: int) -> None:
    """One forward pass shaped like the heaviest batch of `kind` at `length` tokens: scoring keeps every
    position's logits (min-k%++ needs full log-softmax rows); generation keeps the KV cache and the last
    position's logits."""
    import torch

    device = next(model.parameters()).device
    ids = torch.ones((batch_size, length), dtype=torch.long, device=device)
    with torch.no_grad():
        if kind == "score":
            logits = model(input_ids=ids, use_cache=False).logits
            torch.log_softmax(logits.float(), dim=-1)
        else:
            model(input_ids=ids, use_cache=True, logits_to_keep=1)


def resolve_batch_size(value: str, model, kind: str, length: int, probe=None, cache_file=None,
                       facts: dict | None = None) -> int:
    """An integer --batch_size as given; `auto`: the largest batch that fits, found by halving from
    AUTO_START[kind] on out-of-memory (accelerate's find_executable_batch_size), once per model, dtype,
    kind, length bucket and GPU, cached in memlab's cache directory (batch_sizes.json); the result is
    halved once more for headroom (real batches vary in content, the probe does not). Without CUDA:
    CPU_BATCH_SIZE."""
    if str(value) != "auto":
        return int(value)
    facts = models.cuda_facts() if facts is None else facts
    if not facts["cuda"]:
        return CPU_BATCH_SIZE
    import json

    from accelerate.utils import find_executable_batch_size

    from memlab.io import write_json_atomic

    cache_file = cache_file or (models.cache_dir() / "batch_sizes.json")
    bucket = _length_bucket(length)
    key = _batch_cache_key(model, kind, bucket, facts)
    try:
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    except (OSError, ValueError):
        cache = {}  # a damaged cache is rebuilt, never trusted
    if key in cache:
        return int(cache[key])
    probe = probe or (lambda b: probe_batch(model, kind, bucket, b))
    state = {"b": AUTO_START[kind]}

    def halve() -> int:
        state["b"] //= 2
        return state["b"]

    @find_executable_batch_size(starting_batch_size=AUTO_START[kind], reduce_batch_size_fn=halve)
    def fits(batch_size: int) -> int:
        probe(batch_size)
        return batch_size

    found = max(1, fits() // 2)
    cache[key] = found
    write_json_atomic(cache_file, cache)
    return found
