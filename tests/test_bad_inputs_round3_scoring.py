"""Round 3 of the bad-input catalogue, the scoring scripts' cases (membership_inference.py, generate.py, test.py,
and the train.py / finetune_dpo.py inputs they share): the WEAK cases re-judged and fixed (mi13c, mi12/di2, mi16,
mi0, ws4, q01, g4, un1, tk2, di1, tk4) and the BAD cases 154-157 of docs/BAD_INPUTS.md that were checked by hand.

Each test runs the scripts' real entry points in this process (`call` of tests/test_bad_inputs.py) and asserts
our `error:` line and exit 2 (nothing written, the user's files byte-for-byte unchanged), or the right behaviour.
Tiny models, a few rows each."""
from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from helpers import error_line, error_message
from memlab import quiet
from memlab.io import DataError, ensure_ids, invisible_only, whole_number
from test_bad_inputs import call, gen_argv, jsonl, mia_argv, train_argv, tree

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")

EMOJI_RTL = ["🐱🐱🐱 cats are cute and they sleep a lot.", "القطط لطيفة جدا وتنام كثيرا في النهار.",
             "חתולים הם חמודים מאוד וישנים הרבה.", "The quiet cat sat on mat number 5."]


def head(path: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]


def write(path: Path, rows) -> Path:
    path.write_text(jsonl(rows), encoding="utf-8")
    return path


def no_output(out: Path, err: str) -> None:
    assert not out.exists(), f"{out} was written: {sorted(p.name for p in out.iterdir())}\n{err[-2000:]}"


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Small inputs (the first rows of data/mia, data/recognition, data/facts) and a LoRA adapter of tiny-llama."""
    root = tmp_path_factory.mktemp("round3_scoring")
    s = {"root": root}
    s["mem"] = write(root / "mem4.jsonl", head(ROOT / "data/mia/members.jsonl", 4))
    s["non"] = write(root / "non6.jsonl", head(ROOT / "data/mia/nonmembers.jsonl", 6))
    s["seen"] = write(root / "seen4.jsonl", head(ROOT / "data/recognition/seen.jsonl", 4))
    s["unseen"] = write(root / "unseen4.jsonl", head(ROOT / "data/recognition/unseen.jsonl", 4))
    s["probes"] = write(root / "probes3.jsonl", head(ROOT / "data/facts/probes.jsonl", 3))
    s["pairs"] = write(root / "dpo2.jsonl", head(ROOT / "data/facts/dpo_pairs.jsonl", 2))
    lora = root / "lora"
    code, err = call("train", train_argv(s["seen"], lora, "--lora_r", 4, "--save_exposures", 1), _Quiet())
    assert code == 0, err
    s["adapter"] = lora / "checkpoints" / "exposure_1"
    import make_data

    s["freqs"] = root / "freqs"  # dc_pdd's table, so the default attacks do not build one from data/corpus
    make_data.main(["freqs", "--corpus", str(s["seen"]), "--model_name_or_path", "tiny-llama",
                    "--output_dir", str(s["freqs"])])
    return s


class _Quiet:
    def readouterr(self):
        return type("Captured", (), {"out": "", "err": ""})()


# ------------------------------------------------------------------ member rows: counts and visible text
def test_member_counts_must_be_whole_numbers_and_texts_visible(d, tmp_path, capsys):
    """mi13c (canary_copies 2.7 was counted as 2), 155 (Infinity: a traceback), ws4 (a lone U+200B was scored as a
    1-token member); the text rule is memlab.io's, so train.py refuses the same row."""
    mem = head(d["mem"], 4)
    cases = [
        ("mem_frac.jsonl", {0: {"canary_copies": 2.7}}, r"mem_frac.jsonl:1: canary_copies must be an integer, got 2.7"),
        ("mem_zw.jsonl", {1: {"text": "\u200b"}},
         "mem_zw.jsonl:2: field 'text' has no visible character (only U+200B ZERO WIDTH SPACE)"),
    ]
    for name, change, expected in cases:
        rows = [dict(r, **change.get(i, {})) for i, r in enumerate(mem)]
        f = write(tmp_path / name, rows)
        before = tree(f)
        code, err = call("membership_inference", mia_argv(f, d["non"], tmp_path / "out", "--attacks", "loss"), capsys)
        assert code == 2 and expected in error_line(err), err[-2000:]
        no_output(tmp_path / "out", err)
        assert tree(f) == before
    inf = tmp_path / "mem_inf.jsonl"  # 155: not valid JSON, so written by hand
    line1 = json.dumps(mem[0]).replace('"canary_copies": 1', '"canary_copies": Infinity')
    assert "Infinity" in line1
    inf.write_text(jsonl([line1] + mem[1:]), encoding="utf-8")
    code, err = call("membership_inference", mia_argv(inf, d["non"], tmp_path / "out", "--attacks", "loss"), capsys)
    assert code == 2 and "mem_inf.jsonl:1: Infinity is not a JSON number" in error_line(err), err[-2000:]
    no_output(tmp_path / "out", err)
    # rows repeated on purpose declare their count the same way (a `copies` of 2.7 for 2 rows is not 2)
    twice = write(tmp_path / "mem_copies.jsonl", [dict(mem[0], copies=2.7), dict(mem[0], copies=2.7)] + mem[1:])
    code, err = call("membership_inference", mia_argv(twice, d["non"], tmp_path / "out"), capsys)
    assert code == 2 and "has 2 row(s) but copies = 2.7" in error_line(err)
    # train.py reads text by the same rule
    zw = write(tmp_path / "train_zw.jsonl", [{"text": "A visible sentence."}, {"text": "\u200b\u200d "}])
    code, err = call("train", train_argv(zw, tmp_path / "tr"), capsys)
    assert code == 2 and "train_zw.jsonl:2: field 'text' has no visible character (only U+200B ZERO WIDTH SPACE, " \
                         "U+200D ZERO WIDTH JOINER)" in error_line(err)
    no_output(tmp_path / "tr", err)
    # the rules themselves: whole numbers as JSON or CSV spell them; visible = anything but spaces, Cc and Cf
    assert [whole_number(v, "c", "f", 1) for v in (2, 2.0, "3", " 4.0 ")] == [2, 2, 3, 4]
    for bad in (2.7, "2.5", True, float("nan"), float("inf"), "many", None):
        with pytest.raises(DataError, match="f:1: c must be an integer"):
            whole_number(bad, "c", "f", 1)
    assert invisible_only("\u200b") and invisible_only("\ufeff\u00ad\u2060") and invisible_only(" \t")
    assert not invisible_only("\u200bHi") and not invisible_only("👍") and not invisible_only("ا")


