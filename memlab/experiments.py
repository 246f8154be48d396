"""The experiment grids and the pipeline each array task runs, in one place.

A grid is the product of its axes (in the order written). Array index i maps to `grid_cells(...)[i]`;
the sbatch templates, `bash scripts/<template>.sh` without SLURM, and `scripts/sweep.py` (submitit) all
go through `cell()` and `run_task()`, so the mapping lives only here (and is tested).

Grid sizes: `full` (the cluster sweep, the default under SLURM), `small` (a workstation run, the default
without SLURM and `make demo`) and `tiny` (tests: tiny random models, seconds per task).
`MEMLAB_MODELS=a,b` replaces any grid's model axis (local HF directories or built-in names).

Each task writes RUNS_ROOT/<expt>/<cell name>/ with one sub-run per stage (data/, train/, recall/, ...),
each a normal run directory. A stage whose results.json exists is skipped, so a requeued or re-run task
continues where it stopped, and a finished task (its own results.json written) does nothing at all.
"""
from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from memlab.io import DataError, write_json_atomic, write_jsonl_atomic

ROOT = Path(__file__).resolve().parents[1]
EXIT_REQUEUE = 75  # train.py's "checkpointed on a signal, rerun me"

GRIDS: dict[str, dict[str, dict[str, list]]] = {
    "expt1": {  # exposures: models x seeds x {full, LoRA} x {passive statements, active QA}
        "full": {"model": ["smollm2-135m"], "seed": [0, 1, 2], "method": ["full", "lora"],
                 "mode": ["passive", "active"]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "method": ["full", "lora"], "mode": ["active"]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "method": ["full", "lora"], "mode": ["active"]},
    },
    "expt2": {  # retention: study facts + sentences, then interference text; models x seeds x study exposures
        "full": {"model": ["smollm2-135m"], "seed": [0, 1, 2], "study_exposures": [3, 10]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "study_exposures": [5]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "study_exposures": [1]},
    },
    "expt3": {  # examples per fact: models x seeds x paraphrased variants per fact
        "full": {"model": ["smollm2-135m"], "seed": [0, 1, 2], "variants": [5, 10, 25, 50]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "variants": [1, 5, 10]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "variants": [1, 2]},
    },
    "expt4": {  # LoRA rank x target modules: membership inference and extraction of canaries
        "full": {"model": ["smollm2-135m"], "seed": [0], "rank": [4, 16, 64],
                 "modules": ["q_proj", "k_proj", "v_proj", "o_proj", "q_proj,k_proj"]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "rank": [4, 16], "modules": ["q_proj", "q_proj,k_proj"]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "rank": [4], "modules": ["q_proj,k_proj", "v_proj"]},
    },
    "expt6": {  # SFT, then DPO: QA and MIA before and after; models x seeds x {full, LoRA}
        "full": {"model": ["smollm2-135m"], "seed": [0, 1, 2], "method": ["full", "lora"]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "method": ["full", "lora"]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "method": ["full"]},
    },
    "expt5": {  # context length: models x seeds x document length (tokens) of the ID documents
        "full": {"model": ["smollm2-135m"], "seed": [0, 1, 2], "doc_tokens": [128, 256, 512]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "doc_tokens": [128, 256]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "doc_tokens": [48]},
    },
    "expt7": {  # prior knowledge: known, novel and contradicting facts; models x seeds x {passive, active}
        "full": {"model": ["smollm2-135m"], "seed": [0, 1, 2], "mode": ["passive", "active"]},
        "small": {"model": ["smollm2-135m"], "seed": [0], "mode": ["active"]},
        "tiny": {"model": ["tiny-llama"], "seed": [0], "mode": ["active"]},
    },
}

