"""The leakage check: no held-out text (probe question, foil, non-member) may equal a training text.

Two texts overlap when they are equal exactly, or after `normalize_text` (case folded, punctuation
turned into spaces, whitespace collapsed). Training texts are every plain `text`, every chat message
`content` (so a probe equal to a training user turn is caught), and `prompt`/`completion`/`chosen`/
`rejected`/`question` fields; held-out texts are `question`, `text` and `prompt` fields. A held-out row
labelled `"intentionally_seen": true` (or of tier `verbatim`), which repeats a training prompt on
purpose, is skipped by that label and counted in the report. A held-out file in neither layout (say a
CSV with one question column per tier) is read as probes given the convert flags, else refused; its text
column is never guessed.

Pure functions on rows, so `membership_inference.py` can reuse `check_leakage` for members vs
non-members. Cost: O(total texts) with one hash lookup per held-out text.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from memlab.io import DataError, probe_columns_error, read_records, resolve_text_column
from memlab.text import normalize_text  # the one rule, shared with the answer matcher (memlab.answers)

TRAIN_FIELDS = ("text", "prompt", "completion", "chosen", "rejected", "question")
HELD_OUT_FIELDS = ("question", "text", "prompt")
HELD_OUT_PREFIXES = ("probes", "unseen", "nonmembers")  # file names of held-out sets in a data dir


@dataclasses.dataclass(frozen=True)
class TextRef:
    """One text inside a dataset: which set, which row (`id`) and which field it came from."""
    source: str
    row_id: str
    field: str
    text: str

    def describe(self) -> str:
        return f"{self.source} id={self.row_id} {self.field}={self.text!r}"


@dataclasses.dataclass(frozen=True)
class Overlap:
    match: str  # "exact" or "normalized"
    train: TextRef
    held_out: TextRef

    def describe(self) -> str:
        return f"{self.match} match: {self.train.describe()}  <->  {self.held_out.describe()}"


def intentionally_seen(row: Mapping) -> bool:
    """A held-out-file row that repeats a training text on purpose: labelled `"intentionally_seen": true`
    or of tier `verbatim` (make_data.py facts' verbatim probes). The check skips it by that label."""
    return row.get("intentionally_seen") is True or row.get("tier") == "verbatim"


def extract_texts(rows: Iterable[Mapping], source: str, fields: Sequence[str],
                  include_messages: bool = True, skip_seen: bool = False) -> list[TextRef]:
    """TextRefs for every field of `fields` (and chat message contents) found in `rows`; with `skip_seen`,
    none from rows that are `intentionally_seen`."""
    out = []
    for i, row in enumerate(rows):
        if skip_seen and intentionally_seen(row):
            continue
        row_id = str(row.get("id", f"#{i}"))
        for f in fields:
            v = row.get(f)
            if isinstance(v, str) and v.strip():
                out.append(TextRef(source, row_id, f, v))
        if include_messages and isinstance(row.get("messages"), list):
            for j, m in enumerate(row["messages"]):
                if isinstance(m, Mapping) and isinstance(m.get("content"), str) and m["content"].strip():
                    out.append(TextRef(source, row_id, f"messages[{j}].{m.get('role', '?')}", m["content"]))
    return out


def find_overlaps(train: Sequence[TextRef], held_out: Sequence[TextRef]) -> list[Overlap]:
    """Every (training text, held-out text) pair that matches exactly or after normalization."""
    exact: dict[str, list[TextRef]] = {}
    normalized: dict[str, list[TextRef]] = {}
    for ref in train:
        exact.setdefault(ref.text.strip(), []).append(ref)
        normalized.setdefault(normalize_text(ref.text), []).append(ref)
    overlaps = []
    for ref in held_out:
        hits = exact.get(ref.text.strip())
        if hits:
            overlaps.extend(Overlap("exact", t, ref) for t in hits)
            continue
        key = normalize_text(ref.text)
        if key and key in normalized:
            overlaps.extend(Overlap("normalized", t, ref) for t in normalized[key])
    return overlaps


def check_leakage(train_sets: Mapping[str, Sequence[Mapping]],
                  held_out_sets: Mapping[str, Sequence[Mapping]]) -> dict:
    """Compare every training set with every held-out set; returns a JSON-ready report.

    `train_sets`/`held_out_sets` map a name (file name) to its rows. The report has `passed`,
    the sets and text counts compared, `n_overlaps` and `overlaps` (each pair described in words).
    Held-out rows labelled `intentionally_seen` (verbatim probes) are skipped, by that label; the report
    then counts them per set under `intentionally_seen_skipped`.
    """
    train = [r for name, rows in train_sets.items() for r in extract_texts(rows, name, TRAIN_FIELDS)]
    held = [r for name, rows in held_out_sets.items()
            for r in extract_texts(rows, name, HELD_OUT_FIELDS, include_messages=False, skip_seen=True)]
    overlaps = find_overlaps(train, held)
    skipped = {name: n for name, rows in held_out_sets.items() if (n := sum(map(intentionally_seen, rows)))}
    report = {
        "passed": not overlaps,
        "train_sets": list(train_sets),
        "held_out_sets": list(held_out_sets),
        "n_train_texts": len(train),
        "n_held_out_texts": len(held),
        "match": "exact and normalized (case, punctuation, whitespace)",
        "n_overlaps": len(overlaps),
        "overlaps": [o.describe() for o in overlaps],
    }
    if skipped:  # only then, so reports (and manifests) of sets without such rows keep their old form
        report["intentionally_seen_skipped"] = skipped
    if overlaps:  # which rows, so a caller can drop or mark them (test.py --leakage warn)
        report["overlapping_ids"] = {"train": sorted({o.train.row_id for o in overlaps}),
                                     "held_out": sorted({o.held_out.row_id for o in overlaps})}
    return report


def format_report(report: dict, max_pairs: int = 50) -> str:
    if report["passed"]:
        return (f"leakage check passed: {report['n_train_texts']} training texts "
                f"({', '.join(report['train_sets']) or 'none'}) vs {report['n_held_out_texts']} held-out texts "
                f"({', '.join(report['held_out_sets']) or 'none'}), no exact or normalized overlap"
                + _skipped_note(report))
    lines = [f"leakage check failed: {report['n_overlaps']} overlapping pair(s) between training and "
             f"held-out texts (equal, or equal once case, punctuation, symbols, emoji and spacing are ignored: "
             f"near duplicates a trained model scores alike):"]
    lines += [f"  {d}" for d in report["overlaps"][:max_pairs]]
    if report["n_overlaps"] > max_pairs:
        lines.append(f"  ... and {report['n_overlaps'] - max_pairs} more")
    return "\n".join(lines)


def _skipped_note(report: dict) -> str:
    skipped = report.get("intentionally_seen_skipped")
    if not skipped:
        return ""
    return ("; skipped, labelled intentionally seen (verbatim probes): "
            + ", ".join(f"{n} in {name}" for name, n in skipped.items()))


def assert_no_leakage(train_sets: Mapping[str, Sequence[Mapping]],
                      held_out_sets: Mapping[str, Sequence[Mapping]]) -> dict:
    """`check_leakage`, raising DataError (listing each offending pair) when anything overlaps."""
    report = check_leakage(train_sets, held_out_sets)
    if not report["passed"]:
        raise DataError(format_report(report))
    return report


# ------------------------------------------------------------------------------ files (make_data.py check)
def split_data_dir(data_dir) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files) of a make_data output dir: probes*/unseen*/nonmembers*.jsonl are
    held out, every other *.jsonl except facts.jsonl (metadata, no texts) is training data."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"--data_dir {d}: not a directory")
    paths = sorted(p for p in d.glob("*.jsonl") if p.name != "facts.jsonl")
    held = [p for p in paths if p.name.startswith(HELD_OUT_PREFIXES)]
    return [p for p in paths if p not in held], held


