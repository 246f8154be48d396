"""The per-item and per-fact tables: `per_item.csv` (every finished stage's items.csv stacked, one row per
task x stage x checkpoint x item) and `learning.csv` (learning events per task x stage x fact x tier), from
`collect_facts`; definitions in memlab/learning.py. Also `tier_order` (tiers in display order) and
`trained_facts` (the learning.csv rows of trained facts, for the learning summary and plots)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from memlab.analysis.readers import MIA_ITEM_COLUMNS, Inputs, heldout_known
from memlab.analysis.stages import (BASE_STAGES, HELDOUT_KIND, LEARNING_QA_STAGES, PREFIX_STAGES, QA_STAGES,
                                    RECOGNITION_STAGES, SENTENCE_STAGES, SENTENCE_TIER)
from memlab.learning import (RECOGNITION, knownness, learning_events, pair_recognition, recall_status,
                             recognition_status)


def _items(task: Path, stage: str, inputs: Inputs) -> pd.DataFrame | None:
    """A finished stage's items.csv (ids as strings) with exposure and step from the checkpoint label
    (exposure 0 for the base-model stages); None when the stage is missing or has no items."""
    from memlab.likelihood import checkpoint_position  # heavy (torch): only when a stage has items

    df = inputs.items(task, stage)
    if df is None or df.empty:
        return None
    pos = [checkpoint_position(str(c)) for c in df.checkpoint]
    df["exposure"] = [0 if stage in BASE_STAGES else p["exposure"] for p in pos]
    df["step"] = [p["step"] for p in pos]
    df["exposure"] = df["exposure"].astype("Int64")
    df["step"] = df["step"].astype("Int64")
    return df


def _task_knownness(task: Path, inputs: Inputs) -> dict:
    """fact_id -> SliCK category from TASK/knownness (empty when missing or unusable)."""
    items = _items(task, "knownness", inputs)
    if items is None:
        return {}
    try:
        return knownness(items).to_dict()
    except (ValueError, KeyError) as e:
        print(f"warning: {task.name}: knownness skipped: {e}", file=sys.stderr)
        return {}


def _task_kinds(task: Path, inputs: Inputs) -> dict:
    """fact_id -> fact kind from TASK/data/facts/facts.jsonl (empty when there is none); expt7's known facts
    held out of training are `known (held out)`."""
    facts = inputs.facts(task)
    kinds = {str(f["fact_id"]): f["kind"] for f in facts or []}
    return {**kinds, **{f: HELDOUT_KIND for f in heldout_known(task, inputs) if f in kinds}}


def _per_item_rows(task: Path, cell: dict, known: dict, kinds: dict, inputs: Inputs) -> list[pd.DataFrame]:
    """Every finished stage's items of one task in the per_item.csv columns (every column: docs/analysis.md)."""
    base = ["stage", "checkpoint", "exposure", "step", "item_id", "fact_id"]
    frames = []
    for stage in QA_STAGES:
        df = _items(task, stage, inputs)
        if df is None:
            continue
        cols = [c for c in ("tier", "temperature", "repeat", "correct", "answer_nll", "answer_tokens") if c in df]
        df = df.assign(stage=stage, item_id=df["id"])
        frames.append(df[[c for c in base + cols if c in df]])
    for stage in RECOGNITION_STAGES:
        df = _items(task, stage, inputs)
        if df is None or not {"pair_id", "split", "loss"} <= set(df.columns):
            continue
        p = pair_recognition(df, ["checkpoint", "exposure", "step"])
        p = p.rename(columns={"pair_id": "fact_id"}).assign(stage=stage, tier=RECOGNITION,
                                                              correct=p.recognized.astype(int))
        frames.append(p.drop(columns="recognized"))
    for stage in PREFIX_STAGES:
        df = _items(task, stage, inputs)
        if df is None:
            continue
        metrics = [c for c in ("prefix_tokens", "exact_match", "token_accuracy", "id_recalled") if c in df]
        df = df.assign(stage=stage, item_id=df["id"])
        if "sample" in df:
            df["repeat"] = df["sample"]
        if stage in SENTENCE_STAGES:  # recalled = the rest of the sentence generated exactly
            df = df.assign(tier=SENTENCE_TIER, correct=df["exact_match"].astype(int))
        frames.append(df[[c for c in base + ["tier", "repeat", "correct"] if c in df] + metrics])
    df = _items(task, "mia", inputs)
    if df is not None:
        attacks = {c: f"mia_{c}" for c in df.columns if c not in MIA_ITEM_COLUMNS}
        df = df.rename(columns=attacks).assign(stage="mia", item_id=df["id"])
        if "target_nll" in df:
            df["loss"] = df["target_nll"]
        keep = [c for c in base + ["split", "canary_copies", "loss"] if c in df] + list(attacks.values())
        frames.append(df[keep])
    out = []
    for f in frames:
        if f.empty:
            continue
        f = f.copy()
        if "fact_id" in f:
            f["knownness"] = f.fact_id.map(known) if known else None
            f["kind"] = f.fact_id.map(kinds) if kinds else None
        for k, v in reversed(list(cell.items())):
            f.insert(0, k, v)
        out.append(f)
    return out


