"""Experiment configs (configs/<expt>.yaml) and `key=value` overrides, the same through every entry point."""
import json
import os
import subprocess
import sys

import pytest

from memlab import experiments as E
from memlab.io import DataError
from tests.test_experiments import ROOT, run_template, task_dirs

BEFORE = json.loads((ROOT / "tests" / "data" / "grids_before_configs.json").read_text())


def test_each_config_loads_and_equals_the_grids_before_the_move():
    assert E.experiments() == sorted(BEFORE)
    for expt, old in BEFORE.items():
        for size in E.SIZES:
            got_size, axes, settings = E.resolve(expt, size)
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
    assert p.returncode == 2 and p.stderr.startswith("error: expt1: unknown key(s) ['lr']")


def test_template_without_slurm_passes_overrides_on(tmp_path):
    p = run_template("expt1_exposures.sh", tmp_path, {"MEMLAB_TASKS": "0"}, args=["num_exposures=1", "method=lora"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (task,) = task_dirs(tmp_path / "expt1")
    assert json.loads((task / "cell.json").read_text())["method"] == "lora"
    settings = json.loads((task / "settings.json").read_text())
    assert settings["num_exposures"] == 1 and settings["overrides"] == ["num_exposures=1", "method=lora"]
    res = json.loads((task / "results.json").read_text())
    assert res["train"]["num_exposures"] == 1 and res["train"]["eval"]["points"] == ["exposure_1"]
