"""Per-fact learning events over exposures, and knownness before training (SliCK).

Pure functions over pandas DataFrames and lists; analyze.py reads the run directories and calls them.

Definitions (an "exposure" is one epoch over the training set; exposure 0 = the model before training):

- recalled(fact, tier, k): the fact's greedy (temperature 0) answers to that tier's probes at exposure k are
  correct for at least half of the probes (majority rule: 1 of 2, 2 of 3 or 4; with one probe per tier it
  is just "correct"). A probe answered more than once greedily counts by its mean correctness. Tier
  `verbatim` (probes repeating the training prompt) is a tier of its own and is never pooled into `all`;
  tier `all` pools the fact's other (non-verbatim) probes under the same majority rule.
- recognized(pair, k): the seen item's loss (nats/token) is below its paired foil's (the unseen item with
  the same pair_id) at exposure k. The recognition "fact" is the pair_id; its tier is `recognition`.
- Over the evaluated exposures e_1 < ... < e_n of one fact x tier (exposures where it was scored):
  first_recalled_exposure  the first e_i at which it is recalled (empty if never);
  exposures_to_criterion   the first e_i from which it is recalled at every later evaluated exposure, i.e.
                           the start of the final unbroken run of recalls (empty if not recalled at e_n);
                           after learned -> forgotten -> relearned it is the relearning point;
  forgetting_events        the number of recalled -> not recalled transitions between consecutive e_i.
  A fact recalled from exposure 0 on has exposures_to_criterion 0.
- Median exposures-to-criterion: facts that never reach criterion count as +infinity, so the median itself
  may be "not reached" (printed as `>last evaluated exposure`); its 95% CI is a percentile bootstrap over
  facts (lower/higher order statistics, so infinite resamples never turn into NaN).

Knownness before training (Gekhman et al. 2024, "Does Fine-Tuning LLMs on New Knowledge Encourage
Hallucinations?", SliCK). The paper estimates P_correct(q, a; M, T) from 10 random 4-shot prompts, one
greedy answer (T = 0) and 16 samples at T = 0.5 each:
  HighlyKnown   P_correct(T=0) = 1             greedy always right
  MaybeKnown    P_correct(T=0) in (0, 1)       greedy sometimes right
  WeaklyKnown   P_correct(T=0) = 0, P_correct(T>0) > 0   greedy never right, sampling sometimes right
  Unknown       P_correct(T>=0) = 0            never right
Here the greedy "exemplars" are the fact's different probe questions (its tiers and probes per tier,
verbatim excluded) asked zero-shot, rather than few-shot exemplar sets; sampled = the same probes at the
sampling temperature (generate.py --temperatures 0,0.5 --repeats 8).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

VERBATIM = "verbatim"
RECOGNITION = "recognition"
ALL = "all"
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
HUMAN_EXPOSURES = 7  # the human figure the original fact-memorization study starts from


# ------------------------------------------------------------------------------------- recall status
def majority(correct: Sequence) -> bool:
    """True when at least half of the probes are correct (False for no probes)."""
    vals = [float(c) for c in correct]
    return bool(vals) and sum(vals) >= len(vals) / 2


def recall_status(items: pd.DataFrame, by: Sequence[str] = (), temperature: float = 0.0,
                  pooled_tier: bool = True) -> pd.DataFrame:
    """Recalled or not, per `by` x exposure x fact_id x tier, from generate.py qa items rows.

    `items` needs columns fact_id, id (the probe), tier, temperature, correct, exposure (rows with no
    exposure, e.g. step-based checkpoints, are dropped). Only rows at `temperature` (greedy) count. Returns
    columns *by, exposure, fact_id, tier, n_probes, share_correct (share of the fact's probes answered
    correctly), recalled (share_correct >= 0.5). With `pooled_tier`, tier `all` is added: all the fact's
    non-verbatim probes together (not added when the only tier is already `all`).
    """
    by = list(by)
    cols = by + ["exposure", "fact_id", "tier", "n_probes", "share_correct", "recalled"]
    if items.empty:
        return pd.DataFrame(columns=cols)
    d = items[np.isclose(items["temperature"].astype(float), temperature)].dropna(subset=["exposure"])
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(tier=d["tier"].fillna(ALL).astype(str), correct=d["correct"].astype(float))
    # one value per probe (a probe answered greedily more than once counts by its mean)
    probes = d.groupby(by + ["exposure", "fact_id", "tier", "id"], sort=True, dropna=False).correct.mean()
    probes = (probes >= 0.5).astype(float).reset_index()
    tiers = set(probes.tier) - {VERBATIM}
    if pooled_tier and tiers and tiers != {ALL}:
        pooled = probes[(probes.tier != VERBATIM) & (probes.tier != ALL)].assign(tier=ALL)
        probes = pd.concat([probes[probes.tier != ALL], pooled], ignore_index=True)
    out = probes.groupby(by + ["exposure", "fact_id", "tier"], sort=True, dropna=False).correct.agg(
        n_probes="size", share_correct="mean").reset_index()
    out["recalled"] = out.share_correct >= 0.5
    out["exposure"] = out.exposure.astype(int)
    return out[cols]


def pair_recognition(items: pd.DataFrame, keys: Sequence[str] = ("checkpoint",)) -> pd.DataFrame:
    """Seen vs foil per `keys` x pair_id from test.py items rows (id, pair_id, split seen|unseen, loss
    [, loss_delta]). A pair missing its seen or its unseen item is dropped. Returns *keys, pair_id, item_id
    (the seen item's id), loss, foil_loss (the unseen item's loss), [loss_delta, foil_loss_delta],
    recognized (loss < foil_loss)."""
    keys = list(keys) + ["pair_id"]
    seen_agg = {"item_id": ("id", "first"), "loss": ("loss", "mean")}
    foil_agg = {"foil_loss": ("loss", "mean")}
    if "loss_delta" in items:
        seen_agg["loss_delta"] = ("loss_delta", "mean")
        foil_agg["foil_loss_delta"] = ("loss_delta", "mean")
    seen = items[items.split == "seen"].groupby(keys, dropna=False).agg(**seen_agg)
    foil = items[items.split == "unseen"].groupby(keys, dropna=False).agg(**foil_agg)
    out = seen.join(foil, how="inner").reset_index()
    out["recognized"] = out.loss < out.foil_loss
    return out


def recognition_status(items: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Recognized or not, per `by` x exposure x pair, from test.py items rows (id, pair_id, split
    seen|unseen, loss, exposure; rows without an exposure are dropped). Returns *by, exposure, fact_id
    (= pair_id), tier (= 'recognition'), item_id (the seen item), loss (the seen item's), foil_loss (the
    unseen item's), recalled (= recognized: loss < foil_loss)."""
    by = list(by)
    cols = by + ["exposure", "fact_id", "tier", "item_id", "loss", "foil_loss", "recalled"]
    d = items.dropna(subset=["exposure"]) if not items.empty else items
    if d.empty:
        return pd.DataFrame(columns=cols)
    out = pair_recognition(d, by + ["exposure"]).rename(columns={"pair_id": "fact_id", "recognized": "recalled"})
    out["tier"] = RECOGNITION
    out["exposure"] = out.exposure.astype(int)
    return out[cols]