# Per-size settings of each experiment (not grid axes: the same for every cell).
SETTINGS: dict[str, dict[str, dict]] = {
    "expt1": {  # every exposure 1..num_exposures evaluated inside training (no checkpoints needed)
        "full": {"n_facts": 50, "variants": 5, "num_exposures": 10, "n_sentences": 100,
                 "lr_full": 5e-5, "lr_lora": 5e-4, "lora_r": 16, "batch_size": 8, "temperatures": "0,0.7",
                 "repeats": 3, "knownness_samples": 8},
        # make demo: sized to run in under 10 minutes on a 2-core CPU (training cost is per token: about
        # 47 s per exposure of 12 facts x 5 variants for full fine-tuning of SmolLM2-135M); batch 4 gives
        # 20 optimizer steps per exposure, enough for recall to rise within 4 exposures
        "small": {"n_facts": 12, "variants": 5, "num_exposures": 4, "n_sentences": 16,
                  "lr_full": 1e-4, "lr_lora": 1e-3, "lora_r": 16, "batch_size": 4, "temperatures": "0",
                  "repeats": 1, "knownness_samples": 4},
        "tiny": {"n_facts": 6, "variants": 2, "num_exposures": 2, "n_sentences": 6,
                 "lr_full": 3e-3, "lr_lora": 1e-2, "lora_r": 4, "batch_size": 4, "temperatures": "0",
                 "repeats": 1, "knownness_samples": 2},
    },
    "expt2": {  # interference: one epoch over n_corpus everyday sentences, log-spaced step checkpoints
        "full": {"n_facts": 50, "variants": 5, "n_sentences": 100, "n_corpus": 5000, "lr": 5e-5,
                 "batch_size": 8, "temperatures": "0", "repeats": 1},
        "small": {"n_facts": 30, "variants": 1, "n_sentences": 40, "n_corpus": 400, "lr": 1e-4,
                  "batch_size": 8, "temperatures": "0", "repeats": 1},
        "tiny": {"n_facts": 3, "variants": 1, "n_sentences": 4, "n_corpus": 12, "lr": 3e-3,
                 "batch_size": 4, "temperatures": "0", "repeats": 1},
    },
    "expt3": {  # every cell: the same facts, `variants` paraphrases each, the same number of epochs
        "full": {"n_facts": 50, "exposures": 3, "lr": 5e-5, "batch_size": 8, "temperatures": "0,0.7,1.0",
                 "repeats": 5, "probes_per_tier": 2},
        "small": {"n_facts": 30, "exposures": 3, "lr": 1e-4, "batch_size": 8, "temperatures": "0,1.0",
                  "repeats": 2, "probes_per_tier": 1},
        "tiny": {"n_facts": 2, "exposures": 1, "lr": 3e-3, "batch_size": 4, "temperatures": "0,1.0",
                 "repeats": 2, "probes_per_tier": 1},
    },
    "expt4": {  # canaries: members repeated canary_copies times in the training file
        "full": {"n_members": 200, "canary_copies": "1,2,4,8,16,32", "canaries_per_copy": 2, "exposures": 3,
                 "lr": 5e-4, "batch_size": 8, "bootstrap": 1000},
        "small": {"n_members": 100, "canary_copies": "1,4,16", "canaries_per_copy": 2, "exposures": 2,
                  "lr": 1e-3, "batch_size": 8, "bootstrap": 500},
        "tiny": {"n_members": 16, "canary_copies": "4", "canaries_per_copy": 2, "exposures": 2,
                 "lr": 1e-2, "batch_size": 8, "bootstrap": 100},
    },
    "expt6": {
        "full": {"n_facts": 50, "variants": 5, "n_members": 100, "exposures": 5, "lr_full": 5e-5, "lr_lora": 5e-4,
                 "lora_r": 16, "batch_size": 8, "beta": 0.1, "dpo_lr": 5e-6, "dpo_lr_lora": 5e-5, "dpo_epochs": 3,
                 "bootstrap": 1000},
        "small": {"n_facts": 30, "variants": 1, "n_members": 30, "exposures": 5, "lr_full": 1e-4, "lr_lora": 1e-3,
                  "lora_r": 16, "batch_size": 8, "beta": 0.1, "dpo_lr": 1e-5, "dpo_lr_lora": 1e-4, "dpo_epochs": 2,
                  "bootstrap": 500},
        "tiny": {"n_facts": 6, "variants": 1, "n_members": 8, "exposures": 2, "lr_full": 3e-3, "lr_lora": 1e-2,
                 "lora_r": 4, "batch_size": 4, "beta": 0.1, "dpo_lr": 1e-3, "dpo_lr_lora": 1e-2, "dpo_epochs": 1,
                 "bootstrap": 100},
    },
    "expt5": {  # prefix lengths must stay below the shortest document (in tokens)
        "full": {"n_docs": 50, "exposures": [1, 3, 10], "lr": 5e-5, "batch_size": 4,
                 "prefix_tokens": "8,16,32,64,96"},
        "small": {"n_docs": 20, "exposures": [1, 5], "lr": 1e-4, "batch_size": 4, "prefix_tokens": "8,16,32,64"},
        "tiny": {"n_docs": 2, "exposures": [1], "lr": 3e-3, "batch_size": 2, "prefix_tokens": "4,16"},
    },
    "expt7": {  # n per kind: known (true bank facts), novel (synthetic objects), contradicting (changed answers)
        "full": {"n_per_kind": 40, "variants": 5, "exposures": [1, 2, 3, 5, 10], "lr": 5e-5, "batch_size": 8,
                 "temperatures": "0", "repeats": 1, "knownness_samples": 8},
        "small": {"n_per_kind": 20, "variants": 1, "exposures": [1, 2, 5], "lr": 1e-4, "batch_size": 8,
                  "temperatures": "0", "repeats": 1, "knownness_samples": 8},
        "tiny": {"n_per_kind": 2, "variants": 1, "exposures": [1], "lr": 3e-3, "batch_size": 4,
                 "temperatures": "0", "repeats": 1, "knownness_samples": 2},
    },
}


