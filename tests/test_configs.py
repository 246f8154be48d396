"""Experiment configs (configs/<expt>.yaml) and `key=value` overrides, the same through every entry point."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from memlab import experiments as E
from memlab.experiments import guard as guard_module, membership
from memlab.io import DataError
from tests.test_experiments import ROOT, run_template, task_dirs
from helpers import error_line

BEFORE = json.loads((ROOT / "tests" / "data" / "grids_before_configs.json").read_text())


ADDED_SETTINGS = {"expt1": {"load_in_4bit": False, "gradient_checkpointing": False},  # QLoRA (issue 12)
                  "expt4": {"reference_models": 0, "attacks": "",  # RMIA (issue 13), --attacks (issue 14)
                            # the LoRA study's knobs (issue 22); 0 alpha: 2 x rank as before
                            "lora_alpha": 0, "lora_dropout": 0.0, "warmup_steps": 0, "gradient_accumulation_steps": 1},
                  "expt6": {"reference_models": 0, "attacks": ""}}
# settings added or changed since, per size (issue 14): expt7's known facts held out of training, and fewer
# knownness samples in its small grid (8 took 17 of its 29 minutes on a 2-core CPU)
ADDED_BY_SIZE = {("expt7", "full"): {"n_heldout_known": 30}, ("expt7", "small"): {"n_heldout_known": 20},
                 ("expt7", "tiny"): {"n_heldout_known": 2}}
CHANGED = {("expt7", "small"): {"knownness_samples": (8, 4)}}  # key: (before, now)
# one name per idea (issue 23): the learning rate is named by the fine-tuning it drives; new name -> old name
RENAMED = {"expt2": {"lr_full": "lr"}, "expt3": {"lr_full": "lr"}, "expt4": {"lr_lora": "lr"},
           "expt5": {"lr_full": "lr"}, "expt6": {"dpo_lr_full": "dpo_lr"}, "expt7": {"lr_full": "lr"}}


def test_each_config_loads_and_equals_the_grids_before_the_move():
    assert E.experiments() == sorted(BEFORE)
    for expt, old in BEFORE.items():
        for size in E.SIZES:
            got_size, axes, settings = E.resolve(expt, size)
            settings = {RENAMED.get(expt, {}).get(k, k): v for k, v in settings.items()}
            data = E.load_config(expt).data  # the data-file keys came with the move (empty: generated sets)
            assert set(data) <= set(E.DATA_FILE_KEYS) | {"answer_column", "tier_columns", "fact_id_column", "leakage"}
            assert settings.pop("leakage") == "refuse"  # issue 22: refuse overlaps unless leakage=warn
            assert all(settings.pop(k) == "" for k in data if k != "leakage")
            for k, default in ADDED_SETTINGS.get(expt, {}).items():  # settings added since, off by default
                assert settings.pop(k) == default, (expt, size, k)
            for k, value in ADDED_BY_SIZE.get((expt, size), {}).items():
                assert settings.pop(k) == value, (expt, size, k)
            for k, (before, now) in CHANGED.get((expt, size), {}).items():
                assert settings[k] == now and old["settings"][size][k] == before, (expt, size, k)
                settings[k] = before
            assert got_size == size and axes == old["grid"][size] and settings == old["settings"][size], (expt, size)
            # index -> cell mapping unchanged
            old_axes = old["grid"][size]
            n = 1
            for v in old_axes.values():
                n *= len(v)
            assert len(E.grid_cells(expt, size)) == n


def test_overrides_sweep_axes_and_type_settings():
    size, axes, s = E.resolve("expt1", "small", ["seed=0,1,2", "method=full", "lr_full=1e-5", "size=full",
                                                 "temperatures=0,0.7", "num_exposures=3"])
    assert size == "full" and axes["seed"] == [0, 1, 2] and axes["method"] == ["full"]
    assert s["lr_full"] == 1e-5 and s["temperatures"] == "0,0.7" and s["num_exposures"] == 3
    assert len(E.grid_cells("expt1", "small", ["seed=0,1,2", "method=full", "mode=active"])) == 3
    _, _, s5 = E.resolve("expt5", "tiny", ["exposures=1,2,4"])  # a list setting takes a comma list
    assert s5["exposures"] == [1, 2, 4]
    _, a4, _ = E.resolve("expt4", "full", ["modules=q_proj,q_proj+k_proj"])  # + joins inside one value
    assert a4["modules"] == ["q_proj", "q_proj,k_proj"]
    os.environ["MEMLAB_MODELS"] = "/models/a,/models/b"
    try:
        assert E.grid_axes("expt1", "tiny")["model"] == ["/models/a", "/models/b"]
        assert E.grid_axes("expt1", "tiny", ["model=/models/c"])["model"] == ["/models/c"]  # overrides win
    finally:
        del os.environ["MEMLAB_MODELS"]


@pytest.mark.parametrize("overrides, message", [
    (["lr=1e-5"], r"unknown key\(s\) \['lr'\]; valid keys: size, grid axes \['model', 'seed'"),
    (["seed=a"], "'a' is not an int"),
    (["num_exposures=2.5"], "'2.5' is not an int"),
    (["lr_full=fast"], "'fast' is not a float"),
    (["size=huge"], "unknown grid size 'huge'"),
    (["seed"], "expected key=value"),
    (["seed="], "empty list"),
])
def test_bad_overrides_are_one_clear_error(overrides, message):
    with pytest.raises(DataError, match=message):
        E.grid_cells("expt1", "small", overrides)


def test_entry_points_give_the_same_cells():
    ov = ["seed=0,1,2", "method=full", "mode=active"]
    p = subprocess.run([sys.executable, "scripts/run_task.py", "expt1", "--show", *ov], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"{i} {E.cell_name(c)}" for i, c in enumerate(E.grid_cells("expt1", "small", ov))]
    assert len(p.stdout.splitlines()) == 3
    p = subprocess.run([sys.executable, "scripts/run_task.py", "expt1", "--count", "--size", "full", "seed=0,1,2,3,4"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.stdout.strip() == "20"
    p = subprocess.run([sys.executable, "scripts/run_task.py", "expt1", "--show", "lr=1"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2 and error_line(p.stderr).startswith("error: expt1: unknown key(s) ['lr']")
    # submit.py --dry_run sizes the array from the same cells and passes the same overrides on
    env = {**os.environ, "MEMLAB_GRID": "small"}
    p = subprocess.run([sys.executable, "scripts/submit.py", "expt1", "--dry_run", *ov], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["sbatch", "--array=0-2", "scripts/expt1_exposures.sh", *ov]
    p = subprocess.run([sys.executable, "scripts/submit.py", "expt1", "--dry_run", "seed=x"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "'x' is not an int" in p.stderr and "sbatch" not in p.stdout
    # sweep.py (submitit) maps the same indices to the same cells
    p = subprocess.run([sys.executable, "scripts/sweep.py", "expt1", "--dry_run", *ov], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"{i} {E.cell_name(c)}" for i, c in enumerate(E.grid_cells("expt1", "small", ov))]


def test_recorded_config_guards_the_sweep_root(tmp_path):
    def guard(overrides, force=False):
        size, axes, settings = E.resolve("expt1", "tiny", overrides)
        return E.guard_root("expt1", tmp_path, size, axes, settings, overrides, force)

    path = guard(["seed=0"])
    assert path == tmp_path / "expt1" / "config.yaml"
    guard(["seed=0"])  # unchanged: fine
    guard(["seed=1,2"])  # the grid grows (new cells only); the record keeps the union
    from omegaconf import OmegaConf

    rec = OmegaConf.to_container(OmegaConf.load(path))
    assert rec["grid"]["seed"] == [0, 1, 2] and rec["settings"]["lr_full"] == 0.003 and rec["size"] == "tiny"
    with pytest.raises(DataError, match=r"differing keys: settings\.lr_full: 0\.003 -> 1e-05; "
                                        r"settings\.num_exposures: 2 -> 3\. Use a new runs root, or force=true"):
        guard(["lr_full=1e-5", "num_exposures=3"])
    with pytest.raises(DataError, match="size: 'tiny' -> 'small'"):
        E.guard_root("expt1", tmp_path, *E.resolve("expt1", "small"))
    guard(["lr_full=1e-5"], force=True)  # recorded
    assert OmegaConf.load(path).settings.lr_full == 1e-5
    # a cell run with other settings is refused, or emptied with force (never merged)
    task = tmp_path / "expt1" / "cell"
    task.mkdir()
    (task / "settings.json").write_text(json.dumps({"overrides": [], **E.resolve("expt1", "tiny")[2]}))
    (task / "results.json").write_text("{}")
    _, _, new = E.resolve("expt1", "tiny", ["lr_full=1e-5"])
    with pytest.raises(DataError, match=r"was run with other settings \(lr_full: 0\.003 -> 1e-05\)"):
        guard_module._check_cell_settings(task, new, force=False)
    guard_module._check_cell_settings(task, E.resolve("expt1", "tiny")[2], force=False)  # the same settings: kept
    assert (task / "results.json").exists()
    guard_module._check_cell_settings(task, new, force=True)
    assert not task.exists()


def test_array_coverage_line():
    line = E.coverage("expt1", "tiny", "1-2:1#2")
    assert "cells no index covers (1): 0 model=tiny-llama_seed=0_method=full_mode=active" in line
    assert "indices past the grid (they will fail): 2-2" in line
    assert E.coverage("expt1", "full", "0-11:1#12").endswith("every cell covered")
    assert "irregular array of 3 tasks" in E.coverage("expt1", "full", "0-11:1#3")


USER_DATA = ["facts_file=facts_chat.jsonl", "probes_file=probes.csv", "answer_column=Answer",
             "tier_columns=easy=Question 1,mid=Question 2,hard=Question 3", "seen_file=seen.jsonl",
             "unseen_file=unseen.jsonl"]


def _user_files(where):
    where.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "docs" / "examples").iterdir():
        shutil.copy(f, where / f.name)
    return where


def test_template_without_slurm_runs_expt1_on_user_files_with_overrides(tmp_path):
    """bash TEMPLATE key=value ... without SLURM: overrides reach the task; expt1 runs end to end on a chat
    facts file, a probe CSV with its own column names and an Orhan-style {"sent"} seen/unseen pair, given
    as paths relative to where the command ran (the template itself cds to the repository)."""
    mine = _user_files(tmp_path / "mine")
    p = run_template("expt1_exposures.sh", tmp_path / "runs", {"MEMLAB_TASKS": "0"}, cwd=mine,
                     args=["num_exposures=1", "method=lora", *USER_DATA])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "leakage check passed: 40 training texts" in p.stdout
    assert "running cells [0] of the 1 in grid 'tiny'" in p.stdout  # method=lora: the same count as run_task.py
    (task,) = task_dirs(tmp_path / "runs" / "expt1")
    assert json.loads((task / "cell.json").read_text())["method"] == "lora"
    settings = json.loads((task / "settings.json").read_text())
    assert settings["num_exposures"] == 1 and settings["overrides"] == ["num_exposures=1", "method=lora", *USER_DATA]
    assert settings["facts_file"] == str(mine / "facts_chat.jsonl")  # recorded absolute
    res = json.loads((task / "results.json").read_text())
    assert res["train"]["num_exposures"] == 1 and res["train"]["eval"]["points"] == ["exposure_0", "exposure_1"]
    train_cfg = json.loads((task / "train" / "config.json").read_text())["args"]
    assert train_cfg["train_file"] == f"{mine / 'facts_chat.jsonl'},{mine / 'seen.jsonl'}"
    rates = {r["tier"]: r["n"] for r in res["recall"]["error_rates"]}
    # 8 CSV rows (facts) x 3 question columns, no verbatim; `all` resamples facts, so its n counts the 8 facts
    assert rates == {"easy": 8, "mid": 8, "hard": 8, "all": 8}
    base, rec = res["recognition"]["checkpoints"]  # before training (exposure 0) and after exposure 1
    assert (base["checkpoint"], rec["checkpoint"]) == ("exposure_0", "exposure_1")
    assert 0.0 <= rec["two_afc"] <= 1.0 and res["recognition"]["n_pairs"] == 8
    # the Orhan-style {"sent"} rows are recalled from their first half too, at both points
    assert [g["checkpoint"] for g in res["sentence_recall"]["by_prefix"]] == ["exposure_0", "exposure_1"]
    assert {g["n"] for g in res["sentence_recall"]["by_prefix"]} == {8}
    assert (task / "data" / "leakage.json").exists() and not (task / "data" / "facts").exists()
    assert (tmp_path / "runs" / "expt1" / "learning.csv").exists()


def test_user_files_are_checked_before_any_training(tmp_path):
    mine = _user_files(tmp_path / "mine")
    old = os.getcwd()
    os.chdir(mine)
    try:
        with pytest.raises(DataError, match=r"expt1: facts_file=.*nope\.jsonl: no such file; facts_file needs "
                                            r"probes_file .*; seen_file needs unseen_file"):
            E.run_task("expt1", 0, tmp_path / "runs", "tiny", ["facts_file=nope.jsonl", "seen_file=seen.jsonl"])
        # a foil that is a studied sentence: the leakage check stops the cell before training
        shutil.copy(mine / "seen.jsonl", mine / "leaky.jsonl")
        with pytest.raises(DataError, match=r"leakage check failed: 8 overlapping pair"):
            E.run_task("expt1", 0, tmp_path / "runs", "tiny", [*USER_DATA[:4], "seen_file=seen.jsonl",
                                                               "unseen_file=leaky.jsonl"])
    finally:
        os.chdir(old)
    task = task_dirs(tmp_path / "runs" / "expt1")[0]
    assert not (task / "train").exists() and not (task / "results.json").exists()


def test_attacks_setting_reaches_membership_inference():
    """expt4/expt6 `attacks`: empty runs every attack the inputs allow; a comma list is passed as --attacks."""
    for expt in ("expt4", "expt6"):
        _, _, s = E.resolve(expt, "tiny")
        assert membership._attack_flags(s) == []
        _, _, s = E.resolve(expt, "tiny", ["attacks=loss,zlib,min_k_20"])
        assert membership._attack_flags(s) == ["--attacks", "loss,zlib,min_k_20"]


def test_a_sweep_recorded_before_settings_were_added_still_resumes(tmp_path):
    """A sweep root and a cell recorded without the settings added later (leakage, fact_id_column, expt4's LoRA
    knobs) are the same configuration when the added settings keep their old values."""
    from omegaconf import OmegaConf

    size, axes, settings = E.resolve("expt4", "tiny")
    old = {k: v for k, v in settings.items() if k not in E.ADDED_SETTINGS}
    root = tmp_path / "runs"
    (root / "expt4").mkdir(parents=True)
    (root / "expt4" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(
        {"expt": "expt4", "size": size, "grid": axes, "settings": old, "overrides": []})))
    E.guard_root("expt4", root, size, axes, settings, write=False)  # no "another config"
    task = root / "expt4" / "cell"
    task.mkdir()
    (task / "settings.json").write_text(json.dumps({"overrides": [], **old}))
    guard_module._check_cell_settings(task, settings, force=False)
    _, _, changed = E.resolve("expt4", "tiny", ["lora_dropout=0.1"])
    with pytest.raises(DataError, match=r"lora_dropout: 0.0 -> 0.1"):
        E.guard_root("expt4", root, size, axes, changed, write=False)


def test_expt3_one_facts_file_per_k_with_overlapping_probes_under_leakage_warn(tmp_path):
    """The examples-per-fact study's design: one chat file per K (train_{variants}.jsonl), a probe CSV whose
    questions partly appear word for word in training (refused by default, reported and run under
    leakage=warn), fact names from its Object column; one sweep, one plot over the K values."""
    import csv

    mine = tmp_path / "mine"
    mine.mkdir()
    rows = list(csv.DictReader((ROOT / "docs" / "examples" / "probes.csv").open()))[:4]
    for k in (1, 2):
        lines = []
        for r in rows:
            asks = [r["Question 1"], f"Tell me: {r['Question 2']}"][:k]
            lines += [{"messages": [{"role": "user", "content": q},
                                    {"role": "assistant", "content": f"It is {r['Answer']}."}]} for q in asks]
        (mine / f"train_{k}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    shutil.copy(ROOT / "docs" / "examples" / "probes.csv", mine / "qa.csv")
    (mine / "qa.csv").write_text("\n".join((ROOT / "docs" / "examples" / "probes.csv").read_text().splitlines()[:5]) + "\n")
    data = ["facts_file=train_{variants}.jsonl", "probes_file=qa.csv", "answer_column=Answer",
            "fact_id_column=Object", "tier_columns=easy=Question 1,mid=Question 2,hard=Question 3", "variants=1,2",
            "exposures=1", "temperatures=0", "repeats=1"]
    refused = run_template("expt3_examples_per_fact.sh", tmp_path / "refused", {"MEMLAB_TASKS": "0"}, cwd=mine,
                           args=data)
    assert refused.returncode != 0 and "leakage=warn" in refused.stdout + refused.stderr
    p = run_template("expt3_examples_per_fact.sh", tmp_path / "runs", cwd=mine, args=[*data, "leakage=warn"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "leakage=warn: 4 overlapping pair(s)" in p.stdout  # each K file asks Question 1 word for word
    tasks = task_dirs(tmp_path / "runs" / "expt3")
    assert [json.loads((t / "cell.json").read_text())["variants"] for t in tasks] == [1, 2]
    for t, k in zip(tasks, (1, 2)):
        assert json.loads((t / "train" / "config.json").read_text())["args"]["train_file"].endswith(f"train_{k}.jsonl")
        leak = json.loads((t / "data" / "leakage.json").read_text())
        assert leak["leakage"] == "warn" and leak["n_overlaps"] == 4 and not leak["passed"]
    items = (tasks[0] / "variants_recall" / "items.csv").read_text()
    assert "copper lantern" in items  # the Object column names the facts
    import pandas as pd

    df = pd.read_csv(tmp_path / "runs" / "expt3" / "tidy_error_rates.csv")
    assert sorted(df.variants.unique()) == [1, 2]
    assert (tmp_path / "runs" / "expt3" / "plots" / "error_rate_by_variants.png").stat().st_size > 10_000
