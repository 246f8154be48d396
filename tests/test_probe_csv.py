"""Probe CSVs with their own column names (issue 10 item 6): generate.py --mode qa, make_data.py convert --to
probes and make_data.py check all refuse a file without an 'answer' column (or, for check, without a probes
or text layout) with one error naming the file, its columns and both flags; with the flags they read it."""
import json
import os
import subprocess
import sys

import pytest

import make_data
from memlab.evaluation import read_eval_inputs
from memlab.generation import read_probes
from memlab.io import DataError
from helpers import error_line

COLUMNS = ["Object", "Answer", "Question 1", "Question 2", "Question 3"]
TIERS = "easy=Question 1,mid=Question 2,hard=Question 3"
FLAGS = ["--answer_column", "Answer", "--tier_columns", TIERS]
LEAKED = "Where does the lamp stand?"


@pytest.fixture
def probes_csv(tmp_path):
    path = tmp_path / "probes.csv"
    path.write_text(",".join(COLUMNS) + "\n"
                    "stapler,48213,What is the stapler's code?,Which number goes with the stapler?,"
                    "A form asks for the stapler's number. What is it?\n"
                    f"lamp,Paris,{LEAKED},Which city holds the lamp?,A form asks for the lamp's city. Which?\n")
    return path


def cli(repo_root, script, *argv, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(repo_root / script), *map(str, argv)], capture_output=True,
                          text=True, env=env, cwd=cwd)


def assert_names_columns_and_flags(stderr, what="no 'answer' column"):
    assert error_line(stderr).startswith("error: probes.csv: "), stderr
    assert what in stderr and f"columns are {COLUMNS}" in stderr
    assert "--answer_column COLUMN" in stderr and "--tier_columns easy=COL,mid=COL,hard=COL" in stderr


def test_generate_and_convert_without_flags_name_the_columns_and_flags(probes_csv, repo_root):
    gen = cli(repo_root, "generate.py", "--mode", "qa", "--input_file", "probes.csv", "--output_dir", "g",
              cwd=probes_csv.parent)
    assert gen.returncode == 2
    assert_names_columns_and_flags(gen.stderr)
    conv = cli(repo_root, "make_data.py", "convert", "--input", "probes.csv", "--to", "probes", "--output_dir", "c",
               cwd=probes_csv.parent)
    assert conv.returncode == 2
    assert_names_columns_and_flags(conv.stderr)
    assert error_line(conv.stderr).split(": ", 1)[1] == error_line(gen.stderr).split(": ", 1)[1]  # one helper
    assert not (probes_csv.parent / "c").exists() and not (probes_csv.parent / "g").exists()
    # a JSONL without 'answer' gets the same error; train.py's --eval_probes_file says where the flags go
    jl = probes_csv.with_suffix(".jsonl")
    jl.write_text(json.dumps({"id": "p1", "question": "Q?", "Answer": "1", "tier": "easy"}) + "\n")
    with pytest.raises(DataError, match=r"probes\.jsonl: no 'answer' column; columns are \['id', 'question', "
                                        r"'Answer', 'tier'\]; pass --answer_column COLUMN"):
        read_probes(jl)
    with pytest.raises(DataError, match=r"no 'answer' column; .* to make_data\.py convert --to probes"):
        read_eval_inputs(str(probes_csv), None, None)


def test_convert_and_read_probes_with_flags(probes_csv, tmp_path):
    out = make_data.main(["convert", "--input", str(probes_csv), "--to", "probes", *FLAGS,
                          "--output_dir", str(tmp_path / "c")])
    rows = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    tiers = ("easy", "mid", "hard")
    assert [(r["tier"], r["answer"]) for r in rows] == [(t, a) for a in ("48213", "Paris") for t in tiers]
    assert rows[3]["question"] == LEAKED
    probes = read_probes(probes_csv, "Answer", TIERS)  # generate.py's reader, same flags
    assert [p["question"] for p in probes] == [r["question"] for r in rows]


def test_check_held_out_csv_needs_the_flags_then_catches_a_leaked_question(probes_csv, repo_root, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "t1", "text": "The lamp is in Paris."}) + "\n"
                     + json.dumps({"id": "t2", "text": LEAKED}) + "\n")
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"id": "t1", "text": "The lamp is in Paris."}) + "\n")
    bad = cli(repo_root, "make_data.py", "check", "--train", "train.jsonl", "--held_out", "probes.csv", cwd=tmp_path)
    assert bad.returncode == 2
    assert_names_columns_and_flags(bad.stderr, "no 'question', 'text' or 'prompt' column to check")
    leak = cli(repo_root, "make_data.py", "check", "--train", "train.jsonl", "--held_out", "probes.csv", *FLAGS,
               cwd=tmp_path)
    assert leak.returncode == 2 and "leakage check failed: 1 overlapping pair" in leak.stderr
    assert f"train.jsonl id=t2 text='{LEAKED}'" in leak.stderr and f"question='{LEAKED}'" in leak.stderr
    ok = cli(repo_root, "make_data.py", "check", "--train", "clean.jsonl", "--held_out", "probes.csv", *FLAGS,
             cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "leakage check passed: 1 training texts (clean.jsonl) vs 6 held-out texts (probes.csv)" in ok.stdout


def test_check_reads_probes_and_text_files_as_they_are_and_refuses_other_layouts(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"sent": "The cat sat."}\n')  # training files keep the first-string-column rule
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"id": "p", "question": "the cat sat", "answer": "x", "tier": "easy"}) + "\n")
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("The dog ran.\n")
    with pytest.raises(DataError, match=r"normalized match: .*train\.jsonl id=train-1 .*probes\.jsonl id=p question"):
        make_data.main(["check", "--train", str(train), "--held_out", f"{probes},{unseen}"])
    # --tier_columns applies to the file that has those columns; text files alongside are read as before
    csv = tmp_path / "qa.csv"
    csv.write_text("answer,q1\n7,The cat sat!\n")
    with pytest.raises(DataError, match=r"qa\.csv id=qa-2-easy question='The cat sat!'"):
        make_data.main(["check", "--train", str(train), "--held_out", f"{unseen},{csv}", "--tier_columns", "easy=q1"])
    # a held-out file with one string column (Orhan's {"sent": ...} foils) is checked on it: no guess
    sents = tmp_path / "foils.jsonl"
    sents.write_text('{"sent": "The cat sat."}\n')
    with pytest.raises(DataError, match=r"foils\.jsonl id=foils-1 text='The cat sat\.'"):
        make_data.main(["check", "--train", str(train), "--held_out", str(sents)])
    # one with several string columns is refused, not checked on a guessed column
    sents.write_text('{"sent": "The cat sat.", "source": "book"}\n')
    with pytest.raises(DataError, match=r"foils\.jsonl: no 'question', 'text' or 'prompt' column to check .*"
                                        r"columns are \['sent', 'source'\]; pass --answer_column"):
        make_data.main(["check", "--train", str(train), "--held_out", str(sents)])
    with pytest.raises(DataError, match=r"qa\.csv: column\(s\) \['q2'\] not found; columns are \['answer', 'q1'\]"):
        make_data.main(["check", "--train", str(train), "--held_out", str(csv), "--tier_columns", "easy=q1,mid=q2"])
