"""One reading rule for every script (docs/BAD_INPUTS.md cases 4, 6, 9, 23-25, 28, 29, 35, 36, 53, 76, 77, 92, 105):
UTF-8 (BOM allowed) or an error naming file:line and the byte; strict CSV quoting; a text field is a JSON
string; chat rows pass the same validation in train.py as in make_data.py convert; a comma inside a file
name survives `split_paths`; generate.py and test.py stop, exit 2, on inputs that can give no result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memlab.datagen.convert import convert_chat, convert_probes, convert_text
from memlab.generation import prefix_tasks
from memlab.io import DataError, read_records, read_texts, split_paths, write_jsonl_atomic
from memlab.training import load_items

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")

SENTS = ["the cat sat on the mat", "a dog ran to the river every evening", "seven blue apples",
         "the keeper wrote a letter to his sister in the valley", "green bread", "the code number is 48213"]


def write(path: Path, data) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def run_cli(script, *argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def one_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


# ------------------------------------------------------------------------------- 1. UTF-8 (cases 6, 28)
def test_non_utf8_names_file_line_and_byte(tmp_path):
    f = write(tmp_path / "data.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9 noir"}\n')
    msg = f"{f}:3: not UTF-8 (byte 0xe9 at column 14); save the file as UTF-8"
    for reader in (read_records, read_texts, convert_text, load_items):  # make_data convert, MIA, test.py, train.py
        with pytest.raises(DataError) as e:
            reader(f)
        assert str(e.value) == msg
    csv_file = write(tmp_path / "d.csv", b"id,text\n1,ok\n2,\xe9t\xe9\n")
    with pytest.raises(DataError, match=r"d\.csv:3: not UTF-8 \(byte 0xe9 at column 3\)"):
        read_records(csv_file)
    txt = write(tmp_path / "d.txt", b"\xef\xbb\xbfok\r\nline\xff\r\n")  # BOM and CRLF do not shift line or column
    with pytest.raises(DataError, match=r"d\.txt:2: not UTF-8 \(byte 0xff at column 5\)"):
        read_records(txt)


# ---------------------------------------------------------------------------- 2. BOM (cases 4, 23, 24)
def test_bom_is_dropped_everywhere(tmp_path):
    bom = b"\xef\xbb\xbf"
    rows = [{"id": "a", "text": SENTS[0]}, {"id": "b", "text": SENTS[1]}]
    j = write(tmp_path / "bom.jsonl", bom + jsonl(rows).encode())
    assert [r["id"] for r in read_texts(j)] == ["a", "b"]
    assert load_items(j)[1] == "plain"
    text_first = write(tmp_path / "bom.csv", bom + b"sentence,id\r\nhello there,1\r\ngood bye,2\r\n")
    assert [(r["id"], r["text"]) for r in convert_text(text_first, "sentence")] == [
        ("1", "hello there"), ("2", "good bye")]
    id_first = write(tmp_path / "bom2.csv", bom + b"id,text\r\n7,hello there\r\n8,good bye\r\n")
    assert [r["id"] for r in convert_text(id_first)] == ["7", "8"]  # the id column keeps its name


# ---------------------------------------------------------------------------- 3. CSV quoting (25, 77)
def test_csv_quoting_is_strict(tmp_path):
    runs_to_eof = write(tmp_path / "q1.csv", 'id,text\n1,first\n2,"second\n3,third\n')
    with pytest.raises(DataError, match=r'q1\.csv:3: unterminated quoted field: the quote \(\"\) opened on this line'):
        read_texts(runs_to_eof)
    closes_later = write(tmp_path / "q2.csv", 'id,text\n1,first\n2,"second\n3,"third"\n4,x\n')
    with pytest.raises(DataError, match=r"q2\.csv:3: malformed CSV quoting: the quoted field opened on this "
                                        r"line runs to line 4"):
        read_texts(closes_later)
    one_line = write(tmp_path / "q3.csv", 'id,text\n1,"ab"c\n')
    with pytest.raises(DataError, match=r"q3\.csv:2: malformed CSV quoting"):
        read_texts(one_line)
    extra = write(tmp_path / "extra.csv", "id,text\n1,a b\n2,c,d\n")
    with pytest.raises(DataError, match=r"extra\.csv:3: row has 3 fields, the header has 2 \(id, text\)"):
        read_texts(extra)
    # legitimate quoting: commas, doubled quotes, a quoted newline, blank lines; lines are where records start
    ok = write(tmp_path / "ok.csv", 'id,text\r\n1,"a, b"\r\n\r\n2,"multi\nline ""q"""\r\n3,x\r\n4,fi"rst\r\n')
    rows = read_records(ok)
    assert [(r["id"], r["text"], r["_line"]) for r in rows] == [
        ("1", "a, b", 2), ("2", 'multi\nline "q"', 4), ("3", "x", 6), ("4", 'fi"rst', 7)]
    short = read_records(write(tmp_path / "short.csv", "id,text,fact_id\n1,a\n"))  # fewer fields: None, as before
    assert short[0]["fact_id"] is None


