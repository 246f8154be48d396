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
from dataclasses import dataclass, field
from typing import Optional

from memlab import evaluation
from memlab.cli import collect_errors, run
from memlab.io import DataError, write_csv_atomic
from memlab.models import DEFAULT_MODEL
from memlab.rundir import guard_output_dir, prepare_run_dir, write_results
from memlab.scoring import ModelPool, checkpoints_field, load_eval_tokenizer, score_items, targets_and_labels


@dataclass
class RecognitionArgs:
    seen_file: Optional[str] = None  # texts the model was trained on (.jsonl/.csv/.txt)
    unseen_file: Optional[str] = None  # matched texts it was not trained on
    output_dir: Optional[str] = None
    overwrite_output_dir: bool = field(default=False, metadata={"help": "empty an --output_dir that holds anything "
                                       "else than this script's run with the same configuration, then write"})
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


def check_seen_unseen_disjoint(seen, unseen, seen_file, unseen_file) -> None:
    """The leakage check (exact and normalized text match, as membership_inference.py runs on members vs
    non-members) between seen and unseen texts: a text in both cannot tell recognition from chance, so any
    overlap is an error listing the pairs."""
    from memlab.datagen.leakage import check_leakage, format_report

    report = check_leakage({str(seen_file): [{"id": r["id"], "text": r["text"]} for r in seen]},
                           {str(unseen_file): [{"id": r["id"], "text": r["text"]} for r in unseen]})
    if not report["passed"]:
        raise DataError("--seen_file and --unseen_file share texts (a text in both has no true label); "
                        + format_report(report))


def main(args: RecognitionArgs) -> dict:
    validate(args)
    guard_output_dir(args.output_dir, "test.py", args, args.overwrite_output_dir)  # before any model loads
    from accelerate import Accelerator
    from transformers import set_seed

    seen, unseen, n_pairs = evaluation.load_pairs(args.seen_file, args.unseen_file, args.text_column)
    check_seen_unseen_disjoint(seen, unseen, args.seen_file, args.unseen_file)  # before any model loads
    targets, labels = targets_and_labels(args.model_name_or_path, args.checkpoints)
    acc = Accelerator()
    set_seed(args.seed)
    if acc.is_main_process:
        prepare_run_dir(args.output_dir, args, "test.py", extra={"num_processes": acc.num_processes})
    tok = load_eval_tokenizer(args.model_name_or_path, targets)
    rows, enc = evaluation.recognition_items(tok, seen, unseen)
    pool = ModelPool(dtype=args.dtype, device=acc.device, fallback_base=args.model_name_or_path)

    def score(target, keep=False):
        with pool.use(target, keep=keep) as model:
            return score_items(model, enc, tok.pad_token_id, args.batch_size, args.padding_side, accelerator=acc)

    reference = score(args.reference_model, keep=True) if args.reference_model else None
    items, per_ckpt = [], []
    for target, label in zip(targets, labels):
        ckpt_rows = evaluation.recognition_rows(rows, score(target), label, reference)
        items += ckpt_rows
        per_ckpt.append(evaluation.recognition_record(label, target, ckpt_rows, len(seen), n_pairs,
                                                      args.bootstrap, args.seed))
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
