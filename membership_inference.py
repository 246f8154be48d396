"""Membership inference: how well can an attacker tell the texts a fine-tuned model saw (members) from
matched texts it did not (non-members)?

Each target model (or each checkpoint: LoRA ranks, target modules, before/after DPO) and its reference
model score every item ONCE with the shared batched scorer (per-token log-probs, and the mean/variance of
log p under the model's predictive distribution for min-k%++). The attacks (memlab/attacks.py, equations
there; higher score = more member-like) are computed from those arrays: loss, zlib, min_k_{k}, min_k_pp_{k}
(k from --min_k), and with a reference model ref_ratio (target NLL / reference NLL) and ref_diff
(reference NLL - target NLL). Per checkpoint and attack: ROC AUC, TPR at 1% and 0.1% FPR with bootstrap
95% CIs, over all items and per canary-copies group (members with c copies vs all non-members).

Reference model (--reference_model; `none` skips the reference attacks). Default, per checkpoint: a LoRA
adapter's base (adapter_config.json base_model_name_or_path); for a full-model checkpoint of a memlab run
the run's initialisation (RUN/config.json args.sft_checkpoint, else args.init_from, else
args.model_name_or_path); else --model_name_or_path when the target is a checkpoint of it; else none.
Its tokenizer must equal the target's. For before/after comparisons pass one explicit reference.

    # a make_data mia set, a model fine-tuned on its train.jsonl, every exposure checkpoint
    python make_data.py mia --output_dir data/mia --canary_copies 1,2,4,8,16,32 --canaries_per_copy 2
    python train.py --train_file data/mia/train.jsonl --output_dir runs/mia_sft --num_exposures 10 \
        --save_exposures 1,5,10 --learning_rate 5e-5
    python membership_inference.py --mia_dir data/mia --checkpoints 'runs/mia_sft/checkpoints/exposure_*' \
        --output_dir runs/mia_sft/mia
    # LoRA ranks in one call (reference: each adapter's base), min-k at 10% and 20%
    python membership_inference.py --mia_dir data/mia --min_k 10,20 \
        --checkpoints runs/lora_r4/checkpoints/exposure_10,runs/lora_r64/checkpoints/exposure_10 \
        --output_dir runs/mia_lora
    # your own files, before/after DPO: one explicit reference (the base) for both, so they compare
    python membership_inference.py --members m.jsonl --nonmembers n.jsonl --reference_model smollm2-135m \
        --checkpoints runs/sft/checkpoints/exposure_10,'runs/dpo/checkpoints/step_*' --output_dir runs/mia_dpo

Writes config.json, items.csv (id, split, canary_copies, checkpoint, target_nll, reference_nll, n_tokens,
zlib_bytes, one column per attack), plots/roc_<checkpoint>.png and results.json (written last).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from memlab import attacks
from memlab.cli import arg, collect_errors, parse_list, run
from memlab.io import DataError, read_texts, write_csv_atomic
from memlab.models import DEFAULT_MODEL, resolve_model_path
from memlab.rundir import guard_output_dir, prepare_run_dir, write_results
from memlab.likelihood import (ModelPool, check_tokenizer_match, checkpoint_position, checkpoints_field,
                            encode_items, load_eval_tokenizer, score_items, targets_and_labels)


@dataclass
class MiaArgs:
    members: Optional[str] = arg(None, "member texts (plain text rows; optional canary_copies column); with "
                                 "--nonmembers, instead of --mia_dir")
    nonmembers: Optional[str] = arg(None, "non-member texts from the same distribution; with --members, instead of "
                                    "--mia_dir")
    mia_dir: Optional[str] = arg(None, "an output directory of make_data.py mia (members.jsonl + nonmembers.jsonl), "
                                 "instead of --members and --nonmembers")
    output_dir: Optional[str] = arg(None, "output directory (required): config.json, items.csv, plots/ and "
                                    "results.json are written there")
    overwrite_output_dir: bool = arg(False, "empty an --output_dir that holds anything else than this script's run "
                                     "with the same configuration, then write")
    model_name_or_path: str = arg(DEFAULT_MODEL, "target model: a built-in name or a local model directory; its "
                                  "tokenizer encodes every item, and it is attacked itself when no --checkpoints "
                                  "are given")
    checkpoints: Optional[list[str]] = checkpoints_field(
        "checkpoint directories to attack, e.g. run/checkpoints/exposure_* (globs, comma-separated lists, several "
        "values and repeated flags all work); when not given: the --model_name_or_path model itself")
    reference_model: Optional[str] = arg(None, "reference model of the ref_ratio and ref_diff attacks (its "
                                         "tokenizer must equal the target's); 'none' skips them; when not given, per "
                                         "checkpoint: a LoRA adapter's base, for a full checkpoint of a memlab run "
                                         "the run's initialisation, else --model_name_or_path when the target is a "
                                         "checkpoint of it, else none")
    min_k: str = arg("20", "percentages k for the min_k and min_k_pp attacks, comma-separated, e.g. 10,20; each in "
                     "(0, 100]")
    text_column: Optional[str] = arg(None, "column holding the text in CSV/JSONL files; when not given: `text`, "
                                     "else the first string column")
    batch_size: int = arg(16, "texts per forward pass (batches are length-sorted)")
    padding_side: str = arg("left", "left or right: where batches are padded; the scores do not depend on it "
                            "(padding is masked and positions are explicit)")
    bootstrap: int = arg(1000, "bootstrap resamples for the 95%% confidence intervals; 0 = none")
    seed: int = arg(0, "random seed of the bootstrap resampling")
    dtype: str = arg("float32", "dtype the models are loaded in: float32, bfloat16 or float16")


def validate(args: MiaArgs) -> list[float]:
    """Every argument problem at once; returns the parsed --min_k."""
    ks = parse_list(args.min_k, float, "min_k")
    files = bool(args.members) or bool(args.nonmembers)
    collect_errors([
        (bool(args.mia_dir) != files, "give either --mia_dir or both --members and --nonmembers"),
        (not files or (bool(args.members) and bool(args.nonmembers)), "--members and --nonmembers go together"),
        (bool(args.output_dir), "--output_dir is required"),
        (bool(ks) and all(0 < k <= 100 for k in ks),
         f"--min_k must be percentages in (0, 100], got '{args.min_k}'"),
        (args.batch_size >= 1, f"--batch_size must be >= 1, got {args.batch_size}"),
        (args.bootstrap >= 0, f"--bootstrap must be >= 0, got {args.bootstrap}"),
        (args.padding_side in ("left", "right"), f"--padding_side must be left or right, got {args.padding_side}"),
        (args.dtype in ("float32", "bfloat16", "float16"),
         f"--dtype must be float32, bfloat16 or float16, got {args.dtype}"),
    ])
    return list(dict.fromkeys(ks))


def load_items(args: MiaArgs) -> list[dict]:
    """Members then non-members as rows with `split` and integer `canary_copies` (default 1 for a member,
    0 for a non-member); DataError when the two sets share a text (the leakage check)."""
    if args.mia_dir:
        d = Path(args.mia_dir)
        if not d.is_dir():
            raise DataError(f"--mia_dir {d}: not a directory")
        paths = {"member": d / "members.jsonl", "nonmember": d / "nonmembers.jsonl"}
    else:
        paths = {"member": Path(args.members), "nonmember": Path(args.nonmembers)}
    sets = {split: read_texts(p, args.text_column) for split, p in paths.items()}
    attacks.check_disjoint(sets["member"], sets["nonmember"], str(paths["member"]), str(paths["nonmember"]))
    rows = []
    for split, items in sets.items():
        for r in items:
            c = r.get("canary_copies", 1 if split == "member" else 0)
            try:
                c = int(c)
            except (TypeError, ValueError):
                raise DataError(f"{paths[split]}:{r['_line']}: canary_copies must be an integer, "
                                f"got {c!r}") from None
            if split == "nonmember" and c != 0:
                raise DataError(f"{paths[split]}:{r['_line']}: a non-member has canary_copies {c}; expected 0")
            rows.append(dict(r, split=split, canary_copies=c))
    return rows


def resolve_references(args: MiaArgs, targets: list, tok) -> list[tuple[Optional[str], str]]:
    """(reference, rule) per target; checks each distinct reference exists and tokenizes like the target."""
    if args.reference_model and args.reference_model.lower() == "none":
        return [(None, "--reference_model none")] * len(targets)
    if args.reference_model:
        refs = [(args.reference_model, "--reference_model")] * len(targets)
    else:
        refs = [attacks.default_reference(t, args.model_name_or_path) for t in targets]
    base_dir = resolve_model_path(args.model_name_or_path)
    for ref, rule in dict.fromkeys(refs):
        if ref is None:
            continue
        try:
            ref_dir = resolve_model_path(ref)
        except DataError as e:
            raise DataError(f"reference model ({rule}): {e}") from None
        try:
            check_tokenizer_match(ref_dir, tok, base_dir)
        except DataError as e:
            raise DataError(f"reference model {ref} ({rule}): its tokenizer differs from the target's, so "
                            f"their NLLs are not comparable per item; {e}") from None
    return refs


def main(args: MiaArgs) -> dict:
    ks = validate(args)
    guard_output_dir(args.output_dir, "membership_inference.py", args, args.overwrite_output_dir)  # before any model loads
    from accelerate import Accelerator
    from transformers import set_seed

    rows = load_items(args)
    targets, labels = targets_and_labels(args.model_name_or_path, args.checkpoints)
    acc = Accelerator()
    set_seed(args.seed)
    tok = load_eval_tokenizer(args.model_name_or_path, targets)
    refs = resolve_references(args, targets, tok)
    if acc.is_main_process:
        prepare_run_dir(args.output_dir, args, "membership_inference.py",
                        extra={"num_processes": acc.num_processes, "min_k": ks})
    # ids may repeat across the two files: score under a split-qualified key
    enc = encode_items(tok, [{"id": f"{r['split']}:{r['id']}", "text": r["text"]} for r in rows])
    pool = ModelPool(dtype=args.dtype, device=acc.device, fallback_base=args.model_name_or_path)
    ref_cache: dict[str, list] = {}

    def score(target, keep=False, stats=False):
        with pool.use(target, keep=keep) as model:  # one pass per model serves every attack
            return score_items(model, enc, tok.pad_token_id, args.batch_size, args.padding_side,
                               token_logprobs=stats, distribution_stats=stats, accelerator=acc)

    items, per_ckpt = [], []
    extra_cols = [c for c in ("fact_id", "source_id", "canary") if any(c in r for r in rows)]
    for target, label, (ref, rule) in zip(targets, labels, refs):
        key = str(resolve_model_path(ref).resolve()) if ref is not None else None  # name or path: one pass
        if key is not None and key not in ref_cache:
            ref_cache[key] = score(ref, keep=True)  # kept: often the base that later adapters load onto
        ref_scores = ref_cache.get(key)
        names = attacks.attack_names(ks, with_reference=ref is not None)
        ckpt_rows = []
        for j, (r, s) in enumerate(zip(rows, score(target, stats=True))):
            ref_nll = ref_scores[j].loss if ref_scores else None
            row = {"id": r["id"], **{c: r.get(c) for c in extra_cols}, "split": r["split"],
                   "canary_copies": r["canary_copies"], "checkpoint": label, "target_nll": s.loss,
                   "reference_nll": ref_nll, "n_tokens": s.n_tokens, "zlib_bytes": attacks.zlib_bytes(r["text"])}
            row.update(attacks.attack_scores(s.token_logprobs, r["text"], s.token_mu, s.token_var, ks,
                                         target_nll=s.loss, reference_nll=ref_nll))
            ckpt_rows.append(row)
        items += ckpt_rows
        per_ckpt.append(summarize(ckpt_rows, names, target, label, ref, rule, args))
        if acc.is_main_process:
            ref_note = f"reference {Path(str(ref)).name}" if ref else "no reference"
            attacks.plot_roc({a: ([r[a] for r in ckpt_rows], [int(r["split"] == "member") for r in ckpt_rows])
                          for a in names}, Path(args.output_dir) / "plots" / f"roc_{safe_name(label)}.png",
                         f"MIA ROC: {label} ({ref_note})\n{sum(r['split'] == 'member' for r in ckpt_rows)} "
                         f"members vs {sum(r['split'] == 'nonmember' for r in ckpt_rows)} non-members")
    results = {"script": "membership_inference.py", "num_processes": acc.num_processes,
               "n_members": sum(r["split"] == "member" for r in rows),
               "n_nonmembers": sum(r["split"] == "nonmember" for r in rows), "min_k": ks,
               "sign": "higher score = more member-like; members are the positive class",
               "checkpoints": per_ckpt}
    if acc.is_main_process:
        write_csv_atomic(Path(args.output_dir) / "items.csv", items)
        write_results(args.output_dir, results)
    acc.wait_for_everyone()
    return results


def summarize(rows: list[dict], names: list[str], target, label: str, ref, rule: str, args: MiaArgs) -> dict:
    """One checkpoint's block of results.json: what was attacked with which reference, mean NLLs by
    split, and per attack the metrics over all items and per canary-copies group."""
    def mean(col, split):
        v = [r[col] for r in rows if r["split"] == split and r[col] is not None]
        return float(np.mean(v)) if v else None

    return {"checkpoint": label, "path": str(target), **checkpoint_position(label), **attacks.adapter_settings(target),
            "reference_model": ref, "reference_rule": rule,
            "target_nll_member": mean("target_nll", "member"),
            "target_nll_nonmember": mean("target_nll", "nonmember"),
            "reference_nll_member": mean("reference_nll", "member"),
            "reference_nll_nonmember": mean("reference_nll", "nonmember"),
            "attacks": attacks.evaluate_attacks(rows, names, args.bootstrap, args.seed)}


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


if __name__ == "__main__":
    run(main, MiaArgs, sys.argv[1:])
