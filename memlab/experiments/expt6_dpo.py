"""Experiment 6: DPO after SFT, QA recall and membership inference before and after DPO.

SFT, then DPO on the facts' preference pairs (chosen = true answer, rejected = a distractor). QA
recall and membership inference (members: sentences trained in SFT) before and after DPO; RMIA with
`reference_models: K` reference models trained like the SFT stage on random halves of the population
(its members and non-members only, without the facts).
"""
from __future__ import annotations

from pathlib import Path

from memlab.experiments.datasets import check_leakage_once, facts_sets, mia_sets
from memlab.experiments.membership import _attack_flags, _mia_inputs, _rmia_flags, reference_models
from memlab.experiments.stages import run_stage, summarize_stages

NAME = "expt6"
# its stages, as keys of the task's results.json (each stage's own results.json), in order
STAGES = ("dpo_recall", "mia", "dpo", "sft")


def run(cell: dict, settings: dict, task: Path) -> dict:
    """The task's pipeline: runs its stages; returns {stage: that stage's results.json}, keyed by STAGES."""
    seed = cell["seed"]
    facts = facts_sets(cell, settings, task, "active", settings["variants"])
    mia = mia_sets(cell, settings, task, "1", 1)
    check_leakage_once(settings, task, [facts["train"], facts["pairs"], mia["train"]], [facts["probes"], mia["nonmembers"]])
    lora = ["--lora_r", settings["lora_r"], "--lora_alpha", 2 * settings["lora_r"]] if cell["method"] == "lora" else []
    flags = ["--num_exposures", settings["exposures"], "--save_exposures", settings["exposures"],
             "--learning_rate", settings["lr_lora" if lora else "lr_full"], "--batch_size", settings["batch_size"], *lora]
    sft = run_stage("train.py", ["--model_name_or_path", cell["model"], "--train_file",
                                 f"{facts['train']},{mia['train']}", *flags, "--seed", seed], task / "sft")
    sft_ckpt = sft / "checkpoints" / f"exposure_{settings['exposures']}"
    dpo = run_stage("finetune_dpo.py", ["--sft_checkpoint", sft_ckpt, "--pairs_file", facts["pairs"],
                                        "--beta", settings["beta"], "--learning_rate", settings["dpo_lr_lora" if lora else "dpo_lr_full"],
                                        "--num_epochs", settings["dpo_epochs"], "--batch_size", settings["batch_size"],
                                        "--seed", seed], task / "dpo")
    dpo_ckpt = dpo / "checkpoints" / f"epoch_{settings['dpo_epochs']}"
    both = f"{sft_ckpt},{dpo_ckpt}"
    qa = run_stage("generate.py", ["--mode", "qa", "--input_file", facts["probes"],
                                   "--model_name_or_path", cell["model"], "--checkpoints", both, "--max_new_tokens", 10, "--seed", seed],
                   task / "dpo_recall")
    attack = run_stage("membership_inference.py", [*_mia_inputs(mia), "--model_name_or_path", cell["model"],
                                                   "--checkpoints", both, "--reference_model", cell["model"],
                                                   "--seed", seed, "--bootstrap", settings["bootstrap"],
                                                   *_rmia_flags(reference_models(cell, settings, task, mia, flags,
                                                                                 settings["exposures"])),
                                                   *_attack_flags(settings)], task / "mia")
    return summarize_stages({"dpo_recall": qa, "mia": attack, "dpo": dpo, "sft": sft})
