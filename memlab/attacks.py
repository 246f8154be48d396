"""Membership-inference attacks as pure functions of per-token log-probs, and their evaluation.

Sign convention: every attack returns a score where HIGHER = MORE MEMBER-LIKE, so ROC AUC, TPR at low
FPR and the plots treat all attacks alike (members are the positive class).

Notation for one item x = (x_1 .. x_n) whose n scored tokens have log-probs l_t = log p(x_t | x_<t)
(natural log, nats) under the target model:
    NLL(x)          = -(1/n) sum_t l_t                       (mean token NLL, docs/DESIGN.md §6.1 "per-item loss")
    loss            = -NLL(x)                                (Yeom et al. 2018)
    zlib            = -(n * NLL(x)) / Z(x),  Z(x) = len(zlib.compress(utf8(x)))   (Carlini et al. 2021)
    min_k_{k}       = mean of the m lowest l_t,  m = max(1, floor(k n / 100))     (Shi et al. 2024)
    min_k_pp_{k}    = mean of the m lowest z_t,  z_t = (l_t - mu_t) / sigma_t     (Zhang et al. 2024)
                      mu_t = E_{v~p(.|x_<t)}[log p(v|x_<t)], sigma_t^2 = Var_{v~p(.|x_<t)}[log p(v|x_<t)]
    ref_ratio       = -NLL_target(x) / NLL_reference(x)     (the LoRA-rank seed study's ratio attack)
    ref_diff        = NLL_reference(x) - NLL_target(x)       (Carlini et al. 2021 / Mireshghallah 2022)

Metrics per attack: ROC AUC and TPR at 1% and 0.1% FPR (memlab.metrics), each with a percentile bootstrap
95% CI that resamples members and non-members separately (stratified).

Besides the pure functions: the members/non-members overlap check (the leakage check), the choice of a
default reference model from checkpoint metadata (`default_reference`), and the ROC plot.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from memlab import metrics
from memlab.datagen.leakage import check_leakage, format_report
from memlab.io import DataError

DEFAULT_MIN_K = (20.0,)
LOW_FPRS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}
SIGMA_FLOOR = 1e-6  # nats; min-k%++ divides by max(sigma_t, this)


# ------------------------------------------------------------------------------------------- attacks
def _logprobs(token_logprobs: Sequence[float]) -> np.ndarray:
    lp = np.asarray(token_logprobs, dtype=np.float64)
    if lp.ndim != 1 or lp.size == 0:
        raise ValueError(f"need a non-empty 1-D array of token log-probs, got shape {lp.shape}")
    return lp


def loss_score(token_logprobs: Sequence[float]) -> float:
    """loss = -NLL = (1/n) sum_t log p(x_t | x_<t): the mean token log-prob. Members: lower NLL -> higher."""
    return float(_logprobs(token_logprobs).mean())


def zlib_bytes(text: str) -> int:
    """Z(x): length in bytes of zlib.compress(text.encode("utf-8")) at zlib's default level (6)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(token_logprobs: Sequence[float], text: str) -> float:
    """zlib = -(total NLL in nats) / Z(x) = (sum_t log p(x_t | x_<t)) / len(zlib.compress(utf8(text))).

    The target's code length for the item over a generic compressor's: a text that is merely simple
    (repetitive, short words) is cheap for both, a memorized one only for the model. Carlini et al. 2021
    divide log-perplexity by zlib entropy; we use the total NLL (n * mean NLL), so numerator and
    denominator both grow with the length of the text.
    """
    return float(_logprobs(token_logprobs).sum() / zlib_bytes(text))


def min_k_count(n_tokens: int, k: float) -> int:
    """m = max(1, floor(k * n / 100)): how many of n tokens make up the lowest k%."""
    return max(1, int(math.floor(k * n_tokens / 100.0 + 1e-9)))


