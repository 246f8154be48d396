"""facts.csv: one row per task x fact with the covariates of learning speed, computed from the run's own files
(issue 24, item 2): nothing is typed in by hand.

- `kind` (novel / known / contradicting, from data/facts/facts.jsonl where the data says) and `knownness` (SliCK,
  from the task's knownness stage), as in per_item.csv.
- `answer`, `answer_kind` (`answer_kind`: number / date / name / word / other, rules below), `answer_words`, and
  `answer_tokens` (the answer's length in the model's tokens, as scored: items.csv `answer_tokens`).
- `prior_answer_nll`: the base model's mean answer NLL over the fact's probes (nats/token, exposure 0).
- `n_probes` and `tiers`: the fact's QA probes and their tiers (`easy;mid;hard`).
- `n_variants` and `n_copies`: the fact's training rows in one exposure (rows of every train.py run of the task
  whose training files carry a `fact_id`): distinct texts, and rows in all (a duplicated row counts once in
  `n_variants`, each time in `n_copies`).

Answer kind, from the answer text (and, for a bare year, the fact's attribute): `date` = a date written out
(`12 May 1990`, `May 12, 1990`, `1990-05-12`, `12/05/1990`) or a four-digit year 1000-2099 whose attribute names a
year or date; `number` = digits with optional sign, separators, decimals or a trailing unit-free %; `name` = every
word capitalised (`Helsinki`, `Marie Curie`); `word` = lower-case letters and spaces, hyphens or apostrophes; else
`other`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from memlab.analysis.readers import Inputs
from memlab.analysis.stages import QA_STAGES
from memlab.io import DataError, read_records

ANSWER_KINDS = ("number", "date", "name", "word", "other")
FACT_COLUMNS = ["fact_id", "kind", "knownness", "answer", "answer_kind", "answer_words", "answer_tokens",
                "prior_answer_nll", "n_probes", "tiers", "n_variants", "n_copies"]

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
          r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DATES = [re.compile(p, re.IGNORECASE) for p in (
    rf"\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{3,4}}",  # 12 May 1990
    rf"{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{3,4}}",  # May 12, 1990
    rf"{_MONTH}\s+\d{{3,4}}",  # May 1990
    r"\d{4}-\d{1,2}-\d{1,2}",  # 1990-05-12
    r"\d{1,2}[/.]\d{1,2}[/.]\d{2,4}")]  # 12/05/1990
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:[,\s]\d{3})+|\d+)(?:\.\d+)?%?")
_YEAR = re.compile(r"1\d{3}|20\d{2}")
_YEAR_ATTRIBUTE = re.compile(r"\b(?:year|date|born|founded|died|established|built)\b", re.IGNORECASE)
_NAME_WORD = re.compile(r"[A-Z\u00C0-\u00DE][A-Za-z\u00C0-\u00FF'’.\-]*|of|the|de|van|von|and|da|di|la|le|del|du")
_WORD = re.compile(r"[a-z\u00DF-\u00FF]+(?:[ '’\-][a-z\u00DF-\u00FF]+)*")


def answer_kind(answer, attribute: str | None = None) -> str:
    """number / date / name / word / other of one answer text (module docstring)."""
    text = str(answer).strip() if answer is not None and not pd.isna(answer) else ""
    if not text:
        return "other"
    text = text.rstrip(".")
    if any(p.fullmatch(text) for p in _DATES):
        return "date"
    if _YEAR.fullmatch(text) and attribute and _YEAR_ATTRIBUTE.search(str(attribute)):
        return "date"
    if _NUMBER.fullmatch(text):
        return "number"
    words = text.split()
    if words[0][:1].isupper() and all(_NAME_WORD.fullmatch(w) for w in words):
        return "name"
    if _WORD.fullmatch(text):
        return "word"
    return "other"


def _row_text(row: dict) -> str:
    """A training row's text, for counting distinct variants (chat rows by their messages)."""
    if "messages" in row:
        return json.dumps(row["messages"], sort_keys=True, ensure_ascii=False)
    return str(row.get("text", row.get("sent", "")))


