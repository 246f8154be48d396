"""Which facts take longer, and why: survival analysis of learning (issue 24, item 3) on learning.csv.

Time = exposures to criterion (learning.csv `exposures_to_criterion`: the first evaluated exposure from which the
fact is recalled at every later one), event = reached; a fact never at criterion is censored at its last
evaluated exposure and is never counted as an event. A fact already at criterion at exposure 0 (known before
training) is not at risk of being learned and is left out, counted in the summary line.

- Kaplan–Meier curves with pointwise 95% CIs per grouping (knownness, method, kind, tier) and a log-rank test
  per grouping: statsmodels' SurvfuncRight and survdiff (`plots/survival_<grouping>.png`, summary lines).
- `difficulty.csv`: hazard ratios of learning per covariate level, one model per stage x tier. The model is a
  discrete-time proportional-hazards model: one row per fact x evaluated exposure at risk, y = 1 at the exposure
  the fact reaches criterion, a binomial GLM with the complementary log-log link and one intercept per
  evaluated exposure (statsmodels GLM). Why not Cox: learning is observed only at the 2–10 evaluation points,
  so nearly every event time is tied; the cloglog model is the grouped-time version of Cox's proportional
  hazards model (Prentice & Gloeckler 1978), so exp(coefficient) is the hazard ratio of the same continuous-time
  model, with ties handled exactly rather than by an approximation. Standard errors are cluster-robust by
  fact_id (a fact's rows across exposures, seeds and cells are not independent). Hazard ratio > 1: learned
  sooner (per exposure, the chance of reaching criterion is higher); < 1: takes longer.
- Covariates, jointly: knownness (SliCK), fact kind, the grid axes that vary except seed (method, mode, model,
  variants, ...), then facts.csv's answer kind, answer length (tokens, per token), number of training variants,
  and prior answer NLL (answer_nll at exposure 0, mean over the fact's probes; per nat) where facts.csv has them.
  Reference level of a categorical covariate: `REFERENCE_LEVELS` where present (kind novel, knownness Unknown,
  method full, answer kind number, mode passive), so every stage x tier compares with the same level; else the
  level with the most facts. A covariate determined by the ones before it
  (collinear: in expt7 every novel fact's answer is a number) is left out with a note, not split arbitrarily.
- Not fitted, with one line saying why, never a traceback or an absurd ratio: fewer than MIN_FACTS facts at
  risk, fewer than MIN_EVENTS events, a covariate with one level (left out of the model), a level whose facts
  all or never reach criterion (perfect separation: the covariate is left out), or a fit that fails or gives a
  coefficient beyond |MAX_LOG_HR|.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from memlab.analysis.items import trained_facts
from memlab.analysis.stages import LEARNING_QA_STAGES

MIN_FACTS = 10  # fewer facts at risk: no model (a hazard ratio from a handful of facts is noise)
MIN_EVENTS = 3  # fewer facts reaching criterion: no model
MAX_LOG_HR = 8.0  # |log HR| beyond this (HR > ~3000): a separated fit, not an estimate; reported as not fitted
GROUPINGS = ("knownness", "method", "kind", "tier")  # Kaplan–Meier curves and log-rank tests per grouping
TIERS_COMPARED = ("easy", "mid", "hard")  # the `tier` grouping compares these, within one stage
NOT_COVARIATES = {"expt", "task", "stage", "fact_id", "tier", "seed", "first_recalled_exposure",
                  "exposures_to_criterion", "forgetting_events", "n_evaluated_exposures", "last_exposure",
                  "knownness", "kind", "index", "size"}
DIFFICULTY_COLUMNS = ["stage", "tier", "covariate", "level", "hazard_ratio", "ci_low", "ci_high", "p_value",
                      "n_facts", "n_events"]


def survival_times(learning: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(one row per task x stage x fact x tier at risk with `time` and `event`, how many were at criterion at
    exposure 0 and left out). Rows without an evaluated exposure after 0 are left out too."""
    df = trained_facts(learning)
    if df.empty:
        return df.assign(time=[], event=[]), 0
    reached = pd.to_numeric(df.exposures_to_criterion, errors="coerce")
    last = pd.to_numeric(df.last_exposure, errors="coerce")
    df = df.assign(event=reached.notna().astype(int), time=reached.fillna(last))
    at_zero = int((df.event.eq(1) & df.time.eq(0)).sum())
    return df[df.time > 0].reset_index(drop=True), at_zero


