"""The experiment registry (memlab/experiments/): one module per experiment, found by file name, agreeing with
configs/ and the sbatch templates; one name per setting (old names still read); one grid-size rule."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from memlab import experiments as E
from memlab.experiments import registry
from memlab.io import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_has_one_module_and_one_template_and_back():
    modules = registry.modules()
    assert list(modules) == [f"expt{i}" for i in range(1, 8)]
    assert sorted(modules) == sorted(E.experiments())
    for name, mod in modules.items():
        stem = Path(mod.__file__).stem  # expt1_exposures
        assert (ROOT / "scripts" / f"{stem}.sh").is_file(), stem
        assert (ROOT / "configs" / f"{name}.yaml").is_file(), name
        assert mod.NAME == name and callable(mod.run) and mod.STAGES and len(set(mod.STAGES)) == len(mod.STAGES)
    assert sorted(p.stem for p in (ROOT / "scripts").glob("expt*_*.sh")) == sorted(
        Path(m.__file__).stem for m in modules.values())


def test_a_pipeline_must_return_the_stages_it_declares(monkeypatch, tmp_path):
    mod = registry.module("expt3")
    monkeypatch.setattr(mod, "run", lambda cell, settings, task: {"train": {}})
    with pytest.raises(RuntimeError, match=r"returned stages \['train'\], but it declares STAGES"):
        registry.run_pipeline("expt3", {}, {}, tmp_path)
    with pytest.raises(KeyError, match="no experiment module for 'expt99'"):
        registry.module("expt99")


@pytest.mark.parametrize("expt,old,new", [("expt2", "lr", "lr_full"), ("expt3", "lr", "lr_full"),
                                          ("expt4", "lr", "lr_lora"), ("expt5", "lr", "lr_full"),
                                          ("expt7", "lr", "lr_full"), ("expt6", "dpo_lr", "dpo_lr_full")])
def test_old_learning_rate_names_are_read_as_the_new_ones(expt, old, new):
    settings = E.resolve(expt, "tiny", [f"{old}=0.25"])[2]
    assert settings[new] == 0.25 and old not in settings
    assert E.with_added_settings({old: 0.25}, settings)[new] == 0.25
    with pytest.raises(DataError, match=f"{old} and {new} are one setting"):
        E.resolve(expt, "tiny", [f"{old}=0.25", f"{new}=0.5"])


def test_a_sweep_recorded_with_an_old_name_still_resumes(tmp_path):
    """A config.yaml written before the rename (lr:) is the same config, not 'another config'."""
    size, axes, settings = E.resolve("expt2", "tiny")
    old = {("lr" if k == "lr_full" else k): v for k, v in settings.items()}
    E.guard_root("expt2", tmp_path, size, axes, old)  # recorded by the old code
    text = (tmp_path / "expt2" / "config.yaml").read_text()
    assert "  lr: " in text and "lr_full" not in text
    E.guard_root("expt2", tmp_path, size, axes, settings)  # no "run with another config"
    with pytest.raises(DataError, match="another config"):
        E.guard_root("expt2", tmp_path, size, axes, {**settings, "lr_full": settings["lr_full"] * 2})


@pytest.mark.parametrize("env,args,expected", [({"MEMLAB_GRID": "tiny"}, [], "tiny"), ({}, [], "small"),
                                               ({"MEMLAB_GRID": "tiny"}, ["--size", "full"], "full"),
                                               ({"SLURM_JOB_ID": "1"}, [], "full"),
                                               ({"MEMLAB_GRID": "tiny"}, ["size=small"], "small")])
def test_one_grid_size_rule_for_run_task(env, args, expected):
    """--size, else MEMLAB_GRID, else full under SLURM, else small (a size= override wins over all)."""
    base = {k: v for k, v in os.environ.items() if k not in ("MEMLAB_GRID", "SLURM_JOB_ID")}
    p = subprocess.run([sys.executable, "scripts/run_task.py", "expt1", "--show", *args], cwd=ROOT,
                       env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    shown = {size: "".join(f"{i} {E.cell_name(c)}\n" for i, c in enumerate(E.grid_cells("expt1", size)))
             for size in ("tiny", "small", "full")}
    assert len(set(shown.values())) == 3  # the sizes' tables differ, so the one shown names its size
    assert p.stdout == shown[expected], (env, args)


def _blocks(doc: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", doc, re.S)


def test_the_documented_toy_experiment_runs_and_analyze_picks_it_up(tmp_path):
    """docs/adding_an_experiment.md's route, as written there: its module, config and template (the code blocks
    of the page) added to a copy of the repository, nothing else changed; the tiny grid runs end to end and
    analyze.py writes the module's own table and summary block."""
    doc = (ROOT / "docs" / "adding_an_experiment.md").read_text()
    (module,), (config,), (template,) = _blocks(doc, "python"), _blocks(doc, "yaml"), _blocks(doc, "bash")[:1]
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    (repo / "memlab/experiments/expt8_toy.py").write_text(module)
    (repo / "configs/expt8.yaml").write_text(config)
    (repo / "scripts/expt8_toy.sh").write_text(template)
    env = {**os.environ, "PYTHONPATH": str(repo), "MEMLAB_GRID": "tiny", "MEMLAB_PYTHON": sys.executable,
           "MEMLAB_RUNS_ROOT": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["bash", "scripts/expt8_toy.sh"], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp_path / "runs" / "expt8"
    toy = pd.read_csv(out / "tidy_toy.csv")
    assert len(toy) > 0 and {"model", "seed", "tier", "accuracy"} <= set(toy.columns)
    assert toy.accuracy.between(0, 1).all()
    assert "Recall after one exposure (tidy_toy.csv)" in (out / "summary.txt").read_text()
    assert (out / "tidy_train.csv").exists()  # the shared tables still come for the new experiment
    p = subprocess.run([sys.executable, "scripts/run_task.py", "expt8", "--show", "--size", "full"], cwd=repo,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 3, p.stderr
