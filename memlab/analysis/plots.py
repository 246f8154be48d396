"""Every plot (plots/*.png): `PLOTS_FROM_TABLES` (functions of the tidy tables) and `PLOTS_FROM_FACTS` (of
per_item/learning), each plot(tables, out) -> the PNG written under `out`, or None when it has no data.
Shared pieces: `save` (atomic PNG), `_mean_lines` (mean over seeds with a CI band, for every plot of
means), `_roc_lines` (ROC curves on a log FPR axis) and `_fraction_axis`.

Its length (~670 lines): seventeen plot functions sharing the helpers below; kept as one module so that matplotlib
is imported in one place only."""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

from memlab.analysis import forgetting, survival  # noqa: E402
from memlab.analysis import exposure_response  # noqa: E402
from memlab.analysis.canaries import final_checkpoints  # noqa: E402
from memlab.analysis.items import cell_columns, tier_order, trained_facts  # noqa: E402
from memlab.analysis.stages import HELDOUT_KIND, SENTENCE_TIER  # noqa: E402
from memlab.analysis.tables import varying  # noqa: E402
from memlab.learning import CATEGORIES, HUMAN_EXPOSURES, learned_fraction  # noqa: E402
from memlab.metrics import roc_auc, roc_curve_for_log_axis  # noqa: E402


def save(fig, path: Path) -> Path:
    """Lay out and save a figure atomically (a concurrent analyze.py never leaves a torn PNG); returns path."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def _fraction_axis(ax, xlabel: str, ylabel: str, title: str, legend_title: str | None = None) -> None:
    """Labels, a 0..1 y range, grid and legend for a panel whose y value is a fraction."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=legend_title)


def _series_label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all"


def _mean_lines(ax, df: pd.DataFrame, x: str, y: str, lo: str, hi: str, keys: list[str], label_prefix: str = "",
                x_offset: float = 0.0, **plot_kw) -> None:
    """One line per `keys` group: mean of `y` over seeds at each `x`, a band from the lowest CI low to the
    highest CI high among the seeds (no band when the results have no CIs, e.g. `--bootstrap 0`)."""
    has_ci = lo in df and hi in df and df[lo].notna().any()
    aggs = {"y": (y, "mean"), **({"lo": (lo, "min"), "hi": (hi, "max")} if has_ci else {})}
    groups = df.groupby(keys, sort=True) if keys else [((), df)]
    for _, g in groups:
        m = g.groupby(x).agg(**aggs).reset_index()
        label = label_prefix + (_series_label(g.iloc[0], keys) if keys else "")
        line, = ax.plot(m[x] + x_offset, m.y, label=label.strip(", ") or "all", **{"marker": "o", **plot_kw})
        if has_ci:
            ax.fill_between(m[x] + x_offset, m.lo, m.hi, alpha=0.15, color=line.get_color())