def grid_axes(expt: str, size: str) -> dict[str, list]:
    if expt not in GRIDS:
        raise DataError(f"unknown experiment '{expt}'; choose one of {sorted(GRIDS)}")
    if size not in GRIDS[expt]:
        raise DataError(f"{expt}: unknown grid size '{size}'; choose one of {sorted(GRIDS[expt])}")
    axes = dict(GRIDS[expt][size])
    if os.environ.get("MEMLAB_MODELS") and "model" in axes:
        axes["model"] = [m for m in os.environ["MEMLAB_MODELS"].split(",") if m]
    return axes


def grid_cells(expt: str, size: str) -> list[dict]:
    axes = grid_axes(expt, size)
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def cell(expt: str, size: str, index: int) -> dict:
    cells = grid_cells(expt, size)
    if not 0 <= index < len(cells):
        raise DataError(f"{expt}/{size}: array index {index} outside the grid of {len(cells)} cells (0-{len(cells) - 1})")
    return cells[index]


def cell_name(c: dict) -> str:
    """Directory name of a cell: `model=smollm2-135m_seed=0_method=full_mode=active` (paths shortened)."""
    return "_".join(f"{k}={Path(str(v)).name.replace(',', '+')}" for k, v in c.items())


# ------------------------------------------------------------------------------------------- stages
class Preempted(RuntimeError):
    """A stage exited with EXIT_REQUEUE: its state is saved; the task should be requeued."""


def _launcher(script: str) -> list[str]:
    """`python SCRIPT`, or `accelerate launch ...` for training when MEMLAB_NUM_PROCESSES > 1 (a multi-GPU
    node); MEMLAB_LAUNCH overrides the whole prefix."""
    if os.environ.get("MEMLAB_LAUNCH"):
        return shlex.split(os.environ["MEMLAB_LAUNCH"]) + [script]
    n = int(os.environ.get("MEMLAB_NUM_PROCESSES", "1"))
    if n > 1 and script in ("train.py", "finetune_dpo.py"):
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "accelerate_config.yaml"), "--num_processes", str(n), script]
    return [sys.executable, script]


def run_stage(script: str, args: list, out_dir: Path, log=None) -> Path:
    """Run one script into `out_dir` unless it already finished there (results.json exists; for
    make_data, manifest.json). SIGTERM/SIGUSR1 reaching this process are passed on to the stage."""
    done = out_dir / ("manifest.json" if script == "make_data.py" else "results.json")
    if done.exists():
        return out_dir
    cmd = _launcher(script) + [str(a) for a in args] + ["--output_dir", str(out_dir)]
    if script == "train.py" and os.environ.get("MEMLAB_TRAIN_ARGS"):  # extra train.py flags (tests, tuning)
        cmd += shlex.split(os.environ["MEMLAB_TRAIN_ARGS"])
    if script == "train.py" and (out_dir / "config.json").exists():
        cmd.append("--resume")
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if rc == EXIT_REQUEUE:
        raise Preempted(f"{script} checkpointed on a signal; rerun the task to resume")
    if rc != 0:
        raise RuntimeError(f"{script} failed with exit status {rc}: {' '.join(cmd)}")
    return out_dir


