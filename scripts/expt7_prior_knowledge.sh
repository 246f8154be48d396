#!/bin/bash
# Experiment 7 — prior knowledge: are known facts learned faster, and contradicting ones slower, than novel?
#   sbatch scripts/expt7_prior_knowledge.sh       # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt7_prior_knowledge.sh         # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt7 --show --size full   # index -> cell
# Grid (full, 6 cells): model [smollm2-135m; MEMLAB_MODELS=a,b to change] x seed [0,1,2]
#   x mode [passive: fact statements, active: exam-style QA].
# Per cell: 40 known (true bank facts), 40 novel (synthetic objects) and 40 contradicting (bank facts with a
#   changed answer) facts x 5 variants, trained together; QA recall of the trained answer before training
#   (exposure 0) and after exposures 1,2,3,5,10, split by fact kind; for contradicting facts also how often
#   the original answer still comes out.
# Plot: runs/expt7/plots/accuracy_by_fact_kind.png (table: runs/expt7/tidy_prior.csv)
# Resources below are defaults; SBATCH_* environment variables override them (e.g. SBATCH_GRES=none,
# SBATCH_TIMELIMIT=8:00:00, SBATCH_ARRAY_INX=0-3, SBATCH_PARTITION=gpu).
#SBATCH --job-name=memlab-expt7
#SBATCH --array=0-5
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=slurm-%x-%A_%a.out
ROOT="${MEMLAB_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
[ -f "$ROOT/scripts/common.sh" ] || { echo "error: submit from the memlab checkout or set MEMLAB_ROOT" >&2; exit 2; }
EXPT=expt7
source "$ROOT/scripts/common.sh"
memlab_main "$@"