def min_k_score(token_logprobs: Sequence[float], k: float = 20.0) -> float:
    """min_k = mean of the m lowest token log-probs, m = max(1, floor(k n / 100)) (Min-K% Prob).

    A member has few very unlikely tokens; a non-member's rarest tokens stay rare."""
    lp = np.sort(_logprobs(token_logprobs))
    return float(lp[:min_k_count(lp.size, k)].mean())


def min_k_plus_plus_score(token_logprobs: Sequence[float], token_mu: Sequence[float],
                          token_var: Sequence[float], k: float = 20.0) -> float:
    """min_k_pp = mean of the m lowest z_t = (log p(x_t|x_<t) - mu_t) / sigma_t (Min-K%++).

    mu_t and sigma_t^2 = token_var[t] are the mean and variance of log p(v | x_<t) over v ~ p(. | x_<t),
    i.e. under the model's own predictive distribution at position t (memlab.likelihood's token_mu/token_var).
    z_t says how far the actual token sits above what the model expects there: training pushes x_t
    towards a local maximum of p, so members have few tokens with very negative z_t. sigma_t is floored
    at SIGMA_FLOOR so a position whose distribution is uniform on its support (variance 0, where the
    numerator is also 0 for a token in that support) gives z_t = 0 instead of 0/0.
    """
    lp = _logprobs(token_logprobs)
    mu, var = np.asarray(token_mu, np.float64), np.asarray(token_var, np.float64)
    if mu.shape != lp.shape or var.shape != lp.shape:
        raise ValueError(f"token_mu {mu.shape} and token_var {var.shape} must match token_logprobs {lp.shape}")
    z = np.sort((lp - mu) / np.maximum(np.sqrt(np.clip(var, 0, None)), SIGMA_FLOOR))
    return float(z[:min_k_count(z.size, k)].mean())


def reference_ratio_score(target_nll: float, reference_nll: float) -> float:
    """ref_ratio = -NLL_target / NLL_reference: a member lost more of its loss in fine-tuning than a
    non-member, so its ratio is smaller. The reference NLL is floored at 1e-12 nats (no division by 0)."""
    return float(-target_nll / max(reference_nll, 1e-12))


def reference_difference_score(target_nll: float, reference_nll: float) -> float:
    """ref_diff = NLL_reference - NLL_target: how much fine-tuning lowered the item's loss (nats/token)."""
    return float(reference_nll - target_nll)


def attack_names(min_k: Sequence[float] = DEFAULT_MIN_K, with_reference: bool = True) -> list[str]:
    """Score column names in a fixed order: loss, zlib, min_k_{k}..., min_k_pp_{k}..., ref_ratio, ref_diff."""
    names = ["loss", "zlib"] + [f"min_k_{_k(k)}" for k in min_k] + [f"min_k_pp_{_k(k)}" for k in min_k]
    return names + (["ref_ratio", "ref_diff"] if with_reference else [])


