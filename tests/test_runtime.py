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
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(DataError, match="pip install bitsandbytes"):
        runtime.resolve_eval(eval_args(load_in_4bit=True), facts=H100)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "bitsandbytes" else real(n, *a))

    def no_cpu_backend(q):
        raise RuntimeError("no CPU backend in this build")
    with pytest.raises(DataError, match=r"--load_in_4bit: bitsandbytes cannot quantize on this machine without CUDA "
                                        r"\(RuntimeError: no CPU backend"):
        models.check_quantization("4bit", CPU, probe=no_cpu_backend)
    models.check_quantization("4bit", CPU, probe=lambda q: None)  # a CPU backend that quantizes: allowed
    models.check_quantization("4bit", H100, probe=no_cpu_backend)  # CUDA: the CPU probe is not needed
    monkeypatch.setattr(models, "allow_tf32", lambda facts=None: True)
    with pytest.raises(DataError, match="give --lora_r"):
        runtime.resolve_train(train_args(load_in_4bit=True), lora=False, facts=H100)
    rt = runtime.resolve_train(train_args(load_in_4bit=True), lora=True, facts=H100)
    assert rt["quantization"] == "4bit" and rt["precision"] == "bf16"
    assert runtime.load_kwargs(rt, "cuda:0") == {"attn_implementation": "sdpa", "quantization": "4bit",
                                                 "device": "cuda:0", "dtype": "bfloat16"}
    plain = runtime.resolve_train(train_args(), lora=True, facts=H100)
    assert runtime.load_kwargs(plain, "cuda:0", lora=True)["dtype"] == "bfloat16"  # frozen LoRA base in bf16
    assert "dtype" not in runtime.load_kwargs(plain, "cuda:0", lora=False)  # full FT: fp32 master weights


def test_qlora_config_is_nf4_double_quant_bf16():
    import torch
    cfg = models.quantization_config("4bit", "bfloat16")
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16
    assert models.quantization_config("8bit").load_in_8bit and models.quantization_config("none") is None


def test_qlora_on_this_machine_trains_and_scores_or_is_one_error(tmp_path):
    """--load_in_4bit on tiny-llama, whatever this machine is: bitsandbytes' CPU backend (pinned 0.50.2)
    quantizes, so a real QLoRA run trains adapters on the 4-bit base and test.py scores them on it; a machine
    whose bitsandbytes cannot gets one error and no output directory."""
    out, data = tmp_path / "qlora", tmp_path / "facts16.jsonl"
    data.write_text("".join(open("data/facts/train_active_5.jsonl").readlines()[:16]))
    train = [sys.executable, "train.py", "--train_file", str(data), "--model_name_or_path", "tiny-llama",
             "--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules", "all-linear", "--load_in_4bit",
             "--num_exposures", "5", "--learning_rate", "0.05", "--batch_size", "4", "--output_dir", str(out)]
    try:
        models.check_quantization("4bit")
    except DataError as e:
        r = subprocess.run(train, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {e}", r.stderr
        assert not out.exists()
        return
    r = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["runtime"]["quantization"] == "4bit"
    rows = [json.loads(l) for l in (out / "metrics.jsonl").open()]
    first, last = ([r["loss"] for r in rows if r["epoch"] == e] for e in (1, 5))
    # the adapters learn on the frozen 4-bit base (a random tiny model: measured 10.80 -> 10.49 nats)
    assert sum(last) / len(last) < sum(first) / len(first) - 0.15, rows
    ckpt = out / "final"
    assert (ckpt / "adapter_config.json").exists() and not (ckpt / "model.safetensors").exists()
    rec = tmp_path / "rec"
    r = subprocess.run([sys.executable, "test.py", "--seen_file", "data/recognition/seen.jsonl", "--unseen_file",
                        "data/recognition/unseen.jsonl", "--model_name_or_path", "tiny-llama", "--checkpoints",
                        str(ckpt), "--load_in_4bit", "--bootstrap", "0", "--output_dir", str(rec)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    scored = json.loads((rec / "results.json").read_text())
    assert scored["runtime"]["quantization"] == "4bit" and scored["checkpoints"][0]["checkpoint"] == "final"


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


def test_batch_size_auto_halves_on_oom_once_per_model_and_length(tmp_path, tiny_llama):
    from memlab.models import load_model

    model = load_model(str(tiny_llama))[0]
    assert runtime.resolve_batch_size("8", model, "score", 100) == 8
    assert runtime.resolve_batch_size("auto", model, "score", 100, facts=CPU) == runtime.CPU_BATCH_SIZE
    tried = []

    def probe(b):  # a GPU where more than 40 sequences of this length do not fit
        tried.append(b)
        if b > 40:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    cache = tmp_path / "batch_sizes.json"
    got = runtime.resolve_batch_size("auto", model, "score", 100, probe=probe, cache_file=cache, facts=H100)
    assert tried == [256, 128, 64, 32] and got == 16  # the largest that fit, halved once for headroom
    again = runtime.resolve_batch_size("auto", model, "score", 120, probe=probe, cache_file=cache, facts=H100)
    assert again == 16 and tried == [256, 128, 64, 32]  # same model and length bucket: from the cache
    runtime.resolve_batch_size("auto", model, "score", 1000, probe=probe, cache_file=cache, facts=H100)
    assert len(tried) == 8 and len(json.loads(cache.read_text())) == 2  # a longer bucket is probed anew
    assert runtime.batch_size_error("auto")[0] and not runtime.batch_size_error("0")[0]
    assert runtime.batch_size_error("x") == (False, "--batch_size must be a positive integer or auto, got 'x'")