def _learning_rows(task: Path, cell: dict, known: dict, kinds: dict, inputs: Inputs) -> list[pd.DataFrame]:
    """learning.csv rows of one task: QA learning events per fact x tier (recall, or expt7's prior_recall
    with the base model as exposure 0) and recognition events per pair."""
    frames = []
    for name, stages in LEARNING_QA_STAGES.items():
        parts = [df for df in (_items(task, s, inputs) for s in stages) if df is not None]
        if not parts:
            continue
        status = recall_status(pd.concat(parts, ignore_index=True))
        frames.append(learning_events(status).assign(stage=name))
    rec = _items(task, "recognition", inputs)
    if rec is not None and {"pair_id", "split", "loss"} <= set(rec.columns):
        frames.append(learning_events(recognition_status(rec)).assign(stage="recognition"))
    sent = _items(task, "sentence_recall", inputs)
    if sent is not None and "exact_match" in sent:  # recalled = the rest generated exactly (greedy)
        status = sent.dropna(subset=["exposure"]).assign(fact_id=lambda d: d["id"], tier=SENTENCE_TIER,
                                                          recalled=lambda d: d["exact_match"] >= 1)
        frames.append(learning_events(status).assign(stage="sentence_recall"))
    out = []
    for f in frames:
        if f.empty:
            continue
        f = f.copy()
        f["knownness"] = f.fact_id.map(known) if known else None
        f["kind"] = f.fact_id.map(kinds) if kinds else None
        f.loc[f.tier.isin(["recognition", SENTENCE_TIER]), ["knownness", "kind"]] = None  # not fact ids
        f.insert(0, "stage", f.pop("stage"))
        for k, v in reversed(list(cell.items())):
            f.insert(0, k, v)
        out.append(f)
    return out


def collect_facts(root: Path, inputs: Inputs | None = None) -> dict[str, pd.DataFrame]:
    """{'per_item': ..., 'learning': ..., 'facts': ...} from every task below `root` (every column:
    docs/analysis.md; facts.csv: memlab/analysis/fact_covariates.py)."""
    from memlab.analysis.fact_covariates import fact_rows

    inputs = inputs or Inputs()
    per_item, learning, facts = [], [], []
    for cell_file in sorted(root.rglob("cell.json")):
        task = cell_file.parent
        cell = inputs.cell(cell_file)
        if cell is None:
            continue
        known, kinds = _task_knownness(task, inputs), _task_kinds(task, inputs)
        rows = _per_item_rows(task, cell, known, kinds, inputs)
        per_item += rows
        learning += _learning_rows(task, cell, known, kinds, inputs)
        task_items = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["stage"])
        f = fact_rows(task, cell, known, kinds, task_items, inputs)
        if f is not None:
            facts.append(f)
    if per_item:
        per_item = [pd.concat(per_item, ignore_index=True)]
        for c in ("exposure", "step", "repeat", "correct", "canary_copies", "prefix_tokens", "answer_tokens"):
            if c in per_item[0]:
                try:  # integers stay integers after stacking stages without the column (else 0.0)
                    per_item[0][c] = per_item[0][c].astype("Int64")
                except (TypeError, ValueError):
                    pass
    return {"per_item": per_item[0] if per_item else pd.DataFrame(),
            "learning": pd.concat(learning, ignore_index=True) if learning else pd.DataFrame(),
            "facts": pd.concat(facts, ignore_index=True) if facts else pd.DataFrame()}


def cell_columns(per_item: pd.DataFrame) -> list[str]:
    """per_item.csv's cell columns: the leading ones up to `task` (the cell's keys come first in every row, `task`
    last among them; what follows depends on the first stage stacked)."""
    cols = list(per_item.columns)
    return cols[:cols.index("task") + 1] if "task" in cols else []


TIER_ORDER = ("easy", "mid", "hard", "all", "verbatim", "recognition")


def tier_order(df: pd.DataFrame) -> list[str]:
    """The tiers present in `df`, in TIER_ORDER, then any others sorted."""
    present = set(df.tier)
    return [t for t in TIER_ORDER if t in present] + sorted(present - set(TIER_ORDER))


def trained_facts(learning: pd.DataFrame) -> pd.DataFrame:
    """learning.csv rows of facts that were trained: expt7's held-out known facts (never trained, so never
    "learned") stay in learning.csv but out of the learning summary and plots."""
    if learning.empty or "kind" not in learning:
        return learning
    return learning[learning["kind"] != HELDOUT_KIND]

