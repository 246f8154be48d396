"""Submit an experiment's sbatch template with the array sized from its grid (after overrides).

    python scripts/submit.py expt1                                   # sbatch --array=0-11 scripts/expt1_exposures.sh
    python scripts/submit.py expt1 model=/models/Llama-3.2-1B lr_full=1e-5 seed=0,1,2,3,4 --dry_run
    python scripts/submit.py expt4 size=small rank=8,16 --runs_root /shared/runs --sbatch="--partition=gpu --time=8:00:00"
    python scripts/submit.py expt1 lr_full=1e-5 --force              # the runs root was run with another lr

The overrides are `key=value` of configs/<expt>.yaml, resolved here as every task will resolve them (the
size defaults to MEMLAB_GRID, else `full`, as under SLURM); the template gets the same overrides, so the
array index -> cell mapping is the one `python scripts/run_task.py EXPT --show key=value ...` prints. The
sweep root's recorded config (RUNS_ROOT/<expt>/config.yaml) is checked before anything is submitted: a
changed setting is refused, naming the keys, unless --force (passed on as force=true). `--dry_run` prints
the sbatch command and submits nothing. Data-file overrides (facts_file=..., docs/running_experiments.md) are
checked to exist and passed on as absolute paths. Exit status: 0 submitted (sbatch's own output follows), 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from memlab.experiments import (absolute_data_overrides, check_data_files, choose_size, grid_cells, guard_root,
                                parse_args_with_overrides, resolve, split_force)
from memlab.io import DataError

# the checkout (sbatch templates, default runs root); memlab itself is an installed package (pyproject.toml)
ROOT = Path(__file__).resolve().parents[1]


def template(expt: str) -> Path:
    found = sorted((ROOT / "scripts").glob(f"{expt}_*.sh"))
    if len(found) != 1:
        raise DataError(f"no single sbatch template scripts/{expt}_*.sh (found {[p.name for p in found]})")
    return found[0]


def sbatch_command(expt: str, overrides, sbatch_args: str = "", runs_root: str = "") -> tuple[list[str], dict]:
    """(the sbatch command line, the environment it needs) for the whole grid of `expt` after overrides."""
    rest, _ = split_force(overrides)
    size = choose_size(cluster=True)
    n = len(grid_cells(expt, size, rest))
    try:
        extra = shlex.split(sbatch_args)
    except ValueError as e:
        raise DataError(f"--sbatch {sbatch_args!r}: cannot split into sbatch options ({e})") from None
    if any(x.startswith(("--array", "-a")) for x in extra):
        raise DataError("--sbatch: --array is sized from the grid by submit.py; restrict cells with overrides")
    cmd = ["sbatch", f"--array=0-{n - 1}", *extra, str(template(expt).relative_to(ROOT)), *overrides]
    env = {"MEMLAB_RUNS_ROOT": str(Path(runs_root).resolve())} if runs_root else {}
    return cmd, env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("expt", help="experiment name (configs/<expt>.yaml)")
    p.add_argument("--runs_root", default="", help="runs root (default: MEMLAB_RUNS_ROOT, else <repo>/runs)")
    p.add_argument("--sbatch", default="", help="extra sbatch options, one string (e.g. '--partition=gpu --time=8:00:00')")
    p.add_argument("--force", action="store_true", help="record a changed config and re-run the cells whose settings "
                                                        "differ (passed on as force=true)")
    p.add_argument("--dry_run", action="store_true", help="print the sbatch command and submit nothing")
    args = parse_args_with_overrides(p, argv)
    try:
        overrides = absolute_data_overrides(args.overrides) + (["force=true"] if args.force and not split_force(args.overrides)[1] else [])
        rest, force = split_force(overrides)
        cmd, env = sbatch_command(args.expt, overrides, args.sbatch, args.runs_root)
        runs_root = env.get("MEMLAB_RUNS_ROOT") or os.environ.get("MEMLAB_RUNS_ROOT") or str(ROOT / "runs")
        size, axes, settings = resolve(args.expt, choose_size(cluster=True), rest)
        check_data_files(args.expt, settings, axes.get("variants"))
        guard_root(args.expt, runs_root, size, axes, settings, rest, force, write=False)  # refuse before submitting
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    line = " ".join(shlex.quote(c) for c in cmd)
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    print(f"{prefix} {line}".strip(), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main())