def rows_for_check(path) -> list[dict]:
    """Rows of any supported file; a plain file whose text sits in another column (`{"sent": ...}`)
    gets it under `text` by the usual text-column rule."""
    path = Path(path)
    rows = read_records(path)
    known = set(TRAIN_FIELDS) | set(HELD_OUT_FIELDS) | {"messages"}
    if any(known & set(r) for r in rows):
        return rows
    col = resolve_text_column(rows, path)
    return [{"id": r.get("id", f"{path.stem}-{r['_line']}"), "text": r.get(col)} for r in rows]


def held_out_rows_for_check(path, answer_column: str = "answer", tier_columns: Mapping[str, str] | None = None
                            ) -> list[dict]:
    """Rows of a held-out file, never guessing its text column: a file of probes (`question`) or plain
    texts (`text`, `prompt`) as it is; a CSV/JSONL with one question column per tier, given `tier_columns`
    (and `answer_column`), as the probes `make_data.py convert --to probes` makes of it; a file with a single
    string column (besides ids) as plain texts; anything else is a DataError naming the file, its columns
    and the flags to pass."""
    rows = read_records(path)
    recognised = any(set(HELD_OUT_FIELDS) & set(r) for r in rows)
    if tier_columns and (not recognised or all(any(c in r for r in rows) for c in tier_columns.values())):
        from memlab.datagen.convert import convert_probes  # not at the top: convert -> facts -> common -> leakage

        return convert_probes(path, answer_column, tier_columns)
    if not recognised:  # one string column (an Orhan-style {"sent": ...} file) is no guess: it is the text
        ids = {"id", "pair_id", "fact_id"}
        cols = [k for k in (rows[0] if rows else {}) if not k.startswith("_") and k not in ids
                and all(isinstance(r.get(k), str) for r in rows)]
        if len(cols) == 1:
            return [{"id": r.get("id", f"{Path(path).stem}-{r['_line']}"), "text": r[cols[0]]} for r in rows]
        raise probe_columns_error(path, rows, "no 'question', 'text' or 'prompt' column to check (neither "
                                  "probes nor plain texts)", "to check it as probes")
    return rows


def check_files(train_paths: Sequence, held_out_paths: Sequence, answer_column: str = "answer",
                tier_columns: Mapping[str, str] | None = None) -> dict:
    """`assert_no_leakage` on files (names as given), raising DataError listing every overlapping pair.
    Training files are read by `rows_for_check`, held-out files by `held_out_rows_for_check`."""
    return assert_no_leakage({str(p): rows_for_check(p) for p in train_paths},
                             {str(p): held_out_rows_for_check(p, answer_column, tier_columns) for p in held_out_paths})
