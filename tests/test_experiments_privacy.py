"""Experiments 4 (LoRA rank x modules: MIA + canary extraction) and 6 (SFT -> DPO), tiny grid, no SLURM."""
import json

import pandas as pd

from tests.test_experiments import run_template, task_dirs


def test_expt4_lora_rank_modules(tmp_path):
    """One cell of the tiny grid with RMIA from K=2 reference models trained on random halves of the population."""
    p = run_template("expt4_lora_rank_modules.sh", tmp_path, {"MEMLAB_TASKS": "0"}, args=["reference_models=2"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (task,) = task_dirs(tmp_path / "expt4")
    res = json.loads((task / "results.json").read_text())
    (ck,) = res["mia"]["checkpoints"]
    halves = [{json.loads(l)["id"] for l in (task / "data" / f"reference_{k}" / "train.jsonl").open()} for k in (0, 1)]
    population = {f"{s}:{json.loads(l)['id']}" for s in ("members", "nonmembers")
                  for l in (task / "data" / "mia" / f"{s}.jsonl").open()}
    assert all(h < population and len(h) == len(population) // 2 for h in halves) and halves[0] != halves[1]
    rmia = ck["attacks"]["rmia"]["all"]  # measured here: AUC 0.93 (bootstrap CI 0.79-1.0), 16 vs 11 items
    assert rmia["auc"] > 0.75, rmia
    assert ck["lora_r"] == 4 and ck["lora_target_modules"] == "self_attn.k_proj,self_attn.q_proj"
    assert "tiny-llama" in ck["reference_model"]  # the adapter's base
    assert set(ck["attacks"]["loss"]["by_canary_copies"]) == {"1", "4"}
    assert res["extraction"]["by_prefix"]
    mia = pd.read_csv(tmp_path / "expt4" / "tidy_mia.csv")
    assert {"rank", "modules", "attack", "group", "auc", "auc_ci_low", "tpr_at_1pct_fpr"} <= set(mia.columns)
    assert set(mia.stage) == {"fine-tuned"}  # no DPO in expt4: not "SFT (before DPO)"
    for name in ("mia_auc_by_rank_module", "mia_roc", "mia_score_vs_perplexity"):
        assert (tmp_path / "expt4" / "plots" / f"{name}.png").stat().st_size > 10_000


def test_expt6_dpo_before_after(tmp_path):
    p = run_template("expt6_dpo.sh", tmp_path, {"MEMLAB_TASKS": "0"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (task,) = task_dirs(tmp_path / "expt6")
    res = json.loads((task / "results.json").read_text())
    dpo = pd.read_csv(tmp_path / "expt6" / "tidy_dpo.csv")
    assert set(dpo.stage) == {"SFT (before DPO)", "after DPO"}
    mia = pd.read_csv(tmp_path / "expt6" / "tidy_mia.csv")
    assert set(mia.stage) == {"SFT (before DPO)", "after DPO"}
    assert (tmp_path / "expt6" / "plots" / "dpo_before_after.png").stat().st_size > 10_000
    cfg = json.loads((task / "dpo" / "config.json").read_text())
    assert cfg["reference"]["kind"] == "frozen_sft"
