"""scripts/gpu_check.sh and bench/memory_plan.py on a CPU (issue 12): no GPU means nothing run and nothing
written; the model-from-config parameter counts equal real models' counts; MFU and report arithmetic on
known numbers; the in-process checks run end to end on a micro Llama; the README's memory table is the
function's output."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402
import memory_plan  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_script_without_gpu_exits_0_and_writes_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MEMLAB_PYTHON": sys.executable}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "out")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no GPU: nothing run" in p.stdout
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_no_gpu_builds_no_model(monkeypatch, tmp_path):
    def forbidden(*a, **k):
        raise AssertionError("a check ran without a GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "build_llama", forbidden)
    monkeypatch.setattr(gpu_check, "run_all", forbidden)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cfg", [gpu_check.MICRO, {**gpu_check.MICRO, "tie_word_embeddings": True},
                                 {**gpu_check.MICRO, "num_attention_heads": 8, "num_key_value_heads": 8,
                                  "intermediate_size": 96, "num_hidden_layers": 3}])
def test_counts_equal_an_instantiated_model(cfg):
    from memlab.likelihood import matmul_params

    model = gpu_check.build_llama(cfg, "cpu")
    assert sum(p.numel() for p in model.parameters()) == memory_plan.count_params(cfg)
    assert matmul_params(model) == memory_plan.count_matmul_params(cfg)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_counts_of_the_planned_models_equal_their_real_shapes():
    """The planned models (and the ~1B of the check) built on the meta device (shapes only, no memory): the
    arithmetic gives their published parameter counts."""
    from transformers import AutoModelForCausalLM

    from memlab.likelihood import matmul_params

    published = {"SmolLM2-135M": 134_515_008, "Llama-3.2-1B": 1_235_814_400, "Llama-3-8B": 8_030_261_248,
                 "Llama-2-13B": 13_015_864_320}
    for name, cfg in memory_plan.MODELS.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(gpu_check.llama_config(cfg))
        assert sum(p.numel() for p in model.parameters()) == memory_plan.count_params(cfg) == published[name], name
        assert matmul_params(model) == memory_plan.count_matmul_params(cfg), name


def test_the_1b_model_by_arithmetic():
    n = memory_plan.count_params(gpu_check.LLAMA_1B)
    assert n == 1_100_048_384  # TinyLlama-1.1B's published count: its shape, random weights
    assert 0.9e9 < n < 1.2e9
    assert memory_plan.count_matmul_params(gpu_check.LLAMA_1B) == 1_034_420_224  # LM head in, embedding out


def test_mfu_arithmetic():
    assert gpu_check.mfu(1_000_000_000, 10_000, 1e14) == pytest.approx(0.6)  # 6 * 1e9 * 1e4 / 1e14
    assert gpu_check.mfu(1_000_000_000, 10_000, 1e14, 4) == pytest.approx(0.4)
    # 989 TFLOP/s peak, 1.034B matmul params, 64k tokens/s: 40.1%
    assert gpu_check.mfu(1_034_420_224, 64_000, 989e12) == pytest.approx(0.4017, abs=1e-4)


def _results(**checks):
    return {"date": "2026-11-27 12:00", "command": "bash scripts/gpu_check.sh", "wall_s": 301.0,
            "environment": {"gpu 0": "NVIDIA H100 80GB HBM3, 79.1 GiB", "torch": "2.13.0"},
            "model": {"name": "TinyLlama-1.1B shape", "params": 1_100_048_384, "matmul_params": 1_034_420_224},
            "peak_flops": 7.5e14, "checks": checks, "notes": ["a note."]}


def test_report_lists_targets_beside_measured_values():
    res = _results(full={"status": "OK", "figures": {"tokens_per_s": 54321.0, "mfu_6n": 0.45}, "seconds": 12.0},
                   scoring={"status": "OK", "figures": {"ratio": 25.0, "max_abs_dloss": 0.0123}, "seconds": 3.0},
                   generation={"status": "OK", "figures": {"ratio": 10.04, "identical_greedy": "60/64"}},
                   qlora={"status": "SKIPPED", "why": "bitsandbytes is not importable (ModuleNotFoundError)"},
                   zero3={"status": "FAILED", "error": "RuntimeError: exit 1 | boom", "figures": {"wall_s": 30.0}})
    rows = gpu_check.target_rows(res)
    assert rows == [("batched scoring ≥ 20× batch-size-1 `outputs.loss`", "25.0×", "met"),
                    ("batched generation ≥ 20× one `generate` per item", "10.0×", "NOT met"),
                    ("bf16 full fine-tuning of the ~1B model ≥ 40% MFU", "45.0%", "met")]
    md = gpu_check.render_report(res)
    assert "| bf16 full fine-tuning of the ~1B model ≥ 40% MFU | 45.0% | met |" in md
    assert "| full | OK | tokens_per_s 5.43e+04; mfu_6n 45.0% | 12 |" in md
    assert "| scoring | OK | ratio 25; max_abs_dloss 0.0123 | 3 |" in md
    assert "| qlora | SKIPPED | bitsandbytes is not importable (ModuleNotFoundError) | None |" in md
    assert "| zero3 | FAILED | wall_s 30; RuntimeError: exit 1 / boom |" in md  # a | in an error keeps the table
    assert "1,100,048,384 parameters" in md and "750 TFLOP/s" in md and "CPU dry run" not in md
    missing = gpu_check.target_rows(_results(full={"status": "FAILED", "error": "out of memory"}))
    assert missing[0][2] == "no figure (not run)" and missing[2] == (missing[2][0], "—", "no figure (FAILED)")


def test_in_process_checks_on_a_micro_llama(tmp_path, tiny_llama):
    """What --cpu_dry_run runs, minus the subprocesses: each check's code path works end to end."""
    ctx = gpu_check.Ctx("cpu", gpu_check.MICRO, gpu_check.SIZES["cpu"], tmp_path / "out", 600, True, tmp_path / "tmp")
    res = {name: gpu_check.run_one(ctx, name) for name in ("peak", "full", "lora", "scoring", "generation",
                                                           "scoring_tiny", "generation_tiny")}
    assert {n: r["status"] for n, r in res.items()} == dict.fromkeys(res, "OK"), \
        {n: r.get("error") for n, r in res.items()}
    assert ctx.peak > 0 and 0 < res["full"]["figures"]["mfu_6n"]
    assert res["lora"]["figures"]["mfu_4n"] == pytest.approx(res["lora"]["figures"]["mfu_6n"] * 4 / 6)
    assert res["scoring"]["figures"]["max_abs_dloss"] < 1e-3 and res["scoring"]["figures"]["ratio"] > 0
    assert res["scoring_tiny"]["figures"]["max_abs_dloss"] < 1e-4  # fp32: batched = batch size 1
    assert res["generation_tiny"]["figures"]["identical_greedy"] == "4/4"
    late = gpu_check.Ctx("cpu", gpu_check.MICRO, gpu_check.SIZES["cpu"], tmp_path / "out", 0, True, tmp_path / "tmp")
    assert gpu_check.run_one(late, "full")["status"] == "SKIPPED"  # past the global deadline