def checkpoint_glob(train_dir: Path, prefix: str = "exposure_") -> str:
    return str(train_dir / "checkpoints" / f"{prefix}*")


# ------------------------------------------------------------------------------------------ pipelines
def mode_probes(facts: Path, mode: str, out: Path, verbatim: bool = True) -> Path:
    """The facts' probes for a cell trained in `mode` (active|passive): easy/mid/hard plus, with
    `verbatim`, the verbatim probes of that mode only (a passive cell never saw the active prompts)."""
    from memlab.datagen.facts import probes_for_mode

    if not out.exists():
        rows = [json.loads(x) for x in (facts / "probes.jsonl").read_text().splitlines() if x.strip()]
        keep = probes_for_mode(rows, mode) if verbatim else [r for r in rows if r.get("tier") != "verbatim"]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out, keep)
    return out


def knownness_stage(c: dict, s: dict, facts: Path, task: Path, max_new_tokens: int = 16) -> Path:
    """SliCK knownness (Gekhman et al. 2024) before training: the base model answers every reworded probe
    greedily and `knownness_samples` times at temperature 0.5 (8 in the full grids; fewer in the small
    ones, for time); analyze.py turns it into categories."""
    probes = mode_probes(facts, "active", task / "data" / "probes_knownness.jsonl", verbatim=False)
    return run_stage("generate.py", ["--mode", "qa", "--input_file", probes, "--model_name_or_path", c["model"],
                                     "--temperatures", "0,0.5", "--repeats", s["knownness_samples"],
                                     "--max_new_tokens", max_new_tokens, "--seed", c["seed"], "--bootstrap", 0],
                     task / "knownness")


def expt1(c: dict, s: dict, task: Path) -> dict:
    """Facts (passive statements or active QA) plus Orhan-style sentences; QA recall by tier (verbatim and
    reworded) and recognition (2AFC, AUC) of the trained sentences evaluated inside training at every
    exposure (train/eval/recall, train/eval/recognition); knownness of each fact before training."""
    seed = c["seed"]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", s["n_facts"],
                                       "--variants_per_fact", s["variants"], "--seed", seed], task / "data" / "facts")
    sents = run_stage("make_data.py", ["recognition", "--n_pairs", s["n_sentences"], "--foil_type", "novel",
                                       "--seed", seed], task / "data" / "recognition")
    kind = "passive" if c["mode"] == "passive" else "active"
    probes = mode_probes(facts, kind, task / "data" / f"probes_{kind}.jsonl")
    known = knownness_stage(c, s, facts, task, max_new_tokens=10)  # as the recall evaluation
    train_files = f"{facts}/train_{kind}_{s['variants']}.jsonl,{sents}/seen.jsonl"
    lora = ["--lora_r", s["lora_r"], "--lora_alpha", 2 * s["lora_r"]] if c["method"] == "lora" else []
    lr = s["lr_lora"] if c["method"] == "lora" else s["lr_full"]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", train_files,
                                   "--num_exposures", s["num_exposures"], "--learning_rate", lr,
                                   "--batch_size", s["batch_size"], "--seed", seed, *lora,
                                   "--eval_probes_file", probes, "--eval_seen_file", sents / "seen.jsonl",
                                   "--eval_unseen_file", sents / "unseen.jsonl", "--eval_exposures", "all",
                                   "--eval_temperatures", s["temperatures"], "--eval_repeats", s["repeats"],
                                   "--eval_max_new_tokens", 10], task / "train")
    return summarize_stages({"recall": train / "eval" / "recall", "recognition": train / "eval" / "recognition",
                             "knownness": known, "train": train})


def summarize_stages(stages: dict[str, Path]) -> dict:
    """The task's results.json: each stage's results.json, keyed by stage name."""
    return {name: json.loads((path / "results.json").read_text()) for name, path in stages.items()}