def _training_files(task: Path, inputs: Inputs) -> list[Path]:
    """The training files of every train.py run of the task (TASK/*/config.json), in run order."""
    files = []
    for cfg in sorted(task.glob("*/config.json")):
        obj = inputs.read(cfg, lambda p: json.loads(p.read_text(encoding="utf-8")), left_out="training files")
        if not isinstance(obj, dict) or obj.get("script") != "train.py":
            continue
        value = (obj.get("args") or {}).get("train_file") or ""
        for part in str(value).split(","):
            if part.strip():
                files.append(Path(part.strip()))
    return files


def training_counts(task: Path, inputs: Inputs) -> tuple[dict, dict]:
    """({fact_id: distinct training texts}, {fact_id: training rows}) over the task's training files that carry
    fact ids. A file that is gone (a run directory moved to another machine) is looked for under TASK/data by
    name; when it is not there either, the fact's counts stay empty."""
    texts: dict[str, set] = {}
    copies: dict[str, int] = {}
    for path in _training_files(task, inputs):
        if not path.exists():
            found = sorted((task / "data").rglob(path.name)) if (task / "data").is_dir() else []
            if not found:
                continue
            path = found[0]
        try:
            rows = read_records(path)
        except (DataError, OSError):  # the training run read it; unreadable now means moved or damaged
            continue
        for row in rows:
            if row.get("fact_id") is None:
                continue
            fid = str(row["fact_id"])
            texts.setdefault(fid, set()).add(_row_text(row))
            copies[fid] = copies.get(fid, 0) + 1
    return {f: len(t) for f, t in texts.items()}, copies


def _probes(per_item_task: pd.DataFrame) -> pd.DataFrame:
    """One row per fact of the task's QA probes: n_probes, tiers, answer_tokens (median over probes) and
    prior_answer_nll (mean at exposure 0)."""
    qa = per_item_task[per_item_task.stage.isin(QA_STAGES)] if not per_item_task.empty else per_item_task
    if qa.empty:
        return pd.DataFrame(columns=["fact_id", "n_probes", "tiers", "answer_tokens", "prior_answer_nll"])
    qa = qa.assign(fact_id=qa.fact_id.astype(str))
    out = qa.groupby("fact_id").agg(n_probes=("item_id", "nunique"),
                                   tiers=("tier", lambda t: ";".join(sorted({str(x) for x in t.dropna()}))))
    if "answer_tokens" in qa:
        out["answer_tokens"] = qa.groupby("fact_id").answer_tokens.median()
    if "answer_nll" in qa:
        base = qa[(qa.exposure == 0) & qa.answer_nll.notna()]
        out["prior_answer_nll"] = base.groupby("fact_id").answer_nll.mean()
    return out.reset_index()


def fact_rows(task: Path, cell: dict, known: dict, kinds: dict, per_item_task: pd.DataFrame,
              inputs: Inputs) -> pd.DataFrame | None:
    """facts.csv rows of one task (None when it has no facts: no facts.jsonl and no QA probes); the cell's
    columns (grid axes, task) first."""
    facts = {str(f["fact_id"]): f for f in inputs.facts(task) or []}
    probes = _probes(per_item_task)
    ids = list(facts) or list(probes.fact_id)
    if not ids:
        return None
    variants, copies = training_counts(task, inputs)
    df = pd.DataFrame({"fact_id": ids})
    df["kind"] = df.fact_id.map(kinds) if kinds else None
    df["knownness"] = df.fact_id.map(known) if known else None
    answers = {f: r.get("answer") for f, r in facts.items()}
    df["answer"] = df.fact_id.map(answers) if answers else None
    df["answer_kind"] = [answer_kind(a, (facts.get(f) or {}).get("attribute")) for f, a in zip(df.fact_id, df.answer)]
    df["answer_words"] = [len(str(a).split()) if a is not None and not pd.isna(a) else pd.NA for a in df.answer]
    df = df.merge(probes, on="fact_id", how="left")
    df["n_variants"] = df.fact_id.map(variants).astype("Int64") if variants else pd.NA
    df["n_copies"] = df.fact_id.map(copies).astype("Int64") if copies else pd.NA
    for c in FACT_COLUMNS:
        if c not in df:
            df[c] = np.nan
    df = df[FACT_COLUMNS]
    for k, v in reversed(list(cell.items())):
        df.insert(0, k, v)
    for c in ("answer_words", "n_probes", "n_variants", "n_copies"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df
