#!/bin/bash
# Experiment 5 — context length: how much of a trained document does a model need to reproduce the rest?
#   sbatch scripts/expt5_context_length.sh        # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt5_context_length.sh          # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt5 --show --size full   # index -> cell
# Grid (full, 9 cells): model [smollm2-135m; MEMLAB_MODELS=a,b to change] x seed [0,1,2]
#   x doc_tokens [128, 256, 512] (document length in tokens).
# Per cell: 50 ID documents ([DOC_n] ... closing ID, make_data.py documents); checkpoints after exposures
#   1,3,10; greedy continuation from the first 8,16,32,64,96 tokens, scored on the continuation: token
#   accuracy, exact match, and whether the document's ID comes back (id_recalled).
# Plot: runs/expt5/plots/recall_vs_prefix_length.png (table: runs/expt5/tidy_prefix.csv)
# Resources below are defaults; SBATCH_* environment variables override them (e.g. SBATCH_GRES=none,
# SBATCH_TIMELIMIT=8:00:00, SBATCH_ARRAY_INX=0-3, SBATCH_PARTITION=gpu).
#SBATCH --job-name=memlab-expt5
#SBATCH --array=0-8
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=slurm-%x-%A_%a.out
ROOT="${MEMLAB_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
[ -f "$ROOT/scripts/common.sh" ] || { echo "error: submit from the memlab checkout or set MEMLAB_ROOT" >&2; exit 2; }
EXPT=expt5
source "$ROOT/scripts/common.sh"
memlab_main "$@"