def test_freqs_table_with_nan_counts_is_one_error(d, tmp_path, capsys):
    """154: a freqs.json with NaN among its counts (was a traceback: cannot convert float NaN to integer)."""
    table = tmp_path / "fr"
    shutil.copytree(d["freqs"], table)
    f = table / "freqs.json"
    f.write_text(f.read_text().replace("[0,", "[NaN,", 1).replace("[\n    0,", "[\n    NaN,", 1))
    assert "NaN" in f.read_text()
    before = tree(table)
    code, err = call("membership_inference", mia_argv(d["mem"], d["non"], tmp_path / "out", "--attacks", "dc_pdd",
                                                      "--freqs", table), capsys)
    msg = error_line(err)
    assert code == 2 and "--freqs" in msg and "freqs.json" in msg and "NaN is not a JSON number" in msg, msg
    no_output(tmp_path / "out", err)
    assert tree(table) == before


# ------------------------------------------------------------------ evaluated sets: ids, population, attacks
def test_ids_may_repeat_across_members_and_nonmembers_and_across_seen_and_unseen(d, tmp_path, capsys):
    """mi12 / di2, kept: ids need be unique within a file only (two files numbered 0..n each, a seen and an
    unseen row sharing their pair's id are normal); every row is scored under its split and items.csv keeps
    both, told apart by `split`."""
    non = head(d["non"], 6)
    non[0]["id"] = head(d["mem"], 1)[0]["id"]
    nf = write(tmp_path / "non_dupid.jsonl", non)
    code, err = call("membership_inference", mia_argv(d["mem"], nf, tmp_path / "mia", "--attacks", "loss"), capsys)
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "mia" / "items.csv")))
    shared = [r for r in rows if r["id"] == non[0]["id"]]
    assert sorted(r["split"] for r in shared) == ["member", "nonmember"]
    assert shared[0]["target_nll"] != shared[1]["target_nll"]  # two texts, two scores
    results = json.loads((tmp_path / "mia" / "results.json").read_text())
    assert (results["n_members"], results["n_nonmembers"]) == (4, 6)

    seen = head(d["seen"], 4)
    unseen = [{"id": r["id"], "pair_id": r["pair_id"], "text": f"A different sentence number {i} about dogs."}
              for i, r in enumerate(seen)]
    uf = write(tmp_path / "unseen_sameids.jsonl", unseen)
    code, err = call("test", ["--model_name_or_path", "tiny-llama", "--seen_file", d["seen"], "--unseen_file", uf,
                              "--bootstrap", 0, "--output_dir", tmp_path / "rec"], capsys)
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "rec" / "items.csv")))
    assert sorted((r["split"], r["id"]) for r in rows) == sorted(
        [("seen", r["id"]) for r in seen] + [("unseen", r["id"]) for r in seen])
    assert json.loads((tmp_path / "rec" / "results.json").read_text())["n_pairs"] == 4


