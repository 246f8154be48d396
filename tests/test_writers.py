"""One writer per directory, and a command never deletes its own inputs (round-3 catalogue a03, cc3, io1, io3,
m01; issue 21 items 2 and 3): real concurrent processes, checksums of the user's files before and after."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import error_line, mounted_tmpfs
from memlab import experiments as E
from memlab import rundir
from memlab.io import DataError

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def digests(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def sentences(path: Path, n: int = 8) -> Path:
    rows = [json.loads(line) for line in (ROOT / "data/recognition/seen.jsonl").read_text().splitlines()[:n]]
    path.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    return path


def test_two_train_processes_on_one_directory_exactly_one_runs(tmp_path):
    data = sentences(tmp_path / "seen.jsonl")
    cmd = [PY, str(ROOT / "train.py"), "--model_name_or_path", "tiny-llama", "--train_file", str(data),
           "--output_dir", str(tmp_path / "run"), "--num_exposures", "3", "--batch_size", "2"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = rundir.lock_path(tmp_path / "run")
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.2)  # the first process holds the lock (it writes its pid into the lock file)
    second = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2
    line = error_line(second.stderr)
    assert f"is being written by pid {first.pid}" in line and "one writer per directory" in line
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # one writer: 4 steps per exposure x 3, in order, once each
    # after it ends the directory is free again: the same configuration re-runs (not a take-over)
    again = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "taking over" not in again.stderr, again.stderr[-2000:]


def test_a_lock_left_by_a_dead_process_is_taken_over_and_said(tmp_path, capsys):
    d = tmp_path / "out"
    rundir.lock_path(d).write_text("pid 999999 on elsewhere since 2026-01-01T00:00:00\n")
    try:
        rundir.lock_dir(d)
        assert "taking over the lock left by pid 999999 on elsewhere" in capsys.readouterr().err
    finally:
        rundir.release_locks()


def test_two_run_task_on_one_cell_exactly_one_runs(tmp_path):
    cmd = [PY, str(ROOT / "scripts" / "run_task.py"), "expt1", "--size", "tiny", "--index", "0", "--runs_root",
           str(tmp_path / "runs"), "num_exposures=1"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cell = None
    deadline = time.time() + 120
    while time.time() < deadline and cell is None:
        cells = list((tmp_path / "runs" / "expt1").glob("*/cell.json")) if (tmp_path / "runs" / "expt1").exists() else []
        cell = cells[0].parent if cells else None
        time.sleep(0.2)
    assert cell is not None
    second = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2 and "is being written by pid" in error_line(second.stderr)


def test_duplicate_axis_values_are_refused_everywhere():
    with pytest.raises(DataError, match=r"override seed=0,0: value\(s\) \['0'\] given twice"):
        E.resolve("expt1", "tiny", ["seed=0,0"])
    p = subprocess.run([PY, str(ROOT / "scripts" / "submit.py"), "expt1", "--dry_run", "seed=0,0"], cwd=ROOT,
                       env={**ENV, "MEMLAB_GRID": "tiny"}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "given twice" in error_line(p.stderr) and "sbatch" not in p.stdout


def test_test_py_never_empties_a_directory_holding_its_inputs(tmp_path):
    d = tmp_path / "io1"
    d.mkdir()
    for split in ("seen", "unseen"):
        shutil.copy(ROOT / "data/recognition" / f"{split}.jsonl", d / f"{split}.jsonl")
    before = digests(d)
    p = subprocess.run([PY, str(ROOT / "test.py"), "--model_name_or_path", "tiny-llama", "--seen_file",
                        d / "seen.jsonl", "--unseen_file", d / "unseen.jsonl", "--output_dir", d,
                        "--overwrite_output_dir"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "holds an input of this command" in error_line(p.stderr)
    assert digests(d) == before


def test_make_data_never_deletes_its_input_or_files_it_did_not_write(tmp_path):
    import make_data

    corp = tmp_path / "corp"
    corp.mkdir()
    shutil.copy(ROOT / "data/corpus/sentences.jsonl", corp / "sentences.jsonl")
    before = digests(corp)
    with pytest.raises(DataError, match=r"holds an input of this command"):  # m01
        make_data.main(["recognition", "--corpus", str(corp / "sentences.jsonl"), "--output_dir", str(corp),
                        "--n_pairs", "5", "--foil_type", "novel"])
    assert digests(corp) == before
    own = tmp_path / "io3"  # io3: a rerun into its own directory after the user added files there
    make_data.main(["corpus", "--output_dir", str(own), "--n_sentences", "20"])
    (own / "NOTES.txt").write_text("my notes\n")
    (own / "analysis").mkdir()
    (own / "analysis" / "fig.csv").write_text("a,b\n")
    mine = digests(own)
    with pytest.raises(DataError, match=r"holds NOTES.txt, analysis, which make_data.py did not write"):
        make_data.main(["corpus", "--output_dir", str(own), "--n_sentences", "30"])
    assert digests(own) == mine
    (own / "NOTES.txt").unlink()
    shutil.rmtree(own / "analysis")
    make_data.main(["corpus", "--output_dir", str(own), "--n_sentences", "30"])  # its own directory: replaced
    assert json.loads((own / "manifest.json").read_text())["counts"]["sentences.jsonl"] == 30
    rundir.release_locks()


def test_killing_run_task_ends_its_stage_too(tmp_path):
    """SIGKILL to run_task.py (no chance to forward anything): its running stage gets SIGTERM from the kernel
    and ends, instead of training on as an orphan that still holds its directory."""
    import signal

    cmd = [PY, str(ROOT / "scripts" / "run_task.py"), "expt1", "--size", "tiny", "--index", "0", "--runs_root",
           str(tmp_path / "runs"), "num_exposures=2"]
    parent = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    child = None
    deadline = time.time() + 300
    while time.time() < deadline and child is None:  # the training stage has started writing its run dir
        if list((tmp_path / "runs").glob("expt1/*/train/config.json")):
            out = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
            child = int(out[0]) if out else None
        time.sleep(0.1)
    assert child is not None, "the training stage never started"
    assert "train.py" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 60
    while time.time() < deadline and Path(f"/proc/{child}").exists():
        status = Path(f"/proc/{child}/status").read_text() if Path(f"/proc/{child}/status").exists() else ""
        if "State:\tZ" in status:
            break
        time.sleep(0.2)
    alive = Path(f"/proc/{child}/status").exists() and "State:\tZ" not in Path(f"/proc/{child}/status").read_text()
    assert not alive, "the stage kept running after run_task.py was killed"
    (train_dir,) = (tmp_path / "runs" / "expt1").glob("*/train")
    # it stopped on the signal (resume state saved), not by finishing its training as an orphan would
    assert (train_dir / "resume").is_dir() and not (train_dir / "results.json").exists()


def test_test_py_onto_a_full_disk_is_one_error_and_leaves_nothing(tmp_path):
    """Round-3 df1: --output_dir on a full file system."""
    with mounted_tmpfs(tmp_path / "disk", "40k") as disk:
        (disk / "fill").write_bytes(os.urandom(30000))
        p = subprocess.run([PY, str(ROOT / "test.py"), "--model_name_or_path", "tiny-llama", "--seen_file",
                            ROOT / "data/recognition/seen.jsonl", "--unseen_file", ROOT / "data/recognition/unseen.jsonl",
                            "--bootstrap", "0", "--output_dir", disk / "t1"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and "No space left on device" in error_line(p.stderr)
        assert sorted(x.name for x in disk.iterdir()) == ["fill"]


def test_temporary_directories_of_a_killed_make_data_are_cleaned_on_the_next_run(tmp_path):
    import make_data

    left = [tmp_path / ".corpus.tmp-abc123", tmp_path / ".corpus.old-def456"]
    for d in left:
        d.mkdir()
        (d / "sentences.jsonl").write_text("{}\n")
    other = tmp_path / ".another.tmp-xyz"  # another directory's: not touched
    other.mkdir()
    make_data.main(["corpus", "--output_dir", str(tmp_path / "corpus"), "--n_sentences", "10"])
    assert not any(d.exists() for d in left) and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".another.tmp-xyz", "corpus"]
