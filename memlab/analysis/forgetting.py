"""Forgetting and decay (issue 24, item 4), from per_item.csv and learning.csv.

`forgetting.csv`: one row per forgetting event, a fact (or studied sentence, or recognition pair) recalled at one
evaluation point and not at the next, per task x stage x fact x tier. Time is the exposure (training stages) or
the interference step (expt2's retention stages, where exposure_0 is the end of study = step 0). Columns beside
the cell's: `time_axis`, `first_recalled_at` (first point recalled at all), `learned_at` (first point of the
run of recalls that ended), `forgotten_at` (the first point no longer recalled), `relearned_at` (the next point
recalled again, empty if never), `recognition_kept` (a studied sentence whose recall was lost: was it still
recognized, its 2AFC pair answered right, at `forgotten_at`; empty where the item has no recognition pair, as
for QA facts), and, on the exposure axis, the relearning savings of Ebbinghaus: `exposures_to_first_recall` =
first_recalled_at (exposures trained before the first recall), `exposures_to_relearn` = relearned_at -
forgotten_at (exposures trained after the loss was seen until recall came back), `savings` = 1 -
exposures_to_relearn / exposures_to_first_recall (1 = relearned at once, 0 = as slow as the first time), empty
when either is undefined or only bounded: a count is exact when the evaluation point one exposure earlier was
evaluated (with points 1, 2, 5 a fact recalled again "at 5" took 1 to 3 exposures). Recall is the learning.csv criterion: a QA fact is recalled when at least half of its
probes in the tier are answered right greedily; a sentence when its rest is generated exactly; a pair when the
studied sentence's loss is below its foil's.

`decay.csv`: for stages evaluated along interference steps (expt2's retention_*), the mean over facts of each
measure against steps, fitted as a power law y = a (1 + t)^-b and as an exponential y = a exp(-b t) (scipy's
curve_fit, least squares on every fact x step value, which is the fit of the mean curve weighted by facts).
Measures: `recall` (retention_recall: tier `all`; retention_sentence_recall), `recognition`
(retention_recognition), and `answer_probability` = exp(-answer_nll), the answer's per-token probability
(retention_recall, where items.csv has answer_nll; the NLL rises as the fact decays, its probability falls).
95% CIs of a and b: percentile bootstrap over facts (facts resampled with replacement, both forms refitted,
N_BOOT times): a fact's values across steps are not independent, so a per-point standard error would be too
narrow. Both forms have two parameters, so AIC = n log(RSS / n) + 4 ranks them as RSS does; `better` marks the
lower AIC, and summary.txt calls a gap below TIE_AIC a tie (the AIC counts every fact x step value as independent,
so it overstates the evidence; the bootstrap CIs do not). One fit per stage x measure x group (the grid axes that vary, other than seed; seeds pooled). Not
fitted, with a note: fewer than MIN_FACTS facts, fewer than 3 steps, or a measure that does not change.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from memlab.analysis.items import cell_columns
from memlab.learning import recall_status

TRAINING_QA = ("recall", "prior_recall_base", "prior_recall")  # QA learning stages (prior_* = expt7)
RETENTION = {"retention_recall": "qa", "retention_recognition": "recognition",
             "retention_sentence_recall": "sentence"}
STAGE_KIND = {"recall": "qa", "prior_recall": "qa", "recognition": "recognition",
              "sentence_recall": "sentence", **RETENTION}
LEARNING_STAGE = {"prior_recall_base": "prior_recall"}  # expt7's base model is exposure 0 of prior_recall
RECOGNITION_OF = {"sentence_recall": "recognition", "retention_sentence_recall": "retention_recognition"}
CELL_SKIP = {"task", "seed"}  # not a decay group axis
FORGETTING_COLUMNS = ["task", "stage", "fact_id", "tier", "knownness", "kind", "time_axis", "first_recalled_at",
                      "learned_at", "forgotten_at", "relearned_at", "recognition_kept", "exposures_to_first_recall",
                      "exposures_to_relearn", "savings"]
DECAY_COLUMNS = ["stage", "group", "measure", "form", "a", "a_ci_low", "a_ci_high", "b", "b_ci_low", "b_ci_high",
                 "rss", "aic", "better", "n_facts", "n_points", "last_step"]
FORMS = {"power law": lambda t, a, b: a * np.power(1.0 + t, -b),
         "exponential": lambda t, a, b: a * np.exp(-b * t)}
N_BOOT = 200
MIN_FACTS = 5
TIE_AIC = 2.0  # an AIC gap below this is no evidence for either form (Burnham & Anderson's rule of thumb)


# ------------------------------------------------------------------------------------------------ status
def _time(d: pd.DataFrame, stage: str) -> pd.Series:
    """The evaluation point of each row: the step on the interference axis (exposure_0 = step 0), else the exposure."""
    if stage in RETENTION:
        return pd.to_numeric(d.step, errors="coerce").fillna(pd.to_numeric(d.exposure, errors="coerce"))
    return pd.to_numeric(d.exposure, errors="coerce")


def status_table(per_item: pd.DataFrame, cell_cols: list[str]) -> pd.DataFrame:
    """Recalled or not per cell x stage x fact x tier x evaluation point `t` (columns *cell_cols, stage, fact_id,
    tier, item_id, t, recalled, answer_nll), by the learning.csv criteria (module docstring)."""
    frames = []
    if per_item.empty:
        return pd.DataFrame()
    for stage, g in per_item.groupby("stage", sort=False):
        stage = str(stage)
        kind = STAGE_KIND.get(LEARNING_STAGE.get(stage, stage)) or STAGE_KIND.get(stage)
        if kind is None:
            continue
        g = g.assign(t=_time(g, stage)).dropna(subset=["t"])
        if g.empty:
            continue
        name = LEARNING_STAGE.get(stage, stage)
        if kind == "qa":
            if "temperature" not in g:
                continue
            items = g.assign(id=g.item_id, exposure=g.t)
            s = recall_status(items, by=cell_cols).rename(columns={"exposure": "t"})
            if "answer_nll" in g:  # one value per probe (repeated across temperatures and repeats): mean per fact
                nll = g.dropna(subset=["answer_nll"]).groupby(cell_cols + ["t", "fact_id", "item_id"]).answer_nll.first()
                nll = nll.groupby(cell_cols + ["t", "fact_id"]).mean().rename("answer_nll").reset_index()
                s = s.merge(nll.assign(t=nll.t.astype(int)), on=cell_cols + ["t", "fact_id"], how="left")
            s = s.assign(item_id=None)
        else:
            s = g.assign(recalled=g.correct.astype(float) >= 1, fact_id=g.fact_id.fillna(g.item_id))
            s = s.groupby(cell_cols + ["t", "fact_id", "tier", "item_id"], dropna=False).recalled.max().reset_index()
        frames.append(s.assign(stage=name))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["fact_id"] = out.fact_id.astype(str)
    return out


# --------------------------------------------------------------------------------------------- forgetting
def forgetting_events(points: list[float], recalled: list[bool]) -> list[dict]:
    """The forgetting events of one fact x tier from its evaluation points and recall at each (module docstring).
    `exact_first` / `exact_relearn`: whether the point before the first recall (before the relearning) was
    evaluated, one exposure earlier, so that the count of exposures it took is known, not only bounded."""
    seq = sorted(zip(points, recalled), key=lambda p: p[0])
    ts = [t for t, _ in seq]
    i_first = next((i for i, (_, r) in enumerate(seq) if r), None)
    first = ts[i_first] if i_first is not None else None
    exact_first = i_first is not None and (first == 0 or (i_first > 0 and first - ts[i_first - 1] == 1))
    events, start = [], None
    for i, (t, r) in enumerate(seq):
        if r and start is None:
            start = t
        if not r and start is not None:
            j = next((k for k in range(i + 1, len(seq)) if seq[k][1]), None)
            again = ts[j] if j is not None else None
            events.append({"first_recalled_at": first, "learned_at": start, "forgotten_at": t, "relearned_at": again,
                           "exact_first": exact_first, "exact_relearn": j is not None and again - ts[j - 1] == 1})
            start = None
    return events


def forgetting_table(facts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """forgetting.csv (module docstring)."""
    per_item, learning = facts.get("per_item", pd.DataFrame()), facts.get("learning", pd.DataFrame())
    if per_item.empty:
        return pd.DataFrame(columns=FORGETTING_COLUMNS)
    cell_cols = cell_columns(per_item)
    status = status_table(per_item, cell_cols)
    if status.empty:
        return pd.DataFrame(columns=FORGETTING_COLUMNS)
    recognized = {}
    rec = status[status.stage.isin(RECOGNITION_OF.values())]
    for r in rec.itertuples(index=False):
        recognized[(r.task, r.stage, str(r.item_id), float(r.t))] = bool(r.recalled)
    rows = []
    for key, g in status.groupby(cell_cols + ["stage", "fact_id", "tier"], sort=True, dropna=False):
        cell = dict(zip(cell_cols + ["stage", "fact_id", "tier"], key))
        stage = cell["stage"]
        axis = "step" if stage in RETENTION else "exposure"
        item_id = str(g.item_id.dropna().iloc[0]) if g.item_id.notna().any() else str(cell["fact_id"])
        for ev in forgetting_events(g.t.astype(float).tolist(), g.recalled.astype(bool).tolist()):
            kept = recognized.get((cell["task"], RECOGNITION_OF.get(stage), item_id, float(ev["forgotten_at"])))
            exact_first, exact_relearn = ev.pop("exact_first"), ev.pop("exact_relearn")
            exact = exact_first and exact_relearn
            first, relearn = ev["first_recalled_at"], None
            if axis == "exposure" and ev["relearned_at"] is not None:
                relearn = ev["relearned_at"] - ev["forgotten_at"]
            # only counts that are exact: with evaluation points 1, 2, 5 a fact relearned "at 5" took 1 to 3
            # exposures, and a ratio of bounds is not a savings
            savings = 1 - relearn / first if relearn is not None and first and exact else None
            rows.append({**cell, "time_axis": axis, **ev, "recognition_kept": kept,
                         "exposures_to_first_recall": first if axis == "exposure" else None,
                         "exposures_to_relearn": relearn, "savings": savings})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=cell_cols + [c for c in FORGETTING_COLUMNS if c not in cell_cols])
    if not learning.empty and {"knownness", "kind"} <= set(learning.columns):
        lk = learning[["task", "stage", "fact_id", "tier", "knownness", "kind"]].assign(
            fact_id=learning.fact_id.astype(str)).drop_duplicates(["task", "stage", "fact_id", "tier"])
        out = out.merge(lk, on=["task", "stage", "fact_id", "tier"], how="left")
    for c in FORGETTING_COLUMNS:
        if c not in out:
            out[c] = None
    out = out[cell_cols + [c for c in FORGETTING_COLUMNS if c not in cell_cols]]
    for c in ("first_recalled_at", "learned_at", "forgotten_at", "relearned_at", "exposures_to_first_recall",
              "exposures_to_relearn"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("Int64")
    out["recognition_kept"] = out.recognition_kept.astype("boolean")
    out["savings"] = pd.to_numeric(out.savings, errors="coerce").round(4)
    return out


# ------------------------------------------------------------------------------------------------- decay
def fit_decay(t: np.ndarray, y: np.ndarray, fact: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
              ) -> tuple[list[dict], str | None]:
    """(one row per form: a, b with bootstrap CIs, rss, aic, better; or [], why not) of values `y` at steps `t`,
    one per fact x step (`fact` names the fact of each value)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y, fact = t[keep], y[keep], np.asarray(fact)[keep]
    facts = pd.unique(fact)
    if len(facts) < MIN_FACTS:
        return [], f"{len(facts)} fact(s) (< {MIN_FACTS})"
    if len(np.unique(t)) < 3:
        return [], f"{len(np.unique(t))} step(s) evaluated (< 3)"
    means = pd.Series(y).groupby(t).mean()
    if np.ptp(means.to_numpy()) < 1e-9:
        return [], f"no change across steps (always {means.iloc[0]:.3g})"
    p0 = (max(float(means.iloc[0]), 1e-3), 0.1)
    rows = []
    by_fact = {f: np.flatnonzero(fact == f) for f in facts}
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([by_fact[f] for f in rng.choice(facts, len(facts))]) for _ in range(n_boot)]
    for form, fn in FORMS.items():
        est = _curve_fit(fn, t, y, p0)
        if est is None:
            rows.append({"form": form, "a": np.nan, "b": np.nan, "rss": np.nan, "aic": np.nan})
            continue
        rss = float(np.sum((y - fn(t, *est)) ** 2))
        boots = np.array([b for b in (_curve_fit(fn, t[i], y[i], est) for i in draws) if b is not None])
        ci = (np.quantile(boots, [0.025, 0.975], axis=0) if len(boots) >= 0.9 * n_boot
              else np.full((2, 2), np.nan))  # too many failed refits: no interval rather than a biased one
        rows.append({"form": form, "a": est[0], "a_ci_low": ci[0, 0], "a_ci_high": ci[1, 0], "b": est[1],
                     "b_ci_low": ci[0, 1], "b_ci_high": ci[1, 1], "rss": rss,
                     "aic": len(y) * np.log(max(rss, 1e-300) / len(y)) + 2 * 2})
    aics = [r["aic"] for r in rows]
    best = int(np.nanargmin(aics)) if not all(np.isnan(aics)) else None
    for i, r in enumerate(rows):
        r.update(better=i == best, n_facts=len(facts), n_points=len(y), last_step=float(t.max()))
    return rows, None if best is not None else "neither form could be fitted"