def test_rmia_population_holding_a_member_is_refused(d, tmp_path, capsys):
    """mi16: --rmia_population with evaluated members' texts (AUC 0.33, no word) is refused before anything is
    written, as recall refuses a prefix file holding evaluated texts; evaluated non-members in it are left out of
    their own comparison."""
    before = tree(d["mem"])
    argv = mia_argv(d["mem"], d["non"], tmp_path / "out", "--attacks", "rmia", "--reference_models", "tiny-gpt2",
                    "--rmia_population", d["mem"])
    code, err = call("membership_inference", argv, capsys)
    member = head(d["mem"], 1)[0]
    assert code == 2 and (f"--rmia_population {d['mem']}:1: holds the text of the evaluated member '{member['id']}'"
                          in error_line(err)), err[-2000:]
    no_output(tmp_path / "out", err)
    assert tree(d["mem"]) == before
    recall = mia_argv(d["mem"], d["non"], tmp_path / "out", "--attacks", "recall", "--recall_prefix_file", d["mem"])
    code, err = call("membership_inference", recall, capsys)
    assert code == 2 and f"--recall_prefix_file {d['mem']}:1: holds the text of the evaluated member" in error_line(err)
    no_output(tmp_path / "out", err)

    argv = mia_argv(d["mem"], d["non"], tmp_path / "ok", "--attacks", "rmia", "--reference_models", "tiny-gpt2",
                    "--rmia_population", d["non"])
    code, err = call("membership_inference", argv, capsys)
    assert code == 0, err[-2000:]
    rmia = json.loads((tmp_path / "ok" / "results.json").read_text())["rmia"]
    assert rmia["n_population"] == 6 and "6 evaluated non-member(s) in it, each left out" in rmia["population"]


def test_default_attacks_list_only_the_attacks_run(d, tmp_path, capsys):
    """mi0: without a reference model, results.json (and config.json) listed ref_ratio/ref_diff, which no
    checkpoint computed; now they are left out, with one note saying why."""
    out = tmp_path / "mia"
    code, err = call("membership_inference", default_attacks_argv(d, out), capsys)
    assert code == 0, err[-2000:]
    results = json.loads((out / "results.json").read_text())
    computed = set(results["checkpoints"][0]["attacks"])
    assert "loss" in computed and not {"ref_ratio", "ref_diff"} & computed
    assert results["attacks"] == json.loads((out / "config.json").read_text())["attacks"]
    assert set(results["attacks"]) == computed
    assert [n for n in notes(err) if "ref_ratio, ref_diff skipped: no reference model" in n], err[-2000:]
    # --reference_model none asks for it: no note
    code, err = call("membership_inference", mia_argv(d["mem"], d["non"], tmp_path / "none", "--attacks", "loss"),
                     capsys)
    assert code == 0 and not [n for n in notes(err) if "ref_ratio" in n]


