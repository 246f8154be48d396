"""Recognition test: does the model assign lower loss to the texts it was trained on (seen) than to
matched texts it was not (unseen)?

Scores every seen and unseen text (mean token NLL over the whole text, batched, exact per item) under the
model or under each checkpoint, then reports per checkpoint the 2AFC accuracy (pairs by row order, or by
`pair_id` when every row has one), ROC AUC of -loss with seen as positive, and the mean losses, each with a
percentile bootstrap 95% CI that resamples pairs (docs/DESIGN.md §6.2). With `pair_id`, a row whose pair_id is
missing from the other file is scored and counts in AUC and mean losses but not in 2AFC (results.json gives
n_pairs, n_seen, n_unseen); several checkpoints are scored in one call, adapters swapped on one base.

    # the embedded model, one pair file each
    python test.py --seen_file data/recognition/seen.jsonl --unseen_file data/recognition/unseen.jsonl \
        --output_dir runs/recog_base
    # every exposure checkpoint of a training run, with loss change from the base model
    python test.py --seen_file data/recognition/seen.jsonl --unseen_file data/recognition/unseen.jsonl \
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

from memlab import evaluation, legacy, runtime
from memlab.cli import arg, collect_errors, output_dir_arg, overwrite_output_dir_arg, run
from memlab.io import write_csv_atomic, write_json_atomic
from memlab.models import model_name_or_path_arg
from memlab.rundir import guard_output_dir, prepare_run_dir, write_results
from memlab.runtime import EvalRuntimeArgs
from memlab.likelihood import (ModelPool, adapter_bases, checkpoints_field, load_eval_tokenizer, score_items,
                               targets_and_labels)

# after memlab, whose import sets the Hugging Face offline mode and the noise filters (memlab/__init__.py)
from accelerate import Accelerator
from accelerate.utils import set_seed


@dataclass
class RecognitionArgs(EvalRuntimeArgs):
    seen_file: Optional[str] = arg(None, "texts the model was trained on (required): .jsonl, .csv or .txt, one "
                                   "text per row")
    unseen_file: Optional[str] = arg(None, "matched texts it was not trained on (required), paired with "
                                     "--seen_file by pair_id when every row has one, else by row order")
    output_dir: Optional[str] = output_dir_arg("config.json, items.csv and results.json")
    overwrite_output_dir: bool = overwrite_output_dir_arg()
    model_name_or_path: str = model_name_or_path_arg("base model: a built-in name or a local model directory; its "
                                                     "tokenizer encodes every item, and it is scored itself when no "
                                                     "--checkpoints are given")
    checkpoints: Optional[list[str]] = checkpoints_field()
    reference_model: Optional[str] = arg(None, "also score every text under this model (e.g. the base) and add "
                                         "loss_delta = loss - the loss under it to items.csv")
    text_column: Optional[str] = arg(None, "column holding the text in CSV/JSONL files; when not given: `text`, "
                                     "else the first string column")
    batch_size: str = arg("16", "texts per forward pass (batches are length-sorted), or auto: the largest that fits "
                          "the GPU, found once per model and length and cached (16 on CPU)")
    padding_side: str = arg("left", "left or right: where batches are padded; the scores do not depend on it "
                            "(padding is masked and positions are explicit)")
    bootstrap: int = arg(1000, "bootstrap resamples (of pairs) for the 95%% confidence intervals; 0 = none")
    seed: int = arg(0, "random seed of the bootstrap resampling")
    leakage: str = arg("refuse", "seen and unseen texts that overlap (equal, or equal after normalization): refuse "
                       "(an error listing them) or warn (drop those pairs, count them in results.json and "
                       "leakage.json, and go on); every pair overlapping is refused either way")
    block_size: Optional[int] = arg(None, "score only the first N tokens of each text, as training truncated it "
                                    "(train.py --block_size); when not given: whole texts")
    save_prefix: Optional[str] = arg(None, "also write SP_results.npz in the recognition study's layout "
                                     "(seen_losses, unseen_losses, accuracies, mean_accuracy = two_afc); "
                                     "docs/COMING_FROM.md")


def validate(args: RecognitionArgs) -> None:
    collect_errors([
        (bool(args.seen_file), "--seen_file is required"),
        (bool(args.unseen_file), "--unseen_file is required"),
        (bool(args.output_dir), "--output_dir is required"),
        runtime.batch_size_error(args.batch_size),
        (args.bootstrap >= 0, f"--bootstrap must be >= 0, got {args.bootstrap}"),
        (args.padding_side in ("left", "right"), f"--padding_side must be left or right, got {args.padding_side}"),
        (args.block_size is None or args.block_size >= 2, f"--block_size must be >= 2, got {args.block_size}"),
        legacy.check_prefix(args.save_prefix),
        (args.leakage in evaluation.LEAKAGE_MODES, f"--leakage must be refuse or warn, got {args.leakage}"),
    ])


def main(args: RecognitionArgs) -> dict:
    validate(args)
    rt = runtime.resolve_eval(args)  # precision, attention, k-bit loading: checked before any model loads
    guard_output_dir(args.output_dir, "test.py", args, args.overwrite_output_dir)  # before any model loads

    seen, unseen, n_pairs = evaluation.load_pairs(args.seen_file, args.unseen_file, args.text_column)
    seen, unseen, n_pairs, leak = evaluation.check_seen_unseen_disjoint(  # before any model loads
        seen, unseen, args.seen_file, args.unseen_file, args.leakage, n_pairs)
    targets, labels = targets_and_labels(args.model_name_or_path, args.checkpoints)
    bases = adapter_bases(args.model_name_or_path, targets, labels)
    acc = Accelerator()
    set_seed(args.seed)
    if acc.is_main_process:
        prepare_run_dir(args.output_dir, args, "test.py", extra={"num_processes": acc.num_processes, "runtime": rt,
                                                                 **({"adapter_bases": bases} if bases else {})})
    tok = load_eval_tokenizer(args.model_name_or_path, targets)
    rows, enc = evaluation.recognition_items(tok, seen, unseen, args.block_size)
    pool = ModelPool(device=acc.device, fallback_base=args.model_name_or_path, **runtime.pool_kwargs(rt))

    def score(target, keep=False):
        with pool.use(target, keep=keep) as model:
            bs = runtime.resolve_batch_size(args.batch_size, model, "score", max(len(e.input_ids) for e in enc))
            return score_items(model, enc, tok.pad_token_id, bs, args.padding_side, accelerator=acc)

    reference = score(args.reference_model, keep=True) if args.reference_model else None
    items, per_ckpt = [], []
    for target, label in zip(targets, labels):
        ckpt_rows = evaluation.recognition_rows(rows, score(target), label, reference)
        items += ckpt_rows
        per_ckpt.append(evaluation.recognition_record(label, target, ckpt_rows, len(seen), n_pairs,
                                                      args.bootstrap, args.seed))
    results = {"script": "test.py", "num_processes": acc.num_processes, "runtime": rt, "n_pairs": n_pairs,
               "n_seen": len(seen), "n_unseen": len(unseen),
               "reference_model": args.reference_model, "checkpoints": per_ckpt}
    if not leak["passed"]:
        results["n_pairs_dropped_leakage"] = leak["n_pairs_dropped"]
    if acc.is_main_process:
        write_csv_atomic(f"{args.output_dir}/items.csv", items)
        if not leak["passed"]:
            write_json_atomic(f"{args.output_dir}/leakage.json", leak)
        if args.save_prefix:
            legacy.write_test(args.output_dir, args.save_prefix, items, n_pairs)
        write_results(args.output_dir, results)
    acc.wait_for_everyone()
    return results


if __name__ == "__main__":
    run(main, RecognitionArgs, sys.argv[1:])
