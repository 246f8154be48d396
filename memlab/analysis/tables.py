"""The tidy tables (tidy_<name>.csv): `TABLES`, an ordered registry name -> rows_fn(task, cell, inputs) ->
list of row dicts (one per table), and `collect`, which reads every task below a root once and calls each
rows_fn. Each row carries the task's grid cell (model, seed, method, mode, ...). Also `foil_type_table`
(recognition 2AFC per foil type) and `varying` (the cell axes that vary, for labels and summaries)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pandas as pd

from memlab.analysis.readers import SENTENCE_FIELDS, Inputs, heldout_known
from memlab.analysis.stages import HELDOUT_KIND, stage_dir
from memlab.learning import pair_recognition
from memlab.metrics import bootstrap_ci

RowsFn = Callable[[Path, dict, Inputs], list]  # (task dir, its cell, inputs) -> rows of one tidy table


def collect(root: Path, inputs: Inputs | None = None, tables: dict[str, RowsFn] | None = None
            ) -> dict[str, pd.DataFrame]:
    """Tidy tables from every task below `root` (finished stages only; unfinished tasks contribute what
    they have), one per entry of `tables` (default `TABLES`), in its order. A present but broken input raises
    BrokenInput, or is left out with `inputs.skip_broken`."""
    inputs = inputs or Inputs()
    tables = TABLES if tables is None else tables
    rows: dict[str, list] = {name: [] for name in tables}
    for cell_file in sorted(root.rglob("cell.json")):
        task = cell_file.parent
        cell = inputs.cell(cell_file)
        if cell is None:
            continue
        for name, rows_fn in tables.items():
            rows[name] += rows_fn(task, cell, inputs)
    return {name: pd.DataFrame(r) for name, r in rows.items()}


def _recall_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """QA accuracy (1 - error rate, with generate.py's bootstrap 95% CI) per checkpoint x tier x temperature."""
    return [{**cell, **{k: row.get(k) for k in ("checkpoint", "exposure", "step", "tier", "temperature", "n")},
             "accuracy": 1 - row["error_rate"], "accuracy_ci_low": 1 - row["error_rate_ci_high"],
             "accuracy_ci_high": 1 - row["error_rate_ci_low"]}
            for row in (inputs.stage(task, "recall") or {}).get("error_rates", [])]


def _recognition_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """Recognition 2AFC per checkpoint (test.py's results.json rows)."""
    return [{**cell, **{k: v for k, v in row.items() if k != "path"}}
            for row in (inputs.stage(task, "recognition") or {}).get("checkpoints", [])]


def _sentence_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt1: recall of the studied sentences from their first half per checkpoint."""
    return [{**cell, **{k: row.get(k) for k in SENTENCE_FIELDS + ("exposure", "step", "n")}}
            for row in (inputs.stage(task, "sentence_recall") or {}).get("by_prefix", [])]


def _train_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """Training loss per exposure."""
    r = inputs.stage(task, "train")
    return [{**cell, "exposure": int(k), "train_loss": loss}
            for k, loss in ((r or {}).get("loss_per_exposure") or {}).items()]


def _error_rate_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt3: error rates per checkpoint x tier x temperature of the variants_recall stage."""
    return [{**cell, **{k: v for k, v in row.items() if k not in ("path", "n_rows")}}
            for row in (inputs.stage(task, "variants_recall") or {}).get("error_rates", [])]


def _retention_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt2: recall of the facts (QA accuracy, all tiers, greedy), recognition of the studied sentences (2AFC)
    and their recall from the first half (exact match) per evaluation point; the study's final weights
    (exposure_*: exposure_0 of the interference run) are step 0 of interference."""
    rows = []
    measures = [("retention_recall", "error_rates", "QA recall (accuracy)"),
                ("retention_recognition", "checkpoints", "recognition (2AFC)"),
                ("retention_sentence_recall", "by_prefix", "sentence recall (exact match)")]
    for stage, key, measure in measures:
        for row in (inputs.stage(task, stage) or {}).get(key, []):
            if key == "error_rates":
                if row["tier"] != "all" or row["temperature"] != 0:
                    continue
                value, lo, hi = 1 - row["error_rate"], 1 - row["error_rate_ci_high"], 1 - row["error_rate_ci_low"]
            elif key == "by_prefix":
                value, lo, hi = row["exact_match"], row["exact_match_ci_low"], row["exact_match_ci_high"]
            else:
                value, lo, hi = row["two_afc"], row["two_afc_ci_low"], row["two_afc_ci_high"]
            step = 0 if str(row["checkpoint"]).startswith("exposure_") else row.get("step")
            rows.append({**cell, "measure": measure, "checkpoint": row["checkpoint"], "interference_step": step,
                         "value": value, "ci_low": lo, "ci_high": hi})
    return rows


def _prefix_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt5: generate.py --mode prefix results, one row per checkpoint x prefix length."""
    r = inputs.stage(task, "prefix_recall") or {}
    rows = []
    for row in r.get("by_prefix", []):
        prefix = str(row.get("prefix"))
        if not prefix.isdigit():  # a --prefix_fraction run: not a token count
            continue
        metrics = {k: v for k, v in row.items() if k not in ("path", "prefix")}
        rows.append({**cell, "prefix_tokens": int(prefix), **metrics})
    return rows


def _prior_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt7: QA accuracy per exposure (0 = the base model) x fact kind. items.csv rows are joined with
    facts.jsonl on fact_id for the kind; the 95% CI resamples facts (a fact's probes and repeats move
    together). For contradicting facts, `original_rate` is the share of answers that give the original
    (true-world) answer instead of the trained one."""
    facts = inputs.facts(task)
    if facts is None:
        return []
    kinds = {str(f["fact_id"]): f["kind"] for f in facts}
    for f in heldout_known(task, inputs):  # probed, never trained
        kinds[f] = HELDOUT_KIND
    original = {str(f["fact_id"]): f.get("original_answer") for f in facts}
    rows = []
    for stage in ("prior_recall_base", "prior_recall"):
        items = inputs.items(task, stage)
        if items is None or items.empty:
            continue
        if stage == "prior_recall_base":
            items["exposure"] = 0
        else:
            items["exposure"] = items.checkpoint.map(lambda c: int(re.search(r"exposure_(\d+)", str(c)).group(1)))
        items = items[items.tier != "verbatim"].copy()  # as generate.py's `all`: reworded probes only
        items["kind"] = items.fact_id.map(kinds)
        items["original"] = [str(e) == str(original.get(f)) for e, f in zip(items.extracted_answer, items.fact_id)]
        for (exposure, temperature, kind), g in items.groupby(["exposure", "temperature", "kind"]):
            per_fact = g.groupby("fact_id").agg(correct=("correct", "mean"), original=("original", "mean"))
            lo, hi = bootstrap_ci(lambda x: float(x.mean()), per_fact.correct.to_numpy(float))
            rows.append({**cell, "exposure": int(exposure), "temperature": temperature, "kind": kind,
                         "n_facts": len(per_fact), "n": len(g), "accuracy": float(per_fact.correct.mean()),
                         "accuracy_ci_low": lo, "accuracy_ci_high": hi,
                         "original_rate": float(per_fact.original.mean()) if kind == "contradicting" else None})
    return rows


def _stage_of(label: str, dpo: bool) -> str:
    """The training stage a checkpoint comes from: in a task with a DPO stage (expt6) SFT checkpoints are
    exposure_*, DPO checkpoints epoch_*; in any other task (expt4) every checkpoint is plainly `fine-tuned`
    (labelling it "before DPO" put expt4's rows into expt6's before/after plot when one root held both)."""
    if not dpo:
        return "fine-tuned"
    return "after DPO" if str(label).startswith("epoch_") else "SFT (before DPO)"


def _has_dpo(task: Path) -> bool:
    return stage_dir(task, "dpo") is not None


def _mia_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """One row per checkpoint x attack x group ('all' or members with c canary copies vs non-members)."""
    rows, dpo = [], _has_dpo(task)
    for ck in (inputs.stage(task, "mia") or {}).get("checkpoints", []):
        for attack, res in ck.get("attacks", {}).items():
            groups = [("all", res["all"])] + [(str(c), g) for c, g in res.get("by_canary_copies", {}).items()]
            for group, g in groups:
                rows.append({**cell, "checkpoint": ck["checkpoint"], "stage": _stage_of(ck["checkpoint"], dpo),
                             "attack": attack, "group": group,
                             **{k: v for k, v in g.items() if k.startswith(("auc", "tpr", "n_"))}})
    return rows


def _mia_item_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """Per-item MIA scores (for ROC curves and score vs perplexity) of a finished mia stage."""
    df = inputs.items(task, "mia", dtype=None)
    if df is None or df.empty:
        return []
    for k, v in cell.items():
        df[k] = v
    dpo = _has_dpo(task)
    df["stage"] = [_stage_of(c, dpo) for c in df["checkpoint"]]
    return df.to_dict("records")


def _dpo_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt6: QA accuracy per tier for the SFT and the DPO checkpoint."""
    rows = []
    for row in (inputs.stage(task, "dpo_recall") or {}).get("error_rates", []):
        if row.get("temperature", 0) == 0:
            rows.append({**cell, "checkpoint": row["checkpoint"], "stage": _stage_of(row["checkpoint"], True),
                         "tier": row["tier"], "accuracy": 1 - row["error_rate"],
                         "accuracy_ci_low": 1 - row["error_rate_ci_high"], "accuracy_ci_high": 1 - row["error_rate_ci_low"]})
    return rows


def foil_type_table(items: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """2AFC accuracy per checkpoint x foil type from recognition items.csv rows carrying `foil_type`
    (make_data.py recognition's foils; test.py and the in-training evaluation pass it through): the share of
    pairs whose seen item has the lower loss, with a bootstrap 95% CI over the pairs of that foil type.
    Columns: checkpoint, exposure, step, foil_type, n_pairs, two_afc, two_afc_ci_low, two_afc_ci_high.
    Empty when no row has a foil type."""
    from memlab.likelihood import checkpoint_position  # heavy (torch): only when there are recognition items

    cols = ["checkpoint", "exposure", "step", "foil_type", "n_pairs", "two_afc", "two_afc_ci_low", "two_afc_ci_high"]
    if items is None or items.empty or "foil_type" not in items or not {"pair_id", "split", "loss"} <= set(items):
        return pd.DataFrame(columns=cols)
    d = items[items.foil_type.notna() & (items.foil_type.astype(str) != "")]
    if d.empty:
        return pd.DataFrame(columns=cols)
    pairs = pair_recognition(d.assign(foil_type=d.foil_type.astype(str)), ["checkpoint", "foil_type"])
    rows = []
    for (ck, foil), g in pairs.groupby(["checkpoint", "foil_type"], sort=True):
        hits = g.recognized.to_numpy(float)
        lo, hi = bootstrap_ci(lambda x: float(x.mean()), hits, n_boot=n_boot, seed=seed)
        pos = checkpoint_position(str(ck))
        rows.append({"checkpoint": ck, "exposure": pos["exposure"], "step": pos["step"], "foil_type": foil,
                     "n_pairs": len(g), "two_afc": float(hits.mean()), "two_afc_ci_low": lo, "two_afc_ci_high": hi})
    return pd.DataFrame(rows, columns=cols)


def _foil_type_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """tidy_recognition_by_foil.csv rows of one task: `foil_type_table` of its recognition stage, with the cell."""
    t = foil_type_table(inputs.items(task, "recognition"))
    return [{**cell, **r} for r in t.to_dict("records")]


# tidy table name -> rows_fn, in the order the tables are returned (and the tidy_*.csv written)
TABLES: dict[str, RowsFn] = {
    "mia": _mia_rows, "mia_items": _mia_item_rows, "dpo": _dpo_rows, "recall": _recall_rows,
    "recognition": _recognition_rows, "train": _train_rows, "sentence_recall": _sentence_rows,
    "recognition_by_foil": _foil_type_rows, "retention": _retention_rows, "error_rates": _error_rate_rows,
    "prefix": _prefix_rows, "prior": _prior_rows}


def varying(df: pd.DataFrame, axes: list[str]) -> list[str]:
    """The `axes` that are columns of `df` with more than one value."""
    return [a for a in axes if a in df and df[a].nunique() > 1]
