"""The one output-directory rule, reruns that invalidate before they write, resume that checks its data,
Ctrl-C that saves resume state, and argument errors as one line (issue 15)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memlab import cli, rundir
from memlab.io import DataError
from helpers import error_line

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(script, *args, capsys=None):
    """The script's entry point in this process (no interpreter start-up): (exit status, stderr)."""
    import importlib

    mod = importlib.import_module(script[:-3])
    arg_cls = {"train": "TrainArgs", "test": "RecognitionArgs", "generate": "GenerateArgs"}[script[:-3]]
    try:
        cli.run(mod.main, getattr(mod, arg_cls), [str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


pytestmark = pytest.mark.usefixtures("one_thread")


def tree(d: Path) -> dict:
    """Every file under d with its bytes (to show a directory is untouched)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rows = [{"id": f"s{i}", "text": f"The {w} cat sat on mat number {i}."} for i, w in
            enumerate(["red", "blue", "green", "old", "small", "quiet", "happy", "grey"])]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    foils = [{"id": f"u{i}", "text": f"A {w} dog ran to gate number {i + 40}."} for i, w in
             enumerate(["red", "blue", "green", "old", "small", "quiet", "happy", "grey"])]
    (d / "unseen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in foils))
    return d


def train_args(data, out, *extra):
    return ["--model_name_or_path", "tiny-llama", "--train_file", data / "train.jsonl", "--num_exposures", 2,
            "--batch_size", 4, "--learning_rate", "1e-3", "--save_exposures", 2, "--output_dir", out, *extra]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    import train

    out = tmp_path_factory.mktemp("runs") / "run"
    cli.run(train.main, train.TrainArgs, [str(a) for a in train_args(data, out)])
    return out


def test_train_into_a_model_directory_is_refused_and_the_model_still_loads(data, tiny_llama, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    before = tree(model)
    code, err = run("train.py", *train_args(data, model), capsys=capsys)
    assert code == 2 and error_line(err), err[-2000:]
    assert f"--output_dir {model} holds a model (config.json with model_type 'llama')" in err
    assert "--overwrite_output_dir" in err
    assert tree(model) == before
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(model).model_type == "llama"


def test_finished_run_with_another_config_is_refused_then_overwritten_never_merged(data, finished, tmp_path, capsys):
    other = tmp_path / "run"
    shutil.copytree(finished, other)
    before = tree(other)
    code, err = run("train.py", *train_args(data, other, "--num_exposures", 1, "--save_exposures", 1), capsys=capsys)
    assert code == 2 and "holds a finished run of train.py with a different configuration" in err
    assert "num_exposures: 2 -> 1" in err and tree(other) == before
    code, err = run("train.py", *train_args(data, other, "--num_exposures", 1, "--save_exposures", 1,
                                            "--overwrite_output_dir"), capsys=capsys)
    assert code == 0, err[-2000:]
    assert sorted(x.name for x in (other / "checkpoints").iterdir()) == ["exposure_1"]  # the old exposure_2 is gone
    res = json.loads((other / "results.json").read_text())
    assert res["num_exposures"] == 1


def test_other_scripts_refuse_user_files_and_another_scripts_run(data, finished, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    for script, args in (("test.py", ["--seen_file", data / "train.jsonl", "--unseen_file", data / "unseen.jsonl"]),
                         ("generate.py", ["--mode", "prefix", "--input_file", data / "train.jsonl", "--prefix_tokens", 4])):
        code, err = run(script, "--model_name_or_path", "tiny-llama", *args, "--output_dir", mine, capsys=capsys)
        assert code == 2 and "holds 1 entry memlab did not write (notes.txt)" in err, err[-1500:]
        code, err = run(script, "--model_name_or_path", "tiny-llama", *args, "--output_dir", finished, capsys=capsys)
        assert code == 2 and "holds a finished run of train.py" in err, err[-1500:]
    assert tree(mine) == {"notes.txt": b"my notes"}
    assert (finished / "results.json").exists()


def test_a_killed_rerun_of_test_py_leaves_no_results_json(data, tmp_path):
    """Cases 79 and 112: the rerun removes the finished mark before it writes anything else."""
    out = tmp_path / "rec"
    args = ["test.py", "--model_name_or_path", "tiny-llama", "--seen_file", data / "train.jsonl",
            "--unseen_file", data / "unseen.jsonl", "--bootstrap", 0, "--output_dir", out]
    import test as recognition

    cli.run(recognition.main, recognition.RecognitionArgs, [str(a) for a in args[1:]])
    assert (out / "results.json").exists()
    proc = subprocess.Popen([PY, *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while (out / "results.json").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # right after the rerun invalidated the old result
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the rerun finished before it could be killed"
    assert not (out / "results.json").exists()  # the directory does not look finished


def test_bad_input_found_after_the_run_dir_was_made_leaves_nothing(data, tmp_path, capsys):
    """A text longer than the model's positions is found only after the run directory was made (case 70):
    the directory goes away again."""
    n = 8
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"id": f"x{i}", "text": ("word " * 3000) if i == 0 else f"short {i}"}) + "\n"
                            for i in range(n)))
    out = tmp_path / "rec"
    code, err = run("test.py", "--model_name_or_path", "tiny-llama", "--seen_file", long, "--unseen_file",
                    data / "unseen.jsonl", "--output_dir", out, capsys=capsys)
    assert code == 2 and "longer than the model's" in err, err[-1500:]
    assert not out.exists()


def test_resume_refuses_changed_data_and_ctrl_c_saves_resume_state(data, tmp_path):
    train_file = tmp_path / "train.jsonl"
    shutil.copy(data / "train.jsonl", train_file)
    out = tmp_path / "run"
    args = ["train.py", "--model_name_or_path", "tiny-llama", "--train_file", train_file, "--num_exposures", 400,
            "--batch_size", 4, "--learning_rate", "1e-3", "--output_dir", out]
    proc = subprocess.Popen([PY, *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (
            (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "state saved to" in stdout and (out / "resume" / "trainer_state").is_dir()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data_fingerprints"][str(train_file)] == rundir.file_digest(train_file)
    train_file.write_text(train_file.read_text().replace("red cat", "red hat"))
    p = subprocess.run([PY, *map(str, args), "--resume"], cwd=ROOT, capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert p.returncode == 2 and f"--resume: {train_file} changed since" in p.stderr, p.stderr[-2000:]
    assert (out / "resume" / "trainer_state").is_dir()  # nothing of the saved state was touched


def test_argument_errors_are_one_line_naming_the_yaml_file(tmp_path):
    import train

    cfg = tmp_path / "cfg.yaml"
    for text, message in (("num_exposures: two\n", f"{cfg}: num_exposures: invalid int value: 'two'"),
                          ("batch_size: [2, 4]\n", f"{cfg}: batch_size: invalid int value: '2,4'"),
                          ("42\n", f"{cfg}: expected a mapping of argument: value"),
                          ("- a\n- b\n", f"{cfg}: expected a mapping of argument: value"),
                          ("lora: {r: 4}\n", f"{cfg}: lora: expected a value or a list, got a mapping")):
        cfg.write_text(text)
        with pytest.raises(DataError) as e:
            cli.parse_args(train.TrainArgs, ["--config", str(cfg), "--train_file", "x", "--output_dir", "o"])
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(DataError, match=r"^--learning_rate: invalid float value: 'fast'$"):
        cli.parse_args(train.TrainArgs, ["--learning_rate", "fast"])
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(DataError, match=rf"--learning_rate must be a finite number > 0, got {bad.lstrip('+')}"):
            train.validate(cli.parse_args(train.TrainArgs, [f"--learning_rate={bad}", "--train_file", "x",
                                                             "--output_dir", "o"]))


def test_guard_rules_directly(tmp_path):
    import train

    a = train.TrainArgs(train_file="x", output_dir=str(tmp_path / "r"))
    assert rundir.guard_output_dir(tmp_path / "r", "train.py", a) == "new"
    rundir.prepare_run_dir(tmp_path / "r", a, "train.py")
    (tmp_path / "r" / "results.json").write_text("{}")
    assert rundir.guard_output_dir(tmp_path / "r", "train.py", a) == "same"
    b = train.TrainArgs(train_file="x", output_dir=str(tmp_path / "r"), report_to="tensorboard", resume=True)
    assert rundir.guard_output_dir(tmp_path / "r", "train.py", b) == "same"  # result-neutral flags
    rundir.prepare_run_dir(tmp_path / "r", a, "train.py")
    assert not (tmp_path / "r" / "results.json").exists()  # invalidated before anything else is written
    with pytest.raises(DataError, match="is the current, home or root directory"):
        rundir.guard_output_dir(Path.cwd(), "train.py", a)
    # the stage check of the pipelines: finished only with the same recorded command line
    from memlab.experiments.stages import _recorded_argv_matches

    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert _recorded_argv_matches(tmp_path / "r", cfg["argv"][:2])
    assert not _recorded_argv_matches(tmp_path / "r", ["--learning_rate", "1"])
