"""External formats (docs/DESIGN.md §3) into ours, validating as we go; every error names file:line/field.

- text: JSONL/CSV/TXT with any text column -> `{"id", "text"}` (plus `fact_id` when present)
- chat: JSONL of `{"messages": [{"role", "content"}, ...]}` -> `{"id", "messages"}` (plus `fact_id`)
- probes: CSV/JSONL with one answer column and one question column per tier
  (`tier_columns={"easy": "q_easy", ...}`) -> `{"id", "fact_id", "question", "answer", "tier"}`;
  without `tier_columns`, rows already in the probes format are validated and normalized (tier
  `verbatim` rows, too, keeping `verbatim_of`/`train_id` and the `intentionally_seen` label).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from memlab.datagen.facts import TIERS, VERBATIM_TIER
from memlab.io import (DataError, ensure_ids, read_records, read_texts,
                       require_answer_column, require_fields, strip_private, validate_messages)


def convert_text(path, text_column: str | None = None) -> list[dict]:
    rows = read_texts(path, text_column or None)
    out = []
    for r in rows:
        row = {"id": r["id"], "text": r["text"]}
        if r.get("fact_id") not in (None, ""):
            row["fact_id"] = str(r["fact_id"])
        out.append(row)
    return out


def convert_chat(path) -> list[dict]:
    rows = read_records(path)
    require_fields(rows, ["messages"], path)
    ensure_ids(rows, path)
    out = []
    for r in rows:
        row = {"id": r["id"], "messages": validate_messages(r["messages"], f"{path}:{r['_line']}")}
        if r.get("fact_id") not in (None, ""):
            row["fact_id"] = str(r["fact_id"])
        out.append(row)
    return out


def convert_probes(path, answer_column: str = "answer", tier_columns: Mapping[str, str] | None = None,
                   fact_id_column: str | None = None) -> list[dict]:
    rows = read_records(path)
    require_answer_column(rows, path, answer_column)
    columns = [k for k in rows[0] if not k.startswith("_")]
    tier_columns = dict(tier_columns or {})
    bad_tiers = [t for t in tier_columns if t not in TIERS]
    if bad_tiers:
        raise DataError(f"--tier_columns: unknown tier(s) {bad_tiers}; tiers are {list(TIERS)}")
    needed = [answer_column] + list(tier_columns.values()) + ([fact_id_column] if fact_id_column else [])
    if not tier_columns:
        needed += ["question", "tier"]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; columns are {columns}")
    fact_col = fact_id_column or next((c for c in ("fact_id", "id") if c in columns), None)
    out = []
    for r in rows:
        fact_id = str(r[fact_col]).strip() if fact_col and str(r.get(fact_col, "")).strip() \
            else f"{Path(path).stem}-{r['_line']}"
        require_fields([r], [answer_column], path)
        answer = str(r[answer_column]).strip()
        if tier_columns:
            require_fields([r], list(tier_columns.values()), path, text=True)
            for tier, col in tier_columns.items():
                out.append({"id": f"{fact_id}-{tier}", "fact_id": fact_id, "question": str(r[col]).strip(),
                            "answer": answer, "tier": tier, "_line": r["_line"]})
        else:
            require_fields([r], ["question"], path, text=True)
            require_fields([r], ["tier"], path)
            if r["tier"] not in (*TIERS, VERBATIM_TIER):
                raise DataError(f"{path}:{r['_line']}: field 'tier' is {r['tier']!r}, expected one of "
                                f"{[*TIERS, VERBATIM_TIER]}")
            row_id = str(r["id"]) if str(r.get("id", "")).strip() else f"{fact_id}-{r['tier']}"
            out.append({"id": row_id, "fact_id": fact_id, "question": str(r["question"]).strip(),
                        "answer": answer, "tier": r["tier"], "_line": r["_line"]})
            if r["tier"] == VERBATIM_TIER:  # a repeated training prompt keeps its label (see facts.py)
                label = {"verbatim_of": r.get("verbatim_of"), "intentionally_seen": True, "train_id": r.get("train_id")}
                out[-1].update({k: v for k, v in label.items() if v not in (None, "")})
    ensure_ids(out, path)
    return [strip_private(r) for r in out]
