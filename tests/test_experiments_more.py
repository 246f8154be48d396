"""Experiments 2, 3, 5 and 7: each template runs cell 0 of its tiny grid without SLURM, end to end (data,
training, evaluation, analyze.py), and leaves the task's results.json, its tidy CSV and its plot."""
import json

import pandas as pd
import pytest

from tests.test_experiments import run_template, task_dirs

CASES = {  # template: (expt, tidy table, plot, required columns, rows expected from cell 0 of the tiny grid)
    "expt2_retention.sh": ("expt2", "tidy_retention.csv", "retention_curves.png",
                           ["study_exposures", "seed", "measure", "interference_step", "value", "ci_low", "ci_high"],
                           None),
    "expt3_examples_per_fact.sh": ("expt3", "tidy_error_rates.csv", "error_rate_by_variants.png",
                                   ["variants", "seed", "tier", "temperature", "error_rate", "error_rate_ci_low",
                                    "error_rate_ci_high"], 5 * 2),  # tiers easy/mid/hard/verbatim/all x temperatures 0, 1
    "expt5_context_length.sh": ("expt5", "tidy_prefix.csv", "recall_vs_prefix_length.png",
                                ["doc_tokens", "seed", "exposure", "prefix_tokens", "token_accuracy", "exact_match",
                                 "id_recalled"], 2),  # prefix lengths 4, 16 at exposure 1
    "expt7_prior_knowledge.sh": ("expt7", "tidy_prior.csv", "accuracy_by_fact_kind.png",
                                 ["mode", "seed", "exposure", "kind", "accuracy", "accuracy_ci_low",
                                  "accuracy_ci_high", "n_facts", "original_rate"], 2 * 4),  # exposures 0, 1 x 4 kinds
}


def run_cell0(template, root, seeds=1):
    """Cell 0 of the template's tiny grid (with `seeds` > 1: seed=0..seeds-1, one cell per seed); returns the
    first task, its results.json and the tidy table."""
    expt, table, plot, columns, n_rows = CASES[template]
    if seeds == 1:
        p = run_template(template, root, {"MEMLAB_TASKS": "0"})
    else:
        p = run_template(template, root, args=[f"seed={','.join(map(str, range(seeds)))}"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    task, *others = task_dirs(root / expt)
    assert len(others) == seeds - 1
    res = json.loads((task / "results.json").read_text())
    assert res["expt"] == expt and res["size"] == "tiny" and res["index"] == 0
    assert (root / expt / "plots" / plot).stat().st_size > 10_000
    df = pd.read_csv(root / expt / table)
    assert set(columns) <= set(df.columns), sorted(set(columns) - set(df.columns))
    if n_rows is not None:
        assert len(df) == n_rows * seeds, df
    return task, res, df


def test_expt2_retention(tmp_path):
    task, res, df = run_cell0("expt2_retention.sh", tmp_path)
    points = res["interference"]["eval"]["points"]
    steps = [int(p.split("_")[1]) for p in points if p.startswith("step_")]
    assert points[0] == "exposure_0" and steps[:2] == [1, 2]  # the end of study, then log-spaced: 1, 2, 3, ...
    assert not list((task / "interference" / "checkpoints").glob("step_*"))  # evaluated without checkpoints
    # every measure at step 0 (end of study) and at every evaluated step of the interference run
    for measure in ("QA recall (accuracy)", "recognition (2AFC)", "sentence recall (exact match)"):
        assert sorted(df[df.measure == measure].interference_step) == [0] + steps
    config = json.loads((task / "interference" / "config.json").read_text())
    assert config["args"]["init_from"] == str(task / "study" / "checkpoints" / "exposure_1")
    assert df.value.between(0, 1).all()


def test_expt3_examples_per_fact(tmp_path):
    _, res, df = run_cell0("expt3_examples_per_fact.sh", tmp_path)
    assert set(df.variants) == {1} and set(df.tier) == {"easy", "mid", "hard", "verbatim", "all"}
    assert sorted(df.temperature.unique()) == [0.0, 1.0]
    assert df.error_rate.between(0, 1).all()
    assert res["variants_recall"]["mode"] == "qa"


def test_expt5_context_length(tmp_path):
    _, res, df = run_cell0("expt5_context_length.sh", tmp_path)
    assert sorted(df.prefix_tokens) == [4, 16] and set(df.doc_tokens) == {48}
    for m in ("token_accuracy", "exact_match", "id_recalled"):
        assert df[m].between(0, 1).all()
    assert res["prefix_recall"]["mode"] == "prefix"


def test_expt7_prior_knowledge(tmp_path):
    """Two seeds (two cells): the tables of which facts take longer pool them."""
    task, _, df = run_cell0("expt7_prior_knowledge.sh", tmp_path, seeds=2)
    df = df[df.task == task.name]
    assert set(df.kind) == {"known", "known (held out)", "novel", "contradicting"}
    assert sorted(df.exposure.unique()) == [0, 1]
    assert (df.n_facts == 2).all()  # 2 facts of each kind in the tiny grid
    # the held-out known facts are probed at every point and never trained
    heldout = set(json.loads((task / "data" / "heldout_known.json").read_text())["fact_ids"])
    assert heldout == {"known-0002", "known-0003"}
    config = json.loads((task / "train" / "config.json").read_text())
    trained = {json.loads(x)["fact_id"] for x in open(config["args"]["train_file"]) if x.strip()}
    probed = {json.loads(x)["fact_id"] for x in open(task / "data" / "facts" / "probes.jsonl") if x.strip()}
    assert heldout <= probed and not heldout & trained and {"known-0000", "known-0001"} <= trained
    assert df.accuracy.between(0, 1).all()
    assert df[df.kind != "contradicting"].original_rate.isna().all()
    facts = pd.read_csv(tmp_path / "expt7" / "facts.csv")
    assert len(facts) == 2 * 8 and sorted(facts.seed.unique()) == [0, 1]  # 8 facts per cell
    assert facts.set_index(["seed", "fact_id"]).loc[0].n_variants.isna().sum() == 2  # the held-out known facts
    assert facts.prior_answer_nll.gt(0).all() and set(facts.answer_kind) <= {"number", "date", "name", "word", "other"}
    for name in ("forgetting.csv", "difficulty.csv", "learning.csv", "mia_exposure.csv"):
        assert (tmp_path / "expt7" / name).exists(), name
    for plot in ("survival_kind.png", "detect_vs_recall.png"):
        assert (tmp_path / "expt7" / "plots" / plot).exists(), plot
    summary = (tmp_path / "expt7" / "summary.txt").read_text()
    assert "Which facts take longer" in summary
    # the split by kind agrees with generate.py's overall accuracy at each checkpoint (same items, same weights)
    overall = {r["checkpoint"]: 1 - r["error_rate"] for r in
               json.loads((task / "prior_recall" / "results.json").read_text())["error_rates"]
               if r["tier"] == "all" and r["temperature"] == 0}
    trained = df[df.exposure == 1]
    assert trained.accuracy.mean() == pytest.approx(overall["exposure_1"], abs=1e-9)
