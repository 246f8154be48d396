"""Reading user data and writing results without ever leaving a half-written file behind.

Its length (~470 lines): every reader of user data and every atomic writer, so that the DataError wording
and the write-then-rename rule live in one module.

Every user-facing problem raises `DataError` whose message names the file and line (or field) at fault.
Writers go to a temporary sibling and `os.replace` it into place, so a killed job leaves either the old
file or the new one, never a torn one.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class DataError(ValueError):
    """Bad user input (file, line or field). Scripts print the message and exit with status 2."""


# ----------------------------------------------------------------------------------------------- reading
class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NonFinite(name)


def loads_strict(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (Python's json accepts them; JSON does not): a
    NaN answer would be scored as the string "nan", an infinite count would crash later. Raises ValueError
    naming the constant."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _NonFinite as e:
        raise ValueError(f"{e} is not a JSON number (a missing value is null, or leave the field out)") from None


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a .jsonl/.json (one object per line), .csv or .txt (one item per non-empty line) file.

    Each row gets `_line` (1-based line number in the file) so later checks can point at it.
    TXT rows are `{"text": line}`; ids are added by `ensure_ids`.
    Files must be UTF-8 (a leading byte-order mark, as Excel writes, is dropped); lines end at "\n", "\r\n" or
    a lone "\r" (old Mac files), so a text holding U+2028 or NEL stays one line. CSV is parsed
    strictly: an unmatched quote or a row with more fields than the header is an error naming the line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .jsonl, .csv or .txt file")
    suffix = path.suffix.lower()
    text = decode_text(path.read_bytes(), path)
    rows: list[dict] = []
    if suffix == ".csv":
        rows = _read_csv(text, path)
    elif suffix == ".txt":
        for i, line in enumerate(_lines(text), start=1):
            if line.strip():
                rows.append({"text": line.strip(), "_line": i})
    else:
        for i, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            try:
                obj = loads_strict(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: malformed JSON ({e.msg.removesuffix(' at')} at column "
                                f"{e.colno})") from None
            except ValueError as e:
                raise DataError(f"{path}:{i}: {e}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{i}: expected a JSON object per line, got {type(obj).__name__}")
            obj["_line"] = i
            rows.append(obj)
    if not rows:
        raise DataError(f"{path}: file is empty (no rows)")
    return rows


def yaml_problem(e: Exception) -> str:
    """A YAML parse error in one line, 'line L, column C: problem (context)' (PyYAML's own text spans several
    lines and quotes the offending line); any other error's text with its line breaks folded."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        context = getattr(e, "context", None)
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
    return " ".join(str(e).split())


def decode_text(data: bytes, path) -> str:
    """`data` decoded as UTF-8, a leading BOM dropped; DataError naming file:line, the byte and its column
    otherwise (a Latin-1 or Windows-1252 file, typically)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        ends = list(re.finditer(rb"\r\n|\r|\n", data[:e.start]))  # the line ends `_lines` splits at
        line_start = ends[-1].end() if ends else 0
        line = len(ends) + 1
        column = len(data[line_start:e.start].decode("utf-8", errors="replace")) + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
                        "save the file as UTF-8") from None


_LINE_END = re.compile(r"\r\n|\r|\n")


def _lines(text: str) -> list[str]:
    """Lines split at line ends, "\n", "\r\n" or a lone "\r" (old Mac files; Python's universal newlines, as the
    CSV reader splits them), not at U+2028, NEL and the other characters str.splitlines also splits at, which a
    JSON string may hold raw; line numbers agree with any editor's."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _quote_opened_at(lines: Sequence[str], first: int) -> int:
    """Line number (counting from `first`) where the last quoted field still open at the end of `lines` (the
    physical lines of one CSV record) was opened: a quote opens a field only at its start."""
    opened, in_quotes = first, False
    for n, line in enumerate(lines, start=first):
        i, at_field_start = 0, True
        while i < len(line):
            ch = line[i]
            if in_quotes:
                if ch == '"':
                    if i + 1 < len(line) and line[i + 1] == '"':
                        i += 1
                    else:
                        in_quotes = False
            elif ch == '"' and at_field_start:
                in_quotes, opened = True, n
            at_field_start = not in_quotes and ch == ","
            i += 1
    return opened


