"""Data-set preparation for a task: generated sets (make_data.py stages in TASK/data/) or your own files
(configs' `data:` keys), the leakage check over a cell's files, and the flags every stage shares.
"""
from __future__ import annotations

import json
from pathlib import Path

from memlab.datagen.facts import probes_for_mode
from memlab.datagen.leakage import check_files, check_leakage, format_report, held_out_rows_for_check, rows_for_check
from memlab.experiments.config import DATA_FILE_KEYS, facts_file_for
from memlab.experiments.stages import run_stage
from memlab.io import DataError, write_json_atomic, write_jsonl_atomic


# ------------------------------------------------------------------------------------------ pipelines
def _jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def _filtered_jsonl(src: Path, out: Path, keep) -> Path:
    """`out`: the rows of `src` for which `keep(row)` holds (written once; an existing `out` is kept)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out, [r for r in _jsonl_rows(src) if keep(r)])
    return out


def mode_probes(facts: Path, mode: str, out: Path, verbatim: bool = True) -> Path:
    """The facts' probes for a cell trained in `mode` (active|passive): easy/mid/hard plus, with
    `verbatim`, the verbatim probes of that mode only (a passive cell never saw the active prompts)."""
    if not out.exists():
        rows = _jsonl_rows(facts / "probes.jsonl")
        keep = probes_for_mode(rows, mode) if verbatim else [r for r in rows if r.get("tier") != "verbatim"]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out, keep)
    return out


# ------------------------------------------------------------------- generated sets, or your own files
def _user_probes(settings: dict, task: Path) -> Path:
    """probes_file as probes.jsonl (`make_data.py convert --to probes`: validated, one probe per tier; fact ids
    from `fact_id_column` when given)."""
    extra = ["--answer_column", settings["answer_column"]] if settings.get("answer_column") else []
    if settings.get("fact_id_column"):
        extra += ["--fact_id_column", settings["fact_id_column"]]
    if settings.get("tier_columns"):
        extra += ["--tier_columns", settings["tier_columns"]]
    out = run_stage("make_data.py", ["convert", "--input", settings["probes_file"], "--to", "probes", *extra],
                    task / "data" / "user" / "probes")
    return out / "probes.jsonl"


def facts_sets(cell: dict, settings: dict, task: Path, mode: str, variants: int, **facts_flags) -> dict:
    """The facts a cell trains on and the probes asked about them: generated (`make_data.py facts`, the
    `mode` training set with `variants` per fact) or facts_file + probes_file. Keys: train, probes (this
    mode's verbatim tier included), reworded (no verbatim tier: knownness), dir (generated only), pairs."""
    if settings.get("facts_file"):
        probes = _user_probes(settings, task)
        return {"train": Path(facts_file_for(settings["facts_file"], variants)), "probes": probes, "dir": None, "pairs": settings.get("pairs_file") or None,
                "reworded": _without_verbatim(probes, task / "data" / "probes_knownness.jsonl")}
    flags = [x for k, v in facts_flags.items() for x in (f"--{k}", v)]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", settings["n_facts"], *flags,
                                       "--variants_per_fact", variants, "--seed", cell["seed"]], task / "data" / "facts")
    return {"train": facts / f"train_{mode}_{variants}.jsonl", "dir": facts, "pairs": facts / "dpo_pairs.jsonl",
            "probes": mode_probes(facts, mode, task / "data" / f"probes_{mode}.jsonl"),
            "reworded": mode_probes(facts, "active", task / "data" / "probes_knownness.jsonl", verbatim=False)}


def _without_verbatim(probes: Path, out: Path) -> Path:
    return _filtered_jsonl(probes, out, lambda r: r.get("tier") != "verbatim")


