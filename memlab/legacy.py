"""`SP_results.npz`: the recognition/recall study's own output files, written beside memlab's with
`--save_prefix SP` (docs/COMING_FROM.md), so its users' notebooks read memlab runs unchanged.

The layouts are the original scripts' (shared/COMPAT.md):
- train.py: `train_losses_ckpt` (the loss of every optimizer step, in order), `completed_steps`;
- test.py: `seen_losses`, `unseen_losses` (mean token loss of each text, in file order), `accuracies`
  (1.0 where the seen text of a pair has the lower loss, per pair in row order), `mean_accuracy` (= memlab's
  two_afc, the same strict `<`);
- generate.py: `ground_truths` (the true continuations), `completions` (the greedy continuations),
  `prompts` (the first half of each text's tokens, decoded), `rouge1`, `rouge2`, `rougeL`, `rougeLsum` (the
  mean F1 over items from the `rouge-score` package; the original's `evaluate.load("rouge")` aggregates the
  same per-item F1 scores, with a bootstrap median that is within a rounding of this mean).

With several checkpoints the arrays of each go to `SP_<checkpoint>_results.npz`; one model gives
`SP_results.npz`, as the original. Written atomically.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from memlab.io import DataError


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")  # the original's npz keys


def check_prefix(prefix: str | None) -> tuple[bool, str]:
    """validate() entry: a file-name prefix, not a path."""
    ok = prefix is None or (prefix != "" and "/" not in prefix and os.sep not in prefix and prefix not in (".", ".."))
    return ok, f"--save_prefix {prefix!r} names files inside --output_dir: give a name without a path separator"


def npz_path(output_dir: str | Path, prefix: str, label: str | None = None) -> Path:
    return Path(output_dir) / (f"{prefix}_results.npz" if label is None else f"{prefix}_{label}_results.npz")


def write_npz(path: Path, **arrays) -> None:
    """np.savez to a temporary file in the same directory, then renamed into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _labels(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["checkpoint"] for r in rows))


def write_test(output_dir, prefix: str, rows: Sequence[dict], n_pairs: int) -> list[Path]:
    """test.py's items.csv rows -> the original's recognition arrays, one file per checkpoint."""
    labels, paths = _labels(rows), []
    for label in labels:
        mine = [r for r in rows if r["checkpoint"] == label]
        seen = np.array([r["loss"] for r in mine if r["split"] == "seen"], dtype=float)
        unseen = np.array([r["loss"] for r in mine if r["split"] == "unseen"], dtype=float)
        if n_pairs < 1:
            raise DataError("--save_prefix: no seen/unseen pairs to compute the original's accuracies from")
        accuracies = (seen[:n_pairs] < unseen[:n_pairs]).astype(float)
        path = npz_path(output_dir, prefix, None if len(labels) == 1 else label)
        write_npz(path, seen_losses=seen, unseen_losses=unseen, accuracies=accuracies,
                  mean_accuracy=np.float64(accuracies.mean()))
        paths.append(path)
    return paths


def write_generate(output_dir, prefix: str, rows: Sequence[dict]) -> list[Path]:
    """generate.py --mode prefix rows (first sample of the first prefix) -> the original's recall arrays."""
    from memlab.metrics import rouge_scores

    labels, paths = _labels(rows), []
    for label in labels:
        mine = [r for r in rows if r["checkpoint"] == label and r["sample"] == 0]
        first = mine[0]["prefix"] if mine else None
        mine = [r for r in mine if r["prefix"] == first]
        truths = [r["true_continuation"] for r in mine]
        comps = [r["generated"] for r in mine]
        per = [rouge_scores(c, t, ROUGE_KEYS) for c, t in zip(comps, truths)]
        means = {k: np.float64(np.mean([p[k] for p in per])) if per else np.float64("nan") for k in ROUGE_KEYS}
        path = npz_path(output_dir, prefix, None if len(labels) == 1 else label)
        write_npz(path, ground_truths=np.array(truths, dtype=str), completions=np.array(comps, dtype=str),
                  prompts=np.array([r["prompt"] for r in mine], dtype=str), **means)
        paths.append(path)
    return paths


def write_train(output_dir, prefix: str, metrics_rows: Sequence[dict], completed_steps: int) -> Path:
    """train.py's metrics.jsonl rows -> `train_losses_ckpt` (one loss per logged step) and `completed_steps`."""
    losses = np.array([r["loss"] for r in metrics_rows if "loss" in r], dtype=float)
    path = npz_path(output_dir, prefix)
    write_npz(path, train_losses_ckpt=losses, completed_steps=np.int64(completed_steps))
    return path