# ------------------------------------------------------------------------------------ learning events
def events_from_sequence(exposures: Sequence[int], recalled: Sequence[bool]) -> dict:
    """Learning events of one fact x tier from its evaluated exposures (any order) and recall at each.
    Returns first_recalled_exposure, exposures_to_criterion (None when not reached), forgetting_events,
    n_evaluated_exposures, last_exposure (None when nothing was evaluated)."""
    seq = sorted(zip(exposures, recalled), key=lambda t: t[0])
    xs = [int(e) for e, _ in seq]
    rs = [bool(r) for _, r in seq]
    first = next((e for e, r in zip(xs, rs) if r), None)
    criterion = None
    for e, r in zip(reversed(xs), reversed(rs)):  # walk back over the final run of recalls
        if not r:
            break
        criterion = e
    forgetting = sum(1 for a, b in zip(rs, rs[1:]) if a and not b)
    return {"first_recalled_exposure": first, "exposures_to_criterion": criterion, "forgetting_events": forgetting,
            "n_evaluated_exposures": len(xs), "last_exposure": xs[-1] if xs else None}


def learning_events(status: pd.DataFrame, by: Sequence[str] = ("fact_id", "tier")) -> pd.DataFrame:
    """One row per `by` group (default fact_id x tier) of a recall/recognition status table (columns
    *by, exposure, recalled) with the columns of `events_from_sequence` (nullable integers: empty = never)."""
    by = list(by)
    ev_cols = ["first_recalled_exposure", "exposures_to_criterion", "forgetting_events", "n_evaluated_exposures",
               "last_exposure"]
    if status.empty:
        return pd.DataFrame(columns=by + ev_cols)
    rows = []
    for key, g in status.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ev = events_from_sequence(g.exposure.tolist(), g.recalled.tolist())
        rows.append({**dict(zip(by, key)), **ev})
    out = pd.DataFrame(rows, columns=by + ev_cols)
    for c in ev_cols:
        out[c] = out[c].astype("Int64")
    return out


# ------------------------------------------------------------------------------------------- summaries
def criterion_values(exposures_to_criterion: Iterable) -> np.ndarray:
    """Exposures-to-criterion as floats, never-reached (None/NaN/NA) as +inf."""
    return np.array([math.inf if pd.isna(v) else float(v) for v in exposures_to_criterion], dtype=float)


