"""Experiment 3: examples per fact, error rate by probe tier and temperature after training on K paraphrased examples.

Examples per fact: the same facts with `variants` paraphrased QA examples each, trained for the
same number of epochs; error rate of the final model by probe tier x temperature (x repeats).
"""
from __future__ import annotations

from pathlib import Path

from memlab.experiments.datasets import check_leakage_once, facts_sets
from memlab.experiments.stages import checkpoint_glob, run_stage, summarize_stages

NAME = "expt3"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("variants_recall", "train")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed, v = cell["seed"], cell["variants"]
    facts = facts_sets(cell, settings, task, "active", v, probes_per_tier=settings["probes_per_tier"])
    check_leakage_once(settings, task, [facts["train"]], [facts["probes"]])
    train = run_stage("train.py", ["--model_name_or_path", cell["model"], "--train_file",
                                   facts["train"], "--num_exposures", settings["exposures"],
                                   "--save_exposures", settings["exposures"],
                                   "--learning_rate", settings["lr_full"], "--batch_size", settings["batch_size"], "--seed", seed],
                      task / "train")
    qa = run_stage("generate.py", ["--mode", "qa", "--input_file", facts["probes"],
                                   "--model_name_or_path", cell["model"], "--checkpoints", checkpoint_glob(train),
                                   "--temperatures", settings["temperatures"], "--repeats", settings["repeats"],
                                   "--max_new_tokens", 16, "--seed", seed], task / "variants_recall")
    return summarize_stages({"variants_recall": qa, "train": train})
