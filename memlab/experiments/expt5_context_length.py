"""Experiment 5: context length, recall of documents (and their opening ID) from prefixes of each length.

Context length: documents of `doc_tokens` tokens that open with an ID ([DOC_n]); after training,
greedy completion from the first p tokens, scored on the continuation (token accuracy, exact match,
whether the ID comes back), for each prefix length p and saved exposure.
"""
from __future__ import annotations

from pathlib import Path

from memlab.experiments.stages import checkpoint_glob, run_stage, summarize_stages

NAME = "expt5"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("prefix_recall", "train")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed = cell["seed"]
    docs = Path(settings["documents_file"]) if settings.get("documents_file") else run_stage(
        "make_data.py", ["documents", "--n_docs", settings["n_docs"], "--doc_tokens", cell["doc_tokens"], "--tokenizer",
                         cell["model"], "--seed", seed], task / "data" / "documents") / "documents.jsonl"
    exposures = settings["exposures"]
    train = run_stage("train.py", ["--model_name_or_path", cell["model"], "--train_file", docs,
                                   "--num_exposures", max(exposures), "--save_exposures", ",".join(map(str, exposures)),
                                   "--block_size", 2 * cell["doc_tokens"], "--learning_rate", settings["lr_full"],
                                   "--batch_size", settings["batch_size"], "--seed", seed], task / "train")
    prefix = run_stage("generate.py", ["--mode", "prefix", "--input_file", docs,
                                       "--model_name_or_path", cell["model"], "--checkpoints", checkpoint_glob(train),
                                       "--prefix_tokens", settings["prefix_tokens"], "--seed", seed], task / "prefix_recall")
    return summarize_stages({"prefix_recall": prefix, "train": train})
