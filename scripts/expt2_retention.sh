#!/bin/bash
# Experiment 2 — retention: how fast are studied facts and sentences forgotten under interference?
#   sbatch scripts/expt2_retention.sh             # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt2_retention.sh               # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt2 --show --size full   # index -> cell
# Grid (full, 6 cells): model [smollm2-135m; MEMLAB_MODELS=a,b to change] x seed [0,1,2]
#   x study_exposures [3, 10] (epochs of study before interference).
# Per cell: study 50 object facts x 5 QA variants + 100 Orhan-style sentences; then one epoch over 5000
#   everyday sentences (make_data.py corpus) from the studied weights (train.py --init_from); QA recall
#   (greedy) and recognition (2AFC) evaluated inside that run at its start (the end of study) and at
#   log-spaced steps (1..10, 20..100, ...), without step checkpoints.
# Plot: runs/expt2/plots/retention_curves.png (table: runs/expt2/tidy_retention.csv)
# Resources below are defaults; SBATCH_* environment variables override them (e.g. SBATCH_GRES=none,
# SBATCH_TIMELIMIT=8:00:00, SBATCH_ARRAY_INX=0-3, SBATCH_PARTITION=gpu).
#SBATCH --job-name=memlab-expt2
#SBATCH --array=0-5
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=06:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=slurm-%x-%A_%a.out
ROOT="${MEMLAB_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
[ -f "$ROOT/scripts/common.sh" ] || { echo "error: submit from the memlab checkout or set MEMLAB_ROOT" >&2; exit 2; }
EXPT=expt2
source "$ROOT/scripts/common.sh"
memlab_main "$@"
