"""Pure metric functions: recognition (2AFC, ROC AUC, TPR at low FPR), bootstrap CIs, and recall of a
generated continuation (answer extraction for QA probes is memlab.answers).

Everything here takes plain Python/numpy values and returns numbers, so the scripts, the MIA module and
tests call the same definitions (docs/DESIGN.md §6).
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np


# ------------------------------------------------------------------------------------------ recognition


def two_afc_accuracy(loss_seen: Sequence[float], loss_unseen: Sequence[float]) -> float:
    """Two-alternative forced choice: mean over pairs i of 1[loss_seen[i] < loss_unseen[i]].

    The model "picks" the member of each pair it finds more likely. A tie counts as a miss (strict `<`,
    as docs/DESIGN.md §6.2 defines it); with float losses ties only happen for identical texts.
    """
    a, b = np.asarray(loss_seen, float), np.asarray(loss_unseen, float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"two_afc_accuracy: need two equal-length non-empty 1-D arrays, got {a.shape}, {b.shape}")
    return float(np.mean(a < b))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(x.size, float)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive) for binary `labels`.

    Computed as the Mann-Whitney statistic P(score_pos > score_neg) + 0.5 P(equal), via average ranks:
    AUC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg). For recognition pass
    scores = -loss and labels = 1 for seen items.
    """
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: need both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), one per distinct score from high to low, starting at (0, 0).

    Predicting positive for score >= thresholds[j] gives (fpr[j], tpr[j]); thresholds[0] is +inf.
    """
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_curve: need both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # all tied scores cross together
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    return (np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, s[last_of_run]])


def roc_curve_for_log_axis(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """(fpr, tpr, floor): `roc_curve` ready for a log-scaled FPR axis, the one rule of every ROC plot (the
    membership-inference script's and analyze.py's). With n non-members the smallest FPR above 0 a threshold
    can give is 1/n: FPR-0 points are drawn at floor = 1/n (read "FPR <= 1/n"), and a plot's axis starts at
    the smallest floor of its curves. A fixed floor (1e-3) leaves empty decades for a small set and clips real
    points of a large one; 1/(2n) would draw a point at an FPR no threshold on these data can give."""
    fpr, tpr = roc_curve(scores, labels)[:2]
    floor = 1.0 / max(int((np.asarray(labels) == 0).sum()), 1)
    return np.maximum(fpr, floor), tpr, floor


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[int], fpr: float = 0.01) -> float:
    """Highest true-positive rate among ROC points whose false-positive rate is <= `fpr`
    (the low-FPR operating point of Carlini et al. 2022; no interpolation between points)."""
    fprs, tprs, _ = roc_curve(scores, labels)
    return float(tprs[fprs <= fpr + 1e-12].max())


def bootstrap_ci(statistic: Callable[..., float], *arrays: Sequence, n_boot: int = 1000, ci: float = 0.95,
                 seed: int = 0, paired: bool = True) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic(*arrays)`.

    paired=True: all arrays have the same length n and are resampled with the same indices (resample
    pairs: 2AFC, paired AUC, per-item means). paired=False: each array is resampled on its own
    (stratified by array: members vs non-members in MIA). Returns (low, high) = the (1-ci)/2 and
    (1+ci)/2 quantiles of n_boot resampled statistics; (nan, nan) when n_boot == 0. Resamples whose
    statistic is undefined (e.g. one class only) are dropped.
    """
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    arrs = [np.asarray(a) for a in arrays]
    if paired and len({len(a) for a in arrs}) > 1:
        raise ValueError(f"bootstrap_ci: paired arrays differ in length {[len(a) for a in arrs]}")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        if paired:
            idx = rng.integers(0, len(arrs[0]), len(arrs[0]))
            sample = [a[idx] for a in arrs]
        else:
            sample = [a[rng.integers(0, len(a), len(a))] for a in arrs]
        try:
            stats.append(statistic(*sample))
        except ValueError:
            continue
    if not stats:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(np.asarray(stats, float), [(1 - ci) / 2, (1 + ci) / 2])
    return (float(lo), float(hi))


def with_ci(statistic: Callable[..., float], *arrays, n_boot: int = 1000, seed: int = 0,
            paired: bool = True) -> dict:
    """{"value", "ci_low", "ci_high"} of a statistic and its 95% percentile bootstrap CI (None bounds when
    n_boot == 0, so the result stays valid JSON)."""
    lo, hi = bootstrap_ci(statistic, *arrays, n_boot=n_boot, seed=seed, paired=paired)
    return {"value": float(statistic(*arrays)), "ci_low": _finite_or_none(lo), "ci_high": _finite_or_none(hi)}


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# ------------------------------------------------------------------------------- recall (prefix prompts)
# All recall metrics take the generated continuation and the true continuation only: the prompt is never
# an argument, so it can never be credited.


def exact_match(generated: Sequence, true: Sequence) -> float:
    """1.0 iff the generated token sequence equals the true one (same length, every token equal)."""
    return float(list(generated) == list(true))


def token_accuracy(generated: Sequence, true: Sequence) -> float:
    """Position-wise accuracy: #{i < len(true): generated[i] == true[i]} / len(true).
    Missing positions (generation stopped early) count as wrong; extra generated tokens are ignored."""
    if len(true) == 0:
        return float("nan")
    return sum(1 for g, t in zip(generated, true) if g == t) / len(true)


