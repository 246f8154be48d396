"""The sweep-root guard: one sweep root holds cells run with one config (what analyze.py pools).

RUNS_ROOT/<expt>/config.yaml records the resolved config; a changed one is refused (or, with force=true,
recorded and the cells whose settings differ are emptied before they run). `coverage` says which cells an
array leaves out.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from memlab.experiments.config import cell_name, grid_cells, same_meaning, with_added_settings
from memlab.io import DataError, write_text_atomic, yaml_problem
from memlab.rundir import differences


def check_runs_root(runs_root, expt: str) -> None:
    """A runs root (and its experiment folder) that exists must be a directory."""
    for d in (Path(runs_root), Path(runs_root) / expt):
        if d.exists() and not d.is_dir():
            raise DataError(f"--runs_root {runs_root}: {d} is a file, not a directory of sweeps")


def _as_recorded(recorded: dict, settings: dict) -> dict:
    """`settings` with every value that means what the recorded one means in the recorded spelling
    (temperatures '0.0' where '0' was recorded): the same config is not "another config"."""
    return {k: recorded[k] if k in recorded and same_meaning(k, recorded[k], v) else v for k, v in settings.items()}


def guard_root(expt: str, runs_root, size: str, axes: dict, settings: dict, overrides=(), force: bool = False,
               write: bool = True) -> Path:
    """Record the resolved config at the sweep root (RUNS_ROOT/<expt>/config.yaml) or refuse a changed one.

    A sweep root holds cells run with one set of settings (what analyze.py pools); its grid may grow (more
    seeds, another model: cells are keyed by their values, so new cells never touch old ones, and the
    recorded grid is the union). A different `size` or any different setting is refused, naming every key
    that differs, unless `force` (then the new config is recorded and each cell whose own settings.json
    differs is emptied before it runs: `run_task`). Values are compared by meaning (`same_meaning`: temperatures
    '0.0' is the recorded '0'), and such a value takes the recorded spelling in `settings` itself, so the task
    runs the stages' recorded command lines. `write=False` only checks (submit.py --dry_run)."""
    check_runs_root(runs_root, expt)
    path = Path(runs_root) / expt / "config.yaml"
    grid = {k: list(v) for k, v in axes.items()}
    if path.exists():
        try:
            old = OmegaConf.to_container(OmegaConf.load(path))
            if not isinstance(old, dict):
                raise ValueError("not a mapping")
        except Exception as e:
            raise DataError(f"{path}: unreadable recorded config ({yaml_problem(e)}); move it away or use a new "
                            "runs root") from None
        recorded = with_added_settings(old.get("settings", {}), settings)
        if isinstance(recorded, dict):
            settings.update(_as_recorded(recorded, settings))
        diff = differences({"size": old.get("size"), "settings": recorded}, {"size": size, "settings": settings})
        if diff and not force:
            raise DataError(f"{path.parent} was run with another config; differing keys: {'; '.join(diff)}. "
                            f"Use a new runs root, or force=true (--force) to record this config and re-run the "
                            f"cells whose settings differ")
        if not diff:  # same settings: the grid grows
            for k, vals in (old.get("grid") or {}).items():
                grid[k] = list(vals) + [v for v in grid.get(k, []) if v not in vals] if k in grid else list(vals)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = {"expt": expt, "size": size, "grid": grid, "settings": settings,
               "overrides": [o for o in overrides or ()]}
        text = "# resolved config of this sweep root (memlab/experiments/guard.py guard_root)\n" + OmegaConf.to_yaml(
            OmegaConf.create(cfg))
        if not path.exists() or path.read_text() != text:  # an unchanged re-run touches nothing
            write_text_atomic(path, text)
    return path


def _settings_match(task: Path, settings: dict) -> bool:
    """Whether the cell's recorded settings.json equals `settings` (added settings at their old values)."""
    try:
        old = json.loads((task / "settings.json").read_text())
    except (OSError, ValueError):
        return False
    old.pop("overrides", None)
    old = with_added_settings(old, settings)
    return not differences(old, _as_recorded(old, settings))


def _check_cell_settings(task: Path, settings: dict, force: bool) -> None:
    """A cell run earlier with other settings is refused, or emptied with `force` (never merged)."""
    recorded = task / "settings.json"
    if not recorded.exists():
        return
    try:
        old = json.loads(recorded.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{recorded}: unreadable ({e})") from None
    old.pop("overrides", None)
    old = with_added_settings(old, settings)
    diff = differences(old, _as_recorded(old, settings))
    if not diff:
        return
    if not force:
        raise DataError(f"{task} was run with other settings ({'; '.join(diff)}); use a new runs root or force=true")
    print(f"{task}: settings differ ({'; '.join(diff)}); force=true: emptying the cell", flush=True)
    shutil.rmtree(task)


def coverage(expt: str, size: str, spec: str, overrides=()) -> str:
    """One log line: which cells an array MIN-MAX:STEP (SLURM_ARRAY_TASK_MIN/MAX/STEP) leaves uncovered,
    and which of its indices fall past the grid."""
    cells = grid_cells(expt, size, overrides)
    spec, _, count = spec.partition("#")
    lo_hi, _, step = spec.partition(":")
    lo, _, hi = lo_hi.partition("-")
    try:
        covered = set(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    except ValueError:
        raise DataError(f"--coverage: expected MIN-MAX:STEP[#COUNT], got '{spec}'") from None
    missing = [i for i in range(len(cells)) if i not in covered]
    past = sorted(i for i in covered if i >= len(cells))
    parts = [f"memlab {expt}: array {spec} over the {len(cells)} cells of grid '{size}'"]
    if count and count.isdigit() and int(count) != len(covered):  # e.g. --array=0,3,7: only MIN/MAX known
        parts.append(f"an irregular array of {count} tasks: cells between its indices may be uncovered too")
    if missing:
        parts.append(f"cells no index covers ({len(missing)}): " + ", ".join(f"{i} {cell_name(cells[i])}" for i in missing))
    if past:
        parts.append(f"indices past the grid (they will fail): {past[0]}-{past[-1]}")
    if not missing and not past:
        parts.append("every cell covered")
    return "; ".join(parts)
