"""Membership-inference attacks as pure functions of per-token log-probs, and their evaluation.

Its length (~490 lines): ten published attacks, each a short pure function with its formula and citation in
its docstring, plus their evaluation; one module keeps the sign convention below in one place.

Sign convention: every attack returns a score where HIGHER = MORE MEMBER-LIKE, so ROC AUC, TPR at low
FPR and the plots treat all attacks alike (members are the positive class).

Notation for one item x = (x_1 .. x_n) whose n scored tokens have log-probs l_t = log p(x_t | x_<t)
(natural log, nats) under the target model:
    NLL(x)          = -(1/n) sum_t l_t                       (mean token NLL, docs/DESIGN.md §6.1 "per-item loss")
    loss            = -NLL(x)                                (Yeom et al. 2018)
    zlib            = -NLL(x) / Z(x),  Z(x) = len(zlib.compress(utf8(x)))     (Carlini et al. 2021, as in mimir)
    zlib_total      = -(n * NLL(x)) / Z(x)                   (memlab's earlier zlib: total, not mean, NLL)
    min_k_{k}       = mean of the m lowest l_t,  m = max(1, floor(k n / 100))     (Shi et al. 2024)
    min_k_pp_{k}    = mean of the m lowest z_t,  z_t = (l_t - mu_t) / sigma_t     (Zhang et al. 2024)
                      mu_t = E_{v~p(.|x_<t)}[log p(v|x_<t)], sigma_t^2 = Var_{v~p(.|x_<t)}[log p(v|x_<t)]
    ref_ratio       = -NLL_target(x) / NLL_reference(x)     (the LoRA-rank seed study's ratio attack)
    ref_diff        = NLL_reference(x) - NLL_target(x)       (Carlini et al. 2021 / Mireshghallah 2022)
    recall          = LL(x | P) / LL(x),  LL = mean token log-prob, P = non-member prefix    (Xie et al. 2024)
    dc_pdd          = mean over the first occurrence of each token of min(p_t * log(1 / f(x_t)), a)
                      f = Laplace-smoothed token frequency in a reference corpus   (Zhang et al. 2024)
    neighbourhood   = mean_j NLL(x~_j) - NLL(x),  x~_j = x with words replaced   (Mattern et al. 2023)
    gradnorm        = -|| grad_theta NLL(x) ||_2  (theta: LoRA parameters of an adapter, else all)
    rmia            = Pr_z[ LR(x, z) > gamma ],  LR(x, z) = (p(x|theta)/p(x)) / (p(z|theta)/p(z)),
                      p(.|theta) = exp(-NLL), p(.) = mean over reference models    (Zarifzadeh et al. 2024)

Metrics per attack: ROC AUC and TPR at 1% and 0.1% FPR (memlab.metrics), each with a percentile bootstrap
95% CI that resamples members and non-members separately (stratified).

Besides the pure functions: the members/non-members overlap check (the leakage check), the choice of a
default reference model from checkpoint metadata (`default_reference`), and the ROC plot.
"""
from __future__ import annotations

import json
import math
import re
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
    """zlib = -NLL(x) / Z(x) = ((1/n) sum_t log p(x_t | x_<t)) / len(zlib.compress(utf8(text))).

    Carlini et al. 2021 ("Extracting Training Data from Large Language Models", §5.2: the ratio of the
    log-perplexity to the zlib entropy), as implemented in mimir (mean log-likelihood / zlib bytes). Negated
    log-perplexity so that higher = more member-like: a text that is merely simple is cheap for both the
    model and zlib, a memorized one only for the model.
    """
    return float(_logprobs(token_logprobs).mean() / zlib_bytes(text))


