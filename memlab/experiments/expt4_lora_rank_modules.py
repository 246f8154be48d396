"""Experiment 4: LoRA rank x target modules, membership inference and canary extraction.

LoRA rank x target modules: fine-tune on members with canaries (1..32 copies), then membership
inference (every attack; reference = the adapter's base; RMIA with `reference_models: K` reference
models trained like the target on random halves of the population) and prefix extraction of the canaries.
"""
from __future__ import annotations

from pathlib import Path

from memlab.experiments.datasets import check_leakage_once, mia_sets
from memlab.experiments.membership import _attack_flags, _canaries_file, _mia_inputs, _rmia_flags, reference_models
from memlab.experiments.stages import checkpoint_glob, run_stage, summarize_stages

NAME = "expt4"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("mia", "extraction", "train")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed = cell["seed"]
    mia = mia_sets(cell, settings, task, settings["canary_copies"], settings["canaries_per_copy"])
    check_leakage_once(settings, task, [mia["train"]], [mia["nonmembers"]])
    flags = ["--num_exposures", settings["exposures"], "--save_exposures", settings["exposures"], "--learning_rate", settings["lr_lora"],
             "--batch_size", settings["batch_size"], "--lora_r", cell["rank"],
             "--lora_alpha", settings.get("lora_alpha") or 2 * cell["rank"], "--lora_dropout", settings.get("lora_dropout", 0.0),
             "--warmup_steps", settings.get("warmup_steps", 0),
             "--gradient_accumulation_steps", settings.get("gradient_accumulation_steps", 1),
             "--lora_target_modules", cell["modules"]]
    train = run_stage("train.py", ["--model_name_or_path", cell["model"], "--train_file", mia["train"], *flags,
                                   "--seed", seed], task / "train")
    refs = reference_models(cell, settings, task, mia, flags, settings["exposures"])
    ckpts = checkpoint_glob(train)
    attack = run_stage("membership_inference.py", [*_mia_inputs(mia), "--model_name_or_path", cell["model"],
                                                   "--checkpoints", ckpts, "--seed", seed,
                                                   "--bootstrap", settings["bootstrap"], *_rmia_flags(refs),
                                                   *_attack_flags(settings)], task / "mia")
    # extraction: the canaries (members repeated in training); with your own members, every member
    canaries = _canaries_file(mia["dir"], task / "data" / "canaries.jsonl") if mia["dir"] else mia["members"]
    extract = run_stage("generate.py", ["--mode", "prefix", "--input_file", canaries, "--model_name_or_path",
                                        cell["model"], "--checkpoints", ckpts, "--prefix_fraction", 0.5,
                                        "--seed", seed, "--bootstrap", settings["bootstrap"]], task / "extraction")
    return summarize_stages({"mia": attack, "extraction": extract, "train": train})
