"""Experiment tracking for the trainers through accelerate's trackers (TensorBoard, Weights & Biases).

`--report_to none|tensorboard|wandb|all` (train.py, finetune_dpo.py). Scalars go to
`OUTPUT_DIR/trackers/memlab/` (TensorBoard event files: `tensorboard --logdir runs/`) and/or a W&B run named
`--run_name` (default: `<parent dir>/<output dir>`, i.e. the cell name in an experiment). W&B runs offline
unless WANDB_MODE says otherwise (memlab never reaches a hub at run time); upload later with
`wandb sync OUTPUT_DIR/trackers/wandb/offline-run-*`. `metrics.jsonl` stays the source of truth: the
trackers receive a copy of the same rows.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

REPORT_TO = ("none", "tensorboard", "wandb", "all")
PROJECT = "memlab"


def _trackers(report_to: str) -> list[str]:
    return {"none": [], "tensorboard": ["tensorboard"], "wandb": ["wandb"], "all": ["tensorboard", "wandb"]}.get(
        report_to, [])


def checks(report_to: str) -> list[tuple[bool, str]]:
    """validate() entries: a known value, and the tracker's package installed."""
    missing = [t for t in _trackers(report_to) if importlib.util.find_spec(t) is None]
    return [(report_to in REPORT_TO, f"--report_to must be one of {'|'.join(REPORT_TO)}, got {report_to}"),
            (not missing, f"--report_to {report_to} needs {' and '.join(missing)} installed (pip install "
                          f"{' '.join(missing)})")]


def accelerator_kwargs(report_to: str, out) -> dict:
    """Keyword arguments for `Accelerator(...)`: the trackers and where they write."""
    names = _trackers(report_to)
    if not names:
        return {}
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
    return {"log_with": names, "project_dir": str(Path(out) / "trackers")}


def hparams(args) -> dict:
    """The arguments as flat scalars (TensorBoard's hparams accept bool/int/float/str only)."""
    values = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args)
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}


def start(acc, report_to: str, out, args, run_name: str | None = None) -> None:
    """Open the trackers (every process calls it; accelerate writes from the main process only)."""
    if not _trackers(report_to):
        return
    out = Path(out).resolve()
    name = run_name or f"{out.parent.name}/{out.name}"
    acc.init_trackers(PROJECT, config=hparams(args),
                      init_kwargs={"wandb": {"name": name, "dir": str(out / "trackers")}})


def log(acc, report_to: str, values: dict, step: int, prefix: str = "") -> None:
    """One row of scalars at `step` (non-numeric values are left out)."""
    if not _trackers(report_to):
        return
    acc.log({prefix + k: float(v) for k, v in values.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
