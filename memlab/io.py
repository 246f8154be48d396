"""Reading user data and writing results without ever leaving a half-written file behind.

Every user-facing problem raises `DataError` whose message names the file and line (or field) at fault.
Writers go to a temporary sibling and `os.replace` it into place, so a killed job leaves either the old
file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class DataError(ValueError):
    """Bad user input (file, line or field). Scripts print the message and exit with status 2."""


# ----------------------------------------------------------------------------------------------- reading
def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a .jsonl/.json (one object per line), .csv or .txt (one item per non-empty line) file.

    Each row gets `_line` (1-based line number in the file) so later checks can point at it.
    TXT rows are `{"text": line}`; ids are added by `ensure_ids`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .jsonl, .csv or .txt file")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    rows: list[dict] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        for i, row in enumerate(reader, start=2):  # line 1 is the header
            row = {k: v for k, v in row.items() if k is not None}
            row["_line"] = i
            rows.append(row)
    elif suffix == ".txt":
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                rows.append({"text": line.strip(), "_line": i})
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{i}: expected a JSON object per line, got {type(obj).__name__}")
            obj["_line"] = i
            rows.append(obj)
    if not rows:
        raise DataError(f"{path}: file is empty (no rows)")
    return rows


def resolve_text_column(rows: Sequence[dict], path, text_column: str | None = None) -> str:
    """The column holding text: `text_column` if given, else `text`, else the first string column
    (the rule of HF's run_clm example, so a file of `{"sent": ...}` rows works)."""
    columns = [k for k in rows[0] if not k.startswith("_")]
    if text_column:
        if text_column not in columns:
            raise DataError(f"{path}: text column '{text_column}' not found; columns are {columns}")
        return text_column
    if "text" in columns:
        return "text"
    for k in columns:
        if k != "id" and isinstance(rows[0][k], str):
            return k
    raise DataError(f"{path}:{rows[0].get('_line', 1)}: no string column to use as text; columns are {columns}")


def record_columns(rows: Iterable[dict]) -> list[str]:
    """Every field name of `rows` in first-seen order, bookkeeping keys (`_line`) left out."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((k, None) for k in row if not k.startswith("_"))
    return list(seen)


PROBE_COLUMN_FLAGS = ("--answer_column COLUMN and --tier_columns easy=COL,mid=COL,hard=COL "
                      "(one question column per tier)")


def probe_columns_error(path, rows: Sequence[dict], problem: str, then: str = "") -> DataError:
    """The one error for a probes file whose layout is not ours: names the file, what is wrong, the columns
    found and the flags that map them (`then` says what to do with the flags where they belong elsewhere)."""
    return DataError(f"{path}: {problem}; columns are {record_columns(rows)}; pass {PROBE_COLUMN_FLAGS}"
                     + (f" {then}" if then else ""))


def require_answer_column(rows: Sequence[dict], path, answer_column: str = "answer", then: str = "") -> None:
    """Fail with `probe_columns_error` when no row has `answer_column` (a CSV with its own column names);
    a row missing only its value is left to `require_fields`, which names the line."""
    if not any(answer_column in row for row in rows):
        raise probe_columns_error(path, rows, f"no '{answer_column}' column", then)


def require_fields(rows: Iterable[dict], fields: Sequence[str], path) -> None:
    """Fail on the first row missing a field (or holding an empty value), naming file:line and field."""
    for row in rows:
        for f in fields:
            v = row.get(f)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise DataError(f"{path}:{row.get('_line', '?')}: missing field '{f}'")


def ensure_ids(rows: list[dict], path, prefix: str | None = None) -> list[dict]:
    """Give rows without an `id` a stable one (`<stem>-<line>`); fail on duplicate ids."""
    stem = prefix or Path(path).stem
    seen: dict[str, int] = {}
    for row in rows:
        if row.get("id") in (None, ""):
            row["id"] = f"{stem}-{row['_line']}"
        row["id"] = str(row["id"])
        if row["id"] in seen:
            raise DataError(
                f"{path}:{row['_line']}: duplicate id '{row['id']}' (first seen at line {seen[row['id']]})")
        seen[row["id"]] = row["_line"]
    return rows


def read_texts(path, text_column: str | None = None) -> list[dict]:
    """Plain-text items `{"id", "text", ...}` from any supported file, using the text-column rule."""
    rows = read_records(path)
    col = resolve_text_column(rows, path, text_column)
    require_fields(rows, [col], path)
    ensure_ids(rows, path)
    for row in rows:
        row["text"] = str(row[col]).strip()
    return rows


def strip_private(row: dict) -> dict:
    """Drop bookkeeping keys (`_line`) before writing a row out."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


# ----------------------------------------------------------------------------------------------- writing
def check_writable_dir(path) -> Path:
    """Fail early, with the path named, if `path` cannot be created or written."""
    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"output dir {path}: {probe} exists and is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"output dir {path}: {probe} is not writable")
    return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results should be readable like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n"


def write_json_atomic(path, obj: Any) -> None:
    write_text_atomic(path, dumps_json(obj))


def write_jsonl_atomic(path, rows: Iterable[dict]) -> None:
    lines = [json.dumps(strip_private(r), ensure_ascii=False, sort_keys=False) for r in rows]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def write_csv_atomic(path, rows: Sequence[dict] | Any) -> None:
    """Write a list of dicts or a pandas DataFrame as CSV, atomically."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([strip_private(r) for r in rows])
    write_text_atomic(path, df.to_csv(index=False))


def append_jsonl(path, obj: dict) -> None:
    """Append one line (metrics logs); a torn last line is tolerated by `read_metrics`."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_output_dir(path) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it into place only if the block succeeds.

    An existing directory at `path` is replaced as a whole (never mixed old and new files). On error
    the temporary directory is removed and `path` is untouched.
    """
    path = check_writable_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.replace(path, old / "d")
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
