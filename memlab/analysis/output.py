"""Writing the analysis: `write_outputs_atomically` (every output built in a temporary directory, then
moved into the root, so a failed or killed analyze leaves the previous outputs whole), `clean_leftovers`
(what a killed analyze left) and `write_tables` (the CSVs)."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pandas as pd

from memlab.io import DataError, write_csv_atomic, write_text_atomic


def _write_csv_if_changed(path: Path, df: pd.DataFrame) -> None:
    """Atomic CSV write that leaves an identical file untouched (a re-run of a finished sweep, which ends
    with analyze.py, changes no file outside tidy_*, summary.txt and plots/)."""
    text = df.to_csv(index=False)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_text_atomic(path, text)


def write_outputs_atomically(root: Path, build) -> list:
    """Run `build(out)` writing every output into a fresh temporary directory beside them, then move the
    files into `root` (and plots/ as a whole), so a failed or killed analyze leaves the previous outputs, never
    a mix; a full disk or a read-only root is one error. Returns build's result."""
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".analyze-"))
    except OSError as e:
        raise DataError(f"{root}: cannot write the analysis there ({e.strerror or e})") from None
    try:
        result = build(tmp)
        # the moves (milliseconds) run with SIGTERM/SIGINT/SIGHUP held back: one arriving meanwhile acts after the
        # last move, so a signalled analyze leaves the old set or the new one, never a mix (SIGKILL cannot be)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        try:
            _move_into(tmp, root)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return result
    except OSError as e:
        raise DataError(f"{root}: cannot write the analysis ({e.strerror or e}); the previous outputs are "
                        "unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into(tmp: Path, root: Path) -> None:
    """The built outputs from `tmp` into `root`: each file that changed, and plots/ as a whole."""
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            old = root / f.name
            if old.exists() and f.read_bytes() == old.read_bytes():
                continue  # unchanged: left untouched (a finished sweep's re-run changes nothing)
            os.replace(f, old)
    if (tmp / "plots").is_dir():
        if (root / "plots").exists():
            old_plots = root / f".plots-old-{os.getpid()}"
            os.replace(root / "plots", old_plots)
            os.replace(tmp / "plots", root / "plots")
            shutil.rmtree(old_plots, ignore_errors=True)
        else:
            os.replace(tmp / "plots", root / "plots")


def clean_leftovers(root: Path) -> None:
    """Temporary directories of an analyze that was killed (.analyze-*, .plots-old-*) are removed."""
    for p in list(root.glob(".analyze-*")) + list(root.glob(".plots-old-*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)



def write_tables(out: Path, tables: dict[str, pd.DataFrame], facts: dict[str, pd.DataFrame]) -> list[str]:
    """tidy_<name>.csv of each non-empty tidy table, then <name>.csv of each non-empty per-item/per-fact
    table, into `out`, in the tables' order; returns the file names written."""
    written = []
    for name, df in tables.items():
        if not df.empty:
            write_csv_atomic(out / f"tidy_{name}.csv", df)
            written.append(f"tidy_{name}.csv")
    for name, df in facts.items():
        if not df.empty or df.attrs.get("write_empty"):  # a header alone: analysed, nothing found
            _write_csv_if_changed(out / f"{name}.csv", df)
            written.append(f"{name}.csv")
    return written
