"""Experiment 7: prior knowledge, known, novel and contradicting facts learned together.

Prior knowledge: known (true), novel and contradicting (changed answer) facts trained together;
QA recall of the trained answer before training (exposure 0) and at every saved exposure, split by
kind in analyze.py (items.csv fact_id -> facts.jsonl kind). `n_heldout_known` more known facts are
generated, probed and never trained (TASK/data/heldout_known.json; kind `known (held out)` in
analyze.py): Gekhman et al.'s test of whether fitting unknown facts costs the model what it knew.
"""
from __future__ import annotations

from pathlib import Path

from memlab.analysis.stages import HELDOUT_KNOWN_FILE
from memlab.experiments.datasets import _filtered_jsonl, _jsonl_rows, check_leakage_once, facts_sets, knownness_stage
from memlab.experiments.stages import checkpoint_glob, run_stage, summarize_stages
from memlab.io import write_json_atomic

NAME = "expt7"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("prior_recall_base", "prior_recall", "knownness", "train")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed, k = cell["seed"], settings["n_per_kind"]
    h = int(settings.get("n_heldout_known") or 0) if not settings.get("facts_file") else 0
    settings = {**settings, "n_facts": k}  # as many novel facts as known and contradicting ones
    facts = facts_sets(cell, settings, task, cell["mode"], settings["variants"], n_known=k + h, n_contradicting=k)
    if h:  # make_facts numbers the known facts known-0000.. in order: the last h are held out
        heldout = [f"known-{i:04d}" for i in range(k, k + h)]
        kinds = {r["fact_id"]: r["kind"] for r in _jsonl_rows(facts["dir"] / "facts.jsonl")}
        if any(kinds.get(f) != "known" for f in heldout):
            raise RuntimeError(f"expected known facts {heldout[0]}..{heldout[-1]} in {facts['dir']}/facts.jsonl")
        if not (task / "data" / HELDOUT_KNOWN_FILE).exists():
            write_json_atomic(task / "data" / HELDOUT_KNOWN_FILE, {"fact_ids": heldout})
        facts["train"] = _filtered_jsonl(facts["train"], task / "data" / f"{facts['train'].stem}_without_heldout.jsonl",
                                         lambda r, held=frozenset(heldout): r.get("fact_id") not in held)
    check_leakage_once(settings, task, [facts["train"]], [facts["probes"]])
    exposures = settings["exposures"]
    train = run_stage("train.py", ["--model_name_or_path", cell["model"], "--num_exposures", max(exposures),
                                   "--train_file", facts["train"],
                                   "--save_exposures", ",".join(map(str, exposures)), "--learning_rate", settings["lr_full"],
                                   "--batch_size", settings["batch_size"], "--seed", seed], task / "train")
    qa = ["--mode", "qa", "--input_file", facts["probes"], "--model_name_or_path", cell["model"],
          "--temperatures", settings["temperatures"], "--repeats", settings["repeats"], "--max_new_tokens", 16, "--seed", seed]
    known = knownness_stage(cell, settings, facts["reworded"], task)
    base = run_stage("generate.py", qa, task / "prior_recall_base")
    recall = run_stage("generate.py", qa + ["--checkpoints", checkpoint_glob(train)], task / "prior_recall")
    return summarize_stages({"prior_recall_base": base, "prior_recall": recall, "knownness": known, "train": train})
