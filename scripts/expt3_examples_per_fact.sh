#!/bin/bash
# Experiment 3 — examples per fact: do more paraphrased training examples per fact cut recall errors?
#   sbatch scripts/expt3_examples_per_fact.sh     # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt3_examples_per_fact.sh       # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt3 --show --size full   # index -> cell
# Grid (full, 12 cells): model [smollm2-135m; MEMLAB_MODELS=a,b to change] x seed [0,1,2]
#   x variants [5, 10, 25, 50] (paraphrased QA examples per fact).
# Per cell: 50 object facts x variants, 3 epochs; error rate of the final model by probe tier
#   (easy/mid/hard, 2 probes each) x temperature [0, 0.7, 1.0] x 5 repeats.
# Plot: runs/expt3/plots/error_rate_by_variants.png (table: runs/expt3/tidy_error_rates.csv)
# Resources below are defaults; SBATCH_* environment variables override them (e.g. SBATCH_GRES=none,
# SBATCH_TIMELIMIT=8:00:00, SBATCH_ARRAY_INX=0-3, SBATCH_PARTITION=gpu).
#SBATCH --job-name=memlab-expt3
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
EXPT=expt3
source "$ROOT/scripts/common.sh"
memlab_main "$@"
