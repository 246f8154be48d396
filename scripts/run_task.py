"""Run one array task of an experiment grid (what every sbatch template and sweep.py call).

    python scripts/run_task.py expt1 --index 3 --runs_root runs --size full
    python scripts/run_task.py expt1 --count --size small      # number of cells (array size)
    python scripts/run_task.py expt1 --show --size full        # index -> cell table
    python scripts/run_task.py expt1 --show seed=0,1,2 method=full mode=active   # overrides: 3 cells
    python scripts/run_task.py expt1 --index 0 size=tiny num_exposures=3 lr_full=1e-3
    python scripts/run_task.py expt1 --coverage 0-5:1 --size full  # which cells an array 0-5 leaves out
Overrides are `key=value` after the experiment name (configs/<expt>.yaml: `size`, grid axes, settings;
a comma list sweeps an axis). MEMLAB_MODELS=a,b replaces the model axis. The resolved config is recorded in
RUNS_ROOT/<expt>/config.yaml; a run with other settings into the same root is refused, naming the keys that
differ, unless `force=true` (or --force): then cells whose settings differ are emptied and re-run.

Exit status: 0 done (or already done), 75 preempted with state saved (requeue and rerun), 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import sys

# memlab is an installed package (pyproject.toml; `make venv` installs it editable): no sys.path patch
from memlab.experiments import (EXIT_REQUEUE, Preempted, cell_name, choose_size, coverage, grid_cells,
                                parse_args_with_overrides, run_task)
from memlab.io import DataError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("expt", help="experiment name (configs/<expt>.yaml), e.g. expt1")
    p.add_argument("--index", type=int, help="array index of the cell to run (0-based, as --show lists them); "
                                             "required unless --count, --show or --coverage is given")
    p.add_argument("--runs_root", default="runs", help="root of the sweeps: the task runs in "
                                                       "RUNS_ROOT/<expt>/<cell> (default: %(default)s)")
    p.add_argument("--size", default=None, help="grid size: full | small | tiny (default: MEMLAB_GRID, else full "
                                                "in a SLURM job, else small)")
    p.add_argument("--count", action="store_true", help="print the number of cells and exit")
    p.add_argument("--show", action="store_true", help="print index -> cell and exit")
    p.add_argument("--coverage", default="", help="MIN-MAX:STEP of a SLURM array: log the cells it leaves out")
    p.add_argument("--force", action="store_true", help="record a changed config and re-run differing cells "
                                                        "(same as force=true)")
    args = parse_args_with_overrides(p, argv)
    args.size = choose_size(args.size, cluster="SLURM_JOB_ID" in os.environ)
    try:
        cells = grid_cells(args.expt, args.size, args.overrides)
        if args.coverage:
            print(coverage(args.expt, args.size, args.coverage, args.overrides))
            return 0
        if args.count:
            print(len(cells))
            return 0
        if args.show:
            for i, c in enumerate(cells):
                print(i, cell_name(c))
            return 0
        if args.index is None:
            raise DataError("--index is required (or --count / --show)")
        run_task(args.expt, args.index, args.runs_root, args.size, args.overrides, args.force)
        return 0
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a stage failed; its own output above says why
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
