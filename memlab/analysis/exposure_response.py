"""Membership inference as an exposure–response curve, joined to the members' recall (issue 24, item 5):
`mia_exposure.csv` (`mia_exposure`), the verdict "detectable before recallable?" per task (`verdicts`) and its
summary.txt block (`detect_recall_summary`). The plot is plots.py's `plot_detect_vs_recall`. Every column and
the choices behind them: docs/analysis.md (`mia_exposure.csv`).

Built from per_item.csv alone (a derived table), so only from what the evaluations recorded per item:
- `recognition` (the in-training evaluation, or test.py on exposure checkpoints): members = the studied (seen)
  sentences, non-members = their foils, at every evaluated exposure including 0 (before training). Attack: the
  loss attack (Yeom et al. 2018: score = -loss, the mean token NLL the evaluation recorded). No other attack:
  the evaluation keeps one mean loss per text (no token log-probs for min-k%, no reference model, and
  per_item.csv carries no text for zlib). The bootstrap resamples pairs (a foil is drawn or derived for its
  seen sentence), as tidy_recognition.csv's `auc`, whose value this equals. Recall: the same sentences'
  `sentence_recall` at the same checkpoint (rest generated exactly from the first half).
- `facts` (expt7): members = trained facts of kind `known`, non-members = the `known (held out)` facts, known
  facts drawn from the same bank and never trained (the only facts with untrained counterparts from the same
  distribution). Attack: the loss attack on the answer, score = -answer_nll (the true answer's teacher-forced
  NLL after the probe), the fact's mean over its probes of one group: `verbatim` (the training prompt itself:
  the loss of the trained answer) or `all` (the reworded tiers pooled). Recall: the fact recalled by the same
  probes (memlab.learning.recall_status: greedy, majority of the probes). Bootstrap: facts, members and
  non-members resampled separately.
- `mia` (membership_inference.py): every attack it scored, members with c canary copies vs all non-members at
  each attacked checkpoint with an exposure; a member with c copies was trained on c times per epoch, so its
  exposure is the checkpoint's epochs x c. Bootstrap as membership_inference.py (members and non-members
  separately, 1000 resamples, seed 0), so AUC and its CI equal tidy_mia.csv's row of that copies group.
  Recall: the same texts' exact match in an `extraction` stage at the same checkpoint, where per_item.csv has
  one.

AUC and TPR at 1% / 0.1% FPR are memlab.metrics' roc_auc and tpr_at_fpr (names from memlab.attacks.LOW_FPRS);
the CI is memlab.metrics.bootstrap_ci. A point with fewer than MIN_PER_CLASS members or non-members (one class
only included) has no row; a line in summary.txt says so (the table's attrs["notes"])."""
from __future__ import annotations

import numpy as np
import pandas as pd

from memlab.analysis.items import cell_columns
from memlab.analysis.stages import HELDOUT_KIND, LEARNING_QA_STAGES
from memlab.attacks import LOW_FPRS
from memlab.learning import ALL, VERBATIM, recall_status
from memlab.metrics import bootstrap_ci, roc_auc, tpr_at_fpr

MIN_PER_CLASS = 2  # fewer members or non-members at a point: no AUC (one item per class is a coin, not a curve)
N_BOOT, SEED = 1000, 0  # membership_inference.py's defaults
TRAINED_KNOWN = "known"  # expt7's trained facts of the held-out facts' kind
DETECT_ATTACK = "loss"  # the attack the verdict reads
RECALLED = 0.5  # members' recall at or above this: recallable
COLUMNS = ["source", "group", "checkpoint", "exposure", "copies", "attack", "n_members", "n_nonmembers", "auc",
           "auc_ci_low", "auc_ci_high", *LOW_FPRS, "recall_stage", "recall_n", "recall", "recall_ci_low",
           "recall_ci_high"]
VERDICT_COLUMNS = ["source", "group", "first_detectable", "detect_auc", "detect_auc_ci_low", "detect_auc_ci_high",
                   "first_recallable", "recall_there", "last_exposure", "verdict", "why"]


def detection(members, nonmembers, paired: bool, n_boot: int = N_BOOT, seed: int = SEED) -> dict | str:
    """{n_members, n_nonmembers, auc, auc_ci_low, auc_ci_high, tpr_at_1pct_fpr, tpr_at_0_1pct_fpr} of one attack
    (higher score = member; members positive), or why not (a string). Missing scores (NaN) are left out (with
    `paired`, the pair). The CI resamples pairs (`paired`) or members and non-members separately."""
    pos, neg = np.asarray(members, float), np.asarray(nonmembers, float)
    if paired:
        keep = ~(np.isnan(pos) | np.isnan(neg))
        pos, neg = pos[keep], neg[keep]
    else:
        pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    if pos.size < MIN_PER_CLASS or neg.size < MIN_PER_CLASS:
        return f"{pos.size} member(s), {neg.size} non-member(s) (< {MIN_PER_CLASS} of each)"

    def auc(a, b):
        return roc_auc(np.r_[a, b], np.r_[np.ones(a.size), np.zeros(b.size)])

    lo, hi = bootstrap_ci(auc, pos, neg, n_boot=n_boot, seed=seed, paired=paired)
    scores, labels = np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)]
    return {"n_members": int(pos.size), "n_nonmembers": int(neg.size), "auc": auc(pos, neg),
            "auc_ci_low": lo, "auc_ci_high": hi,
            **{name: tpr_at_fpr(scores, labels, fpr) for name, fpr in LOW_FPRS.items()}}


