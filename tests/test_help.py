"""Every flag of every script has a help sentence that `-h` shows (issue 11).

- The argument dataclasses of the entry points (the class each script passes to `cli.run`, found in its
  source; for make_data.py every class in `make_data.COMMANDS`): each field has a non-empty
  metadata["help"], and HfArgumentParser's `-h` text of the class renders and contains it.
- The flags several scripts share (--output_dir, --overwrite_output_dir, --model_name_or_path,
  --trust_remote_code) are the one declaration in memlab.cli / memlab.models.
- `python train.py -h` (one subprocess) prints the help of --learning_rate and --eval_probes_file.
- The argparse scripts (scripts/run_task.py, sweep.py, submit.py): the parser their `main` builds is
  captured at parse time, and every argument, positional ones included, has help text.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("train", "finetune_dpo", "test", "generate", "membership_inference", "analyze")
ARGPARSE_SCRIPTS = ("run_task", "sweep", "submit")


def _squash(text: str) -> str:
    """Help text without whitespace (argparse re-wraps it) and with argparse's '%%' as shown ('%')."""
    return "".join(text.replace("%%", "%").split())


def _import_script(name: str):
    module = importlib.import_module(name)
    # `test` is also a stdlib package: conftest puts the repository first on sys.path, so it must be ours
    assert Path(module.__file__).resolve() == ROOT / f"{name}.py", \
        f"`import {name}` found {module.__file__}, not the repository's {name}.py"
    return module


def _run_dataclass(module) -> type:
    """The class the script's source passes to `cli.run(main, Class, ...)` / `run(main, Class, ...)`."""
    found = []
    for node in ast.walk(ast.parse(Path(module.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[1], ast.Name):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "run") or (
                    isinstance(f, ast.Attribute) and f.attr == "run" and isinstance(f.value, ast.Name)
                    and f.value.id == "cli"):
                found.append(node.args[1].id)
    assert len(set(found)) == 1, f"{module.__name__}.py: expected one cli.run(main, Args) call, found {found}"
    return getattr(module, found[0])


def argument_dataclasses() -> list[tuple[str, type]]:
    out = []
    for name in ENTRY_POINTS:
        module = _import_script(name)
        cls = _run_dataclass(module)
        out.append((f"{name}.{cls.__name__}", cls))
    make_data = _import_script("make_data")
    out += [(f"make_data.{cls.__name__} ({sub})", cls) for sub, (cls, _) in make_data.COMMANDS.items()]
    return out


def test_every_dataclass_field_has_help():
    from transformers import HfArgumentParser

    problems = []
    for where, cls in argument_dataclasses():
        assert dataclasses.is_dataclass(cls), f"{where}: not a dataclass"
        shown = _squash(HfArgumentParser(cls).format_help())  # raises on a stray '%' in a help text
        for f in dataclasses.fields(cls):
            text = f.metadata.get("help")
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{where}.{f.name}: no help in the field's metadata")
            elif _squash(text) not in shown:
                problems.append(f"{where}.{f.name}: its help is not in the -h text")
    assert not problems, "flags without help:\n  " + "\n  ".join(problems)


RUN_DIR_SCRIPTS = ("train", "finetune_dpo", "test", "generate", "membership_inference")


def test_shared_flags_are_declared_once():
    """The flags several scripts share come from one declaration each (memlab.cli output_dir_arg and
    overwrite_output_dir_arg, memlab.models model_name_or_path_arg and trust_remote_code_arg): every script that
    writes a run directory has --output_dir (None until given, its help naming what it writes) and
    --overwrite_output_dir (one help text); every --model_name_or_path defaults to the embedded model; every
    --trust_remote_code says the same."""
    from memlab import cli, models

    overwrite, trust = cli.overwrite_output_dir_arg(), models.trust_remote_code_arg()
    for name in RUN_DIR_SCRIPTS:
        fields = {f.name: f for f in dataclasses.fields(_run_dataclass(_import_script(name)))}
        assert "output_dir" in fields and "overwrite_output_dir" in fields, f"{name}.py: no run-directory flags"
        out, over = fields["output_dir"], fields["overwrite_output_dir"]
        assert out.default is None, f"{name}.py --output_dir: default {out.default!r}"
        assert re.fullmatch(r"(run|output) directory \(required\): .+ are written there", out.metadata["help"]), \
            f"{name}.py --output_dir: not cli.output_dir_arg's help: {out.metadata['help']!r}"
        assert (over.default, dict(over.metadata)) == (overwrite.default, dict(overwrite.metadata)), \
            f"{name}.py --overwrite_output_dir: not cli.overwrite_output_dir_arg"
    for where, cls in argument_dataclasses():
        if where.startswith("analyze."):
            continue
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if "model_name_or_path" in fields:
            assert fields["model_name_or_path"].default == models.DEFAULT_MODEL, where
        if "trust_remote_code" in fields:
            f = fields["trust_remote_code"]
            assert (f.default, dict(f.metadata)) == (trust.default, dict(trust.metadata)), where


def test_train_h_prints_the_help_of_flags():
    train = _import_script("train")
    fields = {f.name: f for f in dataclasses.fields(train.TrainArgs)}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "train.py", "-h"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    for flag in ("learning_rate", "eval_probes_file"):
        assert f"--{flag}" in res.stdout
        assert _squash(fields[flag].metadata["help"]) in _squash(res.stdout), f"--{flag}: help not printed"


class _Captured(Exception):
    pass


@pytest.mark.parametrize("name", ARGPARSE_SCRIPTS)
def test_argparse_script_arguments_have_help(name, monkeypatch):
    if name == "sweep" and importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit not installed (sweep.py imports it before building its parser)")
    spec = importlib.util.spec_from_file_location(f"memlab_help_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsers = []

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise _Captured

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_Captured):
        module.main(["expt1"])
    parser = parsers[0]
    parser.format_help()  # renders (a stray '%' in a help text would raise)
    missing = [a.dest for a in parser._actions if not (a.help and a.help.strip()) or a.help == argparse.SUPPRESS]
    assert not missing, f"scripts/{name}.py: arguments without help: {missing}"
