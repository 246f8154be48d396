"""Experiment 1: exposures until a fact is recalled, and recognition before recall.

Facts (passive statements or active QA) plus Orhan-style sentences, evaluated inside training before
it (exposure 0) and after every exposure: QA recall of the facts by tier (verbatim and reworded;
train/eval/recall), recognition (2AFC, AUC) of the studied sentences (train/eval/recognition) and their
recall cued by the first half (greedy, exact match and token accuracy of the rest;
train/eval/prefix_recall, stage `sentence_recall`); knownness of each fact before training.
"""
from __future__ import annotations

from pathlib import Path

from memlab.analysis.stages import in_training_dir
from memlab.experiments.datasets import (SENTENCE_PREFIX_FRACTION, check_leakage_once, facts_sets, knownness_stage,
                                         model_flags, sentence_sets)
from memlab.experiments.stages import run_stage, summarize_stages

NAME = "expt1"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("recall", "recognition", "sentence_recall", "knownness", "train")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed = cell["seed"]
    kind = "passive" if cell["mode"] == "passive" else "active"
    facts = facts_sets(cell, settings, task, kind, settings["variants"])
    seen, unseen = sentence_sets(cell, settings, task)
    check_leakage_once(settings, task, [facts["train"], seen], [facts["probes"], unseen])
    known = knownness_stage(cell, settings, facts["reworded"], task, max_new_tokens=10)  # as the recall evaluation
    train_files = f"{facts['train']},{seen}"
    lora = ["--lora_r", settings["lora_r"], "--lora_alpha", 2 * settings["lora_r"]] if cell["method"] == "lora" else []
    lr = settings["lr_lora"] if cell["method"] == "lora" else settings["lr_full"]
    train = run_stage("train.py", ["--model_name_or_path", cell["model"], "--train_file", train_files,
                                   "--num_exposures", settings["num_exposures"], "--learning_rate", lr,
                                   "--batch_size", settings["batch_size"], "--seed", seed, *lora,
                                   "--eval_probes_file", facts["probes"], "--eval_seen_file", seen,
                                   "--eval_unseen_file", unseen, "--eval_prefix_fraction", SENTENCE_PREFIX_FRACTION,
                                   "--eval_exposures", ",".join(str(k) for k in range(settings["num_exposures"] + 1)),
                                   "--eval_temperatures", settings["temperatures"], "--eval_repeats", settings["repeats"],
                                   "--eval_max_new_tokens", 10, *model_flags(settings, training=True)], task / "train")
    return summarize_stages({**{name: in_training_dir(task, name) for name in ("recall", "recognition", "sentence_recall")},
                             "knownness": known, "train": train})
