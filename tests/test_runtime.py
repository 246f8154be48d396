"""Precision, dtype, attention and k-bit resolution (memlab.runtime / memlab.models) on this CPU and on a
mocked CUDA capability table; `--load_in_4bit` on a machine without CUDA fails before anything loads."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from memlab import models, runtime
from memlab.io import DataError

CPU = {"cuda": False, "capability": None, "name": None}
V100 = {"cuda": True, "capability": (7, 0), "name": "Tesla V100"}
A100 = {"cuda": True, "capability": (8, 0), "name": "NVIDIA A100"}
H100 = {"cuda": True, "capability": (9, 0), "name": "NVIDIA H100"}


def train_args(**kw):
    base = dict(precision="auto", attn_implementation="sdpa", load_in_4bit=False, load_in_8bit=False)
    return SimpleNamespace(**{**base, **kw})


def eval_args(**kw):
    base = dict(dtype="auto", attn_implementation="sdpa", load_in_4bit=False, load_in_8bit=False)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("facts, precision, dtype", [(CPU, "fp32", "float32"), (V100, "fp32", "float32"),
                                                     (A100, "bf16", "bfloat16"), (H100, "bf16", "bfloat16")])
def test_auto_follows_the_machine(facts, precision, dtype, monkeypatch):
    monkeypatch.setattr(models, "allow_tf32", lambda facts=None: bool(facts and facts["cuda"]))
    rt = runtime.resolve_train(train_args(), lora=False, facts=facts)
    assert (rt["precision"], rt["compute_dtype"] if precision == "bf16" else "float32") == (precision, dtype)
    assert rt["tf32"] == facts["cuda"] and rt["attn_implementation"] == "sdpa" and rt["quantization"] == "none"
    assert runtime.resolve_eval(eval_args(), facts=facts)["dtype"] == dtype  # evaluation follows training


def test_explicit_choices_and_their_errors():
    assert models.resolve_precision("fp32", H100) == "fp32" and models.resolve_precision("fp16", V100) == "fp16"
    assert models.resolve_dtype("float16", CPU) == "float16"
    with pytest.raises(DataError, match="fp16 needs a GPU"):
        models.resolve_precision("fp16", CPU)
    with pytest.raises(DataError, match="choose one of auto, fp32, bf16, fp16"):
        models.resolve_precision("fp8", H100)
    with pytest.raises(DataError, match="--dtype int8"):
        models.resolve_dtype("int8", H100)


def test_attention_kernels():
    assert models.resolve_attn_implementation("eager", CPU) == "eager"
    assert models.resolve_attn_implementation("flash_attention_2", H100, flash_installed=True) == "flash_attention_2"
    with pytest.raises(DataError, match="flash_attn package"):
        models.resolve_attn_implementation("flash_attention_2", H100, flash_installed=False)
    with pytest.raises(DataError, match="compute capability 8.0"):
        models.resolve_attn_implementation("flash_attention_2", V100, flash_installed=True)
    with pytest.raises(DataError, match="choose one of sdpa"):
        models.resolve_attn_implementation("xformers", H100)


def test_kbit_rules(monkeypatch):
    with pytest.raises(DataError, match="exclude each other"):
        runtime.resolve_eval(eval_args(load_in_4bit=True, load_in_8bit=True), facts=H100)
    with pytest.raises(DataError, match="needs a CUDA GPU"):
        runtime.resolve_eval(eval_args(load_in_4bit=True), facts=CPU)
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(DataError, match="pip install bitsandbytes"):
        runtime.resolve_eval(eval_args(load_in_4bit=True), facts=H100)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "bitsandbytes" else real(n, *a))
    monkeypatch.setattr(models, "allow_tf32", lambda facts=None: True)
    with pytest.raises(DataError, match="give --lora_r"):
        runtime.resolve_train(train_args(load_in_4bit=True), lora=False, facts=H100)
    rt = runtime.resolve_train(train_args(load_in_4bit=True), lora=True, facts=H100)
    assert rt["quantization"] == "4bit" and rt["precision"] == "bf16"
    assert runtime.load_kwargs(rt, "cuda:0") == {"attn_implementation": "sdpa", "quantization": "4bit",
                                                 "device": "cuda:0", "dtype": "bfloat16"}


def test_qlora_config_is_nf4_double_quant_bf16():
    import torch
    cfg = models.quantization_config("4bit", "bfloat16")
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16
    assert models.quantization_config("8bit").load_in_8bit and models.quantization_config("none") is None


@pytest.mark.parametrize("script, extra", [
    ("train.py", ["--train_file", "data/facts/train_active_5.jsonl", "--lora_r", "4"]),
    ("test.py", ["--seen_file", "data/recognition/seen.jsonl", "--unseen_file", "data/recognition/unseen.jsonl"]),
])
def test_load_in_4bit_without_cuda_is_one_error_and_writes_nothing(script, extra, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the flag would load")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, script, *extra, "--model_name_or_path", "tiny-llama", "--load_in_4bit",
                        "--output_dir", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "--load_in_4bit needs a CUDA GPU" in lines[0], r.stderr
    assert not out.exists()


def test_cpu_runs_record_the_resolved_runtime(tmp_path):
    out = tmp_path / "rec"
    r = subprocess.run([sys.executable, "test.py", "--seen_file", "data/recognition/seen.jsonl", "--unseen_file",
                        "data/recognition/unseen.jsonl", "--model_name_or_path", "tiny-llama", "--bootstrap", "0",
                        "--output_dir", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    import torch
    if not torch.cuda.is_available():
        assert res["runtime"] == {"dtype": "float32", "attn_implementation": "sdpa", "quantization": "none",
                                  "device": "cpu", "tf32": False}
    assert json.loads((out / "config.json").read_text())["runtime"] == res["runtime"]
