"""The registry of experiments: every module `memlab/experiments/exptN_<name>.py` is one experiment, found
by its file name (adding an experiment adds no line here: docs/adding_an_experiment.md).

Each module declares NAME (its config: configs/<NAME>.yaml), STAGES (the keys of its task's results.json),
`run(cell, settings, task)` (its pipeline) and, optionally, what it adds to analyze.py: TABLES, PLOTS,
SUMMARIES (see memlab/analysis).
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import memlab.experiments as _package

MODULE_NAME = re.compile(r"^(expt\d+)_[a-z0-9_]+$")


def modules() -> dict[str, ModuleType]:
    """{experiment name: its module}, in experiment order (expt1, expt2, ..., expt10)."""
    found = {}
    for info in pkgutil.iter_modules(_package.__path__):
        m = MODULE_NAME.match(info.name)
        if not m:
            continue
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        if getattr(module, "NAME", None) != m.group(1):
            raise RuntimeError(f"{module.__file__}: NAME must be {m.group(1)!r} (its file name), not "
                               f"{getattr(module, 'NAME', None)!r}")
        found[m.group(1)] = module
    return dict(sorted(found.items(), key=lambda kv: int(kv[0][4:])))


def module(expt: str) -> ModuleType:
    """The module of one experiment (a KeyError names the known ones)."""
    found = modules()
    if expt not in found:
        raise KeyError(f"no experiment module for {expt!r}; known: {sorted(found)} (memlab/experiments/exptN_*.py)")
    return found[expt]


def run_pipeline(expt: str, cell: dict, settings: dict, task) -> dict:
    """The experiment's pipeline on one cell; its results must have exactly the stages it declares."""
    mod = module(expt)
    results = mod.run(cell, settings, task)
    if list(results) != list(mod.STAGES):
        raise RuntimeError(f"{mod.__name__}.run returned stages {list(results)}, but it declares STAGES = "
                           f"{list(mod.STAGES)}")
    return results