def default_attacks_argv(d, out, *extra):
    """Every attack the inputs allow (no --attacks, no --reference_model), on tiny-llama: 6 non-members are too
    few for recall's held-apart prefix; one neighbour each; dc_pdd with the fixture's table."""
    return ["--model_name_or_path", "tiny-llama", "--members", d["mem"], "--nonmembers", d["non"], "--bootstrap", 0,
            "--neighbours", 1, "--freqs", d["freqs"], "--output_dir", out, *extra]


def kbit_or_skip(quantization: str):
    from memlab import models

    try:
        models.check_quantization(quantization)
    except DataError as e:
        pytest.skip(f"bitsandbytes cannot load {quantization} models here: {e}")


def test_mia_in_4bit_skips_gradnorm_with_a_note_or_refuses_it_when_asked(d, tmp_path, capsys):
    """156: --load_in_4bit on a full model (gradnorm cannot differentiate integer weights; was a traceback and a
    config.json left): by default gradnorm is skipped with one note; --attacks ...,gradnorm is one error before
    anything is written."""
    kbit_or_skip("4bit")
    argv = mia_argv(d["mem"], d["non"], tmp_path / "asked", "--load_in_4bit", "--attacks", "loss,gradnorm")
    code, err = call("membership_inference", argv, capsys)
    assert code == 2 and "gradnorm needs float weights" in error_line(err) and "--load_in_4bit" in error_line(err)
    no_output(tmp_path / "asked", err)
    out = tmp_path / "default"
    code, err = call("membership_inference", default_attacks_argv(d, out, "--load_in_4bit"), capsys)
    assert code == 0, err[-2000:]
    assert len([n for n in notes(err) if "gradnorm skipped" in n]) == 1, err[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert "gradnorm" not in results["attacks"] and "loss" in results["checkpoints"][0]["attacks"]
    assert results["runtime"]["quantization"] == "4bit"


# ------------------------------------------------------------------ k-bit loading on a CPU
def test_kbit_help_says_what_runs_on_a_cpu_and_the_8bit_cast_warning_shows_once(d, tmp_path, capsys, caplog):
    """q01: -h of --load_in_4bit/--load_in_8bit said "CUDA only" while QLoRA trains on a CPU (bitsandbytes' CPU
    backend); an 8-bit run logged "MatMul8bitLt: inputs will be cast ..." on every matmul (385 lines a DPO run)."""
    import dataclasses

    from helpers import script

    for name, cls in (("train", "TrainArgs"), ("test", "RecognitionArgs"), ("finetune_dpo", "DPOArgs"),
                      ("membership_inference", "MiaArgs"), ("generate", "GenerateArgs")):
        fields = {f.name: f.metadata["help"] for f in dataclasses.fields(getattr(script(name), cls))}
        for flag in ("load_in_4bit", "load_in_8bit"):
            assert "CUDA only" not in fields[flag] and "CPU backend also runs it" in fields[flag], (name, flag)
    kbit_or_skip("8bit")
    known = next(f for f in logging.getLogger("bitsandbytes.autograd._functions").filters
                 if isinstance(f, quiet._Known))
    known.seen.clear()  # "once" per process: start this run from none shown
    caplog.set_level(logging.WARNING)
    code, err = call("test", ["--model_name_or_path", "tiny-llama", "--seen_file", d["seen"], "--unseen_file",
                              d["unseen"], "--bootstrap", 0, "--output_dir", tmp_path / "rec", "--load_in_8bit"],
                     capsys)
    assert code == 0, err[-2000:]
    casts = [r for r in caplog.records if r.getMessage().startswith("MatMul8bitLt: inputs will be cast")]
    assert len(casts) == 1, len(casts)


# ------------------------------------------------------------------ generate.py
def test_generate_temperatures_must_be_finite(d, tmp_path, capsys):
    """g4: --temperatures 0,inf sampled uniformly and wrote "temperature": Infinity into results.json."""
    for argv in (gen_argv("qa", d["probes"], tmp_path / "out", "--temperatures", "0,inf"),
                 gen_argv("prefix", d["seen"], tmp_path / "out", "--temperature", "inf", "--prefix_tokens", 2)):
        code, err = call("generate", argv, capsys)
        msg = error_message(err)
        assert code == 2 and "temperatures must be >= 0 and finite (0 = greedy), got --temperature" in msg, msg
        assert msg.endswith(" inf") or msg.endswith(",inf"), msg
        no_output(tmp_path / "out", err)
    code, err = call("train", train_argv(d["seen"], tmp_path / "out", "--eval_probes_file", d["probes"],
                                         "--eval_temperatures", "0,inf"), capsys)
    assert code == 2 and "--eval_temperatures must be >= 0 and finite (0 = greedy), got 0,inf" in error_message(err)
    no_output(tmp_path / "out", err)


def test_generate_qa_probe_with_nan_answer_is_one_error(d, tmp_path, capsys):
    """157: "answer": NaN was scored against the string "nan"."""
    probes = head(d["probes"], 3)
    lines = [json.dumps(p) for p in probes]
    lines[2] = lines[2].replace(json.dumps(probes[2]["answer"]), "NaN")
    f = tmp_path / "probes_nan.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = tree(f)
    code, err = call("generate", gen_argv("qa", f, tmp_path / "out"), capsys)
    assert code == 2 and "probes_nan.jsonl:3: NaN is not a JSON number" in error_line(err), err[-2000:]
    no_output(tmp_path / "out", err)
    assert tree(f) == before


def test_prefix_and_continuation_are_cut_between_characters(d, tmp_path, capsys):
    """un1: --prefix_tokens 1,3 on emoji / Arabic / Hebrew texts cut inside a character, and the prompt and
    true_continuation began or ended with U+FFFD halves. The cut now moves to the end of that character (the
    row's prefix_tokens says how many tokens the prompt has); the capped target stops before a split one."""
    from memlab.generation import prefix_tasks, whole_character_cut
    from memlab.models import load_tokenizer

    f = write(tmp_path / "emoji.jsonl", [{"id": f"e{i}", "text": t} for i, t in enumerate(EMOJI_RTL)])
    code, err = call("generate", gen_argv("prefix", f, tmp_path / "out", "--prefix_tokens", "1,3",
                                          "--max_new_tokens", 8), capsys)
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "out" / "items.csv", encoding="utf-8")))
    assert len(rows) == 2 * len(EMOJI_RTL)
    for r in rows:
        assert "\ufffd" not in r["prompt"] + r["true_continuation"], r
        assert int(r["prefix_tokens"]) >= int(r["prefix"]) and 1 <= int(r["target_tokens"]) <= 8
    text = {f"e{i}": t for i, t in enumerate(EMOJI_RTL)}
    for r in rows:  # prompt + continuation spell the text's start (a tokenizer may drop one leading space)
        joined = (r["prompt"] + r["true_continuation"]).replace(" ", "")
        assert text[r["id"]].replace(" ", "").startswith(joined), r
    ascii_row = [r for r in rows if r["id"] == "e3"]
    assert [int(r["prefix_tokens"]) for r in ascii_row] == [1, 3]  # nothing moves between whole characters
    for name in ("tiny-llama", "tiny-gpt2"):  # both tokenizer kinds (byte fallback, byte-level BPE)
        tok = load_tokenizer(name)
        ids = tok(EMOJI_RTL[0]).input_ids
        assert not all(whole_character_cut(tok, ids, c) for c in range(1, 4)), name  # an emoji spans tokens
        tasks, _ = prefix_tasks([{"id": "e", "text": EMOJI_RTL[0]}], tok, [1, 2], max_new_tokens=5)
        for t in tasks:
            for part in (t.prompt_ids, t.target_ids):
                assert "\ufffd" not in tok.decode(part), (name, t)


