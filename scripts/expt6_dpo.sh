#!/bin/bash
# Experiment 6 — DPO after SFT: does preference optimisation repair the facts the model got wrong, and
# does it change what a membership-inference attack detects?
#   sbatch scripts/expt6_dpo.sh                   # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt6_dpo.sh                     # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt6 --show --size full
# Grid (full, 6 cells): model [smollm2-135m] x seed [0,1,2] x method [full, lora].
# Per cell: SFT on 50 facts x 5 QA variants + 100 member sentences; DPO (sigmoid, beta 0.1, reference =
#   the frozen SFT model) on the facts' pairs (chosen = true answer, rejected = distractor); QA recall by
#   tier and membership inference (reference = the base model) on the SFT and the DPO checkpoints.
# Plot: runs/expt6/plots/dpo_before_after.png
# Resources below are defaults; SBATCH_* environment variables override them.
#SBATCH --job-name=memlab-expt6
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
EXPT=expt6
source "$ROOT/scripts/common.sh"
memlab_main "$@"