def _grid(per_item: pd.DataFrame) -> dict[tuple[str, str], list[int]]:
    """(task, learning stage) -> its evaluated exposures after 0, from per_item.csv."""
    if per_item.empty or "exposure" not in per_item:
        return {}
    ex = per_item.dropna(subset=["exposure"])
    by = {(t, s): sorted({int(e) for e in g.exposure if int(e) > 0}) for (t, s), g in ex.groupby(["task", "stage"])}
    out = {}
    for (task, stage), exposures in by.items():
        learning_stage = next((k for k, v in LEARNING_QA_STAGES.items() if stage in v), stage)
        out[(task, learning_stage)] = sorted(set(out.get((task, learning_stage), [])) | set(exposures))
    return out


def person_periods(times: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """One row per fact x evaluated exposure while at risk (up to its event or censoring), y = 1 at the event."""
    rows = []
    for i, r in enumerate(times.itertuples(index=False)):
        exposures = grid.get((r.task, r.stage)) or list(range(1, int(r.time) + 1))
        for e in exposures:
            if e > r.time:
                break
            rows.append((i, e, int(bool(r.event) and e == r.time)))
    pp = pd.DataFrame(rows, columns=["row", "period", "y"])
    return pp.join(times.reset_index(drop=True), on="row")


# facts.csv columns that enter the model (memlab/analysis/fact_covariates.py): name -> (kind, unit of a continuous one)
FACT_COVARIATES = {"answer_kind": ("categorical", None), "answer_tokens": ("continuous", "per answer token"),
                   "n_variants": ("categorical", None), "prior_answer_nll": ("continuous", "per nat")}


def covariates(times: pd.DataFrame) -> dict[str, str]:
    """The candidate covariates of `times`, in the order they enter the model: name -> 'categorical' |
    'continuous'. Fact kind and knownness first, then the varying grid axes, then facts.csv's covariates."""
    out = {c: "categorical" for c in ("knownness", "kind") if c in times}
    out.update({c: "categorical" for c in times.columns if c not in NOT_COVARIATES and c not in out
                and c not in ("time", "event") and c not in FACT_COVARIATES})
    out.update({c: kind for c, (kind, _) in FACT_COVARIATES.items() if c in times})
    return out


# the reference level of a categorical covariate when present, so that every stage x tier compares with the same
# level (the level with the most facts at risk differs between tiers: known facts answered at exposure 0 are not
# at risk); other covariates: the level with the most facts
REFERENCE_LEVELS = {"kind": "novel", "knownness": "Unknown", "method": "full", "answer_kind": "number",
                    "mode": "passive"}


def reference_level(values: pd.Series, name: str) -> str:
    """The reference level of categorical covariate `name` among `values` (one per fact at risk)."""
    levels = values.astype(str)
    preferred = REFERENCE_LEVELS.get(name)
    return preferred if preferred in set(levels) else levels.value_counts().index[0]


def format_p(p: float) -> str:
    """'p=0.0123' for summary.txt and plot titles; below double precision's reach 'p<1e-16', not 'p=0'."""
    return "p<1e-16" if p < 1e-16 else f"p={p:.3g}"


def _usable(pp: pd.DataFrame, name: str, kind: str) -> str | None:
    """None when `name` can enter the model, else why not."""
    col = pp[name]
    if col.isna().all():  # not a property of these rows (recognition pairs have no answer): nothing to say
        return "one level"
    if col.isna().any():
        return "missing for some facts"
    if kind == "continuous":
        return None if col.std() > 0 else "constant"
    levels = col.astype(str)
    if levels.nunique() < 2:
        return "one level"
    by_fact = pp.groupby(levels).agg(events=("y", "sum"), rows=("y", "size"))
    if (by_fact.events == 0).any() or (by_fact.events == by_fact.rows).any():
        which = by_fact.index[(by_fact.events == 0) | (by_fact.events == by_fact.rows)][0]
        return f"level {which} separates perfectly (its facts all or never reach criterion at each exposure)"
    return None


def fit_hazard_model(times: pd.DataFrame, grid: dict, stage: str, tier: str) -> tuple[list[dict], list[str]]:
    """(difficulty.csv rows, notes) of one stage x tier: the discrete-time cloglog model (module docstring)."""
    n_facts, n_events = len(times), int(times.event.sum())
    where = f"{stage}/{tier}"
    if n_facts < MIN_FACTS:
        return [], [f"{where}: not fitted: {n_facts} fact(s) at risk (< {MIN_FACTS})"]
    if n_events < MIN_EVENTS:
        return [], [f"{where}: not fitted: {n_events} fact(s) reached criterion (< {MIN_EVENTS})"]
    pp = person_periods(times, grid)
    periods = pd.get_dummies(pp.period.astype(int), prefix="exposure", dtype=float)  # one baseline per exposure
    notes, terms, names = [], [periods], []
    for name, kind in covariates(times).items():
        why = _usable(pp, name, kind)
        if why:
            if why != "one level":
                notes.append(f"{where}: {name} left out of the model: {why}")
            continue
        if kind == "continuous":
            term = pp[[name]].astype(float)
            levels_named = [(name, FACT_COVARIATES.get(name, (None, "per unit"))[1], None)]
        else:
            levels = pp[name].astype(str)
            ref = reference_level(times[name], name)
            term = pd.get_dummies(levels, prefix=name, prefix_sep="=", dtype=float).drop(columns=f"{name}={ref}")
            levels_named = [(name, f"{c.split('=', 1)[1]} vs {ref}", c) for c in term.columns]
        # a covariate that the ones before it already determine (expt7's answer kind is its fact kind) cannot
        # be estimated: it is left out, named, rather than given an arbitrary split of one effect
        before = np.linalg.matrix_rank(pd.concat(terms, axis=1).to_numpy())
        if np.linalg.matrix_rank(pd.concat(terms + [term], axis=1).to_numpy()) < before + term.shape[1]:
            notes.append(f"{where}: {name} left out of the model: determined by the covariates before it "
                         f"({', '.join(n for n, _, _ in names[-3:]) or 'the exposures'})")
            continue
        terms.append(term)
        names += levels_named
    if not names:
        return [], notes + [f"{where}: not fitted: no covariate varies (one level each, or left out above)"]
    X = pd.concat(terms, axis=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter: judged by the coefficients below
            fit = sm.GLM(pp.y.astype(float), X, family=sm.families.Binomial(link=sm.families.links.CLogLog())).fit(
                cov_type="cluster", cov_kwds={"groups": pd.factorize(pp.fact_id.astype(str))[0]})
    except Exception as e:  # statsmodels raises several types (singular matrix, perfect separation)
        return [], notes + [f"{where}: not fitted: {type(e).__name__}: {e}"]
    ci = fit.conf_int()
    rows = []
    for name, level, col in names:
        col = col or name
        beta = float(fit.params[col])
        if not np.isfinite(beta) or abs(beta) > MAX_LOG_HR or not np.isfinite(fit.bse[col]):
            notes.append(f"{where}: {name} {level}: not reported (log hazard ratio {beta:.1f}: separated, not estimated)")
            continue
        rows.append({"stage": stage, "tier": tier, "covariate": name, "level": level,
                     "hazard_ratio": round(float(np.exp(beta)), 4), "ci_low": round(float(np.exp(ci.loc[col, 0])), 4),
                     "ci_high": round(float(np.exp(ci.loc[col, 1])), 4), "p_value": float(f"{fit.pvalues[col]:.4g}"),
                     "n_facts": n_facts, "n_events": n_events})
    return rows, notes


def with_fact_covariates(times: pd.DataFrame, facts_table: pd.DataFrame) -> pd.DataFrame:
    """`times` with facts.csv's FACT_COVARIATES joined by task x fact_id (a column missing for every fact is
    not added)."""
    cols = [c for c in FACT_COVARIATES if c in facts_table]
    if facts_table.empty or not cols:
        return times
    f = facts_table[["task", "fact_id"] + cols].assign(fact_id=facts_table.fact_id.astype(str))
    f = f.drop_duplicates(["task", "fact_id"]).set_index(["task", "fact_id"])
    keys = pd.MultiIndex.from_arrays([times.task, times.fact_id.astype(str)])
    out = times.copy()
    for c in cols:
        values = f[c].reindex(keys).to_numpy()
        if not pd.isna(values).all():
            out[c] = values
    return out


def difficulty(facts: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """(difficulty.csv, notes for summary.txt) from learning.csv and per_item.csv: one hazard model per stage x
    tier with facts at risk."""
    learning, per_item = facts.get("learning", pd.DataFrame()), facts.get("per_item", pd.DataFrame())
    times, at_zero = survival_times(learning)
    if times.empty:
        return pd.DataFrame(columns=DIFFICULTY_COLUMNS), []
    times = with_fact_covariates(times, facts.get("facts", pd.DataFrame()))
    grid = _grid(per_item)
    rows, notes = [], ([f"{at_zero} fact x tier row(s) already at criterion at exposure 0 (known before "
                        "training): not at risk, left out"] if at_zero else [])
    for (stage, tier), g in times.groupby(["stage", "tier"], sort=True):
        r, n = fit_hazard_model(g.reset_index(drop=True), grid, stage, tier)
        rows += r
        notes += n
    table = pd.DataFrame(rows, columns=DIFFICULTY_COLUMNS)
    table.attrs["notes"] = notes  # so that the summary and the plot reuse one fit (facts["difficulty"])
    return table, notes


def kaplan_meier(times: pd.DataFrame, grouping: str) -> tuple[dict[str, pd.DataFrame], float | None]:
    """({level: DataFrame(time, surv, ci_low, ci_high)}, log-rank p-value or None with one level) of `times`
    (one stage x tier) by `grouping`: S(t) = fraction of the level's facts not yet at criterion by exposure t."""
    curves = {}
    for level, g in times.groupby(times[grouping].astype(str), sort=True):
        sf = SurvfuncRight(g.time.to_numpy(float), g.event.to_numpy(int))
        lo, hi = _pointwise_ci(sf)
        curves[level] = pd.DataFrame({"time": sf.surv_times, "surv": sf.surv_prob, "ci_low": lo, "ci_high": hi})
    if len(curves) < 2 or times.event.sum() == 0:
        return curves, None
    try:
        _, p = survdiff(times.time.to_numpy(float), times.event.to_numpy(int), times[grouping].astype(str).to_numpy())
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError):  # degenerate risk sets: no test
        return curves, None
    return curves, float(p) if np.isfinite(p) else None


def _pointwise_ci(sf: SurvfuncRight) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise 95% CI of S(t): Greenwood's standard error (statsmodels' surv_prob_se) on the log-log scale,
    which stays inside [0, 1] (Kalbfleisch & Prentice); at S = 0 or 1 the interval is the point."""
    s, se = np.asarray(sf.surv_prob, float), np.asarray(sf.surv_prob_se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.log(-np.log(s))
        half = 1.96 * se / (s * np.abs(np.log(s)))
        lo, hi = np.exp(-np.exp(theta + half)), np.exp(-np.exp(theta - half))
    edge = ~np.isfinite(lo) | ~np.isfinite(hi)
    return np.where(edge, s, lo), np.where(edge, s, hi)


def survival_summary(facts: dict[str, pd.DataFrame]) -> str:
    """summary.txt block: hazard ratios per stage x tier (difficulty.csv) and log-rank tests per grouping."""
    times, _ = survival_times(facts.get("learning", pd.DataFrame()))
    if times.empty:
        return ""
    if "difficulty" in facts and "notes" in facts["difficulty"].attrs:  # fitted once by analyze.py
        table, notes = facts["difficulty"], facts["difficulty"].attrs["notes"]
    else:
        table, notes = difficulty(facts)
    lines = ["Which facts take longer: hazard ratio of reaching criterion per exposure [95% CI, cluster-robust by "
             "fact], p (discrete-time proportional hazards, cloglog; > 1 = learned sooner; difficulty.csv)"]
    for r in table.itertuples(index=False):
        lines.append(f"  {r.stage}/{r.tier}: {r.covariate} {r.level}: {r.hazard_ratio:.2f} [{r.ci_low:.2f}, "
                     f"{r.ci_high:.2f}], {format_p(r.p_value)} ({r.n_events}/{r.n_facts} facts reached criterion)")
    if table.empty:
        lines.append("  no model fitted")
    lines += [f"  {n}" for n in notes]
    for (stage, tier, grouping), g in km_groups(times):
        _, p = kaplan_meier(g, grouping)
        if p is not None:
            lines.append(f"  log-rank {stage}/{tier} by {grouping}: {format_p(p)}")
    return "\n".join(lines)


def km_groups(times: pd.DataFrame):
    """((stage, tier, grouping), facts) for every Kaplan–Meier comparison with at least two levels: knownness,
    method and kind within one stage x tier (tier `all` for QA), tier across easy/mid/hard within one stage."""
    for (stage, tier), g in times.groupby(["stage", "tier"], sort=True):
        for grouping in GROUPINGS[:-1] if tier not in TIERS_COMPARED else ():
            if grouping in g and g[grouping].notna().all() and g[grouping].astype(str).nunique() > 1:
                yield (stage, tier, grouping), g
    for stage, g in times[times.tier.isin(TIERS_COMPARED)].groupby("stage", sort=True):
        if g.tier.nunique() > 1:
            yield (stage, "easy/mid/hard", "tier"), g