def _read_csv(text: str, path) -> list[dict]:
    """Rows of a CSV file as dicts keyed by the header, each with `_line` (where its record starts)."""
    physical = _lines(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, rows = None, []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            end = reader.line_num
            opened = _quote_opened_at(physical[start - 1:end], start)
            if "field larger than field limit" in str(e):
                raise DataError(f"{path}:{opened}: a field longer than {csv.field_size_limit()} characters starts "
                                'here; usually an unmatched quote (") on this line (if the text really is that '
                                "long, give the file as JSONL)") from None
            if "unexpected end of data" in str(e):
                raise DataError(f'{path}:{opened}: unterminated quoted field: the quote (") opened on this line is '
                                "never closed, so every later line would be read into this field; close the quote, "
                                'or double a quote that is part of the text ("")') from None
            if "expected after" in str(e) and end > opened:
                raise DataError(f'{path}:{opened}: malformed CSV quoting: the quoted field opened on this line runs '
                                f'to line {end} and has text after its closing quote ({e}); check for an unmatched '
                                'quote (") on this line') from None
            if "expected after" in str(e):
                raise DataError(f'{path}:{end}: malformed CSV quoting ({e}); a field holding a quote (") must be '
                                'quoted as a whole, with its quotes doubled ("")') from None
            raise DataError(f"{path}:{end}: malformed CSV ({e})") from None
        if not record:
            continue  # a blank line
        if header is None:
            header = record
            continue
        if len(record) > len(header):
            raise DataError(f"{path}:{start}: row has {len(record)} fields, the header has {len(header)} "
                            f"({', '.join(header)}); quote a field that holds a comma")
        row = dict(zip(header, record))
        row.update((k, None) for k in header[len(record):])
        row["_line"] = start
        rows.append(row)
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


def parse_tier_columns(spec: str | None) -> dict[str, str]:
    """The one reader of --tier_columns: 'easy=q1,mid=q2' -> {"easy": "q1", "mid": "q2"}.

    Rule: the spec is split on ','; blank parts are skipped (an empty or None spec gives {}). Each other part
    must be `tier=column`, split at its first '=' (a column name may itself hold '='), with both sides
    non-empty after stripping surrounding whitespace (inner spaces are kept: 'easy=Question 1'). Anything
    else is a DataError naming the part. A tier named twice keeps its last column. Which tier names are
    allowed, and whether the columns exist, is checked by the caller that reads the file."""
    out = {}
    for part in (p.strip() for p in str(spec or "").split(",") if p.strip()):
        tier, sep, col = (s.strip() for s in part.partition("="))
        if not sep or not tier or not col:
            raise DataError(f"--tier_columns: expected tier=column pairs like easy=q_easy,mid=q_mid, got '{part}'")
        out[tier] = col
    return out


def invisible_only(text: str) -> bool:
    """Whether `text` has no visible character: only whitespace, control characters (Cc) and format
    characters (Cf: U+200B ZERO WIDTH SPACE, U+200D ZERO WIDTH JOINER, U+2060 WORD JOINER, U+FEFF, U+00AD
    SOFT HYPHEN, ...). True for '' as well."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def text_field_error(row: dict, field: str, path) -> DataError | None:
    """The one rule for a field holding text (the text column, prompt, completion, question): a JSON string
    with a visible character in it. None when `row[field]` is such a string; otherwise the error, naming
    file:line and field: 'missing field' for an absent, null or blank value, 'no visible character' for a
    string of zero-width or other invisible characters only (`invisible_only`: it would be scored or trained
    as a text nobody can read), 'must be a string' for a number, bool, list or object (CSV values are
    always strings)."""
    v = row.get(field)
    if isinstance(v, str):
        if not v.strip():
            return DataError(f"{path}:{row.get('_line', '?')}: missing field '{field}'")
        if invisible_only(v):
            shown = ", ".join(dict.fromkeys(f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".strip()
                                            for ch in v if not ch.isspace()))
            return DataError(f"{path}:{row.get('_line', '?')}: field '{field}' has no visible character (only "
                             f"{shown}); give the text, or leave the row out")
        return None
    if v is None:
        return DataError(f"{path}:{row.get('_line', '?')}: missing field '{field}'")
    shown = json.dumps(v, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    fix = "quote it in the file" if isinstance(v, (bool, int, float)) else "give the text as one string"
    return DataError(f"{path}:{row.get('_line', '?')}: field '{field}' must be a string, "
                     f"got {type(v).__name__} ({shown}); {fix}")


def require_fields(rows: Iterable[dict], fields: Sequence[str], path, text: bool = False) -> None:
    """Fail on the first row missing a field (or holding an empty value), naming file:line and field.
    With `text`, the fields hold text and follow `text_field_error`'s rule (a string, not a number)."""
    for row in rows:
        for f in fields:
            if text:
                err = text_field_error(row, f, path)
                if err is not None:
                    raise err
                continue
            v = row.get(f)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise DataError(f"{path}:{row.get('_line', '?')}: missing field '{f}'")


ROLES = ("system", "user", "assistant")


def validate_messages(messages, where: str) -> list[dict]:
    """`messages` as a clean list of `{"role", "content"}`; DataError naming `where` (file:line) otherwise.
    The one chat rule, shared by make_data.py convert --to chat and train.py: every content a non-empty
    string, roles system/user/assistant, at least one assistant message."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
    clean = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(f"{where}: messages[{j}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: messages[{j}].role is {role!r}, expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: messages[{j}].content must be a non-empty string")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in clean):
        raise DataError(f"{where}: no assistant message (nothing to train on)")
    return clean


def ensure_ids(rows: list[dict], path, prefix: str | None = None, across: dict | None = None) -> list[dict]:
    """Give rows without an `id` a stable one (`<stem>-<line>`); fail on duplicate ids, except rows repeated on
    purpose and declared so: rows sharing an id that all carry a `copies` column equal to how many rows share
    it (the LoRA study's canaries) become `<id>`, `<id>#2`, ... with `copy_of` = the shared id and `copy`
    = 1, 2, ...; a `copies` value that disagrees with the rows present is an error.

    `across`: for files read together as one data set (train.py's --train_file a,b): {id: (path, line)} of
    the files read before, updated with this file's ids; an id given in an earlier file is an error naming
    both places. Only ids written in the files count: the `<stem>-<line>` ids made here (two files with one
    name in different folders) are not the user's and never clash."""
    stem = prefix or Path(path).stem
    given = set()
    for row in rows:
        if row.get("id") in (None, ""):
            row["id"] = f"{stem}-{row['_line']}"
        else:
            given.add(id(row))
        row["id"] = str(row["id"])
    if any("copies" in r for r in rows):
        _number_copies(rows, path)
    seen: dict[str, int] = {}
    for row in rows:
        if row["id"] in seen:
            raise DataError(
                f"{path}:{row['_line']}: duplicate id '{row['id']}' (first seen at line {seen[row['id']]}); rows "
                "repeated on purpose (canary copies) declare it with a `copies` column equal to their count")
        seen[row["id"]] = row["_line"]
    if across is not None:
        for row in rows:
            if id(row) not in given:
                continue
            if row["id"] in across:
                where, line = across[row["id"]]
                raise DataError(
                    f"{path}:{row['_line']}: duplicate id '{row['id']}' (also at {where}:{line}); ids must be unique "
                    "across the files read together, as within one (rows repeated on purpose are declared with a "
                    "`copies` column in one file)")
        across.update((row["id"], (str(path), row["_line"])) for row in rows if id(row) in given)
    return rows


def _number_copies(rows: list[dict], path) -> None:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["id"], []).append(row)
    for rid, members in groups.items():
        declared = {str(m.get("copies")) for m in members}
        n = len(members)
        if len(members) == 1 and declared <= {"None", "", "1"}:
            continue
        if declared != {str(n)}:
            try:
                ok = len(declared) == 1 and whole_number(members[0].get("copies"), "copies", path,
                                                         members[0]["_line"]) == n
            except DataError:
                ok = False
            if not ok:
                raise DataError(f"{path}:{members[0]['_line']}: id '{rid}' has {n} row(s) but copies = "
                                f"{', '.join(sorted(declared))}: each row of a repeated id gives their count")
        for k, m in enumerate(members, 1):
            m["copy_of"], m["copy"] = rid, k
            if k > 1:
                m["id"] = f"{rid}#{k}"


def whole_number(value, field: str, path, line) -> int:
    """`value` of a row's count field (canary_copies, copies) as an int: a JSON integer, a float with no
    fraction (2.0) or a string of one ("2", "2.0", as a CSV holds it); DataError naming file:line and field
    for anything else (2.7 is not silently 2; NaN, a bool, text)."""
    if isinstance(value, bool):
        ok = None
    elif isinstance(value, int):
        ok = value
    else:
        try:
            f = float(str(value).strip()) if isinstance(value, str) else float(value)
            ok = int(f) if math.isfinite(f) and f.is_integer() else None
        except (TypeError, ValueError):
            ok = None
    if ok is None:
        raise DataError(f"{path}:{line}: {field} must be an integer, got {value!r}")
    return ok


def read_texts(path, text_column: str | None = None) -> list[dict]:
    """Plain-text items `{"id", "text", ...}` from any supported file, using the text-column rule."""
    rows = read_records(path)
    col = resolve_text_column(rows, path, text_column)
    require_fields(rows, [col], path, text=True)
    ensure_ids(rows, path)
    for row in rows:
        row["text"] = row[col].strip()
    return rows


def split_paths(value, name: str = "value") -> list[str]:
    """Paths from a comma-separated list ('a.jsonl,b.jsonl'), keeping a comma that is part of a file name:
    the whole value, when it exists, is one path; otherwise, from each piece on, the longest run of adjacent
    pieces whose comma-joined name exists is one path (a piece that starts no existing name stays alone, so
    'file not found' names it). A list (from YAML) is taken as it is; blanks are dropped."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    if not isinstance(value, str):
        raise DataError(f"--{name}: expected a path or a comma-separated list of paths, got {value!r}")
    if value.strip() and os.path.exists(value.strip()):
        return [value.strip()]
    pieces, out, i = value.split(","), [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i + 1, -1)
                  if ",".join(pieces[i:j]).strip() and os.path.exists(",".join(pieces[i:j]).strip())), i + 1)
        joined = ",".join(pieces[i:j]).strip()
        if joined:
            out.append(joined)
        i = j
    return out


def strip_private(row: dict) -> dict:
    """Drop bookkeeping keys (`_line`) before writing a row out."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


# ----------------------------------------------------------------------------------------------- writing
def check_writable_dir(path) -> Path:
    """Fail early, with the path named, if `path` cannot be created or written."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link or a loop: mkdir would fail later with "File exists"
            try:
                os.stat(probe)
                why = "it cannot be followed"
            except OSError as e:
                why = e.strerror or str(e)
            raise DataError(f"output dir {path}: {probe} is a symbolic link to {os.readlink(probe)}, which leads "
                            f"nowhere ({why}); remove the link or point it at a directory")
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
    the temporary directory is removed and `path` is untouched. Temporary siblings left by a killed run
    (`.NAME.tmp-*`, `.NAME.old-*`) are removed first; the caller holds the directory's lock. A `path` that is
    a symbolic link to a directory is written through: the directory it points to is replaced, the link kept.
    """
    path = check_writable_dir(path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # temporary siblings a killed run left (the caller holds the directory's lock: no live writer owns them)
    for stale in list(path.parent.glob(f".{path.name}.tmp-*")) + list(path.parent.glob(f".{path.name}.old-*")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
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
