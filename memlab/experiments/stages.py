"""The stage runner: each stage of a task is one script run into its own run directory.

A stage whose results.json exists (same command line) is skipped, so a requeued or re-run task continues where
it stopped; an unfinished training run resumes; a stage run earlier with other arguments is re-run from
scratch. EXIT_REQUEUE (75, defined once in memlab/rundir.py) means "checkpointed on a signal, rerun me":
train.py exits with it, run_stage raises Preempted on it, run_task.py exits with it again.
"""
from __future__ import annotations

import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from memlab.experiments.config import ROOT
from memlab.rundir import EXIT_REQUEUE  # a stage checkpointed on a signal; rerun the task to resume


# ------------------------------------------------------------------------------------------- stages
class Preempted(RuntimeError):
    """A stage exited with EXIT_REQUEUE: its state is saved; the task should be requeued."""


def _launcher(script: str) -> list[str]:
    """`python SCRIPT`, or `accelerate launch ...` for training when MEMLAB_NUM_PROCESSES > 1 (a multi-GPU
    node); MEMLAB_LAUNCH overrides the whole prefix."""
    if os.environ.get("MEMLAB_LAUNCH"):
        return shlex.split(os.environ["MEMLAB_LAUNCH"]) + [script]
    n = int(os.environ.get("MEMLAB_NUM_PROCESSES", "1"))
    if n > 1 and script in ("train.py", "finetune_dpo.py"):
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "accelerate_config.yaml"), "--num_processes", str(n), script]
    return [sys.executable, script]


def _recorded_argv_matches(out_dir: Path, argv: list[str]) -> bool:
    """Whether the stage's config.json records this command line (its leading part: extra flags such as
    --resume come after). A config.json from before argv was recorded counts as a match."""
    try:
        recorded = json.loads((out_dir / "config.json").read_text(encoding="utf-8")).get("argv")
    except (OSError, ValueError):
        return False
    return recorded is None or recorded[:len(argv)] == argv


def _end_with_parent(parent: int) -> None:
    """In a stage's process, before it starts: the kernel sends it SIGTERM when run_task.py (pid `parent`) dies,
    however it dies (SIGKILL included), so a killed task never leaves a stage running on (it saves its resume
    state and exits 75, as on a pre-emption). Linux's prctl(PR_SET_PDEATHSIG); elsewhere nothing. A parent that
    died between the fork and the prctl would send nothing: then the stage ends before it starts."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)


def run_stage(script: str, args: list, out_dir: Path, log=None) -> Path:
    """Run one script into `out_dir` unless it already finished there with the same arguments (results.json
    exists and config.json records this command line; for make_data, manifest.json exists). A stage run
    earlier with other arguments is re-run with --overwrite_output_dir (emptied, never merged); an
    unfinished training run with the same arguments resumes. SIGTERM/SIGUSR1 reaching this process are
    passed on to the stage; if this process is killed outright, the stage gets SIGTERM (`_end_with_parent`)."""
    argv = [str(a) for a in args] + ["--output_dir", str(out_dir)]
    cmd = _launcher(script) + argv
    if script == "train.py" and os.environ.get("MEMLAB_TRAIN_ARGS"):  # extra train.py flags (tests, tuning)
        cmd += shlex.split(os.environ["MEMLAB_TRAIN_ARGS"])
    if script == "make_data.py":
        if (out_dir / "manifest.json").exists():
            return out_dir
    elif (out_dir / "config.json").exists():  # read once: same arguments finish or resume, others re-run
        if not _recorded_argv_matches(out_dir, argv):
            print(f"{out_dir}: run earlier with other arguments; re-running it from scratch", flush=True)
            cmd.append("--overwrite_output_dir")
        elif (out_dir / "results.json").exists():
            return out_dir
        elif script == "train.py":
            cmd.append("--resume")
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    parent = os.getpid()
    proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=lambda: _end_with_parent(parent))
    forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if rc == EXIT_REQUEUE:
        raise Preempted(f"{script} checkpointed on a signal; rerun the task to resume")
    if rc != 0:
        raise RuntimeError(f"{script} failed with exit status {rc}: {' '.join(cmd)}")
    return out_dir


def checkpoint_glob(train_dir: Path, prefix: str = "exposure_") -> str:
    return str(train_dir / "checkpoints" / f"{prefix}*")


def summarize_stages(stages: dict[str, Path]) -> dict:
    """The task's results.json: each stage's results.json, keyed by stage name."""
    return {name: json.loads((path / "results.json").read_text()) for name, path in stages.items()}
