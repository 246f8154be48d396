"""Submit an experiment grid from Python with submitit: the same cells and pipeline as the sbatch
templates (memlab/experiments/), one array job via `map_array`.

    python scripts/sweep.py expt1 --size full --runs_root /shared/runs        # SLURM when srun is on PATH
    python scripts/sweep.py expt1 --size small --cluster local               # subprocesses on this machine
    python scripts/sweep.py expt1 --indices 0,3 --gres gpu:1 --timeout_min 240 --partition gpu
    python scripts/sweep.py expt1 --size full seed=0,1,2,3,4 lr_full=1e-5   # key=value overrides
    python scripts/sweep.py expt1 --size full seed=0,1 --dry_run             # index -> cell, nothing submitted

Logs go to RUNS_ROOT/<expt>/submitit/ (a shared folder on a cluster; never /tmp). Preemption: a task's
`checkpoint()` resubmits it, and the rerun resumes from the newest training checkpoint; finished cells
are skipped, so resubmitting a finished sweep starts no work. The resolved config is recorded (and a changed
one refused, unless --force) at RUNS_ROOT/<expt>/config.yaml before anything is submitted.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from memlab.experiments import (SubmititTask, absolute_data_overrides, cell_name, check_data_files, check_runs_root,
                                choose_size, grid_cells, guard_root, parse_args_with_overrides, resolve, split_force)
from memlab.io import DataError

# the checkout (default runs root, analyze.py); memlab itself is an installed package (pyproject.toml)
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> list[str]:
    import submitit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("expt", help="experiment name (configs/<expt>.yaml), e.g. expt1")
    p.add_argument("--size", default=None, help="grid size: full | small | tiny (default: MEMLAB_GRID, else full "
                                                "onto SLURM, else small)")
    p.add_argument("--runs_root", default=str(ROOT / "runs"), help="root of the sweeps: tasks run in "
                   "RUNS_ROOT/<expt>/<cell>, submitit logs go to RUNS_ROOT/<expt>/submitit/ (default: <repo>/runs)")
    p.add_argument("--indices", default="", help="comma-separated cell indices to submit (default: all cells)")
    p.add_argument("--cluster", default=None, help="slurm | local | debug (default: slurm if srun exists)")
    p.add_argument("--partition", default=None, help="SLURM partition to submit to (default: the cluster's default)")
    p.add_argument("--gres", default="gpu:1", help="SLURM generic resources per task, e.g. gpu:1; 'none' for "
                                                  "CPU-only nodes (default: %(default)s)")
    p.add_argument("--cpus_per_task", type=int, default=8, help="CPU cores per task (default: %(default)s)")
    p.add_argument("--mem_gb", type=int, default=32, help="memory per task in GB, on SLURM (default: %(default)s)")
    p.add_argument("--timeout_min", type=int, default=240, help="time limit per task in minutes "
                                                              "(default: %(default)s)")
    p.add_argument("--no_wait", action="store_true", help="submit and return the job ids")
    p.add_argument("--force", action="store_true", help="record a changed config and re-run the cells whose settings "
                                                        "differ (same as force=true)")
    p.add_argument("--dry_run", action="store_true", help="print index -> cell of the tasks and submit nothing")
    args = parse_args_with_overrides(p, argv)

    args.size = choose_size(args.size, cluster=(args.cluster or ("slurm" if shutil.which("srun") else "local")) == "slurm")
    rest, forced = split_force(absolute_data_overrides(args.overrides))
    size, axes, settings = resolve(args.expt, args.size, rest)
    check_data_files(args.expt, settings, axes.get("variants"))
    cells = grid_cells(args.expt, args.size, rest)
    try:
        indices = [int(i) for i in args.indices.split(",") if i.strip()] or list(range(len(cells)))
    except ValueError:
        raise DataError(f"--indices {args.indices}: expected comma-separated cell indices (0..{len(cells) - 1})") from None
    beyond = [i for i in indices if not 0 <= i < len(cells)]
    if beyond:
        raise DataError(f"--indices {args.indices}: {beyond} outside the grid's cells 0..{len(cells) - 1} "
                        f"(--dry_run lists them)")
    check_runs_root(args.runs_root, args.expt)
    if args.dry_run:
        return [f"{i} {cell_name(cells[i])}" for i in indices]
    # the recorded config is checked (and written) before anything is submitted
    guard_root(args.expt, args.runs_root, size, axes, settings, rest, args.force or forced)
    folder = Path(args.runs_root) / args.expt / "submitit"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=args.cluster)
    params = {"timeout_min": args.timeout_min, "cpus_per_task": args.cpus_per_task, "name": f"memlab-{args.expt}"}
    if ex.cluster == "slurm":
        params.update(slurm_mem=f"{args.mem_gb}G", slurm_signal_delay_s=120,
                      slurm_additional_parameters={"requeue": True})
        if args.gres and args.gres != "none":
            params["slurm_gres"] = args.gres
        if args.partition:
            params["slurm_partition"] = args.partition
    ex.update_parameters(**params)
    # jobs unpickle memlab.experiments.SubmititTask: submitit runs them with this interpreter (sys.executable,
    # the venv's python), where memlab is installed, so no PYTHONPATH is needed
    jobs = ex.map_array(SubmititTask(args.expt, args.runs_root, args.size, rest + (["force=true"] if args.force or forced else [])),
                        indices)
    print(f"submitted {len(jobs)} task(s) of {args.expt}/{args.size} to {ex.cluster}: {jobs[0].job_id.split('_')[0]}")
    if args.no_wait:
        return [j.job_id for j in jobs]
    results = [j.result() for j in jobs]
    subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(Path(args.runs_root) / args.expt)], check=False)
    return results


if __name__ == "__main__":
    try:
        for r in main():
            print(r)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
