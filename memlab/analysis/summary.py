"""summary.txt's blocks: `SUMMARIES`, an ordered registry name -> fn(tables, facts) -> text ("" = no block),
joined with blank lines in that order: `summary_table` (recall and recognition per condition x exposure),
`learning_summary` (median exposures to criterion), `canary_summary` (memorization vs canary copies) and
`foil_summary` (recognition by foil type)."""
from __future__ import annotations

from typing import Callable

import pandas as pd

from memlab.analysis import forgetting, survival
from memlab.analysis import exposure_response
from memlab.analysis.canaries import final_checkpoints
from memlab.analysis.items import tier_order, trained_facts
from memlab.analysis.tables import varying
from memlab.learning import CATEGORIES, median_table


def summary_table(tables: dict[str, pd.DataFrame]) -> str:
    """Greedy QA recall per tier (`recall_all` pools the reworded tiers; `recall_verbatim` repeats the
    training prompts), recognition 2AFC and sentence recall from the first half (exact match, where
    evaluated), per condition and exposure, as a text table."""
    rec, rg = tables["recall"], tables["recognition"]
    parts = []
    keys = [k for k in ("model", "method", "mode") if k in rec]
    if not rec.empty:
        greedy = rec[rec.temperature == 0]
        for tier in ["all"] + [t for t in ("easy", "mid", "hard", "verbatim") if t in set(greedy.tier)]:
            t = greedy[greedy.tier == tier].groupby(keys + ["exposure"])["accuracy"].mean()
            parts.append(t.rename(f"recall_{tier}"))
    if not rg.empty:
        parts.append(rg.groupby(keys + ["exposure"])["two_afc"].mean().rename("recognition_2afc"))
    sent = tables.get("sentence_recall", pd.DataFrame())
    if not sent.empty and parts:
        parts.append(sent.dropna(subset=["exposure"]).groupby(keys + ["exposure"])["exact_match"].mean()
                     .rename("sentence_recall_exact"))
    if not parts:
        extra = [f"tidy_{k}: {len(df)} rows" for k, df in tables.items() if not df.empty]
        return "\n".join(extra) or "no finished tasks"
    return pd.concat(parts, axis=1).round(3).to_string()


def learning_summary(facts: dict[str, pd.DataFrame]) -> str:
    """Median exposures-to-criterion with a bootstrap 95% CI over facts, per method x tier (x model/mode
    where they vary), and per knownness category x tier; `>N` = not reached by the last evaluated exposure."""
    df = trained_facts(facts.get("learning", pd.DataFrame()))
    if df.empty:
        return ""
    parts = ["Median exposures to criterion [95% bootstrap CI over facts] (never learned = infinite; "
             ">N: not reached by exposure N)"]
    qa = df[df.tier != "recognition"]  # `stage` only when QA stages differ (recognition has its own tier)
    keys = [k for k in ("method",) if k in df] + varying(df, ["model", "mode"]) + varying(qa, ["stage"]) + ["tier"]
    order = {t: i for i, t in enumerate(tier_order(df))}

    def table(t: pd.DataFrame, by: list[str]) -> str:
        t = t.sort_values(by, key=lambda s: s.map(order) if s.name == "tier" else s)
        return t[by + ["n_facts", "n_reached", "text"]].rename(columns={"text": "median [CI]"}).to_string(index=False)

    parts.append(table(median_table(df, keys), keys))
    if "knownness" in df and df.knownness.notna().any():
        k = df[df.knownness.notna()]
        kk = ["knownness"] + varying(k, ["method"]) + ["tier"]
        t = median_table(k, kk)
        t["knownness"] = pd.Categorical(t.knownness, [c for c in CATEGORIES if c in set(t.knownness)])
        parts.append(table(t, kk))
    return "\n\n".join(parts)


def canary_summary(tables: dict[str, pd.DataFrame]) -> str:
    """summary.txt block: the loss attack per task x canary copies at each task's final checkpoint (AUC with
    its 95% CI, TPR at 1% / 10% FPR, extraction exact match); empty without tidy_canaries rows."""
    df = tables.get("canaries", pd.DataFrame())
    if df.empty or "loss" not in set(df.attack):
        return ""
    d = final_checkpoints(df[df.attack == "loss"]).copy()
    keys = varying(d, [k for k in ("expt", "model", "seed", "method", "rank", "modules", "mode") if k in d])
    keys = keys or (["task"] if d.task.nunique() > 1 else [])

    def fmt(v, lo, hi):
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(v) else "-"

    d["auc [CI]"] = [fmt(v, lo, hi) for v, lo, hi in zip(d.auc, d.auc_ci_low, d.auc_ci_high)]
    d["exact match [CI]"] = [fmt(v, lo, hi) for v, lo, hi in zip(
        d.extraction_exact_match, d.extraction_exact_match_ci_low, d.extraction_exact_match_ci_high)]
    d["n_extracted"] = d.extraction_n.map(lambda n: "-" if pd.isna(n) else str(int(n)))
    cols = keys + ["checkpoint", "canary_copies", "n_members", "n_nonmembers", "auc [CI]", "tpr_at_1pct_fpr",
                   "tpr_at_10pct_fpr", "exact match [CI]", "n_extracted"]
    t = d.sort_values(keys + ["canary_copies"])[cols].round(3).to_string(index=False)
    return ("Memorization vs canary copies (loss attack, final checkpoint; members with c copies vs all "
            "non-members; extraction: greedy continuation of the canaries)\n" + t)


def foil_summary(tables: dict[str, pd.DataFrame]) -> str:
    """summary.txt block: recognition 2AFC per condition x exposure x foil type (mean over seeds; pairs in
    tidy_recognition_by_foil.csv), only when some recognition pairs carry a foil type."""
    df = tables.get("recognition_by_foil", pd.DataFrame())
    if df.empty:
        return ""
    df = df.dropna(subset=["exposure"])
    if df.empty:
        return ""
    keys = [k for k in ("model", "method", "mode") if k in df and df[k].nunique() > 1]
    t = df.pivot_table(index=keys + ["exposure"], columns="foil_type", values="two_afc", aggfunc="mean")
    t.columns.name = None
    return "Recognition 2AFC by foil type (tidy_recognition_by_foil.csv)\n" + t.round(3).to_string()


SummaryFn = Callable[[dict, dict], str]  # (tidy tables, per-item/per-fact tables) -> a summary.txt block
# the blocks in summary.txt's order (the first is never empty); a module's function is looked up when called
SUMMARIES: dict[str, SummaryFn] = {
    "conditions": lambda tables, facts: summary_table(tables),
    "learning": lambda tables, facts: learning_summary(facts),
    "canaries": lambda tables, facts: canary_summary(tables),
    "foil_types": lambda tables, facts: foil_summary(tables),
    "difficulty": lambda tables, facts: survival.survival_summary(facts),
    "forgetting": lambda tables, facts: forgetting.forgetting_summary(facts),
    "detect_vs_recall": lambda tables, facts: exposure_response.detect_recall_summary(facts)}


def summary_text(tables: dict[str, pd.DataFrame], facts: dict[str, pd.DataFrame],
                 summaries: dict[str, SummaryFn] | None = None) -> str:
    """The non-empty blocks of `summaries` (default `SUMMARIES`) in order, separated by a blank line."""
    texts = [fn(tables, facts) for fn in (SUMMARIES if summaries is None else summaries).values()]
    return "\n\n".join(t for t in texts if t)
