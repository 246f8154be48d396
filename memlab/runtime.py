"""The device-facing flags every script shares: precision/dtype, attention kernel, k-bit loading, TF32.

`TrainRuntimeArgs` (train.py, finetune_dpo.py) and `EvalRuntimeArgs` (test.py, generate.py,
membership_inference.py) are mixed into each script's argument dataclass, so the flags read the same
everywhere. `resolve_*` turns them into what is used on this machine (memlab.models holds the rules) and
returns the record that goes into config.json / results.json under "runtime".

Decisions: on CUDA, `auto` is bf16 where the GPU supports it (compute capability 8.0+), fp32 elsewhere
(CPU behaviour is unchanged); attention defaults to PyTorch's sdpa; TF32 matmuls are allowed on CUDA;
`--load_in_4bit` (NF4, double quantization, bf16 compute: QLoRA) and `--load_in_8bit` need bitsandbytes
and a CUDA GPU, are checked before any model loads, and for training need LoRA (`--lora_r > 0`).
"""
from __future__ import annotations

from dataclasses import dataclass

from memlab import models
from memlab.cli import arg


@dataclass
class ModelLoadArgs:
    attn_implementation: str = arg("sdpa", "attention kernel: sdpa (default), eager, or flash_attention_2 (needs "
                                   "the flash_attn package and an Ampere or newer GPU)")
    load_in_4bit: bool = arg(False, "load the base model in 4-bit NF4 with double quantization (bitsandbytes, CUDA "
                             "only); training then learns LoRA adapters on it (QLoRA: needs --lora_r > 0), "
                             "evaluation loads adapters onto the quantized base")
    load_in_8bit: bool = arg(False, "load the base model in 8-bit (LLM.int8, bitsandbytes, CUDA only); training "
                             "needs --lora_r > 0")


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


def load_kwargs(rt: dict, device) -> dict:
    """The load_model settings of a resolved training runtime (weights stay fp32 under mixed precision;
    a k-bit base computes in the training precision)."""
    return {"attn_implementation": rt["attn_implementation"], "quantization": rt["quantization"], "device": device,
            **({"dtype": rt["compute_dtype"]} if rt["quantization"] != "none" else {})}
