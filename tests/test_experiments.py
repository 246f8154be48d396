"""The experiment templates: grid mapping, runs without SLURM, resume after a signal, no work on re-run,
and real runs under a local single-node SLURM (sbatch arrays and submitit's map_array)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from memlab import experiments as E
from memlab.io import DataError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "scripts").glob("expt*.sh"))
TINY_ENV = {"MEMLAB_GRID": "tiny", "MEMLAB_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


def test_every_template_parses_and_its_array_matches_the_grid():
    assert TEMPLATES, "no templates"
    for t in TEMPLATES:
        assert subprocess.run(["bash", "-n", str(t)]).returncode == 0, t
        text = t.read_text()
        expt = re.search(r"^EXPT=(\w+)", text, re.M).group(1)
        first_comment = text.splitlines()[1]
        assert first_comment.startswith("# ") and "sbatch scripts/" in text.split("#SBATCH")[0], t
        m = re.search(r"^#SBATCH --array=0-(\d+)$", text, re.M)
        assert int(m.group(1)) + 1 == len(E.grid_cells(expt, "full")), f"{t.name}: --array does not match the grid"
        assert "--requeue" in text and "--signal=B:USR1@" in text


def test_grid_mapping():
    cells = E.grid_cells("expt1", "full")
    assert len(cells) == 1 * 3 * 2 * 2
    assert cells[0] == {"model": "smollm2-135m", "seed": 0, "method": "full", "mode": "passive"}
    assert cells[1] == {"model": "smollm2-135m", "seed": 0, "method": "full", "mode": "active"}
    assert cells[2] == {"model": "smollm2-135m", "seed": 0, "method": "lora", "mode": "passive"}
    assert cells[11] == {"model": "smollm2-135m", "seed": 2, "method": "lora", "mode": "active"}
    assert len({E.cell_name(c) for c in cells}) == len(cells)
    assert E.cell("expt1", "full", 5) == cells[5]
    with pytest.raises(DataError, match="outside the grid of 12 cells"):
        E.cell("expt1", "full", 12)
    os.environ["MEMLAB_MODELS"] = "/models/a,tiny-gpt2"
    try:
        assert len(E.grid_cells("expt1", "full")) == 24
        assert E.cell_name(E.cell("expt1", "full", 0)).startswith("model=a_seed=0")
    finally:
        del os.environ["MEMLAB_MODELS"]


def run_template(name, runs_root, extra_env=None, timeout=900, args=(), cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MEMLAB_CALLER_DIR"))}
    env.update(TINY_ENV, MEMLAB_RUNS_ROOT=str(runs_root), **(extra_env or {}))
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def task_dirs(root):
    return sorted(p.parent for p in Path(root).rglob("cell.json"))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """Cell 0 of expt1's tiny grid, run without SLURM, uninterrupted."""
    root = tmp_path_factory.mktemp("local")
    p = run_template("expt1_exposures.sh", root, {"MEMLAB_TASKS": "0"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return root


def test_template_runs_without_slurm(local_run):
    (task,) = task_dirs(local_run / "expt1")
    res = json.loads((task / "results.json").read_text())
    assert res["cell"]["method"] == "full"
    assert {r["exposure"] for r in res["recognition"]["checkpoints"]} == {0, 1, 2}
    assert (local_run / "expt1" / "plots" / "recall_recognition_vs_exposures.png").stat().st_size > 10_000
    assert (local_run / "expt1" / "tidy_recall.csv").exists()
    # before training and after every exposure, evaluated inside training, no checkpoint written; knownness
    # measured before training; the studied sentences recalled from their first half at every point
    assert res["train"]["eval"]["points"] == ["exposure_0", "exposure_1", "exposure_2"]
    assert [r["exposure"] for r in res["sentence_recall"]["by_prefix"]] == [0, 1, 2]
    assert res["sentence_recall"]["prefix_fraction"] == 0.5
    sent = pd.read_csv(local_run / "expt1" / "tidy_sentence_recall.csv")
    assert sorted(sent.exposure) == [0, 1, 2] and sent.exact_match.between(0, 1).all()
    assert not (task / "train" / "checkpoints").exists() and (task / "train" / "eval" / "recall" / "items.csv").exists()
    assert {r["tier"] for r in res["recall"]["error_rates"]} == {"easy", "mid", "hard", "verbatim", "all"}
    known = pd.read_csv(task / "knownness" / "items.csv")
    assert sorted(known.temperature.unique()) == [0.0, 0.5] and "verbatim" not in set(known.tier)
    learning = pd.read_csv(local_run / "expt1" / "learning.csv")
    assert {"easy", "mid", "hard", "all", "verbatim", "recognition", "sentence"} <= set(learning.tier)
    assert set(learning.knownness.dropna()) <= {"HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"}
    assert len(learning[learning.tier == "verbatim"]) == 6  # one row per fact (6 in the tiny grid)
    per_item = pd.read_csv(local_run / "expt1" / "per_item.csv", low_memory=False)
    assert {"recall", "recognition", "knownness", "sentence_recall"} <= set(per_item.stage)
    assert (local_run / "expt1" / "plots" / "learning_ecdf.png").stat().st_size > 10_000
    # which facts take longer (issue 24): the covariates of every fact, and the forgetting and difficulty tables
    # (headers at least: 6 facts are too few for a model, which summary.txt says)
    facts = pd.read_csv(local_run / "expt1" / "facts.csv")
    assert len(facts) == 6 and set(facts.answer_kind) == {"number"} and (facts.n_variants == 2).all()
    assert facts.answer_tokens.ge(1).all() and facts.prior_answer_nll.gt(0).all() and (facts.n_probes == 4).all()
    for name in ("forgetting.csv", "difficulty.csv"):
        assert (local_run / "expt1" / name).exists()
    summary = (local_run / "expt1" / "summary.txt").read_text()
    assert "not fitted" in summary


def test_rerunning_a_finished_sweep_starts_no_work(local_run):
    before = {p: p.stat().st_mtime_ns for p in (local_run / "expt1").rglob("*") if p.is_file()
              and "plots" not in p.parts and not p.name.startswith(("tidy_", "summary"))}
    p = run_template("expt1_exposures.sh", local_run, {"MEMLAB_TASKS": "0"})
    assert p.returncode == 0 and "nothing to do" in p.stdout
    assert "train.py" not in p.stdout  # no stage was started
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after


def test_signalled_task_resumes_to_the_same_result(local_run, tmp_path):
    p = run_template("expt1_exposures.sh", tmp_path, {"MEMLAB_TASKS": "0",
                                                      "MEMLAB_TRAIN_ARGS": "--debug_signal_at_step 2"})
    assert p.returncode == 75, p.stderr[-2000:]
    (task,) = task_dirs(tmp_path / "expt1")
    assert (task / "train" / "resume").is_dir() and not (task / "results.json").exists()
    p = run_template("expt1_exposures.sh", tmp_path, {"MEMLAB_TASKS": "0"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "--resume" in p.stdout
    (ref,) = task_dirs(local_run / "expt1")
    a = json.loads((ref / "results.json").read_text())
    b = json.loads((task / "results.json").read_text())
    assert a["train"]["param_digests"] == b["train"]["param_digests"]  # identical final weights
    la = [round(c["loss_seen"], 5) for c in a["recognition"]["checkpoints"]]
    lb = [round(c["loss_seen"], 5) for c in b["recognition"]["checkpoints"]]
    assert la == lb