def zlib_total_score(token_logprobs: Sequence[float], text: str) -> float:
    """zlib_total = -(total NLL in nats) / Z(x) = (sum_t log p(x_t | x_<t)) / len(zlib.compress(utf8(text))).

    memlab's earlier `zlib`, kept under this name: it divides the TOTAL NLL (n * mean NLL), so numerator and
    denominator both grow with the length of the text. It is NOT the published attack (Carlini et al. 2021
    divide the mean NLL, see `zlib_score`); on held-out sentences the two rank items differently (issue 13:
    AUC 0.40 vs 0.66), so results labelled `zlib` now follow the paper.
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


def recall_score(conditional_logprobs: Sequence[float], token_logprobs: Sequence[float]) -> float:
    """recall = LL(x | P) / LL(x): ReCaLL (Xie et al. 2024, "ReCaLL: Membership Inference via Relative
    Conditional Log-Likelihoods", EMNLP), LL = mean token log-likelihood of x's tokens, P = a prefix of
    known non-member texts.

    Sign: the paper finds that a non-member prefix lowers a member's log-likelihood more than a
    non-member's; both LLs are negative, so LL(x|P) / LL(x) = |LL(x|P)| / |LL(x)| is HIGHER for members,
    and the authors' evaluation (src/eval.py: roc_curve(labels, score), label 1 = member) uses the ratio as
    is. So the ratio is already higher = more member-like and is not negated. Tokens as in the authors'
    code: LL(x) over x's scored tokens (all but the first), LL(x|P) over all of x's tokens after P (x's
    first token is predicted from the prefix); no prefix token is scored.
    """
    cond, lp = _logprobs(conditional_logprobs), _logprobs(token_logprobs)
    ll = lp.mean()
    if ll == 0:
        raise ValueError("recall: LL(x) is 0 (every token has probability 1); the ratio is undefined")
    return float(cond.mean() / ll)


def laplace_frequencies(counts: Sequence[int]) -> np.ndarray:
    """f(v) = (count(v) + 1) / (sum_u count(u) + V): Laplace-smoothed token frequencies (DC-PDD, Zhang et al.
    2024, as in their reference implementation), V = number of token ids."""
    c = np.asarray(counts, dtype=np.float64)
    return (c + 1.0) / (c.sum() + c.size)


def first_occurrences(token_ids: Sequence[int]) -> list[int]:
    """Positions of the first occurrence of each distinct token id, in order (DC-PDD's FOS)."""
    seen, out = set(), []
    for i, t in enumerate(token_ids):
        if int(t) not in seen:
            seen.add(int(t))
            out.append(i)
    return out


def dc_pdd_score(token_ids: Sequence[int], token_logprobs: Sequence[float], frequencies: Sequence[float],
                 a: float = 0.01) -> float:
    """dc_pdd = (1/|FOS|) sum_{i in FOS} min(alpha_i, a),  alpha_i = p(x_i; M) * log(1 / f(x_i)).

    Zhang et al. 2024, "Pretraining Data Detection for Large Language Models: A Divergence-based Calibration
    Method" (EMNLP): p(x_i; M) = the model's probability of the i-th scored token, f = Laplace-smoothed
    token frequencies in a reference corpus (`laplace_frequencies`), FOS = the first occurrence of each
    distinct token among the scored tokens, a = the upper bound (paper default 0.01). alpha_i is the token's
    cross-entropy term between the model's token probability and the corpus frequency: a token that is
    likely under the model but rare in general text points at training data. Higher = more member-like (as
    in the paper; the reference code negates it for its lower-is-member ROC). `token_ids[j]` is the id
    whose log-prob is token_logprobs[j]. The reference code scores the first text token after an injected
    EOS; memlab scores the tokens the shared scorer scores (all but the first, which has no context).
    """
    lp = _logprobs(token_logprobs)
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.shape != lp.shape:
        raise ValueError(f"token_ids {ids.shape} must match token_logprobs {lp.shape}")
    f = np.asarray(frequencies, dtype=np.float64)
    if ids.max() >= f.size or ids.min() < 0:
        raise ValueError(f"token id {int(ids.max())} outside the frequency table ({f.size} ids)")
    idx = first_occurrences(ids.tolist())
    alpha = np.exp(lp[idx]) * -np.log(f[ids[idx]])
    return float(np.minimum(alpha, a).mean())


def neighbourhood_score(target_nll: float, neighbour_nlls: Sequence[float]) -> float:
    """neighbourhood = (1/N) sum_j NLL(x~_j) - NLL(x): Mattern et al. 2023, "Membership Inference Attacks
    against Language Models via Neighbourhood Comparison" (Findings of ACL). The paper thresholds
    L(x) - mean_j L(x~_j) (lower = member); negated here so higher = more member-like. x~_j are neighbours of
    x made by word replacement (membership_inference.py: a masked LM's substitutes, or the fallback)."""
    nb = np.asarray(neighbour_nlls, dtype=np.float64)
    if nb.ndim != 1 or nb.size == 0:
        raise ValueError("neighbourhood: need at least one neighbour NLL")
    return float(nb.mean() - target_nll)


def gradnorm_score(grad_norm: float) -> float:
    """gradnorm = -||grad_theta NLL(x)||_2: the L2 norm of the gradient of the item's mean token NLL w.r.t.
    the trainable parameters theta (LoRA parameters of an adapter, else all), negated: training drives a
    member's gradient towards 0 (gradient-norm attack as in mimir / Maini et al. 2024 "LLM Dataset Inference";
    mimir averages per-tensor norms, we take the norm of the whole gradient)."""
    return float(-grad_norm)


def rmia_scores(target_nll: Sequence[float], reference_nlls: Sequence[Sequence[float]],
                population_target_nll: Sequence[float], population_reference_nlls: Sequence[Sequence[float]],
                gamma: float = 1.0, same: Sequence[int] | None = None) -> np.ndarray:
    """rmia(x) = |{z in Z : LR(x, z) > gamma}| / |Z|,  LR(x, z) = [p(x|theta) / p(x)] / [p(z|theta) / p(z)].

    Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference Attacks" (ICML), with K reference
    models theta_k trained on random halves of the population: p(x) = (1/K) sum_k p(x|theta_k) (the
    average over IN and OUT reference models). For a language model p(x|theta) = exp(-NLL(x)), the
    geometric-mean token probability (exp of the mean token log-prob), as Privacy Meter's LLM signal.
    Z = population samples (non-members); `same[i]` = the index in Z of item i itself (or -1), left out of its
    own comparison. reference_nlls: K x n, population_reference_nlls: K x m. Higher = more member-like.
    """
    def ratio(t, refs):
        t, refs = np.asarray(t, np.float64), np.atleast_2d(np.asarray(refs, np.float64))
        # log p(x|theta) - log mean_k p(x|theta_k), in log space for stability
        lse = np.logaddexp.reduce(-refs, axis=0) - np.log(refs.shape[0])
        return -t - lse

    rx, rz = ratio(target_nll, reference_nlls), ratio(population_target_nll, population_reference_nlls)
    log_gamma = np.log(gamma)
    out = np.empty(rx.size)
    for i, v in enumerate(rx):
        above = (v - rz) > log_gamma
        n = rz.size
        if same is not None and same[i] >= 0:
            above[same[i]] = False
            n -= 1
        if n <= 0:
            raise ValueError("rmia: the population is empty")
        out[i] = above.sum() / n
    return out


_WORD = re.compile(r"[A-Za-z]+")


def word_vocabulary(texts: Sequence[str]) -> list[str]:
    """The substitute words of the offline neighbourhood fallback: every alphabetic word (2+ letters,
    lower-cased) of `texts`, sorted."""
    return sorted({w.lower() for t in texts for w in _WORD.findall(t) if len(w) >= 2})


def replaced_positions(n_words: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """max(1, round(rate * n_words)) distinct word positions (at most n_words), in increasing order."""
    m = min(n_words, max(1, int(round(rate * n_words))))
    return np.sort(rng.choice(n_words, size=m, replace=False))


def substitute_neighbours(text: str, vocabulary: Sequence[str], n: int, rate: float, seed) -> list[str]:
    """`n` neighbours of `text` (the `corpus_word_substitution` fallback of the neighbourhood attack): in
    each, a fraction `rate` of the words (at least one) is replaced by a word drawn uniformly from
    `vocabulary` (another word than the original; capitalisation of the first letter kept). Deterministic
    in `seed` (e.g. [run seed, crc32 of the item id]). A text without words comes back unchanged."""
    spans = [m.span() for m in _WORD.finditer(text)]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if not spans or len(vocabulary) < 2:
            out.append(text)
            continue
        pieces, last = [], 0
        for i in replaced_positions(len(spans), rate, rng):
            a, b = spans[i]
            word = text[a:b]
            new = word.lower()
            while new == word.lower():
                new = vocabulary[int(rng.integers(len(vocabulary)))]
            if word[0].isupper():
                new = new[0].upper() + new[1:]
            pieces += [text[last:a], new]
            last = b
        out.append("".join(pieces) + text[last:])
    return out


def attack_names(min_k: Sequence[float] = DEFAULT_MIN_K, with_reference: bool = True) -> list[str]:
    """Score column names in a fixed order: loss, zlib, zlib_total, min_k_{k}..., min_k_pp_{k}..., ref_ratio,
    ref_diff (the per-token attacks `attack_scores` computes; the model-based ones are in EXTRA_ATTACKS)."""
    names = ["loss", "zlib", "zlib_total"] + [f"min_k_{_k(k)}" for k in min_k] + [f"min_k_pp_{_k(k)}" for k in min_k]
    return names + (["ref_ratio", "ref_diff"] if with_reference else [])


# attacks that need more than the target's per-token log-probs (membership_inference.py computes their inputs)
EXTRA_ATTACKS = ("recall", "dc_pdd", "neighbourhood", "gradnorm", "rmia")


def _k(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else str(k).replace(".", "p")


def attack_scores(token_logprobs: Sequence[float], text: str, token_mu: Sequence[float] | None = None,
                  token_var: Sequence[float] | None = None, min_k: Sequence[float] = DEFAULT_MIN_K,
                  target_nll: float | None = None, reference_nll: float | None = None) -> dict[str, float]:
    """Every per-token attack's score for one item, named as in `attack_names` (min-k%++ needs mu/var, the
    reference attacks a reference NLL; those are left out when missing). `target_nll` defaults to -loss."""
    lp = _logprobs(token_logprobs)
    out = {"loss": loss_score(lp), "zlib": zlib_score(lp, text), "zlib_total": zlib_total_score(lp, text)}
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
    drawn at 1 / n_nonmembers, the axis' left edge (metrics.roc_curve_for_log_axis: one rule for every ROC plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    lo = 1.0
    for name, (scores, labels) in curves.items():
        fpr, tpr, floor = metrics.roc_curve_for_log_axis(scores, labels)
        lo = min(lo, floor)
        auc = metrics.roc_auc(scores, labels)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.3f})")
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