def longest_common_prefix(generated: Sequence, true: Sequence) -> int:
    """Number of leading tokens the generated continuation gets right before its first error."""
    n = 0
    for g, t in zip(generated, true):
        if g != t:
            break
        n += 1
    return n


_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words (the tokenization rouge-score uses by default, without stemming)."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) dynamic programme with one row."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(generated_text: str, true_text: str) -> float:
    """ROUGE-L F1 on words: P = LCS/|gen|, R = LCS/|true|, F1 = 2PR/(P+R); 0 when either is empty
    (1 when both are).

    Own LCS instead of the `rouge-score` package: that package pulls in nltk and absl for a 10-line
    dynamic programme, and continuations here are at most a few hundred words.
    """
    g, t = words(generated_text), words(true_text)
    if not g and not t:
        return 1.0
    lcs = lcs_length(g, t)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(g), lcs / len(t)
    return 2 * p * r / (p + r)


# The identifier inside the opening bracket of an ID document: letters, digits and underscores, ending in
# _digits (`DOC_48213`, `SYNTHETIC_EXAMPLE_12345`); generate.py --id_pattern replaces it.
ID_PATTERN = r"[A-Za-z][A-Za-z0-9_]*_\d+"


def _open_id(pattern: str) -> re.Pattern:
    return re.compile(r"^\s*\[(" + pattern + r")\]")


def opening_identifier(text: str, pattern: str = ID_PATTERN) -> str | None:
    """The identifier an ID document starts with (`[DOC_48213] ...` -> 'DOC_48213'), or None."""
    m = _open_id(pattern).match(text)
    return m.group(1) if m else None


def closing_identifier(text: str, pattern: str = ID_PATTERN) -> str | None:
    """For an ID document (text starting with an identifier such as `[DOC_48213]` or
    `[SYNTHETIC_EXAMPLE_12345]`; `pattern` is the regex of the identifier inside the brackets), the literal
    closing identifier: the last bracketed tag after the opening one that names the same id
    (`[/DOC_48213]`, `[END DOC_48213]`, or `[DOC_48213]` again). None for other texts or when no closing tag
    exists."""
    m = _open_id(pattern).match(text)
    if not m:
        return None
    tags = re.findall(r"\[[^\[\]]*" + re.escape(m.group(1)) + r"[^\[\]]*\]", text[m.end():])
    return tags[-1] if tags else None


_ROUGE = None


def rouge_scores(generated_text: str, true_text: str, keys=("rouge1", "rouge2", "rougeLsum")) -> dict:
    """ROUGE-1, ROUGE-2 and ROUGE-Lsum F1 of a continuation, computed by the `rouge-score` package with its
    defaults (no stemming; lower-cased alphanumeric tokens; Lsum splits summaries on newlines), as the
    recognition study's generate.py computed them (through `evaluate`'s rouge, which calls this package)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    s = _ROUGE.score(true_text, generated_text)  # (target, prediction)
    return {k: float(s[k].fmeasure) for k in keys}


def recall_metrics(generated_ids: Sequence[int], true_ids: Sequence[int], generated_text: str,
                   true_text: str, closing_id: str | None = None) -> dict:
    """All prefix-completion recall metrics of one generated continuation against the true continuation.

    generated_ids / generated_text must hold the new tokens only (decode only those) and true_ids /
    true_text the target window of the true suffix. `id_recalled` is None unless `closing_id` is given
    (an ID document whose closing identifier lies inside the target window).
    """
    return {
        "exact_match": exact_match(generated_ids, true_ids),
        "token_accuracy": token_accuracy(generated_ids, true_ids),
        "lcp_tokens": longest_common_prefix(generated_ids, true_ids),
        "rouge_l": rouge_l_f1(generated_text, true_text),
        **rouge_scores(generated_text, true_text),
        "id_recalled": None if closing_id is None else float(closing_id in generated_text),
    }


# ------------------------------------------------------------------------------------------ aggregation
def grouped_means(rows: Sequence[dict], by: Sequence[str], values: Sequence[str], cluster: str = "id",
                  n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Mean of each value column per group of `by`, with a 95% cluster-bootstrap CI.

    Rows of one cluster (the same item across samples or repeats) are first averaged, so the CI resamples
    items, not correlated rows. None/NaN values are left out of their column. Each output row holds the
    group keys, `n` (clusters), `n_rows`, and per value `v`, `v_ci_low`, `v_ci_high`.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        res = dict(zip(by, key))
        res["n"] = len({m[cluster] for m in members})
        res["n_rows"] = len(members)
        for v in values:
            per_cluster: dict = {}
            for m in members:
                x = m.get(v)
                if x is not None and not (isinstance(x, float) and np.isnan(x)):
                    per_cluster.setdefault(m[cluster], []).append(float(x))
            means = np.array([np.mean(xs) for xs in per_cluster.values()])
            if means.size == 0:
                res.update({v: None, f"{v}_ci_low": None, f"{v}_ci_high": None})
                continue
            lo, hi = bootstrap_ci(lambda a: float(np.mean(a)), means, n_boot=n_boot, seed=seed)
            res.update({v: float(means.mean()), f"{v}_ci_low": _finite_or_none(lo),
                        f"{v}_ci_high": _finite_or_none(hi)})
        out.append(res)
    return out
