"""The run-directory contract shared by every script (config.json, metrics.jsonl, results.json,
items.csv, checkpoints/, plots/)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from memlab.io import DataError, check_writable_dir, write_json_atomic

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


def prepare_run_dir(output_dir, args: Any, script: str, extra: dict | None = None) -> Path:
    """Create `output_dir` (with checkpoints/ and plots/ left to the scripts that need them) and write
    config.json: every resolved argument, package versions, git commit, seed, host and start time."""
    out = check_writable_dir(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"output dir {out}: cannot create ({e.strerror})") from None
    config = {
        "script": script,
        "args": dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args),
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
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
