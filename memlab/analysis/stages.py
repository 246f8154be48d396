"""Where a task's stages are and which stages are which: THE one stage -> directory map (`stage_dir`) and
the stage-name groups the tables are built from. Standard library only (no pandas, no matplotlib), so the
experiment modules can import it cheaply."""
from __future__ import annotations

from pathlib import Path

# stages that may instead be evaluated inside a training run: stage -> (training run, eval kind)
IN_TRAINING = {"recall": ("train", "recall"), "recognition": ("train", "recognition"),
               "retention_recall": ("interference", "recall"),
               "retention_recognition": ("interference", "recognition"),
               "sentence_recall": ("train", "prefix_recall"),
               "retention_sentence_recall": ("interference", "prefix_recall")}


def in_training_dir(task: Path, name: str) -> Path:
    """Where an experiment evaluating stage `name` inside its training run writes it (TASK/train/eval/recall,
    ...): the experiment modules name their stages' directories through this, so writer and reader share it."""
    run, kind = IN_TRAINING[name]
    return task / run / "eval" / kind


def stage_dir(task: Path, name: str) -> Path | None:
    """A finished stage's run directory: TASK/name, else the evaluation inside training that replaces it
    (TASK/train/eval/recall, TASK/interference/eval/recognition, ...), whichever has results.json; None
    when neither does."""
    cands = [task / name]
    if name in IN_TRAINING:
        run, kind = IN_TRAINING[name]
        cands.append(task / run / "eval" / kind)
    for d in cands:
        if (d / "results.json").exists():
            return d
    return None


QA_STAGES = ("recall", "knownness", "variants_recall", "retention_recall", "dpo_recall", "prior_recall_base",
             "prior_recall")
RECOGNITION_STAGES = ("recognition", "retention_recognition")
SENTENCE_STAGES = ("sentence_recall", "retention_sentence_recall")  # prefix recall of the studied sentences
PREFIX_STAGES = ("prefix_recall", "extraction") + SENTENCE_STAGES  # extraction: expt4's canaries from a prefix
SENTENCE_TIER = "sentence"  # their tier in per_item.csv and learning.csv
BASE_STAGES = ("knownness", "prior_recall_base")  # the base model's answers: exposure 0
LEARNING_QA_STAGES = {"recall": ("recall",), "prior_recall": ("prior_recall_base", "prior_recall")}

HELDOUT_KIND = "known (held out)"  # expt7's known facts that are probed but never trained
HELDOUT_KNOWN_FILE = "heldout_known.json"  # TASK/data/heldout_known.json: their fact ids
