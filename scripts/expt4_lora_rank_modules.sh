#!/bin/bash
# Experiment 4 — LoRA rank x target modules: what can a membership-inference attack detect, and which
# canaries can be extracted, as LoRA capacity and placement change?
#   sbatch scripts/expt4_lora_rank_modules.sh     # the full grid on a SLURM cluster (from the repo root)
#   bash scripts/expt4_lora_rank_modules.sh       # no SLURM: the small grid, every cell in turn
#   python scripts/run_task.py expt4 --show --size full
# Grid (full, 15 cells): model [smollm2-135m] x seed [0] x rank [4,16,64]
#   x modules [q_proj, k_proj, v_proj, o_proj, q_proj+k_proj].
# Per cell: 200 members + 200 non-members (everyday sentences), canaries repeated 1,2,4,8,16,32 times;
#   LoRA fine-tuning; membership inference (every attack the inputs allow, attacks=... to choose; reference =
#   the base; RMIA with reference_models=K) and
#   prefix extraction of the canaries (first half as prompt).
# Plots: runs/expt4/plots/mia_auc_by_rank_module.png, mia_roc.png, mia_score_vs_perplexity.png
# Resources below are defaults; SBATCH_* environment variables override them.
#SBATCH --job-name=memlab-expt4
#SBATCH --array=0-14
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=slurm-%x-%A_%a.out
ROOT="${MEMLAB_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
[ -f "$ROOT/scripts/common.sh" ] || { echo "error: submit from the memlab checkout or set MEMLAB_ROOT" >&2; exit 2; }
EXPT=expt4
source "$ROOT/scripts/common.sh"
memlab_main "$@"
