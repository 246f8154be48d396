#!/bin/bash
# Experiment 1 — exposures: how many exposures until a model recalls (and recognizes) a new fact?
#   sbatch scripts/expt1_exposures.sh             # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt1_exposures.sh               # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt1 --show --size full   # index -> cell
#   sbatch scripts/expt1_exposures.sh model=/models/Llama-3.2-1B lr_full=1e-5 seed=0,1,2   # key=value
#     overrides of configs/expt1.yaml (grid axes and settings; the same after bash or run_task.py)
# Grid (full, 12 cells): model [smollm2-135m; MEMLAB_MODELS=a,b to change] x seed [0,1,2]
#   x method [full, lora] x mode [passive: fact statements, active: exam-style QA].
# Per cell: 50 object facts x 5 variants + 100 Orhan-style sentences, 10 exposures, every exposure
#   evaluated inside training (no checkpoints): QA recall by tier (easy/mid/hard reworded, verbatim) x
#   temperature, recognition (2AFC, AUC) of the sentences; knownness of each fact before training (SliCK).
# Plots: runs/expt1/plots/recall_recognition_vs_exposures.png, learning_ecdf.png, learning_by_knownness.png
# Tables: runs/expt1/summary.txt, tidy_recall.csv, per_item.csv, learning.csv
# Resources below are defaults; SBATCH_* environment variables override them (e.g. SBATCH_GRES=none,
# SBATCH_TIMELIMIT=8:00:00, SBATCH_ARRAY_INX=0-3, SBATCH_PARTITION=gpu).
#SBATCH --job-name=memlab-expt1
#SBATCH --array=0-11
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=slurm-%x-%A_%a.out
ROOT="${MEMLAB_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
[ -f "$ROOT/scripts/common.sh" ] || { echo "error: submit from the memlab checkout or set MEMLAB_ROOT" >&2; exit 2; }
EXPT=expt1
source "$ROOT/scripts/common.sh"
memlab_main "$@"
