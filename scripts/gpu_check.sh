#!/bin/bash
# Check memlab's GPU paths on this machine in at most 10 minutes, offline; the report goes to
# gpu_check/report.md (figures also in gpu_check/report.json, subprocess logs in gpu_check/logs/).
#   bash scripts/gpu_check.sh                          # every check (bf16 full/LoRA MFU, QLoRA, scoring and
#                                                      #   generation ratios, tiny expt1 grid, ZeRO-2/3, DDP)
#   bash scripts/gpu_check.sh --out /tmp/gc            # the report elsewhere
#   bash scripts/gpu_check.sh --only full,scoring      # a subset; --help lists the checks
# Without a CUDA GPU it prints "no GPU: nothing run" and exits 0, having built nothing and written nothing.
# What each check does, its sizes and tolerances: bench/gpu_check.py's docstring. Record the figures in
# bench/RESULTS.md ("GPU check") with the device and versions the report lists.
# MEMLAB_PYTHON picks the interpreter (default <repo>/.venv/bin/python, else python3).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${MEMLAB_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
cd "$ROOT" || exit 1
# the script keeps its own 9-minute budget and rewrites the report after every check; this is the backstop
exec timeout -k 10 600 "$PY" bench/gpu_check.py "$@"