def test_lines_split_at_newlines_only(tmp_path):
    """A text holding U+2028 or NEL (JSON allows them raw; our own writer emits them) stays one line."""
    f = tmp_path / "u.jsonl"
    write_jsonl_atomic(f, [{"text": "a\u2028b\x85c"}, {"text": "z"}])
    assert [(r["text"], r["_line"]) for r in read_texts(f)] == [("a\u2028b\x85c", 1), ("z", 2)]


# ----------------------------------------------------------------------- 4. text fields (cases 9, 29, 105)
def test_text_field_must_be_a_string(tmp_path):
    f = write(tmp_path / "num.jsonl", jsonl([{"text": SENTS[0]}, {"text": SENTS[1]}, {"text": 12345}]))
    msg = f"{f}:3: field 'text' must be a string, got int (12345); quote it in the file"
    for reader in (read_texts, convert_text, load_items):  # test.py / MIA / generate.py, make_data, train.py
        with pytest.raises(DataError) as e:
            reader(f)
        assert str(e.value) == msg
    col = write(tmp_path / "col.jsonl", jsonl([{"sent": SENTS[0]}, {"sent": [1, 2]}]))
    with pytest.raises(DataError, match=r"col\.jsonl:2: field 'sent' must be a string, got list \(\[1, 2\]\)"):
        load_items(col)
    null = write(tmp_path / "null.jsonl", jsonl([{"text": SENTS[0]}, {"text": None}]))
    for reader in (read_texts, load_items):
        with pytest.raises(DataError, match=r"null\.jsonl:2: missing field 'text'$"):
            reader(null)
    pc = write(tmp_path / "pc.jsonl", jsonl([{"prompt": "Q: ", "completion": "A"}, {"prompt": 7, "completion": "B"}]))
    with pytest.raises(DataError, match=r"pc\.jsonl:2: field 'prompt' must be a string, got int \(7\)"):
        load_items(pc)
    pc2 = write(tmp_path / "pc2.jsonl", jsonl([{"prompt": "", "completion": "A"}, {"prompt": "x", "completion": True}]))
    with pytest.raises(DataError, match=r"pc2\.jsonl:2: field 'completion' must be a string, got bool \(true\)"):
        load_items(pc2)
    pc3 = write(tmp_path / "pc3.jsonl", jsonl([{"prompt": "", "completion": "A"}, {"prompt": "x", "completion": " "}]))
    with pytest.raises(DataError, match=r"pc3\.jsonl:2: missing field 'completion'$"):
        load_items(pc3)
    empty_prompt = write(tmp_path / "pc4.jsonl", jsonl([{"prompt": "", "completion": "A"}]))
    assert load_items(empty_prompt)[1] == "prompt_completion"
    probes = write(tmp_path / "p.jsonl", jsonl([{"question": 42, "answer": 7, "tier": "easy"}]))
    with pytest.raises(DataError, match=r"p\.jsonl:1: field 'question' must be a string, got int \(42\)"):
        convert_probes(probes)
    # CSV values are strings: a number there is text
    assert read_texts(write(tmp_path / "n.csv", "id,text\n1,12345\n"))[0]["text"] == "12345"


# ------------------------------------------------------------------------- 5. chat rows (cases 35, 36)
@pytest.mark.parametrize("content", ["", "   "])
def test_chat_rows_share_one_validation(tmp_path, content):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]}]
    f = write(tmp_path / "chat.jsonl", jsonl(rows))
    msg = f"{f}:2: messages[1].content must be a non-empty string"
    for reader in (convert_chat, load_items):  # make_data.py convert --to chat, train.py
        with pytest.raises(DataError) as e:
            reader(f)
        assert str(e.value) == msg
    bad_role = write(tmp_path / "role.jsonl", jsonl([{"messages": [{"role": "bot", "content": "x"}]}]))
    noasst = write(tmp_path / "noasst.jsonl", jsonl([{"messages": [{"role": "user", "content": "x"}]}]))
    for f, fragment in ((bad_role, "messages[0].role is 'bot'"), (noasst, "no assistant message")):
        msgs = set()
        for reader in (convert_chat, load_items):
            with pytest.raises(DataError) as e:
                reader(f)
            msgs.add(str(e.value))
        assert len(msgs) == 1 and fragment in msgs.pop()