def test_adapter_of_another_base_is_noted_and_its_base_recorded(d, tmp_path, capsys):
    """tk2: an adapter trained on tiny-llama, evaluated with --model_name_or_path tiny-gpt2: the adapter's own base
    is what runs (as before); now one note says so and config.json records it under adapter_bases."""
    from memlab.models import resolve_model_path

    out = tmp_path / "qa"
    code, err = call("generate", ["--model_name_or_path", "tiny-gpt2", "--checkpoints", d["adapter"], "--mode", "qa",
                                  "--input_file", d["probes"], "--bootstrap", 0, "--max_new_tokens", 2,
                                  "--output_dir", out], capsys)
    assert code == 0, err[-2000:]
    base = str(resolve_model_path("tiny-llama").resolve())
    said = [n for n in notes(err) if "exposure_1" in n and "not of --model_name_or_path tiny-gpt2" in n]
    assert len(said) == 1 and base in said[0], err[-2000:]
    assert json.loads((out / "config.json").read_text())["adapter_bases"] == {"exposure_1": base}
    # the usual case (the adapter's own base given) is recorded without a note
    code, err = call("generate", ["--model_name_or_path", "tiny-llama", "--checkpoints", d["adapter"], "--mode", "qa",
                                  "--input_file", d["probes"], "--bootstrap", 0, "--max_new_tokens", 2,
                                  "--output_dir", tmp_path / "same"], capsys)
    assert code == 0 and not [n for n in notes(err) if "adapter" in n], err[-2000:]
    assert json.loads((tmp_path / "same" / "config.json").read_text())["adapter_bases"] == {"exposure_1": base}