def expt2(c: dict, s: dict, task: Path) -> dict:
    """Retention: study facts (active QA) + sentences for `study_exposures` epochs, then one epoch of an
    interference corpus from the study's final weights with log-spaced step checkpoints. QA recall and
    recognition at the end of study (step 0 of interference) and at every step checkpoint."""
    seed, n = c["seed"], c["study_exposures"]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", s["n_facts"],
                                       "--variants_per_fact", s["variants"], "--seed", seed], task / "data" / "facts")
    sents = run_stage("make_data.py", ["recognition", "--n_pairs", s["n_sentences"], "--foil_type", "novel",
                                       "--seed", seed], task / "data" / "recognition")
    corpus = run_stage("make_data.py", ["corpus", "--n_sentences", s["n_corpus"], "--seed", seed + 1000],
                       task / "data" / "corpus")
    study = run_stage("train.py", ["--model_name_or_path", c["model"], "--num_exposures", n, "--save_exposures", n,
                                   "--train_file", f"{facts}/train_active_{s['variants']}.jsonl,{sents}/seen.jsonl",
                                   "--learning_rate", s["lr"], "--batch_size", s["batch_size"], "--seed", seed],
                      task / "study")
    studied = study / "checkpoints" / f"exposure_{n}"
    interf = run_stage("train.py", ["--model_name_or_path", c["model"], "--init_from", studied,
                                    "--train_file", corpus / "sentences.jsonl", "--num_exposures", 1,
                                    "--save_steps", "log", "--learning_rate", s["lr"],
                                    "--batch_size", s["batch_size"], "--seed", seed], task / "interference")
    ckpts = [studied, checkpoint_glob(interf, "step_")]
    recall = run_stage("generate.py", ["--mode", "qa", "--input_file",
                                       mode_probes(facts, "active", task / "data" / "probes_active.jsonl"),
                                       "--model_name_or_path", c["model"], "--checkpoints", *ckpts,
                                       "--temperatures", s["temperatures"], "--repeats", s["repeats"],
                                       "--max_new_tokens", 16, "--seed", seed], task / "retention_recall")
    recog = run_stage("test.py", ["--seen_file", sents / "seen.jsonl", "--unseen_file", sents / "unseen.jsonl",
                                  "--model_name_or_path", c["model"], "--checkpoints", *ckpts, "--seed", seed],
                      task / "retention_recognition")
    return summarize_stages({"retention_recall": recall, "retention_recognition": recog, "study": study,
                             "interference": interf})


def expt3(c: dict, s: dict, task: Path) -> dict:
    """Examples per fact: the same facts with `variants` paraphrased QA examples each, trained for the
    same number of epochs; error rate of the final model by probe tier x temperature (x repeats)."""
    seed, v = c["seed"], c["variants"]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", s["n_facts"],
                                       "--variants_per_fact", v, "--probes_per_tier", s["probes_per_tier"],
                                       "--seed", seed], task / "data" / "facts")
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file",
                                   facts / f"train_active_{v}.jsonl", "--num_exposures", s["exposures"],
                                   "--save_exposures", s["exposures"],
                                   "--learning_rate", s["lr"], "--batch_size", s["batch_size"], "--seed", seed],
                      task / "train")
    qa = run_stage("generate.py", ["--mode", "qa", "--input_file",
                                   mode_probes(facts, "active", task / "data" / "probes_active.jsonl"),
                                   "--model_name_or_path", c["model"], "--checkpoints", checkpoint_glob(train),
                                   "--temperatures", s["temperatures"], "--repeats", s["repeats"],
                                   "--max_new_tokens", 16, "--seed", seed], task / "variants_recall")
    return summarize_stages({"variants_recall": qa, "train": train})


def expt5(c: dict, s: dict, task: Path) -> dict:
    """Context length: documents of `doc_tokens` tokens that open with an ID ([DOC_n]); after training,
    greedy completion from the first p tokens, scored on the continuation (token accuracy, exact match,
    whether the ID comes back), for each prefix length p and saved exposure."""
    seed = c["seed"]
    docs = run_stage("make_data.py", ["documents", "--n_docs", s["n_docs"], "--doc_tokens", c["doc_tokens"],
                                      "--tokenizer", c["model"], "--seed", seed], task / "data" / "documents")
    exposures = s["exposures"]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", docs / "documents.jsonl",
                                   "--num_exposures", max(exposures), "--save_exposures", ",".join(map(str, exposures)),
                                   "--block_size", 2 * c["doc_tokens"], "--learning_rate", s["lr"],
                                   "--batch_size", s["batch_size"], "--seed", seed], task / "train")
    prefix = run_stage("generate.py", ["--mode", "prefix", "--input_file", docs / "documents.jsonl",
                                       "--model_name_or_path", c["model"], "--checkpoints", checkpoint_glob(train),
                                       "--prefix_tokens", s["prefix_tokens"], "--seed", seed], task / "prefix_recall")
    return summarize_stages({"prefix_recall": prefix, "train": train})


