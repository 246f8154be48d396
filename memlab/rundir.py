"""The run-directory contract shared by every script (config.json, metrics.jsonl, results.json,
items.csv, checkpoints/, plots/)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from memlab.io import DataError, check_writable_dir, write_json_atomic

# The exit status of a run that checkpointed on a signal (SIGTERM/SIGUSR1: a pre-emption, a time limit) and
# saved its resume state: "rerun me" (EX_TEMPFAIL). train.py exits with it; the stage runner
# (memlab/experiments/stages.py) turns it into a requeue; scripts/common.sh, in bash, tests for its value, 75.
EXIT_REQUEUE = 75

TRACKED_PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "numpy", "pandas", "trl",
                    "deepspeed")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    from memlab import __version__
    out["memlab"] = __version__
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# arguments that do not change what a run computes: a run directory written with other values of these is
# still "the same configuration" for the output-directory rule
RESULT_NEUTRAL_ARGS = {"output_dir", "overwrite_output_dir", "config", "resume", "report_to", "run_name",
                       "logging_steps", "debug_signal_at_step"}

# output directories this process created (or found empty): removed again when it stops on bad input
_NEW_OUTPUT_DIRS: list[tuple[Path, bool]] = []  # (dir, existed before: then only emptied)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _describe(out: Path) -> str:
    """What an existing, non-empty directory holds, in words, for the refusal message."""
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            cfg = None
        if isinstance(cfg, dict) and cfg.get("script"):
            state = "finished" if (out / "results.json").exists() else "unfinished"
            return f"{'an' if state == 'unfinished' else 'a'} {state} run of {cfg['script']}"
        if isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg):
            return f"a model (config.json with model_type {cfg.get('model_type')!r})"
    if (out / "adapter_config.json").exists():
        return "a LoRA adapter (adapter_config.json)"
    if (out / "manifest.json").exists():
        return "a make_data.py dataset (manifest.json)"
    names = sorted(p.name for p in out.iterdir())
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} memlab did not write ({', '.join(names[:5])}" \
           f"{', ...' if len(names) > 5 else ''})"


# ------------------------------------------------------------------------------------------------ locks
# One writer per directory: an exclusive fcntl lock on PARENT/.NAME.memlab.lock (beside the directory, so
# emptying the directory never removes it), held for the process's lifetime. fcntl rather than filelock:
# the lock file also records the holder (pid, host, start time) for the refusal message and the
# take-over line, and the kernel releases it when the holder dies, so a stale lock is simply free.
_HELD: dict[str, Any] = {}


def lock_path(directory) -> Path:
    d = Path(directory).expanduser().resolve()
    return d.parent / f".{d.name}.memlab.lock"


def lock_dir(directory, wait_s: float = 0.0) -> None:
    """Take the exclusive lock of `directory` for this process (re-entrant within it); DataError naming the
    holder when another live process has it; a lock left by a dead process is taken over, said in one line.
    The lock file is removed on release, so a finished run leaves none; a writer that locked a file another
    one removed meanwhile (the inode no longer at the path) tries again. `wait_s` > 0: wait up to that long
    for the holder to finish (analyze.py, which every array task of a sweep runs at its end), saying so once."""
    import fcntl
    import time

    path = lock_path(directory)
    if str(path) in _HELD:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline, said = time.time() + wait_s, False
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if time.time() < deadline:
                if not said:
                    print(f"note: {Path(directory)} is being written by {holder}: waiting for it", file=sys.stderr)
                    said = True
                time.sleep(0.5)
                continue
            raise DataError(f"{Path(directory)} is being written by {holder} (lock {path}); one writer per "
                            "directory: wait for it to finish, or choose another directory") from None
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()  # the previous holder removed this file as we opened it: lock the current one
    f.seek(0)
    previous = f.read().strip()
    if previous:
        print(f"note: {Path(directory)}: taking over the lock left by {previous}, which is no longer running",
              file=sys.stderr)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {_dt.datetime.now().isoformat(timespec='seconds')}\n")
    f.flush()
    _HELD[str(path)] = f


def release_locks() -> None:
    """Release this process's directory locks (the end of a script; a process exit releases them too, but
    leaves the file naming the dead holder). The lock file is removed while still locked, so the next writer
    finds none."""
    import fcntl

    for path, f in list(_HELD.items()):
        try:
            Path(path).unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        except OSError:
            pass
        _HELD.pop(path, None)


def empty_dir(out: Path) -> None:
    """Remove everything inside `out` (the directory itself stays)."""
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def differences(old: dict, new: dict, skip=(), prefix: str = "") -> list[str]:
    """'key: old -> new' for every key whose value differs, nested dicts as dotted keys, missing keys shown
    as <unset>; keys in `skip` are left out. The one formatter of every "what changed" message (output
    directories, --resume, sweep roots, cell settings)."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        if k in skip:
            continue
        a, b = old.get(k, "<unset>"), new.get(k, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, (), f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def input_paths(args: Any, skip=("output_dir", "runs_root")) -> list[Path]:
    """Every existing file or directory an argument names (comma lists and lists included): the inputs an
    output directory must neither contain nor lie inside."""
    values = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args or {})
    out = []
    for name, v in values.items():
        if name in skip or not v:
            continue
        for part in (v if isinstance(v, (list, tuple)) else [v]):
            if not isinstance(part, (str, Path)):
                continue
            for piece in ([str(part)] + (str(part).split(",") if "," in str(part) else [])):
                p = Path(piece.strip()).expanduser()
                if piece.strip() and not any(c in piece for c in "*?[") and p.exists():
                    out.append(p)
    return out


