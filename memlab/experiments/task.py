"""One array task: resolve the config, guard the sweep root, lock the cell, run the experiment's pipeline.

Each task writes RUNS_ROOT/<expt>/<cell name>/ with one sub-run per stage (data/, train/, recall/, ...), each a
normal run directory. A stage whose results.json exists is skipped, so a requeued or re-run task continues where
it stopped, and a finished task (its own results.json written) does nothing at all.
"""
from __future__ import annotations

import os
from pathlib import Path

from memlab.experiments.config import ROOT, cell, cell_name, check_data_files, resolve, split_force
from memlab.experiments.guard import _check_cell_settings, _settings_match, guard_root
from memlab.experiments.registry import run_pipeline
from memlab.experiments.stages import Preempted
from memlab.io import write_json_atomic
from memlab.rundir import lock_dir


def run_task(expt: str, index: int, runs_root: str | os.PathLike, size: str, overrides=(), force: bool = False) -> Path:
    """Run (or resume, or skip) one array task; returns its directory. The resolved config is recorded at the
    sweep root (config.yaml; a changed one is refused unless `force`, see `guard_root`) and the cell's own
    in its cell.json and settings.json."""
    overrides, forced = split_force(overrides)
    force = force or forced
    size, axes, settings = resolve(expt, size, overrides)
    c = cell(expt, size, index, overrides)
    check_data_files(expt, settings, axes.get("variants"))
    guard_root(expt, runs_root, size, axes, settings, overrides, force)
    task = Path(runs_root) / expt / cell_name(c)
    if (task / "results.json").exists() and not force and _settings_match(task, settings):
        print(f"{task}: results.json exists, nothing to do", flush=True)  # a finished cell is never written again
        return task
    lock_dir(task)  # one writer per cell: a second run_task.py on the same cell is refused, naming the first
    _check_cell_settings(task, settings, force)
    if (task / "results.json").exists():
        print(f"{task}: results.json exists, nothing to do", flush=True)
        return task
    task.mkdir(parents=True, exist_ok=True)
    write_json_atomic(task / "cell.json", {"expt": expt, "size": size, "index": index, **c})
    write_json_atomic(task / "settings.json", {"overrides": list(overrides or ()), **settings})
    results = run_pipeline(expt, c, settings, task)
    write_json_atomic(task / "results.json", {"expt": expt, "size": size, "index": index, "cell": c, **results})
    return task


class SubmititTask:
    """Picklable callable for submitit: runs one cell; on preemption submitit calls `checkpoint`, which
    requeues the same call (training state is already on disk, so the rerun resumes)."""

    def __init__(self, expt: str, runs_root: str, size: str, overrides=()):
        self.expt, self.runs_root, self.size, self.overrides = expt, runs_root, size, list(overrides or ())

    def __call__(self, index: int) -> str:
        os.chdir(ROOT)
        while True:
            try:
                return str(run_task(self.expt, index, self.runs_root, self.size, self.overrides))
            except Preempted:
                if "SLURM_JOB_ID" in os.environ:
                    raise  # submitit's checkpoint() requeues the job
                continue  # local: resume straight away

    def checkpoint(self, index: int):
        import submitit  # only in a submitit job (scripts/sweep.py); the other entry points never need it

        return submitit.helpers.DelayedSubmission(self, index)