def expt7(c: dict, s: dict, task: Path) -> dict:
    """Prior knowledge: known (true), novel and contradicting (changed answer) facts trained together;
    QA recall of the trained answer before training (exposure 0) and at every saved exposure, split by
    kind in analyze.py (items.csv fact_id -> facts.jsonl kind)."""
    seed, k = c["seed"], s["n_per_kind"]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", k, "--n_known", k,
                                       "--n_contradicting", k, "--variants_per_fact", s["variants"],
                                       "--seed", seed], task / "data" / "facts")
    exposures = s["exposures"]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--num_exposures", max(exposures),
                                   "--train_file", facts / f"train_{c['mode']}_{s['variants']}.jsonl",
                                   "--save_exposures", ",".join(map(str, exposures)), "--learning_rate", s["lr"],
                                   "--batch_size", s["batch_size"], "--seed", seed], task / "train")
    qa = ["--mode", "qa", "--input_file", mode_probes(facts, c["mode"], task / "data" / f"probes_{c['mode']}.jsonl"),
          "--model_name_or_path", c["model"],
          "--temperatures", s["temperatures"], "--repeats", s["repeats"], "--max_new_tokens", 16, "--seed", seed]
    known = knownness_stage(c, s, facts, task)
    base = run_stage("generate.py", qa, task / "prior_recall_base")
    recall = run_stage("generate.py", qa + ["--checkpoints", checkpoint_glob(train)], task / "prior_recall")
    return summarize_stages({"prior_recall_base": base, "prior_recall": recall, "knownness": known, "train": train})


def _canaries_file(mia_dir: Path, out: Path) -> Path:
    """Members repeated more than once in train.jsonl (the canaries), for prefix extraction."""
    if not out.exists():
        rows = [json.loads(x) for x in (mia_dir / "members.jsonl").read_text().splitlines() if x.strip()]
        canaries = [r for r in rows if int(r.get("canary_copies", 1)) > 1]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out, canaries)
    return out


def expt4(c: dict, s: dict, task: Path) -> dict:
    """LoRA rank x target modules: fine-tune on members with canaries (1..32 copies), then membership
    inference (AUC, TPR at low FPR; reference = the adapter's base) and prefix extraction of the canaries."""
    seed = c["seed"]
    mia = run_stage("make_data.py", ["mia", "--source", "corpus", "--n_members", s["n_members"],
                                     "--n_nonmembers", s["n_members"], "--canary_copies", s["canary_copies"],
                                     "--canaries_per_copy", s["canaries_per_copy"], "--seed", seed],
                    task / "data" / "mia")
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", mia / "train.jsonl",
                                   "--num_exposures", s["exposures"], "--save_exposures", s["exposures"],
                                   "--learning_rate", s["lr"], "--batch_size", s["batch_size"], "--seed", seed,
                                   "--lora_r", c["rank"], "--lora_alpha", 2 * c["rank"],
                                   "--lora_target_modules", c["modules"]], task / "train")
    ckpts = checkpoint_glob(train)
    attack = run_stage("membership_inference.py", ["--mia_dir", mia, "--model_name_or_path", c["model"],
                                                   "--checkpoints", ckpts, "--seed", seed,
                                                   "--bootstrap", s["bootstrap"]], task / "mia")
    canaries = _canaries_file(mia, task / "data" / "canaries.jsonl")
    extract = run_stage("generate.py", ["--mode", "prefix", "--input_file", canaries, "--model_name_or_path",
                                        c["model"], "--checkpoints", ckpts, "--prefix_fraction", 0.5,
                                        "--seed", seed, "--bootstrap", s["bootstrap"]], task / "extraction")
    return summarize_stages({"mia": attack, "extraction": extract, "train": train})


