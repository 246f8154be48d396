"""Recognition test: does the model assign lower loss to the texts it was trained on (seen) than to
matched texts it was not (unseen)?

Scores every seen and unseen text (mean token NLL over the whole text, batched, exact per item) under the
model or under each checkpoint, then reports per checkpoint the 2AFC accuracy (pairs by row order, or by
`pair_id` when every row has one), ROC AUC of -loss with seen as positive, and the mean losses, each with a
percentile bootstrap 95% CI that resamples pairs (DESIGN.md §6). With `pair_id`, a row whose pair_id is
missing from the other file is scored and counts in AUC and mean losses but not in 2AFC (results.json gives
n_pairs, n_seen, n_unseen); several checkpoints are scored in one call, adapters swapped on one base.

    # the embedded model, one pair file each
    python test.py --seen_file data/recog/seen.jsonl --unseen_file data/recog/unseen.jsonl \
        --output_dir runs/recog_base
    # every exposure checkpoint of a training run, with loss change from the base model
    python test.py --seen_file data/recog/seen.jsonl --unseen_file data/recog/unseen.jsonl \
        --checkpoints 'runs/expt1/checkpoints/exposure_*' --reference_model smollm2-135m \
        --output_dir runs/expt1/recognition
    # two processes on CPU (or GPUs: drop ACCELERATE_USE_CPU)
    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 test.py --seen_file … --unseen_file … \
        --output_dir runs/recog_ddp

Writes config.json, items.csv (id, pair_id, split, loss, n_tokens, checkpoint[, loss_delta]) and
results.json (written last).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

from memlab import metrics
from memlab.cli import collect_errors, run
from memlab.io import DataError, read_texts, write_csv_atomic
from memlab.models import DEFAULT_MODEL
from memlab.rundir import prepare_run_dir, write_results
from memlab.scoring import (ModelPool, checkpoint_position, checkpoints_field, encode_items,
                            load_eval_tokenizer, score_items, targets_and_labels)


@dataclass
class RecognitionArgs:
    seen_file: Optional[str] = None  # texts the model was trained on (.jsonl/.csv/.txt)
    unseen_file: Optional[str] = None  # matched texts it was not trained on
    output_dir: Optional[str] = None
    model_name_or_path: str = DEFAULT_MODEL  # base model (and the tokenizer every item is encoded with)
    checkpoints: Optional[list[str]] = checkpoints_field()
    reference_model: Optional[str] = None  # adds loss_delta = loss - loss under this model (e.g. the base)
    text_column: Optional[str] = None  # default: "text", else the first string column
    batch_size: int = 16  # items per forward pass (length-sorted)
    padding_side: str = "left"
    bootstrap: int = 1000  # bootstrap resamples for the 95% CIs (0 = none)
    seed: int = 0
    dtype: str = "float32"


def validate(args: RecognitionArgs) -> None:
    collect_errors([
        (bool(args.seen_file), "--seen_file is required"),
        (bool(args.unseen_file), "--unseen_file is required"),
        (bool(args.output_dir), "--output_dir is required"),
        (args.batch_size >= 1, f"--batch_size must be >= 1, got {args.batch_size}"),
        (args.bootstrap >= 0, f"--bootstrap must be >= 0, got {args.bootstrap}"),
        (args.padding_side in ("left", "right"), f"--padding_side must be left or right, got {args.padding_side}"),
        (args.dtype in ("float32", "bfloat16", "float16"), f"--dtype must be float32, bfloat16 or float16, got {args.dtype}"),
    ])


def load_pairs(args: RecognitionArgs) -> tuple[list[dict], list[dict], int]:
    """(seen rows, unseen rows, n_pairs): the first n_pairs rows of each list are aligned pair by pair.

    With a `pair_id` on every row, rows pair by it and a pair_id present in only one file is kept
    unpaired (scored, in the AUC and mean losses, not in 2AFC); otherwise rows pair by order and the files
    must have equal lengths."""
    seen = read_texts(args.seen_file, args.text_column)
    unseen = read_texts(args.unseen_file, args.text_column)
    if not all("pair_id" in r for r in seen + unseen):
        if len(seen) != len(unseen):
            raise DataError(f"pairing by row order needs equal lengths: --seen_file has {len(seen)} rows, "
                            f"--unseen_file has {len(unseen)} (or give every row a pair_id)")
        for i, (s, u) in enumerate(zip(seen, unseen)):
            s["pair_id"] = u["pair_id"] = str(i)
        return seen, unseen, len(seen)
    index = {}
    for name, rows in (("seen", seen), ("unseen", unseen)):
        index[name] = {}
        for r in rows:
            r["pair_id"] = str(r["pair_id"])
            if r["pair_id"] in index[name]:
                raise DataError(f"{getattr(args, name + '_file')}:{r['_line']}: pair_id '{r['pair_id']}' "
                                "appears twice")
            index[name][r["pair_id"]] = r
    paired = [k for k in index["seen"] if k in index["unseen"]]
    if not paired:
        raise DataError("no pair_id is shared by --seen_file and --unseen_file")
    seen = [index["seen"][k] for k in paired] + [r for k, r in index["seen"].items() if k not in index["unseen"]]
    unseen = [index["unseen"][k] for k in paired] + [r for k, r in index["unseen"].items() if k not in index["seen"]]
    return seen, unseen, len(paired)


def summarize(loss_seen: np.ndarray, loss_unseen: np.ndarray, n_pairs: int, n_boot: int, seed: int) -> dict:
    """2AFC over the n_pairs aligned pairs; AUC of -loss (seen positive) and mean losses over all items.
    Bootstrap CIs resample pairs; AUC and means resample seen and unseen separately when some are unpaired."""
    def auc(a, b):
        return metrics.roc_auc(-np.r_[a, b], np.r_[np.ones(len(a)), np.zeros(len(b))])

    paired = len(loss_seen) == len(loss_unseen) == n_pairs
    stats = {"two_afc": (metrics.two_afc_accuracy, loss_seen[:n_pairs], loss_unseen[:n_pairs], True),
             "auc": (auc, loss_seen, loss_unseen, paired),
             "loss_seen": (lambda a, b: float(np.mean(a)), loss_seen, loss_unseen, paired),
             "loss_unseen": (lambda a, b: float(np.mean(b)), loss_seen, loss_unseen, paired)}
    out = {}
    for name, (fn, a, b, pair) in stats.items():
        r = metrics.with_ci(fn, a, b, n_boot=n_boot, seed=seed, paired=pair)
        out.update({name: r["value"], f"{name}_ci_low": r["ci_low"], f"{name}_ci_high": r["ci_high"]})
    return out


def main(args: RecognitionArgs) -> dict:
    validate(args)
    from accelerate import Accelerator
    from transformers import set_seed

    seen, unseen, n_pairs = load_pairs(args)
    targets, labels = targets_and_labels(args.model_name_or_path, args.checkpoints)
    acc = Accelerator()
    set_seed(args.seed)
    if acc.is_main_process:
        prepare_run_dir(args.output_dir, args, "test.py", extra={"num_processes": acc.num_processes})
    tok = load_eval_tokenizer(args.model_name_or_path, targets)
    rows = [dict(r, split="seen") for r in seen] + [dict(r, split="unseen") for r in unseen]
    # ids may repeat across the two files: score under a split-qualified key
    enc = encode_items(tok, [{"id": f"{r['split']}:{r['id']}", "text": r["text"]} for r in rows])
    pool = ModelPool(dtype=args.dtype, device=acc.device, fallback_base=args.model_name_or_path)

    def score(target, keep=False):
        with pool.use(target, keep=keep) as model:
            return score_items(model, enc, tok.pad_token_id, args.batch_size, args.padding_side, accelerator=acc)

    reference = score(args.reference_model, keep=True) if args.reference_model else None
    items, per_ckpt = [], []
    n = len(seen)  # rows[:n] are seen, rows[n:] unseen
    for target, label in zip(targets, labels):
        scores = score(target)
        loss = np.array([s.loss for s in scores])
        for j, (r, s) in enumerate(zip(rows, scores)):
            row = {"id": r["id"], "pair_id": r["pair_id"], "split": r["split"], "loss": s.loss,
                   "n_tokens": s.n_tokens, "checkpoint": label}
            if reference is not None:
                row["loss_delta"] = s.loss - reference[j].loss
            items.append(row)
        summary = {"checkpoint": label, "path": str(target), **checkpoint_position(label),
                   **summarize(loss[:n], loss[n:], n_pairs, args.bootstrap, args.seed)}
        if reference is not None:
            delta = loss - np.array([s.loss for s in reference])
            summary.update(loss_delta_seen=float(delta[:n].mean()), loss_delta_unseen=float(delta[n:].mean()))
        per_ckpt.append(summary)
    results = {"script": "test.py", "num_processes": acc.num_processes, "n_pairs": n_pairs,
               "n_seen": len(seen), "n_unseen": len(unseen),
               "reference_model": args.reference_model, "checkpoints": per_ckpt}
    if acc.is_main_process:
        write_csv_atomic(f"{args.output_dir}/items.csv", items)
        write_results(args.output_dir, results)
    acc.wait_for_everyone()
    return results


if __name__ == "__main__":
    run(main, RecognitionArgs, sys.argv[1:])