# ------------------------------------------------------------------ training inputs
def test_dpo_from_an_adapter_whose_base_moved_names_its_adapter_config(d, tmp_path, capsys):
    """tk4: the error named only '/models/moved-away/tiny' and told to pass --model_name_or_path (not a DPO flag)."""
    orphan = tmp_path / "lora_orphan"
    shutil.copytree(d["adapter"], orphan)
    cfg = orphan / "adapter_config.json"
    cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), base_model_name_or_path="/models/moved-away/tiny")))
    before = tree(orphan)
    code, err = call("finetune_dpo", ["--sft_checkpoint", orphan, "--pairs_file", d["pairs"], "--batch_size", 2,
                                      "--output_dir", tmp_path / "dpo"], capsys)
    msg = error_line(err)
    assert code == 2 and f"{cfg}: base_model_name_or_path '/models/moved-away/tiny' is not available here" in msg, msg
    no_output(tmp_path / "dpo", err)
    assert tree(orphan) == before


def test_train_ids_repeated_across_train_files_are_refused(d, tmp_path, capsys):
    """di1: --train_file a,b with ids repeated across the files trained both silently; now refused as within one
    file, naming both places. Ids memlab makes (<stem>-<line>, rows without an id) never clash."""
    seen = head(d["seen"], 4)
    other = write(tmp_path / "other_sameids.jsonl",
                  [{"id": r["id"], "text": f"Another sentence number {i} about birds."} for i, r in enumerate(seen)])
    before = tree(tmp_path)
    code, err = call("train", train_argv(f"{d['seen']},{other}", tmp_path / "out"), capsys)
    assert code == 2 and (f"{other}:1: duplicate id '{seen[0]['id']}' (also at {d['seen']}:1)"
                          in error_line(err)), err[-2000:]
    no_output(tmp_path / "out", err)
    assert tree(tmp_path) == before
    across: dict = {}
    for folder in ("a", "b"):  # two files named alike, rows without ids: both get 'data-1', 'data-2'
        ensure_ids([{"text": "x", "_line": 1}, {"text": "y", "_line": 2}], Path(folder) / "data.txt", across=across)
    assert across == {}
    ensure_ids([{"id": "k", "_line": 3}], "a.jsonl", across=across)
    with pytest.raises(DataError, match=r"b.jsonl:5: duplicate id 'k' \(also at a.jsonl:3\)"):
        ensure_ids([{"id": "k", "_line": 5}], "b.jsonl", across=across)