def sentence_sets(cell: dict, settings: dict, task: Path) -> tuple[Path, Path]:
    """(seen, unseen) recognition sentences: generated (novel foils) or seen_file + unseen_file."""
    if settings.get("seen_file"):
        return Path(settings["seen_file"]), Path(settings["unseen_file"])
    sents = run_stage("make_data.py", ["recognition", "--n_pairs", settings["n_sentences"], "--foil_type", "novel",
                                       "--seed", cell["seed"]], task / "data" / "recognition")
    return sents / "seen.jsonl", sents / "unseen.jsonl"


def mia_sets(cell: dict, settings: dict, task: Path, canary_copies, canaries_per_copy) -> dict:
    """Members, non-members and the training set holding the members: generated (`make_data.py mia` from
    the corpus, canaries repeated) or members_file + nonmembers_file (+ train_file, default the members)."""
    if settings.get("members_file"):
        return {"members": Path(settings["members_file"]), "nonmembers": Path(settings["nonmembers_file"]),
                "train": Path(settings.get("train_file") or settings["members_file"]), "dir": None}
    mia = run_stage("make_data.py", ["mia", "--source", "corpus", "--n_members", settings["n_members"],
                                     "--n_nonmembers", settings["n_members"], "--canary_copies", canary_copies,
                                     "--canaries_per_copy", canaries_per_copy, "--seed", cell["seed"]], task / "data" / "mia")
    return {"members": mia / "members.jsonl", "nonmembers": mia / "nonmembers.jsonl", "train": mia / "train.jsonl",
            "dir": mia}


def check_leakage_once(settings: dict, task: Path, train: list, held_out: list) -> None:
    """With any of your own files in the cell, the leakage check over all of its training files vs all of
    its held-out ones (generated sets were checked when made; mixing them with yours is checked here)."""
    if not any(settings.get(k) for k in DATA_FILE_KEYS):
        return
    done = task / "data" / "leakage.json"
    if done.exists():
        return
    try:
        report = check_files([Path(p) for p in train], [Path(p) for p in held_out])  # DataError listing pairs
        print(format_report(report), flush=True)
    except DataError as e:
        if settings.get("leakage", "refuse") != "warn" or "leakage check failed" not in str(e):
            if "leakage check failed" in str(e):
                raise DataError(f"{e}\n  (a design that overlaps on purpose: leakage=warn goes on with the "
                                "overlap reported in the cell's leakage.json)") from None
            raise
        report = check_leakage({str(p): rows_for_check(p) for p in train},
                               {str(p): held_out_rows_for_check(p) for p in held_out})
        report["leakage"] = "warn"
        print(f"warning: leakage=warn: {report['n_overlaps']} overlapping pair(s) between training and held-out "
              f"texts, kept and listed in {done}", flush=True)
    done.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done, report)


def model_flags(settings: dict, training: bool = False) -> list:
    """Flags for how a stage loads the model, from the settings that have them (expt1): `load_in_4bit`
    (QLoRA: a 4-bit base, LoRA adapters; needs method=lora and a CUDA GPU) and, for training,
    `gradient_checkpointing`."""
    flags = ["--load_in_4bit"] if settings.get("load_in_4bit") else []
    if training and settings.get("gradient_checkpointing"):
        flags.append("--gradient_checkpointing")
    return flags


def knownness_stage(cell: dict, settings: dict, probes: Path, task: Path, max_new_tokens: int = 16) -> Path:
    """SliCK knownness (Gekhman et al. 2024) before training: the base model answers every reworded probe
    (`probes`: no verbatim tier) greedily and `knownness_samples` times at temperature 0.5 (8 in the full
    grids; fewer in the small ones, for time); analyze.py turns it into categories."""
    return run_stage("generate.py", ["--mode", "qa", "--input_file", probes, "--model_name_or_path", cell["model"],
                                     "--temperatures", "0,0.5", "--repeats", settings["knownness_samples"],
                                     "--max_new_tokens", max_new_tokens, "--seed", cell["seed"], "--bootstrap", 0,
                                     *model_flags(settings)], task / "knownness")


SENTENCE_PREFIX_FRACTION = 0.5  # Orhan (2023) cues recall "by a part of" the studied sentence: here its first half
