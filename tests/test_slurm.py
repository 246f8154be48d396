"""The sbatch templates under a real local single-node SLURM (slurmctld + slurmd + munge on localhost, fake
GPU gres): submit.py arrays sized from the grid, a changed config refused, a mismatched hand-made --array,
submitit's map_array, and a preempted task that requeues itself and resumes to the same weights. A file of
its own so that the suite's two workers (pytest-xdist --dist loadfile) can run it beside the rest."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_experiments import ROOT, TINY_ENV, task_dirs


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from tests.slurm_cluster import LocalSlurm, ensure_installed

    reason = ensure_installed()
    if reason:
        pytest.fail(reason)  # CI runs as root on Debian: a missing SLURM is a failure, not a skip
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    env = cluster.start()
    yield env
    cluster.stop()


OV = ["seed=0,1", "method=full"]  # 2 cells of the tiny grid (seed x method x mode = 2 x 1 x 1)


def _env(slurm, root):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(TINY_ENV, **slurm, MEMLAB_RUNS_ROOT=str(root / "runs"))
    return env


def _opts(root):
    return f"--wait --cpus-per-task=1 --mem=1000 --gres=gpu:1 --output={root}/%A_%a.out"


@pytest.fixture(scope="module")
def array_runs(slurm, tmp_path_factory):
    """`submit.py expt1 seed=0,1 method=full` on the local SLURM: (runs dir, submit.py's output, task logs).
    Its seed-0 cell is also the uninterrupted reference of the requeue test."""
    root = tmp_path_factory.mktemp("array")
    cmd = [sys.executable, "scripts/submit.py", "expt1", *OV, f"--sbatch={_opts(root)}"]
    p = subprocess.run(cmd, cwd=ROOT, env=_env(slurm, root), capture_output=True, text=True, timeout=900)
    logs = "".join(f.read_text() for f in sorted(root.glob("*.out")))
    assert p.returncode == 0, p.stderr + logs[-3000:]
    for f in root.glob("*.out"):
        f.unlink()
    return root, p, logs


def test_sbatch_array_on_local_slurm_then_submitit(slurm, array_runs):
    """submit.py sizes the array from the grid after overrides; a changed config into the same root is
    refused before anything is submitted; a hand-made --array that does not match logs the uncovered cells
    and fails on the index past the grid; submitit's map_array finds the same (finished) cells."""
    tmp_path, p, logs = array_runs
    env, opts, ov = _env(slurm, tmp_path), _opts(tmp_path), OV
    assert p.stdout.split()[:2] == ["sbatch", "--array=0-1"]
    tasks = task_dirs(tmp_path / "runs" / "expt1")
    assert len(tasks) == 2 and all((t / "results.json").exists() for t in tasks), logs[-3000:]
    assert {json.loads((t / "cell.json").read_text())["seed"] for t in tasks} == {0, 1}
    assert (tmp_path / "runs/expt1/plots/recall_recognition_vs_exposures.png").exists()
    assert "array task 1 of grid 'tiny'" in logs and "every cell covered" in logs
    assert (tmp_path / "runs" / "expt1" / "config.yaml").exists()

    p = subprocess.run([sys.executable, "scripts/submit.py", "expt1", *ov, "num_exposures=1", f"--sbatch={opts}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "settings.num_exposures: 2 -> 1" in p.stderr and "sbatch" not in p.stdout

    cmd = ["sbatch", "--wait", "--array=1-2", *opts.split()[1:], "scripts/expt1_exposures.sh", *ov]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(f.read_text() for f in sorted(tmp_path.glob("*.out")))
    assert p.returncode != 0, logs[-3000:]  # index 2 fails
    assert "cells no index covers (1): 0 model=tiny-llama_seed=0_method=full_mode=active" in logs, logs[-3000:]
    assert "array index 2 outside the grid of 2 cells" in logs

    # submitit's map_array against the same cluster: the cells are finished, so the jobs return at once
    import pdb

    sys.path.insert(0, str(ROOT / "scripts"))  # sweep.py is a script, not part of the memlab package
    import sweep

    old_env = dict(os.environ)
    os.environ.update({**slurm, **TINY_ENV})
    pdb_post_mortem = pdb.post_mortem
    pdb.post_mortem = lambda *a, **k: None
    try:
        out = sweep.main(["expt1", "--size", "tiny", "--runs_root", str(tmp_path / "runs"), "--cluster", "slurm",
                          "--gres", "gpu:1", "--cpus_per_task", "1", "--mem_gb", "1", "--timeout_min", "10", *ov])
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        pdb.post_mortem = pdb_post_mortem
    assert sorted(out) == sorted(str(t) for t in tasks)


def test_preempted_array_task_requeues_and_resumes_under_slurm(slurm, array_runs, tmp_path):
    """train.py is signalled mid-run (as SLURM's --signal=B:USR1 would), exits 75; the template runs
    `scontrol requeue`; SLURM reruns the task (after its requeue hold), which resumes from the saved state
    and ends with the same weights as the uninterrupted run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(TINY_ENV, **slurm, MEMLAB_RUNS_ROOT=str(tmp_path / "runs"),
               MEMLAB_TRAIN_ARGS="--debug_signal_at_step 2")
    cmd = ["sbatch", "--wait", "--parsable", "--array=0", "--cpus-per-task=1", "--mem=1000", "--gres=gpu:1",
           f"--output={tmp_path}/%A_%a.out", "scripts/expt1_exposures.sh"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    job = p.stdout.strip().split(";")[0]
    comp = Path(slurm["SLURM_CONF"]).parent / "jobcomp.txt"
    states = re.findall(rf"JobId={job} .*?JobState=(\w+)", comp.read_text())
    assert states[:1] == ["PENDING"] and states[-1] == "COMPLETED", states  # requeued once, then done
    (task,) = task_dirs(tmp_path / "runs" / "expt1")
    (ref,) = [t for t in task_dirs(array_runs[0] / "runs" / "expt1")
              if json.loads((t / "cell.json").read_text())["seed"] == 0]
    a = json.loads((ref / "results.json").read_text())["train"]
    b = json.loads((task / "results.json").read_text())["train"]
    assert a["param_digests"] == b["param_digests"]
    assert json.loads((task / "train" / "config.json").read_text())["args"]["resume"] is True