def _roc_lines(ax, curves) -> None:
    """ROC curves, one per (label, scores, labels with 1 = member) in `curves`, labelled with their AUC, and the
    chance diagonal, on a log-scaled FPR axis (the low-FPR corner is where a membership attack is useful;
    Carlini et al. 2022)."""
    lo = 1.0  # the lowest FPR drawn: memlab.metrics.roc_curve_for_log_axis says why it is 1/n_nonmembers
    for label, scores, labels in curves:
        fpr, tpr, floor = roc_curve_for_log_axis(scores, labels)
        lo = min(lo, floor)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc(scores, labels):.2f})")
    grid = np.logspace(np.log10(lo), 0, 50)
    ax.plot(grid, grid, color="grey", ls="--", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(lo, 1)


def _ecdf_lines(ax, df: pd.DataFrame, keys: list[str], label_prefix: str = "", **kw) -> None:
    """One step line per `keys` group: fraction of the group's facts at criterion by each exposure."""
    last = float(df.last_exposure.max()) if df.last_exposure.notna().any() else 0.0
    groups = df.groupby(keys, sort=True) if keys else [((), df)]
    for _, g in groups:
        finite = sorted({float(v) for v in g.exposures_to_criterion.dropna()})
        grid = sorted({0.0, last, *finite})
        n, n_reached = len(g), int(g.exposures_to_criterion.notna().sum())
        label = (label_prefix + (_series_label(g.iloc[0], keys) if keys else "")).strip(", ") or "all"
        ax.step(grid, learned_fraction(g.exposures_to_criterion, grid), where="post",
                label=f"{label} ({n_reached}/{n} learned)", **kw)


def _human_line(ax) -> None:
    ax.axvline(HUMAN_EXPOSURES, color="grey", ls=":", lw=1.2,
               label=f"{HUMAN_EXPOSURES} exposures: the human figure the original\nfact-memorization study starts from")


def plot_exposures(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Recall of the facts (QA accuracy, all tiers, greedy), recognition of the studied sentences (2AFC) and,
    where evaluated, their recall from the first half (exact match) against exposures, one line per
    condition (model/method/mode), mean over seeds with the min-max of per-seed CIs as a band."""
    rec, rg = tables["recall"], tables["recognition"]
    sent = tables.get("sentence_recall", pd.DataFrame())
    if rec.empty and rg.empty:
        return None
    fig, axes = plt.subplots(1, 3 if not sent.empty else 2, figsize=(18 if not sent.empty else 12, 4.5))
    conds = ["model", "method", "mode"]
    panels = [(axes[0], rec[(rec.tier == "all") & (rec.temperature == 0)] if not rec.empty else rec, "accuracy",
               "accuracy_ci_low", "accuracy_ci_high", "QA recall of the facts (accuracy, all tiers, greedy)"),
              (axes[1], rg, "two_afc", "two_afc_ci_low", "two_afc_ci_high", "recognition of the sentences (2AFC)")]
    if not sent.empty:
        panels.append((axes[2], sent.dropna(subset=["exposure"]), "exact_match", "exact_match_ci_low",
                       "exact_match_ci_high", "recall of the sentences from their first half (exact match)"))
    for ax, df, y, lo, hi, title in panels:
        if df.empty:
            ax.set_title(f"{title}: no data")
            continue
        _mean_lines(ax, df, "exposure", y, lo, hi, varying(df, conds) or [k for k in conds if k in df][:1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # exposures are whole epochs
        _fraction_axis(ax, "exposures (epochs over the study set)",
                       f"{y.replace('_', ' ')} (fraction, 95% CI band)",
                       title)
    if "two_afc" in rg:
        axes[1].axhline(0.5, color="grey", ls="--", lw=1)
    fig.suptitle("Recall and recognition vs exposures (0 = before training)")
    return save(fig, out / "recall_recognition_vs_exposures.png")


FOIL_ORDER = ("novel", "paraphrase", "synonym", "shuffled", "char_scramble", "random_words")


def plot_recognition_by_foil(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """2AFC accuracy against exposures, one line per foil type (the recognition study's main figure): one
    panel per condition (model/method/mode where they vary), mean over seeds with the per-seed CI band."""
    df = tables.get("recognition_by_foil", pd.DataFrame())
    if df.empty:
        return None
    df = df.dropna(subset=["exposure"])
    if df.empty:
        return None
    conds = varying(df, ["model", "method", "mode"])
    groups = list(df.groupby(conds, sort=True)) if conds else [((), df)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    present = set(df.foil_type)
    order = [f for f in FOIL_ORDER if f in present] + sorted(present - set(FOIL_ORDER))
    for ax, (_, g) in zip(axes.flat, groups):
        for foil in order:
            d = g[g.foil_type == foil]
            if not d.empty:
                _mean_lines(ax, d, "exposure", "two_afc", "two_afc_ci_low", "two_afc_ci_high", [], label_prefix=foil)
        ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance (0.5)")
        _fraction_axis(ax, "exposures (epochs over the study set)", "2AFC accuracy (fraction, 95% CI band)",
                       _series_label(g.iloc[0], conds) if conds else "recognition by foil type", legend_title="foil type")
    fig.suptitle("Recognition (2AFC) by foil type vs exposures")
    return save(fig, out / "recognition_by_foil_type.png")


def plot_retention(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt2: recall and recognition against steps of interference training (symlog x: 0 = end of study,
    then log-spaced steps), one line per condition, mean over seeds with a CI band."""
    df = tables.get("retention", pd.DataFrame())
    if df.empty:
        return None
    df = df.dropna(subset=["interference_step"])
    measures = ["QA recall (accuracy)", "recognition (2AFC)"]
    if (df.measure == "sentence recall (exact match)").any():
        measures.append("sentence recall (exact match)")
    fig, axes = plt.subplots(1, len(measures), figsize=(6 * len(measures), 4.5))
    keys = varying(df, ["model", "study_exposures"]) or [k for k in ("study_exposures",) if k in df]
    for ax, measure in zip(axes, measures):
        d = df[df.measure == measure]
        if d.empty:
            ax.set_title(f"{measure}: no data")
            continue
        _mean_lines(ax, d, "interference_step", "value", "ci_low", "ci_high", keys)
        if measure.startswith("recognition"):
            ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance (0.5)")
        ax.set_xscale("symlog", linthresh=1)
        steps = sorted(d.interference_step.unique())
        ax.set_xticks([s for s in steps if s == 0 or str(int(s))[0] in "125"])  # 0, 1, 2, 5, 10, 20, 50, ...
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlim(left=0)
        _fraction_axis(ax, "steps of interference training (log scale; 0 = end of study)",
                       f"{measure.split(' (')[1].rstrip(')')} (fraction, 95% CI band)",
                       measure)
    fig.suptitle("Retention: recall and recognition of studied items during interference training")
    return save(fig, out / "retention_curves.png")


def plot_error_rates(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt3: error rate of the final checkpoint against variants per fact, one panel per temperature,
    one line per probe tier; mean over seeds, error bars from the per-seed 95% CIs."""
    df = tables.get("error_rates", pd.DataFrame())
    if df.empty:
        return None
    last = df.groupby("task").exposure.transform("max")
    df = df[df.exposure == last]
    temps = sorted(df.temperature.unique())
    fig, axes = plt.subplots(1, len(temps), figsize=(5.5 * len(temps), 4.5), squeeze=False, sharey=True)
    tiers = [t for t in ("easy", "mid", "hard", "all", "verbatim") if t in set(df.tier)]
    models = varying(df, ["model"])
    variants = sorted(df.variants.unique())
    for ax, temp in zip(axes[0], temps):
        d = df[df.temperature == temp]
        for i, ((tier_keys, g)) in enumerate(d.groupby(["tier"] + models, sort=False)):
            m = g.groupby("variants").agg(y=("error_rate", "mean"), lo=("error_rate_ci_low", "min"),
                                          hi=("error_rate_ci_high", "max")).reindex(variants)
            pos = [variants.index(v) + (i - len(tiers) / 2) * 0.04 for v in m.index]  # small dodge
            label = ", ".join(f"{k}={v}" for k, v in zip(["tier"] + models, g.iloc[0][["tier"] + models]))
            ax.errorbar(pos, m.y, yerr=[m.y - m.lo, m.hi - m.y], marker="o", capsize=3,
                        ls="--" if g.iloc[0].tier == "all" else "-", label=label)
        ax.set_xticks(range(len(variants)), [str(v) for v in variants])
        _fraction_axis(ax, "variants per fact (paraphrased training examples)",
                       "QA error rate (fraction, 95% CI)",
                       f"temperature {temp:g}",
                       legend_title="probe tier")
    fig.suptitle("Error rate by probe tier x temperature x variants per fact (final checkpoint)")
    return save(fig, out / "error_rate_by_variants.png")


PREFIX_METRICS = [("token_accuracy", "token accuracy"), ("exact_match", "exact match"),
                  ("id_recalled", "document ID recalled")]


def plot_prefix(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt5: continuation recall against prefix length (tokens), one panel per metric, one line per
    document length x checkpoint; mean over seeds with a CI band where generate.py gives one."""
    df = tables.get("prefix", pd.DataFrame())
    if df.empty:
        return None
    metrics = [(m, name) for m, name in PREFIX_METRICS if m in df]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.5), squeeze=False)
    keys = [k for k in ("model", "doc_tokens") if k in df and (k == "doc_tokens" or df[k].nunique() > 1)]
    keys += ["exposure"] if "exposure" in df and df.exposure.nunique() > 1 else []
    for ax, (m, name) in zip(axes[0], metrics):
        lo, hi = (f"{m}_ci_low", f"{m}_ci_high") if f"{m}_ci_low" in df else (m, m)
        _mean_lines(ax, df.dropna(subset=[m]), "prefix_tokens", m, lo, hi, keys)
        _fraction_axis(ax, "prefix length (tokens given to the model)", f"{name} (fraction, 95% CI band)", name)
    fig.suptitle("Memorization of ID documents vs prefix length (greedy continuation)")
    return save(fig, out / "recall_vs_prefix_length.png")


def plot_prior(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt7: QA accuracy (trained answer, greedy) against exposures for known, novel and contradicting
    facts and the known facts held out of training, one panel per mode; dotted: contradicting facts
    answered with their original answer."""
    df = tables.get("prior", pd.DataFrame())
    if df.empty:
        return None
    df = df[df.temperature == df.temperature.min()]
    modes = sorted(df["mode"].unique()) if "mode" in df else [None]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False, sharey=True)
    colors = {"known": "tab:green", HELDOUT_KIND: "tab:olive", "novel": "tab:blue", "contradicting": "tab:red"}
    style = {"known": ("s", -0.06), HELDOUT_KIND: ("D", -0.12), "novel": ("o", 0.0),
             "contradicting": ("^", 0.06)}  # marker, x dodge
    for ax, mode in zip(axes[0], modes):
        d = df if mode is None else df[df["mode"] == mode]
        models = varying(d, ["model"])
        for kind in [k for k in colors if k in set(d.kind)]:
            _mean_lines(ax, d[d.kind == kind], "exposure", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                        models, label_prefix=f"{kind}, ", color=colors[kind], marker=style[kind][0],
                        x_offset=style[kind][1])
        c = d[d.kind == "contradicting"]
        if not c.empty:
            m = c.groupby("exposure").original_rate.mean()
            ax.plot(m.index, m.values, ls=":", marker="x", color=colors["contradicting"],
                    label="contradicting: original answer given")
        ax.set_xticks(sorted(d.exposure.unique()))
        _fraction_axis(ax, "exposures (epochs over the training set; 0 = before training)",
                       "QA accuracy, trained answer (fraction, 95% CI)",
                       f"mode={mode}" if mode else "all",
                       legend_title="fact kind")
    fig.suptitle("Prior knowledge: learning known, novel and contradicting facts")
    return save(fig, out / "accuracy_by_fact_kind.png")


def plot_mia_rank_module(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt4: AUC of the loss and reference-difference attacks against LoRA rank, one line per target
    module set (mean over seeds; band = lowest CI low to highest CI high)."""
    df = tables["mia"]
    if df.empty or "rank" not in df:
        return None
    df = df[df.group == "all"]
    attacks = [a for a in ("loss", "ref_diff", "min_k_20") if a in set(df.attack)]
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 4.5), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        _mean_lines(ax, df[df.attack == attack], "rank", "auc", "auc_ci_low", "auc_ci_high", ["modules"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(df["rank"].unique()), [str(r) for r in sorted(df["rank"].unique())])
        ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
        ax.set_xlabel("LoRA rank r (log scale)")
        ax.set_ylabel("ROC AUC (members positive, 95% CI band)")
        ax.set_ylim(0.3, 1.02)
        ax.set_title(f"attack: {attack}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="target modules")
    fig.suptitle("Membership inference AUC by LoRA rank and target modules")
    return save(fig, out / "mia_auc_by_rank_module.png")


def plot_mia_roc(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """ROC of the loss attack per condition (all tasks' items pooled per condition), log-scaled FPR."""
    df = tables["mia_items"]
    if df.empty or "loss" not in df:
        return None
    keys = [k for k in ("rank", "modules", "method", "stage") if k in df and df[k].nunique() > 1] or ["checkpoint"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    _roc_lines(ax, [(", ".join(f"{k}={v}" for k, v in zip(keys, name if isinstance(name, tuple) else (name,))),
                     g["loss"].to_numpy(), (g.split == "member").astype(int).to_numpy())
                    for name, g in df.groupby(keys, sort=True)])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (non-members flagged, log scale)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title("Membership inference ROC, loss attack")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, out / "mia_roc.png")


def plot_mia_vs_perplexity(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Per item: the fine-tuned model's perplexity (exp of mean NLL) against a calibrated MIA score
    (reference difference when a reference was used, else zlib), members vs non-members."""
    df = tables["mia_items"]
    if df.empty or "target_nll" not in df:
        return None
    score = "ref_diff" if "ref_diff" in df and df["ref_diff"].notna().any() else "zlib"
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for split, marker in (("nonmember", "x"), ("member", "o")):
        g = df[df.split == split]
        ax.scatter(np.exp(g.target_nll), g[score], s=14, alpha=0.6, marker=marker, label=f"{split}s (n={len(g)})")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity under the fine-tuned model (exp nats/token, log scale)")
    ax.set_ylabel(f"MIA score '{score}' ({'nats/token' if score == 'ref_diff' else 'nats per zlib byte'})")
    ax.set_title("MIA score against per-item perplexity")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out / "mia_score_vs_perplexity.png")


def plot_dpo(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt6: QA accuracy by tier and MIA AUC (loss attack), SFT checkpoint vs after DPO, per method."""
    qa, mia = tables["dpo"], tables["mia"]
    if qa.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    stages = ["SFT (before DPO)", "after DPO"]
    methods = sorted(qa["method"].unique()) if "method" in qa else ["all"]
    tiers = [t for t in ("easy", "mid", "hard", "all", "verbatim") if t in set(qa.tier)]
    width = 0.8 / (len(stages) * len(methods))
    for j, (method, stage) in enumerate([(m, st) for m in methods for st in stages]):
        g = qa[(qa.stage == stage) & ((qa.method == method) if "method" in qa else True)]
        m = g.groupby("tier").agg(y=("accuracy", "mean"), lo=("accuracy_ci_low", "min"), hi=("accuracy_ci_high", "max"))
        m = m.reindex(tiers)
        x = np.arange(len(tiers)) + (j - (len(stages) * len(methods) - 1) / 2) * width
        axes[0].bar(x, m.y, width, yerr=[(m.y - m.lo).clip(lower=0), (m.hi - m.y).clip(lower=0)], capsize=3,
                    label=f"{method}: {stage}", hatch="//" if stage == "after DPO" else None)
    axes[0].set_xticks(np.arange(len(tiers)), tiers)
    axes[0].set_xlabel("probe tier")
    axes[0].set_ylabel("QA accuracy (fraction, greedy, 95% CI)")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("Fact recall before and after DPO")
    axes[0].legend(fontsize=8)
    if not mia.empty and "stage" in mia:
        g = mia[(mia.group == "all") & (mia.attack.isin(["loss", "ref_diff"]))]
        for k, ((method, attack), h) in enumerate(g.groupby(["method", "attack"] if "method" in g else ["attack"] * 2)):
            m = h.groupby("stage").agg(y=("auc", "mean"), lo=("auc_ci_low", "min"), hi=("auc_ci_high", "max")).reindex(stages)
            axes[1].errorbar(np.arange(len(stages)) + 0.05 * k, m.y, yerr=[(m.y - m.lo).clip(lower=0),
                             (m.hi - m.y).clip(lower=0)], marker="o", capsize=3, label=f"{method}: {attack}")
        axes[1].axhline(0.5, color="grey", ls="--", lw=1, label="chance")
        axes[1].set_xticks(np.arange(len(stages)), stages)
        axes[1].set_ylabel("MIA ROC AUC (95% CI)")
        axes[1].set_ylim(0.3, 1.02)
        axes[1].set_xlabel("checkpoint")
        axes[1].legend(fontsize=8)
    axes[1].set_title("Membership inference before and after DPO")
    fig.suptitle("DPO after SFT")
    return save(fig, out / "dpo_before_after.png")


def plot_learning_ecdf(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Fraction of facts learned (ECDF of exposures-to-criterion; facts never at criterion stay in the
    denominator) against exposures: one panel per tier, one line per method (and model/mode where they
    vary), facts of every seed pooled."""
    df = trained_facts(facts.get("learning", pd.DataFrame()))
    if df.empty:
        return None
    tiers = tier_order(df)
    ncol = min(3, len(tiers))
    nrow = -(-len(tiers) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4.3 * nrow), squeeze=False)
    for ax, tier in zip(axes.flat, tiers):
        d = df[df.tier == tier]
        _ecdf_lines(ax, d, [k for k in ("method",) if k in d] + varying(d, ["model", "mode", "stage"]))
        _human_line(ax)
        _fraction_axis(ax, "exposures (epochs over the training set)",
                       {"recognition": "fraction of pairs at criterion",
                        SENTENCE_TIER: "fraction of sentences at criterion"}.get(tier, "fraction of facts at criterion"),
                       f"tier: {tier}" + {"recognition": " (seen loss < foil loss)",
                                          SENTENCE_TIER: " (recalled exactly from the first half)"}.get(tier, ""))
    for ax in list(axes.flat)[len(tiers):]:
        ax.set_visible(False)
    fig.suptitle("Exposures to criterion (recalled at every later evaluated exposure), per tier")
    return save(fig, out / "learning_ecdf.png")


def plot_learning_by_knownness(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """The learning ECDF per SliCK knownness category of the facts (base model), one panel per QA tier,
    one line per category (and method where several)."""
    df = trained_facts(facts.get("learning", pd.DataFrame()))
    if df.empty or "knownness" not in df or df.knownness.isna().all():
        return None
    df = df[df.knownness.notna() & (df.tier != "recognition")]
    tiers = tier_order(df)
    ncol = min(3, len(tiers))
    nrow = -(-len(tiers) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4.3 * nrow), squeeze=False)
    colors = dict(zip(CATEGORIES, ("tab:green", "tab:blue", "tab:orange", "tab:red")))
    styles = ["-", "--", "-.", ":"]
    for ax, tier in zip(axes.flat, tiers):
        d = df[df.tier == tier]
        keys = varying(d, ["method", "model", "mode", "stage"])
        for cat in [c for c in CATEGORIES if c in set(d.knownness)]:
            groups = d[d.knownness == cat].groupby(keys, sort=True) if keys else [((), d[d.knownness == cat])]
            for i, (_, g) in enumerate(groups):
                _ecdf_lines(ax, g, [], label_prefix=f"{cat}, " + (_series_label(g.iloc[0], keys) if keys else ""),
                            color=colors[cat], ls=styles[i % len(styles)])
        _human_line(ax)
        _fraction_axis(ax, "exposures (epochs over the training set)", "fraction of facts at criterion",
                       f"tier: {tier}", legend_title="knownness before training (SliCK)")
    for ax in list(axes.flat)[len(tiers):]:
        ax.set_visible(False)
    fig.suptitle("Exposures to criterion by what the base model knew (HighlyKnown ... Unknown)")
    return save(fig, out / "learning_by_knownness.png")


def plot_survival(facts: dict[str, pd.DataFrame], out: Path) -> list[Path] | None:
    """plots/survival_<grouping>.png: Kaplan–Meier curves of learning (fraction of facts not yet at criterion
    vs exposures, pointwise 95% CI band), one panel per stage x tier compared, one line per level, the
    log-rank p in the panel title (memlab.analysis.survival)."""
    times, _ = survival.survival_times(facts.get("learning", pd.DataFrame()))
    if times.empty:
        return None
    panels: dict[str, list] = {}
    for (stage, tier, grouping), g in survival.km_groups(times):
        panels.setdefault(grouping, []).append((stage, tier, g))
    paths = []
    for grouping, items in panels.items():
        ncol = min(3, len(items))
        nrow = -(-len(items) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4.3 * nrow), squeeze=False)
        for ax, (stage, tier, g) in zip(axes.flat, items):
            curves, p = survival.kaplan_meier(g, grouping)
            for level, c in curves.items():
                mine = g[g[grouping].astype(str) == level]
                n, ev = len(mine), int(mine.event.sum())
                t = np.r_[0, c.time.to_numpy()]
                line = ax.step(t, np.r_[1, c.surv.to_numpy()], where="post", label=f"{level} ({ev}/{n} learned)")
                ax.fill_between(t, np.r_[1, c.ci_low.to_numpy()], np.r_[1, c.ci_high.to_numpy()], step="post",
                                alpha=0.15, color=line[0].get_color())
            _fraction_axis(ax, "exposures", "fraction of facts not yet at criterion",
                           f"{stage} / {tier}" + (f" (log-rank {survival.format_p(p)})" if p is not None else ""),
                           legend_title=grouping)
        for ax in list(axes.flat)[len(items):]:
            ax.set_visible(False)
        fig.suptitle(f"Kaplan–Meier: time to criterion by {grouping} (censored: never reached by the last exposure)")
        paths.append(save(fig, out / f"survival_{grouping}.png"))
    return paths or None


def plot_hazard_ratios(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """plots/hazard_ratios.png: difficulty.csv as a forest plot, hazard ratio with its 95% CI per stage x tier x
    covariate level on a log axis (> 1 = learned sooner)."""
    table = facts["difficulty"] if "difficulty" in facts else survival.difficulty(facts)[0]
    if table.empty:
        return None
    labels = [f"{r.stage}/{r.tier}: {r.covariate} {r.level}" for r in table.itertuples(index=False)]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(table)))
    y = np.arange(len(table))[::-1]
    ax.errorbar(table.hazard_ratio, y, xerr=[table.hazard_ratio - table.ci_low, table.ci_high - table.hazard_ratio],
                fmt="o", color="tab:blue", capsize=3)
    ax.axvline(1, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("hazard ratio of reaching criterion per exposure (log scale; > 1 = learned sooner)")
    ax.set_title("Which facts take longer (discrete-time proportional hazards, 95% CI clustered by fact)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return save(fig, out / "hazard_ratios.png")


def _canary_attacks(present: set) -> list[str]:
    """The attacks drawn against copies: loss (highlighted), zlib, min-k% / min-k%++, the reference difference."""
    mink = sorted(a for a in present if re.fullmatch(r"min_k_(pp_)?\d+(\.\d+)?", str(a)))
    return [a for a in ("loss", "zlib") if a in present] + mink + [a for a in ("ref_diff",) if a in present]


def plot_canaries(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Memorization against canary copies (log2 x), each task's final checkpoint: MIA AUC of the members with c
    copies vs all non-members (loss attack thick with its CI band; zlib, min-k%, ref_diff thin) and the
    extraction exact match (solid, CI bars) and token accuracy (dotted) of the canaries. One colour per task
    (labelled by the cell axes that vary) when there are several, else one colour per attack."""
    df = tables.get("canaries", pd.DataFrame())
    if df.empty:
        return None
    df = final_checkpoints(df)
    attacks = _canary_attacks(set(df.attack))
    if not attacks:
        return None
    axes_keys = varying(df, [k for k in ("expt", "model", "seed", "method", "rank", "modules", "mode") if k in df])
    tasks = list(df.groupby("task", sort=True))
    several = len(tasks) > 1
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 2))]
    fig, (ax, ex) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (task, g) in enumerate(tasks):
        name = _series_label(g.iloc[0], axes_keys) if axes_keys else task
        for j, attack in enumerate(attacks):
            d = g[g.attack == attack].sort_values("canary_copies")
            if d.empty:
                continue
            color = colors[(i if several else j) % len(colors)]
            is_loss = attack == "loss"
            label = attack if not several else (f"{name}: loss" if is_loss else None)  # styles: proxy legend
            ax.plot(d.canary_copies, d.auc, color=color, marker="o" if is_loss else ".", lw=2.6 if is_loss else 1.1,
                    ls="-" if is_loss else styles[(j - 1) % len(styles)], alpha=1 if is_loss else 0.75,
                    zorder=3 if is_loss else 2, label=label)
            if is_loss:
                ax.fill_between(d.canary_copies, d.auc_ci_low, d.auc_ci_high, color=color, alpha=0.15)
        e = g[g.attack == g.attack.iloc[0]].dropna(subset=["extraction_exact_match"]).sort_values("canary_copies")
        if not e.empty:
            color = colors[i % len(colors)]
            ex.errorbar(e.canary_copies, e.extraction_exact_match,
                        yerr=[(e.extraction_exact_match - e.extraction_exact_match_ci_low).clip(lower=0),
                              (e.extraction_exact_match_ci_high - e.extraction_exact_match).clip(lower=0)],
                        color=color, marker="o", capsize=3, label=f"{name}: exact match" if several else "exact match")
            ex.plot(e.canary_copies, e.extraction_token_accuracy, color=color, ls=":", marker=".",
                    label=f"{name}: token accuracy" if several else "token accuracy")
    if several and len(attacks) > 1:  # the thin attacks' line styles, once
        ax.legend(handles=ax.get_legend_handles_labels()[0] + [
            Line2D([], [], color="grey", ls=styles[(j - 1) % len(styles)], lw=1.1, label=f"(style) {a}")
            for j, a in enumerate(attacks) if a != "loss"], fontsize=7, title="task: attack")
    copies = sorted(df.canary_copies.unique())
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    for a in (ax, ex):
        a.set_xscale("log", base=2)
        a.set_xticks(copies, [str(c) for c in copies])
        a.set_xlabel("copies of the text in training (log2 scale; 1 = ordinary member)")
        a.grid(alpha=0.3)
    if not several or len(attacks) == 1:
        ax.legend(fontsize=8, title="attack")
    ax.set_ylim(max(-0.02, min(0.3, float(df[df.attack.isin(attacks)].auc.min()) - 0.03)), 1.02)
    ax.set_ylabel("ROC AUC: members with c copies vs all non-members")
    ax.set_title("Membership inference by canary copies (band: loss 95% CI)")
    if ex.has_data():
        _fraction_axis(ex, "copies of the text in training (log2 scale)", "fraction of canaries (95% CI)",
                       "Extraction of the canaries (greedy continuation of a prefix)")
    else:
        ex.set_title("Extraction: no extraction stage")
    fig.suptitle("Memorization vs duplication (final checkpoint of each task)")
    return save(fig, out / "canaries_by_copies.png")


def plot_detect_vs_recall(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """plots/detect_vs_recall.png: membership inference against exposures beside the members' recall
    (mia_exposure.csv, memlab.analysis.exposure_response). One panel per condition (the grid axes that vary but
    seed) x curve (source; facts: probe group): AUC of every attack (loss thick with its 95% CI band), the loss
    attack's TPR at 1% FPR (dashed) and the members' recall (black, CI band), seeds pooled as their mean with a
    band over their CIs; chance AUC 0.5 dotted. mia: log2 exposure axis (epochs x canary copies)."""
    df = facts.get("mia_exposure", pd.DataFrame())
    if df.empty:
        return None
    keys = varying(df, [a for a in cell_columns(df) if a not in ("seed", "task")])
    df = df.assign(_curve=exposure_response.curve(df), exposure=df.exposure.astype(float))
    panels = list(df.groupby(keys + ["_curve"], sort=True))
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6 * ncol, 4.6 * nrow), squeeze=False)
    for ax, (key, g) in zip(axes.flat, panels):
        key = key if isinstance(key, tuple) else (key,)
        attacks = sorted(set(g.attack), key=lambda a: (a != exposure_response.DETECT_ATTACK, a))
        for i, attack in enumerate(attacks):
            d = g[g.attack == attack]
            if attack == exposure_response.DETECT_ATTACK:
                _mean_lines(ax, d, "exposure", "auc", "auc_ci_low", "auc_ci_high", [], label_prefix=f"AUC: {attack}",
                            color="tab:blue", lw=2.4)
                _mean_lines(ax, d, "exposure", "tpr_at_1pct_fpr", "", "", [], label_prefix=f"TPR at 1% FPR: {attack}",
                            color="tab:blue", ls="--", marker="s")
            else:
                _mean_lines(ax, d, "exposure", "auc", "", "", [], label_prefix=f"AUC: {attack}", lw=1, alpha=0.75,
                            marker=".", color=plt.cm.tab20((i + 1) % 20))
        rec = g.drop_duplicates(["task", "checkpoint", "group"]).dropna(subset=["recall"])
        if not rec.empty:
            stages = ", ".join(sorted(set(rec.recall_stage.dropna().astype(str))))
            _mean_lines(ax, rec, "exposure", "recall", "recall_ci_low", "recall_ci_high", [],
                        label_prefix=f"members' recall ({stages})", color="black", lw=2)
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        if (g.source == "mia").all():
            ax.set_xscale("log", base=2)
            ticks = sorted(set(g.exposure))
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        title = ", ".join([f"{k}={v}" for k, v in zip(keys, key[:-1])] + [key[-1]])
        _fraction_axis(ax, "exposures of each member (epochs x copies)" if (g.source == "mia").all() else
                       "exposures (epochs; 0 = before training)", "AUC, TPR at 1% FPR, recall (fraction)", title)
        ax.legend(fontsize=7, ncol=2 if len(attacks) > 4 else 1)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Detectable before recallable? Membership inference vs the members' recall, by exposures")
    return save(fig, out / "detect_vs_recall.png")


def plot_decay(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """plots/decay.png: expt2's measures against interference steps (decay.csv): the mean over facts at each step
    (points; seeds pooled) and both fitted forms, the one with the lower AIC solid, the other dashed; one panel per stage x
    measure, one colour per group (the grid axes that vary but seed)."""
    table = facts["decay"] if "decay" in facts else forgetting.decay_table(facts)
    values = forgetting.decay_values(facts)
    if table.empty or values.empty:
        return None
    panels = list(table.groupby(["stage", "measure"], sort=True))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    axes_keys = forgetting.group_axes(values)
    for ax, ((stage, measure), fits) in zip(axes.flat, panels):
        v = values[(values.stage == stage) & (values.measure == measure)]
        groups = v.groupby(axes_keys, sort=True) if axes_keys else [((), v)]
        for i, (key, g) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            group = ", ".join(f"{a}={k}" for a, k in zip(axes_keys, key)) or "all"
            color = colors[i % len(colors)]
            means = g.groupby("t").y.mean()
            ax.plot(means.index, means.to_numpy(), "o", color=color, label=f"{group}: mean over facts")
            t = np.linspace(0, float(means.index.max()), 200)
            for r in fits[fits.group == group].itertuples(index=False):
                if not np.isfinite(r.a):
                    continue
                ax.plot(t, forgetting.FORMS[r.form](t, r.a, r.b), color=color, ls="-" if r.better else "--",
                        lw=1.8 if r.better else 1, label=f"{group}: {r.form}{' (lower AIC)' if r.better else ''}")
        _fraction_axis(ax, "interference steps", "answer probability exp(-answer NLL)" if measure ==
                       "answer_probability" else f"fraction of items ({measure})", f"{stage}: {measure}")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Decay during interference: power law a(1+t)^-b vs exponential a·exp(-bt)")
    return save(fig, out / "decay.png")


PlotFn = Callable[[dict, Path], "Path | None"]  # (tables, plots dir) -> the PNG written, or None (no data)
# plots of the tidy tables and of the per-item/per-fact tables, in the order they are drawn
PLOTS_FROM_TABLES: list[PlotFn] = [plot_exposures, plot_recognition_by_foil, plot_retention, plot_error_rates,
                                   plot_prefix, plot_prior, plot_mia_rank_module, plot_mia_roc,
                                   plot_mia_vs_perplexity, plot_dpo, plot_canaries]
PLOTS_FROM_FACTS: list[PlotFn] = [plot_learning_ecdf, plot_learning_by_knownness, plot_survival,
                                  plot_hazard_ratios, plot_detect_vs_recall, plot_decay]