def members_recall(values: pd.Series, stage: str | None, n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """recall_* columns from one value per member (1 = recalled; NaN = not evaluated): the share recalled with a
    bootstrap 95% CI over members; empty (recall_n 0) when no member was evaluated."""
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    if v.size == 0:
        return {"recall_stage": None, "recall_n": 0, "recall": np.nan, "recall_ci_low": np.nan,
                "recall_ci_high": np.nan}
    lo, hi = bootstrap_ci(lambda x: float(x.mean()), v, n_boot=n_boot, seed=seed)
    return {"recall_stage": stage, "recall_n": int(v.size), "recall": float(v.mean()), "recall_ci_low": lo,
            "recall_ci_high": hi}


def _per_member(rows: pd.DataFrame, ids, value: str) -> pd.Series:
    """One value per member id: the mean of `value` over its rows (repeats, samples); NaN where it has none."""
    if rows.empty or value not in rows:
        return pd.Series(np.nan, index=list(ids), dtype=float)
    means = rows.assign(_v=pd.to_numeric(rows[value], errors="coerce")).groupby(rows.item_id.astype(str))._v.mean()
    return means.reindex([str(i) for i in ids])


def _recognition(task: pd.DataFrame, n_boot: int, seed: int, notes: list) -> list[dict]:
    """Members = seen sentences, non-members = their foils, per evaluated exposure: the loss attack."""
    rec = task[(task.stage == "recognition") & task.exposure.notna()]
    if rec.empty or not {"loss", "foil_loss"} <= set(rec.columns):
        return []
    sent = task[task.stage == "sentence_recall"]
    rows = []
    for (ck, exposure), g in rec.groupby(["checkpoint", "exposure"], sort=True):
        where = f"{task.task.iloc[0]}: recognition at {ck}"
        det = detection(-g.loss.to_numpy(float), -g.foil_loss.to_numpy(float), True, n_boot, seed)
        if isinstance(det, str):
            notes.append(f"{where}: no AUC: {det}")
            continue
        recall = _per_member(sent[sent.checkpoint == ck], g.item_id.astype(str), "correct")
        rows.append({"source": "recognition", "group": ALL, "checkpoint": ck, "exposure": int(exposure), "copies": 1,
                     "attack": "loss", **det, **members_recall(recall, "sentence_recall", n_boot, seed)})
    return rows


def _facts(task: pd.DataFrame, n_boot: int, seed: int, notes: list) -> list[dict]:
    """Members = trained known facts, non-members = held-out known facts (expt7), per exposure and probe group:
    the loss attack on the answer (-answer_nll)."""
    if not {"kind", "answer_nll", "temperature", "correct"} <= set(task.columns):
        return []
    stages = [s for v in LEARNING_QA_STAGES.values() for s in v]
    qa = task[task.stage.isin(stages) & task.kind.isin([TRAINED_KNOWN, HELDOUT_KIND]) & task.exposure.notna()]
    if qa.empty or not (qa.kind == HELDOUT_KIND).any():
        return []
    qa = qa.assign(fact_id=qa.fact_id.astype(str), tier=qa.tier.fillna(ALL).astype(str),
                   group=np.where(qa.tier.astype(str) == VERBATIM, VERBATIM, ALL))
    kind = qa.groupby("fact_id").kind.first()
    status = recall_status(qa.rename(columns={"item_id": "id"}))
    status = status[status.tier.isin([ALL, VERBATIM])].set_index(["exposure", "tier", "fact_id"]).recalled
    rows = []
    for (exposure, group), g in qa.groupby(["exposure", "group"], sort=True):
        ck = str(g.checkpoint.iloc[0])
        nll = g.groupby("fact_id").answer_nll.mean()  # per fact: its probes of the group (NaN: not scored)
        if nll.isna().all():
            continue  # a stage run before answer_nll existed
        members = nll[kind.reindex(nll.index) == TRAINED_KNOWN]
        nonmembers = nll[kind.reindex(nll.index) == HELDOUT_KIND]
        det = detection(-members.to_numpy(float), -nonmembers.to_numpy(float), False, n_boot, seed)
        if isinstance(det, str):
            notes.append(f"{task.task.iloc[0]}: facts ({group} probes) at {ck}: no AUC: {det}")
            continue
        recalled = [float(status[(int(exposure), group, f)]) if (int(exposure), group, f) in status.index
                    else np.nan for f in members.index]
        stage = ",".join(sorted(set(g.stage)))
        rows.append({"source": "facts", "group": group, "checkpoint": ck, "exposure": int(exposure), "copies": 1,
                     "attack": "loss", **det, **members_recall(pd.Series(recalled, dtype=float), stage, n_boot, seed)})
    return rows


def _mia(task: pd.DataFrame, n_boot: int, seed: int, notes: list) -> list[dict]:
    """Every attack of membership_inference.py, members with c copies vs all non-members, per checkpoint with an
    exposure (exposure = the checkpoint's epochs x c)."""
    mia = task[task.stage == "mia"]
    attacks = [c for c in mia.columns if c.startswith("mia_") and mia[c].notna().any()]
    if mia.empty or not attacks or "split" not in mia:
        return []
    off_axis = sorted(set(mia.checkpoint[mia.exposure.isna()].astype(str)))
    if off_axis:
        notes.append(f"{task.task.iloc[0]}: mia checkpoint(s) {', '.join(off_axis)} not on an exposure axis (DPO "
                     "epochs, steps): left out (tidy_mia.csv has them)")
    extraction = task[task.stage == "extraction"]
    rows = []
    for (ck, epochs), g in mia[mia.exposure.notna()].groupby(["checkpoint", "exposure"], sort=True):
        neg_rows, pos_rows = g[g.split == "nonmember"], g[g.split == "member"]
        copies = (pd.to_numeric(pos_rows.canary_copies, errors="coerce").fillna(1).astype(int)
                  if "canary_copies" in pos_rows else pd.Series(1, index=pos_rows.index))
        for c in sorted(set(copies)):
            members = pos_rows[copies == c]
            recall = members_recall(_per_member(extraction[extraction.checkpoint == ck], members.item_id.astype(str),
                                                "exact_match"), "extraction", n_boot, seed)
            for col in attacks:
                if members[col].isna().all() and neg_rows[col].isna().all():
                    continue  # not run at this checkpoint
                det = detection(members[col].to_numpy(float), neg_rows[col].to_numpy(float), False, n_boot, seed)
                if isinstance(det, str):
                    notes.append(f"{task.task.iloc[0]}: mia {col[4:]} at {ck}, {c} copies: no AUC: {det}")
                    continue
                rows.append({"source": "mia", "group": str(c), "checkpoint": ck, "exposure": int(epochs) * c,
                             "copies": c, "attack": col[4:], **det, **recall})
    return rows


def mia_exposure(facts: dict, n_boot: int = N_BOOT, seed: int = SEED) -> pd.DataFrame:
    """mia_exposure.csv from per_item.csv (module docstring; columns: docs/analysis.md): one row per task x
    source x group x checkpoint x attack. attrs["notes"]: the points left out and why."""
    per_item = facts.get("per_item", pd.DataFrame())
    notes: list[str] = []
    axes = cell_columns(per_item)
    if per_item.empty or "stage" not in per_item or not axes:
        out = pd.DataFrame(columns=axes + COLUMNS)
        out.attrs["notes"] = notes
        return out
    rows = []
    for _, task in per_item.groupby("task", sort=True):
        task = task.assign(item_id=task.item_id.astype(str)) if "item_id" in task else task
        cell = task.iloc[0][axes].to_dict()
        for source in (_recognition, _facts, _mia):
            rows += [{**cell, **r} for r in source(task, n_boot, seed, notes)]
    out = pd.DataFrame(rows, columns=axes + COLUMNS)
    for c in ("exposure", "copies", "n_members", "n_nonmembers", "recall_n"):
        out[c] = out[c].astype("Int64")
    out.attrs["notes"] = notes
    return out


def curve(df: pd.DataFrame) -> pd.Series:
    """The curve a row belongs to: a facts group is a curve of its own; mia's copies groups lie on one exposure
    axis (exposure = epochs x copies), so they make one curve."""
    return df.source.astype(str) + np.where(df.source == "mia", "", " / " + df.group.astype(str))


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Detectable before recallable? One row per task x curve (source, and group for facts): the first exposure
    whose loss-attack AUC 95% CI lower bound exceeds 0.5 vs the first whose members' recall is >= RECALLED.
    Rows at one exposure (mia: several checkpoints x copies) are pooled: detectable only if all are, recall
    weighted by members. Verdict: `yes` (detectable at an earlier exposure, or never recallable by the last),
    `no` (recallable first, at the same exposure, or never detectable), `undetermined` (neither by the last
    exposure, no recall measured, or already detectable or recallable at exposure 0: then members and
    non-members, or the facts, differ before training), with the reason in `why`."""
    axes = [c for c in cell_columns(table) if c in table]
    d = table[table.attack == DETECT_ATTACK] if not table.empty else table
    if d.empty:
        return pd.DataFrame(columns=axes + VERDICT_COLUMNS)
    d = d.assign(_curve=curve(d))
    rows = []
    for (_, _), g in d.groupby(["task", "_curve"], sort=True):
        rn = g.recall_n.astype(float).fillna(0)
        by_e = g.assign(_rn=rn, _rw=g.recall.astype(float).fillna(0) * rn)
        pts = by_e.groupby("exposure").agg(lo=("auc_ci_low", "min"), auc=("auc", "mean"), hi=("auc_ci_high", "max"),
                                           rn=("_rn", "sum"), rw=("_rw", "sum")).sort_index()
        pts["recall"] = np.where(pts.rn > 0, pts.rw / pts.rn.where(pts.rn > 0, 1), np.nan)
        detect = pts.index[pts.lo > 0.5]
        recallable = pts.index[pts.recall >= RECALLED]
        first_d = int(detect[0]) if len(detect) else None
        first_r = int(recallable[0]) if len(recallable) else None
        last = int(pts.index.max())
        if pts.rn.sum() == 0:
            verdict, why = "undetermined", "no recall of these members measured"
        elif first_d == 0:
            verdict, why = "undetermined", "AUC above 0.5 before training: members and non-members differ untrained"
        elif first_r == 0:
            verdict, why = "undetermined", "recalled before training"
        elif first_d is None and first_r is None:
            verdict, why = "undetermined", f"neither by exposure {last}"
        elif first_r is None:
            verdict, why = "yes", f"detectable at {first_d}, not recallable by {last}"
        elif first_d is None:
            verdict, why = "no", f"recallable at {first_r}, never detectable by {last}"
        elif first_d < first_r:
            verdict, why = "yes", f"detectable at {first_d}, recallable at {first_r}"
        elif first_d == first_r:
            verdict, why = "no", f"both first at exposure {first_d}"
        else:
            verdict, why = "no", f"recallable at {first_r}, detectable at {first_d}"
        at = pts.loc[first_d] if first_d is not None else None
        rows.append({**g.iloc[0][axes].to_dict(), "source": g.source.iloc[0],
                     "group": g.group.iloc[0] if g.source.iloc[0] != "mia" else "copies",
                     "first_detectable": first_d, "detect_auc": None if at is None else float(at.auc),
                     "detect_auc_ci_low": None if at is None else float(at.lo),
                     "detect_auc_ci_high": None if at is None else float(at.hi), "first_recallable": first_r,
                     "recall_there": None if first_r is None else float(pts.loc[first_r].recall),
                     "last_exposure": last, "verdict": verdict, "why": why})
    return pd.DataFrame(rows, columns=axes + VERDICT_COLUMNS)


MAX_NOTES = 12  # summary.txt lines naming left-out points; the rest are counted


def detect_recall_summary(facts: dict) -> str:
    """summary.txt block: `verdicts` of mia_exposure.csv per task (the grid axes that vary), and the points left
    out; empty without rows."""
    table = facts["mia_exposure"] if "mia_exposure" in facts else mia_exposure(facts)
    notes = list(table.attrs.get("notes", []))
    if table.empty and not notes:
        return ""
    lines = ["Detectable before recallable? (mia_exposure.csv; loss attack: first exposure whose AUC 95% CI lower "
             f"bound > 0.5, vs first exposure whose members' recall >= {RECALLED}; per task)"]
    v = verdicts(table)
    if not v.empty:
        axes = [a for a in cell_columns(table) if a not in ("task",) and v[a].nunique() > 1]
        axes = axes or (["task"] if v.task.nunique() > 1 else [])

        def fmt_d(r):
            if pd.isna(r.first_detectable):
                return "never"
            return f"{int(r.first_detectable)} (AUC {r.detect_auc:.2f} [{r.detect_auc_ci_low:.2f}, {r.detect_auc_ci_high:.2f}])"

        def fmt_r(r):
            return "never" if pd.isna(r.first_recallable) else f"{int(r.first_recallable)} (recall {r.recall_there:.2f})"

        t = v.assign(**{"detectable at": [fmt_d(r) for r in v.itertuples()],
                        "recallable at": [fmt_r(r) for r in v.itertuples()]})
        lines.append(t[axes + ["source", "group", "detectable at", "recallable at", "last_exposure", "verdict", "why"]]
                     .rename(columns={"last_exposure": "last exposure"}).to_string(index=False))
    lines += [f"  {n}" for n in notes[:MAX_NOTES]]
    if len(notes) > MAX_NOTES:
        lines.append(f"  ... and {len(notes) - MAX_NOTES} more point(s) left out")
    return "\n".join(lines)
