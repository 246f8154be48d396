# Shared body of the sbatch templates (sourced, not run). The template sets EXPT and calls
# `memlab_main "$@"`: its arguments are key=value overrides of configs/$EXPT.yaml (size=tiny, seed=0,1,2,
# lr_full=1e-5, ...), passed on to every task (scripts/run_task.py).
#
# Under SLURM (SLURM_ARRAY_TASK_ID set): runs the array task's cell of the `full` grid (MEMLAB_GRID
# overrides), passes SIGUSR1/SIGTERM (sent before the time limit by `#SBATCH --signal=B:USR1@120`) to
# the training step, which checkpoints and exits 75; the task then requeues itself and resumes from the
# newest checkpoint when it runs again; the array's first task logs the cells no index covers, and an
# index past the grid is an error (`python scripts/submit.py EXPT key=value ...` sizes the array from the
# grid). Without SLURM: runs every cell of the `small` grid in turn.
# Either way it ends with analyze.py over the experiment's runs. Environment knobs:
#   MEMLAB_RUNS_ROOT (default <repo>/runs), MEMLAB_GRID (full|small|tiny), MEMLAB_MODELS (a,b: model axis),
#   MEMLAB_TASKS (without SLURM: which cells, e.g. '0 3'),
#   MEMLAB_PYTHON (default <repo>/.venv/bin/python), MEMLAB_NUM_PROCESSES (GPUs per task; default: the
#   GPUs SLURM gave the job), MEMLAB_LAUNCH (full launcher prefix, e.g. for several nodes).
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${MEMLAB_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
RUNS_ROOT="${MEMLAB_RUNS_ROOT:-$ROOT/runs}"
export MEMLAB_CALLER_DIR="${MEMLAB_CALLER_DIR:-$PWD}"  # relative data-file overrides are taken from here
cd "$ROOT" || exit 1

memlab_run_one() {  # $1 = array index; runs the task in the background so traps fire at once
  local child rc
  local index="$1"; shift
  "$PY" scripts/run_task.py "$EXPT" --index "$index" --runs_root "$RUNS_ROOT" --size "$SIZE" "$@" &
  child=$!
  trap 'kill -USR1 "$child" 2>/dev/null' USR1
  trap 'kill -TERM "$child" 2>/dev/null' TERM
  wait "$child"; rc=$?
  while [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
  trap - USR1 TERM
  return "$rc"
}

memlab_main() {
  local rc=0
  if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    SIZE="${MEMLAB_GRID:-full}"
    if [ -z "${MEMLAB_NUM_PROCESSES:-}" ] && [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
      export MEMLAB_NUM_PROCESSES="$SLURM_GPUS_ON_NODE"
    fi
    if [ "${SLURM_NNODES:-1}" -gt 1 ] && [ -z "${MEMLAB_LAUNCH:-}" ]; then
      head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
      export MEMLAB_LAUNCH="srun --ntasks-per-node=1 $PY -m torch.distributed.run --nnodes=$SLURM_NNODES \
--nproc_per_node=${MEMLAB_NUM_PROCESSES:-1} --rdzv_backend=c10d --rdzv_endpoint=$head:29500 --rdzv_id=$SLURM_JOB_ID"
    fi
    echo "memlab $EXPT: array task $SLURM_ARRAY_TASK_ID of grid '$SIZE' on $(hostname)"
    if [ "$SLURM_ARRAY_TASK_ID" = "${SLURM_ARRAY_TASK_MIN:-}" ]; then  # the first task says what the array misses
      "$PY" scripts/run_task.py "$EXPT" --size "$SIZE" "$@" \
        --coverage "${SLURM_ARRAY_TASK_MIN}-${SLURM_ARRAY_TASK_MAX:-$SLURM_ARRAY_TASK_MIN}:${SLURM_ARRAY_TASK_STEP:-1}#${SLURM_ARRAY_TASK_COUNT:-}"
    fi
    memlab_run_one "$SLURM_ARRAY_TASK_ID" "$@"; rc=$?
    if [ "$rc" -eq 75 ]; then  # EXIT_REQUEUE (memlab/rundir.py): checkpointed on a signal
      echo "memlab $EXPT: preempted, state saved; requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
      scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
      exit 0
    fi
  else
    SIZE="${MEMLAB_GRID:-small}"
    n=$("$PY" scripts/run_task.py "$EXPT" --count --size "$SIZE" "$@") || exit 2
    tasks="${MEMLAB_TASKS:-$(seq -s ' ' 0 $((n - 1)))}"
    echo "memlab $EXPT: no SLURM; running cells [${tasks}] of the $n in grid '$SIZE' in turn"
    for i in ${tasks//,/ }; do
      memlab_run_one "$i" "$@"; rc=$?
      [ "$rc" -eq 0 ] || break
    done
  fi
  [ "$rc" -eq 0 ] || exit "$rc"
  # every task ends with the analysis; results are written atomically, so concurrent tasks are safe and
  # the last task to finish leaves the complete plots
  "$PY" analyze.py "$RUNS_ROOT/$EXPT" --skip_broken  # a damaged file elsewhere: a warning, not a failed task
}