def _k(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else str(k).replace(".", "p")


def attack_scores(token_logprobs: Sequence[float], text: str, token_mu: Sequence[float] | None = None,
                  token_var: Sequence[float] | None = None, min_k: Sequence[float] = DEFAULT_MIN_K,
                  target_nll: float | None = None, reference_nll: float | None = None) -> dict[str, float]:
    """Every attack's score for one item, named as in `attack_names` (min-k%++ needs mu/var, the reference
    attacks a reference NLL; those are left out when missing). `target_nll` defaults to -loss."""
    lp = _logprobs(token_logprobs)
    out = {"loss": loss_score(lp), "zlib": zlib_score(lp, text)}
    for k in min_k:
        out[f"min_k_{_k(k)}"] = min_k_score(lp, k)
    if token_mu is not None and token_var is not None:
        for k in min_k:
            out[f"min_k_pp_{_k(k)}"] = min_k_plus_plus_score(lp, token_mu, token_var, k)
    if reference_nll is not None:
        nll = -out["loss"] if target_nll is None else target_nll
        out["ref_ratio"] = reference_ratio_score(nll, reference_nll)
        out["ref_diff"] = reference_difference_score(nll, reference_nll)
    return out


# ------------------------------------------------------------------------------------------- metrics
def attack_metrics(member_scores: Sequence[float], nonmember_scores: Sequence[float], n_boot: int = 1000,
                   seed: int = 0) -> dict:
    """ROC AUC and TPR at 1% / 0.1% FPR of one attack (members positive, higher score = member), each as
    `name`, `name_ci_low`, `name_ci_high` (95% bootstrap, members and non-members resampled separately).

    With fewer than 1/fpr non-members the TPR at that FPR is the TPR at zero false positives (the
    threshold must sit above every non-member's score); `n_nonmembers` is reported so readers can tell.
    """
    pos, neg = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"attack_metrics: need members and non-members, got {pos.size} and {neg.size}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("attack_metrics: scores must be finite")

    def labelled(fn):
        return lambda a, b: fn(np.r_[a, b], np.r_[np.ones(a.size), np.zeros(b.size)])

    stats = {"auc": labelled(metrics.roc_auc)}
    for name, fpr in LOW_FPRS.items():
        stats[name] = labelled(lambda s, y, fpr=fpr: metrics.tpr_at_fpr(s, y, fpr))
    out: dict = {"n_members": int(pos.size), "n_nonmembers": int(neg.size)}
    for name, fn in stats.items():
        r = metrics.with_ci(fn, pos, neg, n_boot=n_boot, seed=seed, paired=False)
        out.update({name: r["value"], f"{name}_ci_low": r["ci_low"], f"{name}_ci_high": r["ci_high"]})
    return out


def evaluate_attacks(rows: Sequence[Mapping], attacks: Sequence[str], n_boot: int = 1000, seed: int = 0
                     ) -> dict:
    """Per attack: {"all": members vs non-members, "by_canary_copies": {"c": members with c copies vs all
    non-members}} of `attack_metrics`. `rows` hold `split` (member|nonmember), `canary_copies` and one
    column per attack; the per-copies breakdown is given only when members have more than one count."""
    members = [r for r in rows if r["split"] == "member"]
    nonmembers = [r for r in rows if r["split"] == "nonmember"]
    copies = sorted({int(r["canary_copies"]) for r in members})
    out = {}
    for a in attacks:
        neg = [r[a] for r in nonmembers]
        res = {"all": attack_metrics([r[a] for r in members], neg, n_boot, seed)}
        if len(copies) > 1:
            res["by_canary_copies"] = {
                str(c): attack_metrics([r[a] for r in members if int(r["canary_copies"]) == c], neg, n_boot, seed)
                for c in copies}
        out[a] = res
    return out


def mean_score_by_copies(rows: Sequence[Mapping], attack: str) -> dict[int, float]:
    """Mean score of `attack` per canary-copies count (0 = non-members), ascending in copies."""
    groups: dict[int, list[float]] = {}
    for r in rows:
        groups.setdefault(int(r["canary_copies"]), []).append(float(r[attack]))
    return {c: float(np.mean(v)) for c, v in sorted(groups.items())}


# ------------------------------------------------------------------------------------------ checks
def check_disjoint(members: Sequence[Mapping], nonmembers: Sequence[Mapping], members_name: str = "members",
                   nonmembers_name: str = "nonmembers") -> dict:
    """The leakage check (exact and normalized text match) between member and non-member texts; DataError
    listing every overlapping pair, since a text in both sets has no true label. Returns the report."""
    report = check_leakage({members_name: [{"id": r["id"], "text": r["text"]} for r in members]},
                           {nonmembers_name: [{"id": r["id"], "text": r["text"]} for r in nonmembers]})
    if not report["passed"]:
        raise DataError("members and non-members overlap (a text in both has no true label); "
                        + format_report(report))
    return report


# ------------------------------------------------------------------------------------------- plots
def plot_roc(curves: Mapping[str, tuple[Sequence[float], Sequence[int]]], path, title: str) -> None:
    """ROC curves (one per attack: scores, labels with 1 = member) on a log-scaled FPR axis, as in the MIA
    literature (Carlini et al. 2022): the low-FPR corner is where an attack is useful. FPR 0 points are
    drawn at the axis' left edge, 1 / (2 * n_nonmembers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    lo = 1.0
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = metrics.roc_curve(scores, labels)
        n_neg = int((np.asarray(labels) == 0).sum())
        edge = 0.5 / n_neg
        lo = min(lo, edge)
        auc = metrics.roc_auc(scores, labels)
        ax.plot(np.maximum(fpr, edge), tpr, lw=1.6, label=f"{name} (AUC {auc:.3f})")
    grid = np.logspace(np.log10(lo), 0, 100)
    ax.plot(grid, grid, ls="--", color="grey", lw=1, label="chance (AUC 0.5)")
    ax.set_xscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (non-members flagged), log scale")
    ax.set_ylabel("true positive rate (members detected)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------- reference model
def run_config_of(checkpoint) -> tuple[Path, dict] | None:
    """(path, contents) of the run's config.json for a checkpoint written by a memlab training script
    (RUN/checkpoints/NAME/, or RUN/checkpoints/NAME/merged/): the nearest config.json up to three levels
    above the checkpoint that holds the script's `args` (a model's own config.json has none)."""
    p = Path(str(checkpoint))
    for d in [p, *list(p.parents)[:3]]:
        f = d / "config.json"
        if f.is_file():
            try:
                cfg = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(cfg, dict) and isinstance(cfg.get("args"), dict) and "script" in cfg:
                return f, cfg
    return None


def default_reference(target, model_name_or_path: str) -> tuple[str | None, str]:
    """(reference model, the rule that chose it) for a target model or checkpoint, when no
    --reference_model is given. In order:
    1. a LoRA adapter dir: its base model (adapter_config.json `base_model_name_or_path`);
    2. a full-model checkpoint of a memlab run: the run's initialisation from RUN/config.json, i.e.
       `args.sft_checkpoint` (finetune_dpo.py: the SFT model), else `args.init_from` (train.py continued
       from a checkpoint), else `args.model_name_or_path`; none for a run trained `--from_scratch`;
    3. a checkpoint that is not --model_name_or_path itself: --model_name_or_path;
    4. otherwise none (the reference attacks are skipped).
    """
    p = Path(str(target))
    if (p / "adapter_config.json").is_file():
        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base:
            return str(base), "adapter base (adapter_config.json base_model_name_or_path)"
    found = run_config_of(p) if p.is_dir() else None
    if found:
        path, cfg = found
        args = cfg["args"]
        if args.get("from_scratch"):
            return None, f"{path}: trained from scratch, no initialisation to compare with"
        key = next((k for k in ("sft_checkpoint", "init_from", "model_name_or_path") if args.get(k)), None)
        if key:
            return str(args[key]), f"run initialisation ({path} args.{key})"
    if str(target) != str(model_name_or_path):
        return str(model_name_or_path), "--model_name_or_path (base of the checkpoints)"
    return None, "no adapter base or run config found; pass --reference_model"


def adapter_settings(checkpoint) -> dict:
    """LoRA rank, alpha and target modules of an adapter checkpoint (empty for a full model), so results
    can be grouped by them."""
    f = Path(str(checkpoint)) / "adapter_config.json"
    if not f.is_file():
        return {}
    cfg = json.loads(f.read_text())
    modules = cfg.get("target_modules")
    if isinstance(modules, (list, tuple, set)):
        modules = ",".join(sorted(modules))
    return {"lora_r": cfg.get("r"), "lora_alpha": cfg.get("lora_alpha"), "lora_target_modules": modules}