def check_inputs_outside(output_dir, args: Any, flag: str = "--output_dir") -> None:
    """An output directory that holds an input of the same command, or lies inside an input directory, is
    refused before anything is written or emptied (paths compared resolved, symlinks followed)."""
    out = Path(output_dir).expanduser().resolve()
    for p in input_paths(args):
        r = p.resolve()
        if r == out or out in r.parents:
            raise DataError(f"{flag} {output_dir} holds an input of this command ({p}): writing there could delete "
                            "it; choose another output directory")
        if r.is_dir() and r in out.parents:
            raise DataError(f"{flag} {output_dir} lies inside an input directory ({p}); choose an output directory "
                            "outside it")


def guard_output_dir(output_dir, script: str, args: Any, overwrite: bool = False, main_process: bool | None = None) -> str:
    """The one output-directory rule of every script, run before any model is loaded.

    - a new or empty directory is used ("new"; removed again if the script then stops on bad input);
    - a directory `script` wrote earlier with the same configuration (config.json's arguments equal,
      `RESULT_NEUTRAL_ARGS` aside) is reused ("same": the caller resumes or re-runs it; prepare_run_dir
      removes the old results.json first, so an interrupted rerun never looks finished);
    - anything else — a run with another configuration, another script's run, a model, a dataset, files
      memlab did not write — is refused with one error naming what is there, unless `overwrite`
      (--overwrite_output_dir), which empties it first (never merges) and returns "new".
    Only the main process (`main_process`, default: RANK 0 of a launcher, or a lone process) checks and acts;
    the others return "new" at once (they never create or empty the directory)."""
    if main_process is None:
        main_process = int(os.environ.get("RANK", "0")) == 0
    if not main_process:
        return "new"
    out = check_writable_dir(output_dir)
    check_inputs_outside(output_dir, args)
    lock_dir(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        _NEW_OUTPUT_DIRS.append((out, out.exists()))
        return "new"
    if out.resolve() in {Path.cwd().resolve(), Path.home().resolve(), Path("/")} or \
            out.resolve() in Path.cwd().resolve().parents:
        raise DataError(f"--output_dir {out}: is the current, home or root directory (or above the current one); "
                        "give a directory of its own")
    what = _describe(out)
    if what.endswith(f"run of {script}"):
        recorded = json.loads((out / "config.json").read_text(encoding="utf-8")).get("args", {})
        now = _jsonable(dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args))
        diff = differences(recorded, now, skip=RESULT_NEUTRAL_ARGS)
        if not diff:
            return "same"
        what += f" with a different configuration (differing: {'; '.join(diff)})"
    if overwrite:
        print(f"--overwrite_output_dir: emptying {out} ({what})", file=sys.stderr, flush=True)
        empty_dir(out)
        _NEW_OUTPUT_DIRS.append((out, True))
        return "new"
    raise DataError(f"--output_dir {out} holds {what}; {script} writes only into a new or empty directory or "
                    f"its own run with the same configuration: choose another --output_dir, or pass "
                    f"--overwrite_output_dir to empty it first")


def file_digest(path) -> str:
    """sha256 of a file's bytes (the data fingerprint `--resume` checks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_data_unchanged(output_dir, fingerprints: dict[str, str]) -> None:
    """`--resume` continues the run config.json describes only if its data files are byte-identical to the
    ones it started with (config.json's data_fingerprints); otherwise one error naming the file."""
    try:
        recorded = json.loads((Path(output_dir) / "config.json").read_text(encoding="utf-8")).get("data_fingerprints")
    except (OSError, ValueError):
        return
    for path, digest in fingerprints.items():
        old = (recorded or {}).get(path)
        if old is not None and old != digest:
            raise DataError(f"--resume: {path} changed since {output_dir} started (sha256 {old[:12]}… -> "
                            f"{digest[:12]}…); the resumed run would mix two datasets: restore the file, or start "
                            f"over (another --output_dir, or --overwrite_output_dir)")


def forget_new_output() -> None:
    """Start of one script invocation (cli.run): no output directory is this invocation's yet."""
    _NEW_OUTPUT_DIRS.clear()


def discard_new_output() -> None:
    """Remove what this invocation wrote into output directories it created (or found empty), after bad
    input stopped it: nothing is left behind. Directories it found with content are never touched, nor is
    one that already holds a saved checkpoint or resume state (a disk-full error mid-training keeps the
    checkpoints written before it, so the run can be resumed where there is space)."""
    while _NEW_OUTPUT_DIRS:
        out, existed = _NEW_OUTPUT_DIRS.pop()
        saved = (out / "resume").is_dir() or any(not p.name.startswith(".") for p in (out / "checkpoints").glob("*"))
        if out.is_dir() and not saved:
            if existed:
                empty_dir(out)
            else:
                shutil.rmtree(out, ignore_errors=True)


def prepare_run_dir(output_dir, args: Any, script: str, extra: dict | None = None) -> Path:
    """Create `output_dir` (with checkpoints/ and plots/ left to the scripts that need them) and write
    config.json: every resolved argument, the command line, package versions, git commit, seed, host and
    start time. A previous results.json (the "finished" mark) is removed first, atomically, so a rerun
    killed at any point never leaves a directory that looks finished."""
    out = check_writable_dir(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"output dir {out}: cannot create ({e.strerror})") from None
    (out / "results.json").unlink(missing_ok=True)
    config = {
        "script": script,
        "args": dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args),
        "argv": list(sys.argv[1:]),
        "seed": getattr(args, "seed", None),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    config.update(extra or {})
    write_json_atomic(out / "config.json", config)
    return out


def write_results(output_dir, results: dict) -> None:
    """results.json is written last and atomically: its presence means the run finished."""
    write_json_atomic(Path(output_dir) / "results.json", results)


def read_metrics(path) -> list[dict]:
    """metrics.jsonl rows; a torn last line (job killed mid-write) is skipped."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
