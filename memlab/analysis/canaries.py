"""Memorization vs duplication (expt4 canaries; Carlini et al. 2022): `canary_table` of one task's mia
items.csv (members carry canary_copies: 1 = ordinary member, c > 1 = a canary repeated c times in training)
and extraction items.csv (generate.py --mode prefix on the canaries); `canary_rows` (tidy_canaries.csv rows of
a task), `collect_canaries` (of every task below a root) and `final_checkpoints`. The plot is in plots.py,
the summary block in summary.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from memlab.analysis.readers import MIA_ITEM_COLUMNS, Inputs
from memlab.analysis.tables import collect
from memlab.metrics import bootstrap_ci, roc_auc, tpr_at_fpr

CANARY_FPRS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_10pct_fpr": 0.10}


CANARY_COLUMNS = ["checkpoint", "exposure", "step", "attack", "canary_copies", "n_members", "n_nonmembers", "auc",
                  "auc_ci_low", "auc_ci_high", *CANARY_FPRS, "extraction_prefix", "extraction_n",
                  "extraction_exact_match", "extraction_exact_match_ci_low", "extraction_exact_match_ci_high",
                  "extraction_token_accuracy", "extraction_token_accuracy_ci_low", "extraction_token_accuracy_ci_high"]


def _extraction_by_copies(extraction: pd.DataFrame | None, copies: dict, n_boot: int, seed: int) -> dict:
    """(checkpoint, canary copies) -> extraction columns: exact match rate and mean token accuracy over the
    canaries of that copies group (each canary's samples averaged first), with a bootstrap 95% CI over canaries.
    `copies` maps member id -> canary copies; extraction items of other ids are not counted."""
    if extraction is None or extraction.empty or not {"id", "exact_match", "token_accuracy"} <= set(extraction):
        return {}
    d = extraction.assign(canary_copies=extraction["id"].astype(str).map(copies)).dropna(subset=["canary_copies"])
    out = {}
    for (ck, c), g in d.groupby(["checkpoint", "canary_copies"], sort=True):
        per = g.groupby("id")[["exact_match", "token_accuracy"]].mean()
        row = {"extraction_prefix": ";".join(sorted({str(p) for p in g["prefix"]})) if "prefix" in g else None,
               "extraction_n": len(per)}
        for m in ("exact_match", "token_accuracy"):
            v = per[m].to_numpy(float)
            lo, hi = bootstrap_ci(lambda x: float(x.mean()), v, n_boot=n_boot, seed=seed)
            row.update({f"extraction_{m}": float(v.mean()), f"extraction_{m}_ci_low": lo,
                        f"extraction_{m}_ci_high": hi})
        out[(str(ck), int(c))] = row
    return out


def canary_table(mia_items: pd.DataFrame | None, extraction: pd.DataFrame | None = None, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Memorization against duplication (Carlini et al. 2022) from one task's mia items.csv and, where there
    is one, its extraction items.csv (generate.py --mode prefix on the canaries): one row per checkpoint x
    attack x canary-copies group of members (1 = ordinary members). Per group: n_members, n_nonmembers, ROC
    AUC of the group's members against ALL non-members (higher score = member, as membership_inference.py's
    results.json `by_canary_copies`; bootstrap 95% CI, members and non-members resampled separately), TPR at
    1% and 10% FPR (threshold on the non-members' scores, no CI: read it with n), and the extraction exact
    match rate and mean token accuracy of the group's canaries (CI over canaries; empty where nothing was
    extracted, e.g. copies 1). Empty when members do not carry more than one canary_copies count (your own
    members without a canary_copies column)."""
    from memlab.likelihood import checkpoint_position  # heavy (torch): only for a task with canaries

    def auc(pos, neg):
        return roc_auc(np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)])

    if mia_items is None or mia_items.empty or not {"split", "canary_copies", "checkpoint"} <= set(mia_items):
        return pd.DataFrame(columns=CANARY_COLUMNS)
    members = mia_items[mia_items.split == "member"]
    if members.canary_copies.nunique() < 2:
        return pd.DataFrame(columns=CANARY_COLUMNS)
    copies = dict(zip(members["id"].astype(str), members.canary_copies.astype(int))) if "id" in members else {}
    extracted = _extraction_by_copies(extraction, copies, n_boot, seed)
    attacks = [c for c in mia_items.columns
               if c not in MIA_ITEM_COLUMNS and pd.api.types.is_numeric_dtype(mia_items[c])]
    rows = []
    for ck, g in mia_items.groupby("checkpoint", sort=True):
        neg_rows, pos_rows = g[g.split == "nonmember"], g[g.split == "member"]
        if neg_rows.empty:
            continue
        pos_copies = pos_rows.canary_copies.astype(int).to_numpy()
        for attack in attacks:
            neg, pos_all = neg_rows[attack].to_numpy(float), pos_rows[attack].to_numpy(float)
            if not (np.isfinite(neg).all() and np.isfinite(pos_all).all()):
                continue  # an attack this checkpoint did not run (e.g. no reference model)
            for c in sorted(set(pos_copies)):
                pos = pos_all[pos_copies == c]
                lo, hi = bootstrap_ci(auc, pos, neg, n_boot=n_boot, seed=seed, paired=False)
                scores, labels = np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)]
                rows.append({"checkpoint": ck, **checkpoint_position(str(ck)), "attack": attack,
                             "canary_copies": int(c), "n_members": int(pos.size), "n_nonmembers": int(neg.size),
                             "auc": auc(pos, neg), "auc_ci_low": lo, "auc_ci_high": hi,
                             **{k: tpr_at_fpr(scores, labels, f) for k, f in CANARY_FPRS.items()},
                             **extracted.get((str(ck), int(c)), {})})
    out = pd.DataFrame(rows, columns=CANARY_COLUMNS)
    out["extraction_n"] = out["extraction_n"].astype("Int64")
    return out


def canary_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """tidy_canaries.csv rows of one task: `canary_table` of its mia and extraction stages, with the cell."""
    mia = inputs.items(task, "mia", dtype={"id": str})
    if mia is None or mia.empty:
        return []
    t = canary_table(mia, inputs.items(task, "extraction"))
    return [{**cell, **r} for r in t.to_dict("records")]


def collect_canaries(root: Path, inputs: Inputs | None = None) -> pd.DataFrame:
    """tidy_canaries.csv: `canary_table` of every task below `root` (every column: docs/analysis.md)."""
    return collect(root, inputs, {"canaries": canary_rows})["canaries"]


def final_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Each task's rows of its last checkpoint (highest exposure, else step, else label)."""
    order = df.assign(_e=df.exposure.fillna(-1), _s=df.step.fillna(-1)).sort_values(["_e", "_s", "checkpoint"])
    last = order.groupby("task").checkpoint.last()
    return df[df.checkpoint == df.task.map(last)]