# ---------------------------------------------------------------------------- split_paths (case 53)
def test_split_paths_keeps_commas_in_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("seen,v2.jsonl", "a.jsonl", "b,c,d.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert split_paths("seen,v2.jsonl", "train_file") == ["seen,v2.jsonl"]
    assert split_paths(str(tmp_path / "seen,v2.jsonl"), "train_file") == [str(tmp_path / "seen,v2.jsonl")]
    assert split_paths("a.jsonl,seen,v2.jsonl", "train_file") == ["a.jsonl", "seen,v2.jsonl"]
    assert split_paths("seen,v2.jsonl,a.jsonl", "train_file") == ["seen,v2.jsonl", "a.jsonl"]
    assert split_paths("a.jsonl, b,c,d.jsonl,", "train_file") == ["a.jsonl", "b,c,d.jsonl"]
    assert split_paths("nope,a.jsonl", "train_file") == ["nope", "a.jsonl"]  # 'file not found' will name 'nope'
    assert split_paths("x.jsonl,y.jsonl", "train_file") == ["x.jsonl", "y.jsonl"]
    assert split_paths(["a.jsonl", " seen,v2.jsonl "], "train_file") == ["a.jsonl", "seen,v2.jsonl"]  # from YAML
    assert split_paths("", "train_file") == [] and split_paths(None, "train_file") == []
    with pytest.raises(DataError, match="--train_file: expected a path"):
        split_paths(3, "train_file")


# ---------------------------------------------------------------------- 6. generate.py prefix (case 92)
def test_prefix_longer_than_every_text(tmp_path, tiny_llama):
    from memlab.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    items = [{"id": f"s{i}", "text": t} for i, t in enumerate(SENTS)]
    n = {it["id"]: len(tok(it["text"]).input_ids) for it in items}
    shortest, longest = min(n, key=n.get), max(n, key=n.get)
    with pytest.raises(DataError) as e:
        prefix_tasks(items, tok, [2, 500], source="in.jsonl")
    assert str(e.value).startswith(f"in.jsonl: --prefix_tokens 500 leaves no tokens to generate for any of the 6 "
                                   f"text(s): the shortest is '{shortest}' ({n[shortest]} tokens), the longest "
                                   f"'{longest}' ({n[longest]} tokens)")
    tasks, skipped = prefix_tasks(items, tok, [1, n[shortest]], source="in.jsonl")  # some skipped: no error
    assert skipped == {"1": 0, str(n[shortest]): sum(v <= n[shortest] for v in n.values())}

    f = write(tmp_path / "in.jsonl", jsonl(items))
    out = tmp_path / "gen_out"
    proc = run_cli("generate.py", "--mode", "prefix", "--input_file", f, "--prefix_tokens", 500,
                   "--model_name_or_path", tiny_llama, "--output_dir", out)
    assert f"error: {f}: --prefix_tokens 500 leaves no tokens to generate" in one_error(proc)
    assert not out.exists()


def test_prefix_partly_skipped_reports_n_skipped(tmp_path, tiny_llama):
    from helpers import script
    from memlab.cli import parse_args

    from memlab.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    items = [{"id": f"s{i}", "text": t} for i, t in enumerate(SENTS[:3])]
    p = min(len(tok(it["text"]).input_ids) for it in items)  # the shortest text has no suffix at this prefix
    f = write(tmp_path / "in.jsonl", jsonl(items))
    mod = script("generate")
    res = mod.main(parse_args(mod.GenerateArgs, [str(a) for a in [
        "--mode", "prefix", "--input_file", f, "--prefix_tokens", p, "--max_new_tokens", 2, "--bootstrap", 0,
        "--model_name_or_path", tiny_llama, "--output_dir", tmp_path / "o"]]))
    (g,) = res["by_prefix"]
    assert g["n_skipped"] >= 1 and g["prefix"] == str(p)


# ------------------------------------------------------------------------- 7. test.py seen == unseen (76)
def test_recognition_refuses_overlapping_seen_and_unseen(tmp_path, tiny_llama):
    seen = write(tmp_path / "seen.jsonl", jsonl([{"id": f"s{i}", "text": t} for i, t in enumerate(SENTS[:3])]))
    unseen = write(tmp_path / "unseen.jsonl", jsonl(
        [{"id": "u0", "text": SENTS[3]}, {"id": "u1", "text": SENTS[1]}, {"id": "u2", "text": SENTS[2].upper() + "!"}]))
    out = tmp_path / "rec_out"
    proc = run_cli("test.py", "--seen_file", seen, "--unseen_file", unseen, "--model_name_or_path", tiny_llama,
                   "--output_dir", out)
    err = one_error(proc)
    assert "--seen_file and --unseen_file share texts" in err and "2 overlapping pair(s)" in err
    assert "exact" in proc.stderr and "normalized" in proc.stderr and "u1" in proc.stderr and "u2" in proc.stderr
    assert not out.exists(), sorted(p.name for p in out.iterdir())