def expt6(c: dict, s: dict, task: Path) -> dict:
    """SFT, then DPO on the facts' preference pairs (chosen = true answer, rejected = a distractor). QA
    recall and membership inference (members: sentences trained in SFT) before and after DPO."""
    seed = c["seed"]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", s["n_facts"],
                                       "--variants_per_fact", s["variants"], "--seed", seed], task / "data" / "facts")
    mia = run_stage("make_data.py", ["mia", "--source", "corpus", "--n_members", s["n_members"],
                                     "--n_nonmembers", s["n_members"], "--canary_copies", "1",
                                     "--canaries_per_copy", 1, "--seed", seed], task / "data" / "mia")
    lora = ["--lora_r", s["lora_r"], "--lora_alpha", 2 * s["lora_r"]] if c["method"] == "lora" else []
    sft = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file",
                                 f"{facts}/train_active_{s['variants']}.jsonl,{mia}/train.jsonl",
                                 "--num_exposures", s["exposures"], "--save_exposures", s["exposures"],
                                 "--learning_rate", s["lr_lora" if lora else "lr_full"], "--batch_size",
                                 s["batch_size"], "--seed", seed, *lora], task / "sft")
    sft_ckpt = sft / "checkpoints" / f"exposure_{s['exposures']}"
    dpo = run_stage("finetune_dpo.py", ["--sft_checkpoint", sft_ckpt, "--pairs_file", facts / "dpo_pairs.jsonl",
                                        "--beta", s["beta"], "--learning_rate", s["dpo_lr_lora" if lora else "dpo_lr"],
                                        "--num_epochs", s["dpo_epochs"], "--batch_size", s["batch_size"],
                                        "--seed", seed], task / "dpo")
    dpo_ckpt = dpo / "checkpoints" / f"epoch_{s['dpo_epochs']}"
    both = f"{sft_ckpt},{dpo_ckpt}"
    qa = run_stage("generate.py", ["--mode", "qa", "--input_file",
                                   mode_probes(facts, "active", task / "data" / "probes_active.jsonl"),
                                   "--model_name_or_path", c["model"], "--checkpoints", both, "--max_new_tokens", 10, "--seed", seed],
                   task / "dpo_recall")
    attack = run_stage("membership_inference.py", ["--mia_dir", mia, "--model_name_or_path", c["model"],
                                                   "--checkpoints", both, "--reference_model", c["model"],
                                                   "--seed", seed, "--bootstrap", s["bootstrap"]], task / "mia")
    return summarize_stages({"dpo_recall": qa, "mia": attack, "dpo": dpo, "sft": sft})


PIPELINES = {"expt1": expt1, "expt2": expt2, "expt3": expt3, "expt4": expt4, "expt5": expt5, "expt6": expt6,
             "expt7": expt7}


def run_task(expt: str, index: int, runs_root: str | os.PathLike, size: str) -> Path:
    """Run (or resume, or skip) one array task; returns its directory."""
    c = cell(expt, size, index)
    task = Path(runs_root) / expt / cell_name(c)
    if (task / "results.json").exists():
        print(f"{task}: results.json exists, nothing to do", flush=True)
        return task
    task.mkdir(parents=True, exist_ok=True)
    write_json_atomic(task / "cell.json", {"expt": expt, "size": size, "index": index, **c})
    results = PIPELINES[expt](c, SETTINGS[expt][size], task)
    write_json_atomic(task / "results.json", {"expt": expt, "size": size, "index": index, "cell": c, **results})
    return task


class SubmititTask:
    """Picklable callable for submitit: runs one cell; on preemption submitit calls `checkpoint`, which
    requeues the same call (training state is already on disk, so the rerun resumes)."""

    def __init__(self, expt: str, runs_root: str, size: str):
        self.expt, self.runs_root, self.size = expt, runs_root, size

    def __call__(self, index: int) -> str:
        os.chdir(ROOT)
        while True:
            try:
                return str(run_task(self.expt, index, self.runs_root, self.size))
            except Preempted:
                if "SLURM_JOB_ID" in os.environ:
                    raise  # submitit's checkpoint() requeues the job
                continue  # local: resume straight away

    def checkpoint(self, index: int):
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)