def test_readme_memory_table_is_the_functions_output():
    readme = (ROOT / "README.md").read_text()
    assert memory_plan.markdown_table() in readme
    assert "scripts/gpu_check.sh" in readme


@pytest.mark.parametrize("model, method, fits", [
    ("Llama-3-8B", "qlora", {16: True, 24: True, 80: True}),     # QLoRA of an 8B model on a 16 GB card
    ("Llama-3-8B", "lora", {16: False, 24: True, 80: True}),
    ("Llama-3-8B", "full", {16: False, 24: False, 80: False}),   # 18 bytes/param = 135 GiB of states
    ("Llama-2-13B", "zero3", {16: False, 24: False, 80: True}),
    ("SmolLM2-135M", "full", {16: True, 24: True, 80: True}),
])
def test_memory_plan_cells(model, method, fits):
    row = next(r for r in memory_plan.table_rows() if r["model"] == model and r["method"] == method)
    assert row["fits"] == fits


def test_memory_plan_arithmetic():
    cfg = memory_plan.MODELS["Llama-3-8B"]
    n = memory_plan.count_params(cfg)
    gib = memory_plan.GIB
    assert memory_plan.memory_gib(cfg, "full")["states"] == pytest.approx(18 * n / gib)
    assert memory_plan.memory_gib(cfg, "zero3", n_gpus=8)["states"] == pytest.approx(2 * n / gib)
    assert memory_plan.memory_gib(cfg, "zero2", n_gpus=1)["states"] == pytest.approx(16 * n / gib)
    m = memory_plan.memory_gib(cfg, "lora", tokens=0)
    assert m["activations"] == 0 and m["total"] == pytest.approx(m["states"] + memory_plan.OVERHEAD_GIB)


def test_qlora_check_runs_or_says_why_it_is_skipped(tmp_path):
    """With bitsandbytes importable (4-bit works on a CPU from 0.46 on) the QLoRA step runs on the micro Llama,
    its 2 x 7 block linear layers in 4-bit; without it, one SKIPPED line says why."""
    ctx = gpu_check.Ctx("cpu", gpu_check.MICRO, gpu_check.SIZES["cpu"], tmp_path / "out", 600, True, tmp_path / "tmp")
    r = gpu_check.run_one(ctx, "qlora")
    try:
        importlib.import_module("bitsandbytes")
    except Exception:
        assert r["status"] == "SKIPPED" and "bitsandbytes is not importable" in r["why"]
        return
    assert r["status"] == "OK", r.get("error")
    assert r["figures"]["linear4bit_layers"] == 14
