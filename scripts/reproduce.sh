#!/bin/bash
# Reproductions: each published finding memlab is built to test, as one experiment config plus overrides
# sized for a 2-core CPU (docs/REPRODUCTIONS.md gives the claim, the measured table and the verdict).
#   scripts/reproduce.sh --list                    # the names and the command each one runs
#   scripts/reproduce.sh --show NAME [key=value]   # the grid cells it would run (nothing is run)
#   scripts/reproduce.sh NAME [key=value ...]      # run it, without SLURM, then analyze.py
# key=value overrides of configs/<expt>.yaml go after NAME and win over the reproduction's own
# (e.g. `scripts/reproduce.sh unknown_facts seed=0,1,2`).
# Each run goes through the experiment's sbatch template without SLURM (every cell of the grid in turn,
# scripts/common.sh), into ${MEMLAB_RUNS_ROOT:-runs/reproduce}/NAME/<expt>/, and the template ends with
# analyze.py over it (tidy CSVs, summary.txt, plots/). The wall time goes to .../NAME/wall_time.txt.
# A rerun skips finished cells. Environment: MEMLAB_RUNS_ROOT (root of all reproductions), MEMLAB_PYTHON,
# MEMLAB_GRID (the grid size; default: the reproduction's own).
# Exit status: 0 done, 2 bad input (unknown NAME, bad override), else the failing stage's status.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# NAME | experiment | grid size | overrides (space-separated key=value)
REPRODUCTIONS="
recognition_before_recall|expt1|small|
retention|expt2|small|
examples_per_fact|expt3|small|n_facts=15
paraphrase_augmentation|expt3|small|variants=1,5 exposures=10 temperatures=0 repeats=1 n_facts=15
unknown_facts|expt7|small|
lora_rank_modules|expt4|small|modules=q_proj+k_proj,v_proj+o_proj
duplication|expt4|small|rank=16 modules=q_proj+k_proj+v_proj+o_proj canary_copies=1,2,4,8,16,32
context_length|expt5|small|
dpo_after_sft|expt6|small|
"

template_of() {  # expt -> its sbatch template
  case "$1" in
    expt1) echo expt1_exposures.sh ;;          expt2) echo expt2_retention.sh ;;
    expt3) echo expt3_examples_per_fact.sh ;;  expt4) echo expt4_lora_rank_modules.sh ;;
    expt5) echo expt5_context_length.sh ;;     expt6) echo expt6_dpo.sh ;;
    expt7) echo expt7_prior_knowledge.sh ;;
  esac
}

names() { echo "$REPRODUCTIONS" | awk -F'|' 'NF >= 3 {print $1}'; }

lookup() {  # NAME -> sets EXPT SIZE OVERRIDES, or fails
  local line
  line=$(echo "$REPRODUCTIONS" | awk -F'|' -v n="$1" '$1 == n')
  [ -n "$line" ] || return 1
  IFS='|' read -r _ EXPT SIZE OVERRIDES <<<"$line"
  SIZE="${MEMLAB_GRID:-$SIZE}"
}

command_of() {  # the command a reproduction runs (printed by --list and before a run)
  echo "MEMLAB_GRID=$SIZE MEMLAB_RUNS_ROOT=${MEMLAB_RUNS_ROOT:-runs/reproduce}/$1 bash scripts/$(template_of "$EXPT")${OVERRIDES:+ $OVERRIDES}"
}

unknown() {
  echo "error: unknown reproduction '$1'; choose one of: $(names | tr '\n' ' ')(scripts/reproduce.sh --list)" >&2
  exit 2
}

case "${1:-}" in
  ""|-h|--help)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "${1:-}" ] || exit 2
    exit 0 ;;
  --list)
    for n in $(names); do
      lookup "$n"
      printf '%-26s %s\n' "$n" "$(command_of "$n")"
    done
    exit 0 ;;
  --show)
    shift
    [ -n "${1:-}" ] || { echo "error: --show needs a NAME (scripts/reproduce.sh --list)" >&2; exit 2; }
    lookup "$1" || unknown "$1"
    name="$1"; shift
    PY="${MEMLAB_PYTHON:-$ROOT/.venv/bin/python}"
    [ -x "$PY" ] || PY="$(command -v python3)"
    # shellcheck disable=SC2086  # OVERRIDES is a space-separated list of key=value words
    cd "$ROOT" && exec "$PY" scripts/run_task.py "$EXPT" --show --size "$SIZE" $OVERRIDES "$@" ;;
  -*)
    echo "error: unknown option '$1' (use --list, --show NAME or NAME)" >&2; exit 2 ;;
esac

name="$1"; shift
lookup "$name" || unknown "$name"
for a in "$@"; do
  case "$a" in *=*) ;; *) echo "error: '$a' is not a key=value override (e.g. seed=0,1,2)" >&2; exit 2 ;; esac
done
RUNS="${MEMLAB_RUNS_ROOT:-$ROOT/runs/reproduce}/$name"
PY="${MEMLAB_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
# the overrides are checked before anything is created (run_task.py says what is wrong): a refused command
# leaves no empty $RUNS behind; the template creates $RUNS/<expt> when its first task starts
# shellcheck disable=SC2086
"$PY" "$ROOT/scripts/run_task.py" "$EXPT" --count --size "$SIZE" $OVERRIDES "$@" >/dev/null || exit 2
echo "reproduce $name: $(command_of "$name")${*:+ $*}"
start=$(date +%s)
# without SLURM whatever the environment says (a login shell inside an allocation), every cell in turn;
# OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads stall when the machine is shared
# shellcheck disable=SC2086
env -u SLURM_ARRAY_TASK_ID -u SLURM_JOB_ID OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" \
  MEMLAB_GRID="$SIZE" MEMLAB_RUNS_ROOT="$RUNS" MEMLAB_CALLER_DIR="$PWD" \
  bash "$ROOT/scripts/$(template_of "$EXPT")" $OVERRIDES "$@"
rc=$?
secs=$(( $(date +%s) - start ))
wall="$((secs / 60)) min $((secs % 60)) s"
if [ "$rc" -eq 0 ]; then
  mkdir -p "$RUNS"
  printf '%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$wall" "$(command_of "$name")${*:+ $*}" >>"$RUNS/wall_time.txt"
  echo "reproduce $name: done in $wall; results: $RUNS/$EXPT (summary.txt, tidy_*.csv, plots/)"
else
  echo "reproduce $name: failed with status $rc after $wall" >&2
fi
exit "$rc"