def learned_fraction(exposures_to_criterion: Iterable, grid: Sequence[float]) -> np.ndarray:
    """ECDF of exposures-to-criterion at each x of `grid`: the fraction of ALL facts (never-reached ones in
    the denominator) that reached criterion at or before x."""
    v = criterion_values(exposures_to_criterion)
    if len(v) == 0:
        return np.full(len(grid), np.nan)
    return np.array([(v <= x).mean() for x in grid])


def median_with_ci(values: Iterable, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """Median of exposures-to-criterion (never reached = +inf) with a percentile bootstrap CI that resamples
    facts. The quantiles are order statistics (numpy 'lower' for the low end, 'higher' for the high end:
    slightly conservative, and exact with infinite values). Returns median, ci_low, ci_high (each may be
    inf = not reached), n_facts, n_reached."""
    v = criterion_values(values)
    n = len(v)
    if n == 0:
        return {"median": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_facts": 0, "n_reached": 0}
    med = float(np.median(v))
    lo = hi = math.nan
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boots = np.median(v[rng.integers(0, n, (n_boot, n))], axis=1)
        lo = float(np.quantile(boots, (1 - ci) / 2, method="lower"))
        hi = float(np.quantile(boots, (1 + ci) / 2, method="higher"))
    return {"median": med, "ci_low": lo, "ci_high": hi, "n_facts": n, "n_reached": int(np.isfinite(v).sum())}


def format_exposures(x: float, last_exposure: Optional[float]) -> str:
    """A median/CI bound as text: a number, or `>last` when not reached (infinite)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return f">{last_exposure:g}" if last_exposure is not None and not pd.isna(last_exposure) else "not reached"
    return f"{x:g}"


def median_table(learning: pd.DataFrame, by: Sequence[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Median exposures-to-criterion with its bootstrap 95% CI per `by` group of a learning table (facts of
    every task in the group pooled). Columns: *by, n_facts, n_reached, median, ci_low, ci_high (floats,
    inf = not reached), last_exposure (the group's largest evaluated exposure) and `text`
    ('3 [2, 5]', '>10 [5, >10]')."""
    by = list(by)
    rows = []
    groups = learning.groupby(by, sort=True, dropna=False) if by else [((), learning)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        m = median_with_ci(g.exposures_to_criterion, n_boot=n_boot, seed=seed)
        last = g.last_exposure.max() if "last_exposure" in g else None
        last = None if pd.isna(last) else float(last)
        text = (f"{format_exposures(m['median'], last)} [{format_exposures(m['ci_low'], last)}, "
                f"{format_exposures(m['ci_high'], last)}]")
        rows.append({**dict(zip(by, key)), **m, "last_exposure": last, "text": text})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ knownness
def slick_category(greedy_correct: Sequence[bool], sampled_correct: Sequence[bool]) -> str:
    """SliCK category of one fact from its greedy answers (one per greedy "exemplar"; here per probe) and
    its sampled answers: HighlyKnown (greedy always right), MaybeKnown (greedy sometimes right),
    WeaklyKnown (greedy never right, sampling sometimes right), Unknown (never right). Raises ValueError
    without greedy answers (the categories are defined by P_correct(T=0))."""
    g = [bool(x) for x in greedy_correct]
    s = [bool(x) for x in sampled_correct]
    if not g:
        raise ValueError("slick_category: no greedy answers")
    if all(g):
        return "HighlyKnown"
    if any(g):
        return "MaybeKnown"
    if any(s):
        return "WeaklyKnown"
    return "Unknown"


def knownness(items: pd.DataFrame, sampling_temperature: float = 0.5, greedy_temperature: float = 0.0,
              exclude_tiers: Sequence[str] = (VERBATIM,)) -> pd.Series:
    """fact_id -> SliCK category from a generate.py qa items table of the BASE model (columns id, fact_id,
    tier, temperature, repeat, correct, checkpoint): greedy = rows at `greedy_temperature`, sampled = rows
    at `sampling_temperature` (every probe x repeat), tiers in `exclude_tiers` (verbatim) left out. Facts
    without greedy rows get no category. Raises ValueError when the table holds several checkpoints."""
    if items.empty:
        return pd.Series(dtype=object, name="knownness")
    if "checkpoint" in items and items.checkpoint.nunique() > 1:
        raise ValueError(f"knownness: expected the base model's answers only, got checkpoints "
                         f"{sorted(map(str, items.checkpoint.unique()))}")
    d = items[~items["tier"].astype(str).isin(list(exclude_tiers))]
    temp = d["temperature"].astype(float)
    greedy = d[np.isclose(temp, greedy_temperature)].groupby("fact_id").correct.apply(list)
    sampled = d[np.isclose(temp, sampling_temperature)].groupby("fact_id").correct.apply(list)
    cats = {f: slick_category(g, sampled.get(f, [])) for f, g in greedy.items()}
    return pd.Series(cats, dtype=object, name="knownness").rename_axis("fact_id")
