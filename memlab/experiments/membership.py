"""Membership-inference stages shared by expt4 (LoRA rank x modules) and expt6 (DPO): the canaries to
extract, membership_inference.py's inputs and attack flags, and RMIA's reference models.
"""
from __future__ import annotations

import random
from pathlib import Path

from memlab.experiments.datasets import _filtered_jsonl
from memlab.experiments.stages import run_stage
from memlab.io import read_records, write_jsonl_atomic


def _canaries_file(mia_dir: Path, out: Path) -> Path:
    """Members repeated more than once in train.jsonl (the canaries), for prefix extraction."""
    return _filtered_jsonl(mia_dir / "members.jsonl", out, lambda r: int(r.get("canary_copies", 1)) > 1)


def _mia_inputs(mia: dict) -> list:
    """membership_inference.py's inputs: the generated directory, or your members/non-members files."""
    return ["--mia_dir", mia["dir"]] if mia["dir"] else ["--members", mia["members"], "--nonmembers", mia["nonmembers"]]


def reference_models(cell: dict, settings: dict, task: Path, mia: dict, train_flags: list, exposures) -> list[Path]:
    """RMIA's K reference models (Zarifzadeh et al. 2024; `reference_models: K`, 0 = none): each trained
    exactly like the target (`train_flags`) on a random half of the population (the members and non-members,
    each text once), half k drawn with seed (seed, k) and written as train.jsonl in the cell's data directory
    (reference_k). Each
    text is IN about half of the reference models and OUT of the rest, the "online" setting of the paper.
    They train inside the cell, one after another (a cell's references depend on its data and settings, and
    each is a resumable stage like the target); returns their final checkpoints."""
    k_total = int(settings.get("reference_models") or 0)
    if k_total <= 0:
        return []
    population = [{"id": f"{split}:{r['id']}", "text": r["text"]}
                  for split in ("members", "nonmembers") for r in read_records(mia[split])]
    refs = []
    for k in range(k_total):
        half_file = task / "data" / f"reference_{k}" / "train.jsonl"
        if not half_file.exists():
            rng = random.Random(f"{cell['seed']}:reference:{k}")
            write_jsonl_atomic(half_file, rng.sample(population, len(population) // 2))
        ref = run_stage("train.py", ["--model_name_or_path", cell["model"], "--train_file", half_file, *train_flags,
                                     "--seed", cell["seed"]], task / f"reference_{k}")
        refs.append(ref / "checkpoints" / f"exposure_{exposures}")
    return refs


def _rmia_flags(refs: list[Path]) -> list:
    return ["--reference_models", ",".join(str(r) for r in refs)] if refs else []


def _attack_flags(settings: dict) -> list:
    """`attacks` (membership_inference.py --attacks, a comma list): empty = every attack the inputs allow."""
    a = settings.get("attacks") or ""
    a = ",".join(str(x) for x in a) if isinstance(a, (list, tuple)) else str(a)
    return ["--attacks", a] if a else []