def _curve_fit(fn, t, y, p0):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning on a flat resample: judged by finiteness below
            est, _ = curve_fit(fn, t, y, p0=p0, maxfev=5000)
    except (RuntimeError, ValueError):  # no convergence
        return None
    return est if np.all(np.isfinite(est)) else None


def decay_values(facts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cell x retention stage x measure x fact x step: columns *cell, stage, measure, fact, t, y."""
    per_item = facts.get("per_item", pd.DataFrame())
    if per_item.empty or not per_item.stage.isin(list(RETENTION)).any():
        return pd.DataFrame()
    cell_cols = cell_columns(per_item)
    status = status_table(per_item[per_item.stage.isin(list(RETENTION))], cell_cols)
    if status.empty:
        return status
    frames = []
    for stage, g in status.groupby("stage"):
        if RETENTION[stage] == "qa":
            g = g[g.tier == "all"] if (g.tier == "all").any() else g
            frames.append(g.assign(measure="recall", y=g.recalled.astype(float)))
            if "answer_nll" in g and g.answer_nll.notna().any():
                frames.append(g.assign(measure="answer_probability", y=np.exp(-g.answer_nll.astype(float))))
        else:
            measure = "recognition" if RETENTION[stage] == "recognition" else "recall"
            frames.append(g.assign(measure=measure, y=g.recalled.astype(float)))
    out = pd.concat(frames, ignore_index=True)
    return out.assign(fact=out.task.astype(str) + "/" + out.fact_id.astype(str))[
        cell_cols + ["stage", "measure", "fact", "t", "y"]]


def group_axes(values: pd.DataFrame) -> list[str]:
    """The cell columns that vary, other than seed and task (their levels are decay groups)."""
    cols = cell_columns(values)
    return [c for c in cols if c not in CELL_SKIP and values[c].astype(str).nunique() > 1]


def decay_table(facts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """decay.csv (module docstring); the notes on fits not made ride on `.attrs['notes']`."""
    values = decay_values(facts)
    table = pd.DataFrame(columns=DECAY_COLUMNS)
    table.attrs["notes"] = []
    if values.empty:
        return table
    axes = group_axes(values)
    rows, notes = [], []
    keys = ["stage", "measure"] + axes
    for key, g in values.groupby(keys, sort=True):
        stage, measure = key[0], key[1]
        group = ", ".join(f"{a}={v}" for a, v in zip(axes, key[2:])) or "all"
        fits, why = fit_decay(g.t.to_numpy(), g.y.to_numpy(), g.fact.to_numpy())
        if why:
            notes.append(f"{stage} {measure} ({group}): decay not fitted: {why}")
        rows += [{"stage": stage, "group": group, "measure": measure, **r} for r in fits]
    table = pd.DataFrame(rows, columns=DECAY_COLUMNS)
    for c in ("a", "a_ci_low", "a_ci_high", "b", "b_ci_low", "b_ci_high", "rss", "aic"):
        table[c] = pd.to_numeric(table[c], errors="coerce").round(6)
    table.attrs["notes"] = notes
    return table


# ----------------------------------------------------------------------------------------------- summary
def forgetting_summary(facts: dict[str, pd.DataFrame]) -> str:
    """summary.txt block: forgetting events per stage (recognition kept, savings) and the decay fits."""
    forgetting = facts.get("forgetting")
    decay = facts.get("decay")
    if forgetting is None:
        forgetting = forgetting_table(facts)
    if decay is None:
        decay = decay_table(facts)
    lines = []
    if not forgetting.empty:
        lines.append("Forgetting (forgetting.csv): recall lost between consecutive evaluation points")
        for (stage, tier), g in forgetting.groupby(["stage", "tier"], sort=True):
            n_facts = g.groupby(["task", "fact_id"]).ngroups
            text = f"  {stage}/{tier}: {len(g)} event(s) in {n_facts} fact(s)"
            kinds = g.kind.dropna().astype(str).value_counts() if "kind" in g else pd.Series(dtype=int)
            if len(kinds) > 1:  # expt7: trained facts and never-trained held-out ones lose recall for other reasons
                text += " (events by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")"
            kept = g.recognition_kept.dropna()
            if len(kept):
                text += f"; recognition kept in {int(kept.sum())}/{len(kept)}"
            rel = g.relearned_at.notna()
            if g.time_axis.iloc[0] == "exposure":
                text += f"; relearned {int(rel.sum())}/{len(g)}"
                s = g.savings.dropna()
                if len(s):
                    text += f", median savings {s.median():.2f} (of {len(s)} with exact counts)"
            lines.append(text)
    if not decay.empty or decay.attrs.get("notes"):
        lines.append("Decay against interference steps (decay.csv): y = a (1+t)^-b (power law) vs a exp(-b t) "
                     "(exponential), 95% bootstrap CIs over facts")
        for (stage, measure, group), g in decay.groupby(["stage", "measure", "group"], sort=True):
            best = g[g.better.astype(bool)]
            for r in g.itertuples(index=False):
                lines.append(f"  {stage} {measure} ({group}): {r.form}: a={r.a:.3g} [{r.a_ci_low:.3g}, "
                             f"{r.a_ci_high:.3g}], b={r.b:.3g} [{r.b_ci_low:.3g}, {r.b_ci_high:.3g}], "
                             f"AIC {r.aic:.1f}{' (better)' if r.better else ''}")
            if len(best) and len(g) == 2:
                gap = g[~g.better.astype(bool)].aic.iloc[0] - best.aic.iloc[0]
                verdict = (f"better fit: {best.form.iloc[0]} (AIC lower by {gap:.1f}" if gap >= TIE_AIC else
                           f"the two forms are not told apart (AIC within {gap:.1f} < {TIE_AIC:g}")
                lines.append(f"    {verdict}; {int(best.n_facts.iloc[0])} facts, steps 0..{best.last_step.iloc[0]:g})")
        lines += [f"  {n}" for n in decay.attrs.get("notes", [])]
    return "\n".join(lines)
