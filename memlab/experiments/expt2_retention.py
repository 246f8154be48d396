"""Experiment 2: retention, recall and recognition of studied facts and sentences under interference.

Retention: study facts (active QA) + sentences for `study_exposures` epochs, then one epoch of an
interference corpus from the study's final weights. QA recall of the facts, recognition of the studied
sentences and their recall cued by the first half (stage `retention_sentence_recall`) are evaluated
inside the interference run, at its start (the end of study, step 0) and at log-spaced steps (1..10,
20..100, ...).
"""
from __future__ import annotations

from pathlib import Path

from memlab.analysis.stages import in_training_dir
from memlab.experiments.datasets import SENTENCE_PREFIX_FRACTION, check_leakage_once, facts_sets, sentence_sets
from memlab.experiments.stages import run_stage, summarize_stages

NAME = "expt2"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("retention_recall", "retention_recognition", "retention_sentence_recall", "study", "interference")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed, n = cell["seed"], cell["study_exposures"]
    facts = facts_sets(cell, settings, task, "active", settings["variants"])
    seen, unseen = sentence_sets(cell, settings, task)
    corpus = Path(settings["corpus_file"]) if settings.get("corpus_file") else run_stage(
        "make_data.py", ["corpus", "--n_sentences", settings["n_corpus"], "--seed", seed + 1000],
        task / "data" / "corpus") / "sentences.jsonl"
    check_leakage_once(settings, task, [facts["train"], seen, corpus], [facts["probes"], unseen])
    study = run_stage("train.py", ["--model_name_or_path", cell["model"], "--num_exposures", n, "--save_exposures", n,
                                   "--train_file", f"{facts['train']},{seen}",
                                   "--learning_rate", settings["lr_full"], "--batch_size", settings["batch_size"], "--seed", seed],
                      task / "study")
    studied = study / "checkpoints" / f"exposure_{n}"
    # interference with evaluation inside training: before it (exposure_0 = the end of study) and at
    # log-spaced steps; no step checkpoint is written (at 8B, each would be 16 GB)
    interf = run_stage("train.py", ["--model_name_or_path", cell["model"], "--init_from", studied,
                                    "--train_file", corpus, "--num_exposures", 1,
                                    "--learning_rate", settings["lr_full"], "--batch_size", settings["batch_size"], "--seed", seed,
                                    "--eval_probes_file", facts["probes"],
                                    "--eval_seen_file", seen, "--eval_unseen_file", unseen,
                                    "--eval_prefix_fraction", SENTENCE_PREFIX_FRACTION,
                                    "--eval_exposures", 0, "--eval_steps", "log",
                                    "--eval_temperatures", settings["temperatures"], "--eval_repeats", settings["repeats"],
                                    "--eval_max_new_tokens", 16], task / "interference")
    evaluated = ("retention_recall", "retention_recognition", "retention_sentence_recall")  # inside interference
    return summarize_stages({**{name: in_training_dir(task, name) for name in evaluated}, "study": study,
                             "interference": interf})
