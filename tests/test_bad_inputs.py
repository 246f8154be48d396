"""The bad-input catalogue (docs/BAD_INPUTS.md, issue 15) as tests: every case of the 123 is either
parametrized here, with its number as the pytest id (`c042-learning_rate-negative`), or listed in
`COVERED_ELSEWHERE` with the test that covers it.

Each case runs a script's real entry point in this process (`memlab.cli.run`, or make_data.py's /
analyze.py's / scripts/run_task.py's own `main` the way their `__main__` calls it) and asserts: the exit
status (2, or 0 where the right behaviour is to accept the input); one `error:` line (a multi-line
"invalid arguments" list or leakage report continues on indented lines) and no traceback; a message
naming the file / line / field of the case; and an output directory that is absent afterwards, or
byte-for-byte unchanged when it existed before. Tiny models, a few rows per file; what several cases need
(a finished train / test / DPO run) is built once per module."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from helpers import error_message, script
from memlab import cli
from memlab.io import DataError

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("one_thread")

# Cases not run here: what covers them instead (test file::test name; checked to exist below).
COVERED_ELSEWHERE = {
    # disk full at the first checkpoint: the save guard (monkeypatched ENOSPC, safetensors' own error text) and,
    # where a tmpfs can be mounted (root), a real 2 MB tmpfs (tests/test_model_dirs.py::test_train_into_a_full_tmpfs)
    59: "tests/test_model_dirs.py::test_disk_full_while_saving_is_one_error_and_cleans_up",
    # a real Ctrl-C to a real train.py process: exit 75, resume state saved (and a changed file refused on --resume)
    62: "tests/test_output_dirs.py::test_resume_refuses_changed_data_and_ctrl_c_saves_resume_state",
    # SIGTERM: the same handler as SIGUSR1 (--debug_signal_at_step), whose save-then-resume is checked to give the
    # uninterrupted run's weights; no test sends SIGTERM itself. The SIGKILL cases 63, 64, 66, 67 are train cases
    # here (a kill simulated in-process, see Killed).
    65: "tests/test_train.py::test_signal_then_resume_equals_uninterrupted",
    # a rerun into a finished directory killed right after it started: SIGKILL of a real test.py subprocess;
    # membership_inference.py (112) shares the mechanism (prepare_run_dir removes results.json first). Both are
    # also checked in-process below (test_interrupted_rerun_never_looks_finished).
    79: "tests/test_output_dirs.py::test_a_killed_rerun_of_test_py_leaves_no_results_json",
    112: "tests/test_output_dirs.py::test_a_killed_rerun_of_test_py_leaves_no_results_json",
}

SENTS = ["The red cat sat on mat number 0.", "The blue cat sat on mat number 1.",
         "The green cat sat on mat number 2.", "The old cat sat on mat number 3.",
         "The small cat sat on mat number 4.", "The quiet cat sat on mat number 5."]
FOILS = ["A red dog ran to gate number 40.", "A blue dog ran to gate number 41.",
         "A green dog ran to gate number 42.", "A old dog ran to gate number 43.",
         "A small dog ran to gate number 44.", "A quiet dog ran to gate number 45."]


def jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def text_rows(texts, prefix="seen"):
    return [{"id": f"{prefix}-{i:04d}", "text": t} for i, t in enumerate(texts)]


def chat_rows(bad_line3=None):
    """Three chat rows; line 3's messages replaced by `bad_line3` when given."""
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"What is code {i}?"},
                                         {"role": "assistant", "content": f"{i}4821"}]} for i in range(3)]
    if bad_line3 is not None:
        rows[2]["messages"] = bad_line3
    return rows


def tree(p: Path):
    """Every file under p with its bytes (p itself when it is a file); None when p does not exist."""
    if not p.exists():
        return None
    if p.is_file():
        return {".": p.read_bytes()}
    return {str(q.relative_to(p)): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}


# -------------------------------------------------------------------------------- running the scripts
SCRIPT_ARGS = {"train": "TrainArgs", "test": "RecognitionArgs", "generate": "GenerateArgs",
               "finetune_dpo": "DPOArgs", "membership_inference": "MiaArgs", "analyze": "AnalyzeArgs"}


def run_task_module():
    name = "memlab_script_run_task"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "run_task.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def call(name: str, argv, capsys) -> tuple[int, str]:
    """A script's entry point in this process, as its `__main__` runs it: (exit status, stderr)."""
    argv = [str(a) for a in argv]
    capsys.readouterr()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        if name == "make_data":
            import make_data

            try:
                make_data.main(argv)
                code = 0
            except DataError as e:  # make_data.py's __main__
                print(f"error: {e}", file=sys.stderr)
                code = 2
        elif name == "run_task":
            code = run_task_module().main(argv)
        else:
            mod = script(name)
            if name == "test":  # the repo's test.py, not the standard library's `test` package
                assert Path(mod.__file__).resolve() == ROOT / "test.py"
            if name == "analyze" and argv and not argv[0].startswith("-"):  # analyze.py's __main__
                argv = ["--runs_root", argv[0]] + argv[1:]
            cli.run(mod.main, getattr(mod, SCRIPT_ARGS[name]), argv)
            code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for s, h in handlers.items():  # train.py / finetune_dpo.py install their own (Ctrl-C saves state)
            signal.signal(s, h)
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Small input files and finished runs that several cases use (never modified by a case)."""
    d = tmp_path_factory.mktemp("bad_inputs")
    s = {"d": d}
    s["seen"] = d / "seen6.jsonl"
    s["seen"].write_text(jsonl(text_rows(SENTS)))
    s["unseen"] = d / "unseen6.jsonl"
    s["unseen"].write_text(jsonl(text_rows(FOILS, "unseen")))
    s["probes"] = d / "probes.jsonl"
    s["probes"].write_text(jsonl([{"id": f"p{i}", "fact_id": f"f{i}", "question": f"What is code {i}?",
                                   "answer": f"{i}4821", "tier": "easy"} for i in range(3)]))
    s["pairs"] = d / "pairs.jsonl"
    s["pairs"].write_text(jsonl(dpo_rows()))

    def must(name, argv):
        code, err = call(name, argv, _NoCapture())
        assert code == 0, err
    s["run"] = d / "run"  # a finished train.py run with checkpoints after exposures 1 and 2
    must("train", train_argv(s["seen"], s["run"], "--num_exposures", 2, "--save_exposures", "1,2"))
    s["sft"] = s["run"] / "checkpoints" / "exposure_2"
    s["rec"] = d / "rec"  # a finished test.py run
    must("test", rec_argv(s, s["rec"]))
    s["dpo"] = d / "dpo"  # a finished finetune_dpo.py run
    must("finetune_dpo", dpo_argv(s, s["pairs"], s["dpo"]))
    s["mia"] = d / "mia"  # a finished membership_inference.py run
    must("membership_inference", mia_argv(s["seen"], s["unseen"], s["mia"]))
    return s


class _NoCapture:
    """capsys stand-in for module fixtures (stderr goes to pytest's own capture)."""

    def readouterr(self):
        return type("Captured", (), {"out": "", "err": ""})()


def train_argv(train_file, out, *extra):
    return ["--model_name_or_path", "tiny-llama", "--train_file", train_file, "--num_exposures", 1,
            "--batch_size", 4, "--learning_rate", "1e-3", "--output_dir", out, *extra]


def rec_argv(s, out, *extra, seen=None, unseen=None):
    return ["--model_name_or_path", "tiny-llama", "--seen_file", seen or s["seen"], "--unseen_file",
            unseen or s["unseen"], "--bootstrap", 0, "--output_dir", out, *extra]


def gen_argv(mode, input_file, out, *extra):
    return ["--model_name_or_path", "tiny-llama", "--mode", mode, "--input_file", input_file, "--bootstrap", 0,
            "--max_new_tokens", 4, "--output_dir", out, *extra]


def dpo_rows():
    return [{"id": f"d{i}", "fact_id": f"f{i}", "prompt": f"What is code {i}?", "chosen": f"{i}4821",
             "rejected": f"{i}9999"} for i in range(4)]


def dpo_argv(s, pairs, out, *extra):
    return ["--sft_checkpoint", s["sft"], "--pairs_file", pairs, "--batch_size", 4, "--output_dir", out, *extra]


def mia_argv(members, nonmembers, out, *extra):
    return ["--model_name_or_path", "tiny-llama", "--members", members, "--nonmembers", nonmembers,
            "--bootstrap", 0, "--reference_model", "none", "--output_dir", out, *extra]


@dataclass
class Ctx:
    """One case's world: its own tmp dir, the shared inputs, the output path watched for leftovers."""
    tmp: Path
    s: dict
    monkeypatch: pytest.MonkeyPatch
    capsys: object
    out: Path = None

    def w(self, name: str, content, binary: bool = False) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if binary:
            p.write_bytes(content)
        else:
            p.write_text(content if isinstance(content, str) else jsonl(content), encoding="utf-8")
        return p

    def copy(self, src: Path, name: str = "out") -> Path:
        return Path(shutil.copytree(src, self.tmp / name))

    def not_writable(self, d: Path) -> None:
        """`d` refuses writes. Without root, by its mode; as root (CI) permissions do not apply and os.access
        says writable, so memlab.io's os.access reports `d` as not writable instead (an immutable directory
        or a read-only mount look the same to check_writable_dir)."""
        d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            d.chmod(0o555)
            return
        import memlab.io as mio

        real = os.access
        self.monkeypatch.setattr(mio.os, "access", lambda p, mode, *a, **k: False if Path(p) == d
                                 else real(p, mode, *a, **k))


@dataclass
class Case:
    script: str
    build: Callable[[Ctx], list]  # -> argv; may set ctx.out and write files
    pattern: str = ""  # regex the error message must match (re.search, DOTALL)
    code: int = 2
    check: Callable[[Ctx, str], None] | None = None  # acceptance cases: what the output must hold
    marks: tuple = field(default_factory=tuple)


def P(num: int, slug: str, case: Case):
    return pytest.param(case, id=f"c{num:03d}-{slug}", marks=case.marks)


def run_case(case: Case, tmp_path, shared, monkeypatch, capsys):
    ctx = Ctx(tmp_path, shared, monkeypatch, capsys, out=tmp_path / "out")
    argv = case.build(ctx)
    before = tree(ctx.out)
    code, err = call(case.script, argv, capsys)
    assert code == case.code, err[-3000:]
    if case.code == 0:
        assert "Traceback" not in err and not any(x.startswith("error:") for x in err.splitlines()), err[-3000:]
        if case.check:
            case.check(ctx, err)
        return
    msg = error_message(err)
    assert re.search(case.pattern, msg, re.S), f"{case.pattern!r} not in:\n{msg}"
    after = tree(ctx.out)
    if before is None:
        assert after is None, f"{ctx.out} left behind: {sorted(after)}"
    else:
        assert after == before, f"{ctx.out} changed"


def read_out_jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").split("\n") if x.strip()]


# ------------------------------------------------------------------------------------------ make_data
def convert(ctx, input_file, *extra):
    return ["convert", "--input", input_file, "--output_dir", ctx.out, *extra]


GOOD6 = text_rows(SENTS)


def _with_line3(value, key="text"):
    rows = [dict(r) for r in GOOD6]
    rows[2][key] = value
    return rows


def _no_cr(ctx, err):
    data = (ctx.out / "text.jsonl").read_bytes()
    assert b"\r" not in data and [r["text"] for r in read_out_jsonl(ctx.out / "text.jsonl")] == SENTS


def _texts_are(texts, ids=None):
    def check(ctx, err):
        rows = read_out_jsonl(ctx.out / "text.jsonl")
        assert [r["text"] for r in rows] == texts
        if ids is not None:
            assert [r["id"] for r in rows] == ids
    return check


def _user_dir(ctx):
    ctx.out.mkdir()
    (ctx.out / "notes.txt").write_text("my notes")
    return convert(ctx, ctx.s["seen"])


def _output_is_a_file(ctx):
    ctx.out = ctx.w("afile.txt", "keep me\n")
    return convert(ctx, ctx.s["seen"])


def _under_readonly(ctx, script_argv):
    imm = ctx.tmp / "imm"
    ctx.not_writable(imm)
    ctx.out = imm / "x"
    return script_argv(ctx)


MAKE_DATA = [
    P(1, "malformed-json", Case("make_data", lambda c: convert(c, c.w("malformed.jsonl", jsonl(
        [json.dumps(r) for r in GOOD6[:3]] + ['{"id": "seen-0003", "text": "x" "y"}']
        + [json.dumps(r) for r in GOOD6[4:]]))), r"malformed\.jsonl:4: malformed JSON \(Expecting ',' delimiter")),
    P(2, "empty-file", Case("make_data", lambda c: convert(c, c.w("empty.jsonl", "")), r"empty\.jsonl: file is empty")),
    P(3, "whitespace-only", Case("make_data", lambda c: convert(c, c.w("ws.jsonl", "  \n\n \t\n")),
                                 r"ws\.jsonl: file is empty")),
    P(4, "bom-jsonl-read-normally", Case("make_data", lambda c: convert(
        c, c.w("bom.jsonl", b"\xef\xbb\xbf" + jsonl(GOOD6).encode(), binary=True)), code=0, check=_texts_are(SENTS))),
    P(5, "crlf-accepted", Case("make_data", lambda c: convert(
        c, c.w("crlf.jsonl", jsonl(GOOD6).replace("\n", "\r\n").encode(), binary=True)), code=0, check=_no_cr)),
    P(6, "non-utf8-byte", Case("make_data", lambda c: convert(c, c.w("latin1.jsonl", jsonl(
        _with_line3("Caf\u00e9 on mat number 2.")).encode("latin-1"), binary=True)),
        r"latin1\.jsonl:3: not UTF-8 \(byte 0xe9 at column \d+\)")),
    P(7, "missing-text-field", Case("make_data", lambda c: convert(c, c.w("notext.jsonl", [
        r if i != 2 else {"id": r["id"], "body": r["text"]} for i, r in enumerate(GOOD6)])),
        r"notext\.jsonl:3: missing field 'text'")),
    P(8, "text_column-not-found", Case("make_data", lambda c: convert(c, c.s["seen"], "--text_column", "sentence"),
                                       r"seen6\.jsonl: text column 'sentence' not found; columns are \['id', 'text'\]")),
    P(9, "numeric-text", Case("make_data", lambda c: convert(c, c.w("numtext.jsonl", _with_line3(12345))),
                              r"numtext\.jsonl:3: field 'text' must be a string, got int \(12345\)")),
    P(10, "null-text", Case("make_data", lambda c: convert(c, c.w("nulltext.jsonl", _with_line3(None))),
                            r"nulltext\.jsonl:3: missing field 'text'")),
    P(11, "duplicate-id", Case("make_data", lambda c: convert(c, c.w("dupid.jsonl", [
        dict(r, id="seen-0000") if i == 4 else r for i, r in enumerate(GOOD6)])),
        r"dupid\.jsonl:5: duplicate id 'seen-0000' \(first seen at line 1\)")),
    P(12, "int-and-str-id", Case("make_data", lambda c: convert(c, c.w("intid.jsonl", [
        dict(r, id=7) if i == 1 else dict(r, id="7") if i == 3 else r for i, r in enumerate(GOOD6)])),
        r"intid\.jsonl:4: duplicate id '7' \(first seen at line 2\)")),
    P(13, "null-ids-accepted", Case("make_data", lambda c: convert(c, c.w("nullid.jsonl", [
        dict(r, id=None) if i in (1, 3) else r for i, r in enumerate(GOOD6)])), code=0,
        check=_texts_are(SENTS, ["seen-0000", "nullid-2", "seen-0002", "nullid-4", "seen-0004", "seen-0005"]))),
    P(14, "line-is-a-list", Case("make_data", lambda c: convert(c, c.w("notobj.jsonl", jsonl(
        [json.dumps(r) for r in GOOD6[:2]] + ['["a", "b"]'] + [json.dumps(r) for r in GOOD6[3:]]))),
        r"notobj\.jsonl:3: expected a JSON object per line, got list")),
    P(15, "chat-role-bot", Case("make_data", lambda c: convert(c, c.w("chat_badrole.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}, {"role": "bot", "content": "1"}])), "--to", "chat"),
        r"chat_badrole\.jsonl:3: messages\[1\]\.role is 'bot', expected one of system, user, assistant")),
    P(16, "chat-no-assistant", Case("make_data", lambda c: convert(c, c.w("chat_noasst.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}])), "--to", "chat"), r"chat_noasst\.jsonl:3: no assistant message")),
    P(17, "chat-empty-content", Case("make_data", lambda c: convert(c, c.w("chat_emptycontent.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}])), "--to", "chat"),
        r"chat_emptycontent\.jsonl:3: messages\[1\]\.content must be a non-empty string")),
    P(18, "chat-blank-content", Case("make_data", lambda c: convert(c, c.w("chat_blank.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}])), "--to", "chat"),
        r"chat_blank\.jsonl:3: messages\[1\]\.content must be a non-empty string")),
    P(19, "chat-messages-a-string", Case("make_data", lambda c: convert(c, c.w("chat_msgstr.jsonl", chat_rows(
        "hello")), "--to", "chat"), r"chat_msgstr\.jsonl:3: 'messages' must be a non-empty list")),
    P(20, "output-dir-user-files", Case("make_data", _user_dir,
                                        r"output dir .*/out: exists, is not empty and holds no manifest\.json")),
    P(21, "output-dir-is-a-file", Case("make_data", _output_is_a_file,
                                       r"output dir .*afile\.txt: .*afile\.txt exists and is not a directory")),
    # 22: an immutable directory (chattr +i); see Ctx.not_writable for how it is simulated as root
    P(22, "output-dir-not-writable", Case("make_data", lambda c: _under_readonly(c, lambda c: convert(c, c.s["seen"])),
                                          r"output dir .*/imm/x: .*/imm is not writable")),
    P(23, "bom-csv-text-column-first", Case("make_data", lambda c: convert(c, c.w(
        "bom.csv", b"\xef\xbb\xbf" + "sentence,id\r\nfirst text here,a1\r\nsecond text here,a2\r\n".encode(),
        binary=True), "--text_column", "sentence"), code=0, check=_texts_are(["first text here", "second text here"],
                                                                            ["a1", "a2"]))),
    P(24, "bom-csv-id-column-first", Case("make_data", lambda c: convert(c, c.w(
        "bom2.csv", b"\xef\xbb\xbf" + "id,text\r\nk1,first text here\r\nk2,second text here\r\n".encode(),
        binary=True)), code=0, check=_texts_are(["first text here", "second text here"], ["k1", "k2"]))),
    P(25, "csv-row-extra-fields", Case("make_data", lambda c: convert(c, c.w(
        "extra.csv", "id,text\na1,first text here\na2,second text, with a comma\na3,third\n")),
        r"extra\.csv:3: row has 3 fields, the header has 2")),
    P(26, "check-leakage", Case("make_data", lambda c: ["check", "--train", c.s["seen"], "--held_out", c.s["seen"]],
                                r"leakage check failed: 6 overlapping pair\(s\).*\n  .*seen6\.jsonl")),
]


@pytest.mark.parametrize("case", MAKE_DATA)
def test_make_data(case, tmp_path, shared, monkeypatch, capsys):
    run_case(case, tmp_path, shared, monkeypatch, capsys)


# ---------------------------------------------------------------------------------------------- train
def tr(name_or_rows, *extra, binary=False):
    """A train.py case on a file written from rows (or text, or a shared file)."""
    def build(ctx):
        if isinstance(name_or_rows, tuple):
            f = ctx.w(name_or_rows[0], name_or_rows[1], binary=binary)
        else:
            f = ctx.s[name_or_rows]
        return train_argv(f, ctx.out, *extra)
    return build


def _finished_copy(*extra):
    def build(ctx):
        ctx.copy(ctx.s["run"])
        return train_argv(ctx.s["seen"], ctx.out, "--num_exposures", 2, "--save_exposures", "1,2", *extra)
    return build


def _more_checkpoints(ctx):  # a finished run with exposure_1 and _2; the new one would save only exposure_1
    ctx.copy(ctx.s["run"])
    other = ctx.w("other.jsonl", text_rows(FOILS, "o"))
    return train_argv(other, ctx.out, "--save_exposures", 1, "--learning_rate", "5e-5")


def _model_dir_as_output(ctx):
    from memlab.models import resolve_model_path

    shutil.copytree(resolve_model_path("tiny-llama"), ctx.out)
    return train_argv(ctx.s["seen"], ctx.out)


def _damaged_model(ctx, how="config"):
    from memlab.models import resolve_model_path

    model = Path(shutil.copytree(resolve_model_path("tiny-llama"), ctx.tmp / "model"))
    f = model / ("config.json" if how == "config" else "model.safetensors")
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    return model


def _yaml(text):
    """--config YAML; the flags it sets are not given again on the command line (which would override it)."""
    def build(ctx):
        cfg = ctx.w("cfg.yaml", text)
        argv = [str(a) for a in train_argv(ctx.s["seen"], ctx.out)]
        for key in re.findall(r"^(\w+):", text, re.M):
            i = argv.index(f"--{key}")
            del argv[i:i + 2]
        return ["--config", cfg, *argv]
    return build


def _results(pred):
    def check(ctx, err):
        res = json.loads((ctx.out / "results.json").read_text())
        assert pred(res, ctx), res
    return check


def _config(pred):
    def check(ctx, err):
        cfg = json.loads((ctx.out / "config.json").read_text())
        assert (ctx.out / "results.json").exists() and pred(cfg, ctx), cfg
    return check


def _spaces_build(ctx):
    d = ctx.tmp / "my data ü" / "ünï cödé"
    d.mkdir(parents=True)
    f = d / "seen file.jsonl"
    shutil.copy(ctx.s["seen"], f)
    ctx.out = ctx.tmp / "out dir é" / "run ü"
    return train_argv(f, ctx.out, "--save_exposures", 1)


def _spaces_check(ctx, err):
    """train.py ran; test.py on the checkpoints glob under the unicode, spaced run dir works too."""
    assert (ctx.out / "checkpoints" / "exposure_1" / "model.safetensors").exists()
    rec = ctx.tmp / "rec dir ü"
    code, err = call("test", rec_argv(ctx.s, rec, "--checkpoints", f"{ctx.out}/checkpoints/exposure_*",
                                       seen=ctx.tmp / "my data ü" / "ünï cödé" / "seen file.jsonl"), ctx.capsys)
    assert code == 0, err[-3000:]
    res = json.loads((rec / "results.json").read_text())
    assert [c["checkpoint"] for c in res["checkpoints"]] == ["exposure_1"]


def _comma_name(ctx):
    f = ctx.tmp / "seen,v2.jsonl"
    shutil.copy(ctx.s["seen"], f)
    return train_argv(f, ctx.out)


def _interrupted(ctx, change: bool, *extra):
    """A run stopped by a signal after step 1 (resume state saved), its train file then changed or not,
    then --resume."""
    f = ctx.w("train.jsonl", GOOD6)
    argv = train_argv(f, ctx.out, "--num_exposures", 2)
    code, err = call("train", [*argv, "--debug_signal_at_step", 1], ctx.capsys)
    assert code == 75 and (ctx.out / "resume").is_dir(), err[-3000:]
    if change:
        f.write_text(jsonl(_with_line3("The green hat sat on mat number 2.")))
    return [*argv, "--resume", *extra]


class Killed(BaseException):
    """SIGKILL stand-in: raised from inside training, it passes every handler (not an Exception, not a
    DataError), so the run directory is left exactly as the kill leaves it: config.json, metrics.jsonl with
    rows past the last checkpoint, the checkpoints saved so far, no resume/ state, no results.json."""


def _killed(ctx, argv, at_batch: int) -> None:
    """Run train.py with `argv` and kill it when it collates its `at_batch`-th micro-batch (6 rows, batch 4:
    two per exposure, so 3 is inside exposure 2, after the exposure_1 checkpoint, and 2 is before it)."""
    from memlab import training

    real, n = training.collate, [0]

    def collate(*a, **k):
        n[0] += 1
        if n[0] == at_batch:
            raise Killed
        return real(*a, **k)
    ctx.monkeypatch.setattr(training, "collate", collate)
    with pytest.raises(Killed):
        call("train", argv, ctx.capsys)
    ctx.monkeypatch.setattr(training, "collate", real)
    assert not (ctx.out / "resume").exists() and not (ctx.out / "results.json").exists()


def _kill_then_resume(at_batch: int, half_written: bool = False, lora: bool = False):
    """Cases 63, 64, 66, 67: killed, then --resume; the check compares the final weights with an
    uninterrupted run's (the module's finished run, or for LoRA one run here)."""
    def build(ctx):
        extra = ["--num_exposures", 2, "--save_exposures", "1,2"] + (
            ["--lora_r", 4, "--lora_dropout", 0.1] if lora else [])  # dropout: the RNG state must be restored
        if lora:
            code, err = call("train", train_argv(ctx.s["seen"], ctx.tmp / "ref", *extra), ctx.capsys)
            assert code == 0, err[-3000:]
        argv = train_argv(ctx.s["seen"], ctx.out, *extra)
        _killed(ctx, argv, at_batch)
        ckpts = sorted(p.name for p in (ctx.out / "checkpoints").glob("*"))  # none when the dir is absent
        assert ckpts == (["exposure_1"] if at_batch > 2 else []), ckpts
        if half_written:  # what a kill while exposure_2 is written leaves: its temp dir, weights cut short
            tmp = ctx.out / "checkpoints" / ".exposure_2.tmp"
            shutil.copytree(ctx.out / "checkpoints" / "exposure_1", tmp)
            (tmp / "trainer_state" / "state.json").unlink()  # written last, just before the rename
            weights = next(tmp.glob("*.safetensors"))
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return [*argv, "--resume"]
    return build


def _same_weights_as_uninterrupted(lora: bool = False):
    def check(ctx, err):
        ref = (ctx.tmp / "ref") if lora else ctx.s["run"]
        res = json.loads((ctx.out / "results.json").read_text())
        assert res["param_digests"] == json.loads((ref / "results.json").read_text())["param_digests"]
        assert [r["step"] for r in read_out_jsonl(ctx.out / "metrics.jsonl")] == [1, 2, 3, 4]
        assert sorted(p.name for p in (ctx.out / "checkpoints").iterdir()) == ["exposure_1", "exposure_2"]
        assert not (ctx.out / "resume").exists()
    return check


TRAIN = [
    P(27, "malformed-json", Case("train", tr(("malformed.jsonl", jsonl(
        [json.dumps(r) for r in GOOD6[:3]] + ['{"id": "x", "text": }'] + [json.dumps(r) for r in GOOD6[4:]]))),
        r"malformed\.jsonl:4: malformed JSON \(")),
    P(28, "non-utf8-byte", Case("train", tr(("latin1.jsonl", jsonl(_with_line3("Caf\u00e9 sat.")).encode("latin-1")),
                                            binary=True), r"latin1\.jsonl:3: not UTF-8 \(byte 0xe9 at column \d+\)")),
    P(29, "numeric-text", Case("train", tr(("numtext.jsonl", _with_line3(12345))),
                               r"numtext\.jsonl:3: field 'text' must be a string, got int \(12345\)")),
    P(30, "whitespace-only", Case("train", tr(("ws.jsonl", " \n\n")), r"ws\.jsonl: file is empty")),
    P(31, "line-is-a-string", Case("train", tr(("strline.jsonl", jsonl(
        [json.dumps(r) for r in GOOD6[:2]] + ['"just a string"'] + [json.dumps(r) for r in GOOD6[3:]]))),
        r"strline\.jsonl:3: expected a JSON object per line, got str")),
    P(32, "100k-char-line-truncated", Case("train", tr(("long.jsonl", GOOD6 + [{"id": "long", "text": "word " * 20000}]),
                                                       "--block_size", 32),
                                           code=0, check=_results(lambda r, c: r["n_truncated"] == 1))),
    P(33, "chat-role-bot", Case("train", tr(("chat_badrole.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}, {"role": "bot", "content": "1"}]))),
        r"chat_badrole\.jsonl:3: messages\[1\]\.role is 'bot'")),
    P(34, "chat-no-assistant", Case("train", tr(("chat_noasst.jsonl", chat_rows([{"role": "user", "content": "hi"}]))),
                                    r"chat_noasst\.jsonl:3: no assistant message")),
    P(35, "chat-empty-content", Case("train", tr(("chat_empty.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]))),
        r"chat_empty\.jsonl:3: messages\[1\]\.content must be a non-empty string")),
    P(36, "chat-blank-content", Case("train", tr(("chat_blank.jsonl", chat_rows(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}]))),
        r"chat_blank\.jsonl:3: messages\[1\]\.content must be a non-empty string")),
    P(37, "empty-completion", Case("train", tr(("pc_emptycomp.jsonl", [
        {"prompt": f"Code {i}?", "completion": "" if i == 2 else f"{i}4821"} for i in range(4)])),
        r"pc_emptycomp\.jsonl:3: missing field 'completion'")),
    P(38, "save_exposures-beyond", Case("train", tr("seen", "--save_exposures", "1,5", "--num_exposures", 2),
                                        r"invalid arguments:\n  - --save_exposures \[1, 5\] goes beyond --num_exposures 2")),
    P(39, "batch_size-negative", Case("train", tr("seen", "--batch_size", -1), r"batch sizes must be >= 1")),
    P(40, "batch_size-zero", Case("train", tr("seen", "--batch_size", 0), r"batch sizes must be >= 1")),
    P(41, "learning_rate-not-a-number", Case("train", tr("seen", "--learning_rate", "fast"),
                                             r"^error: --learning_rate: invalid float value: 'fast'$")),
    P(42, "learning_rate-negative", Case("train", tr("seen", "--learning_rate=-1"),
                                         r"--learning_rate must be a finite number > 0, got -1\.0")),
    P(42, "learning_rate-nan", Case("train", tr("seen", "--learning_rate", "nan"),
                                    r"--learning_rate must be a finite number > 0, got nan")),
    P(43, "unknown-flag", Case("train", tr("seen", "--epochs", 3),
                               r"--epochs: not a flag of this script \(did you mean --num_train_epochs\?\)")),
    P(44, "output-dir-is-a-file", Case("train", lambda c: train_argv(c.s["seen"], setattr(c, "out", c.w(
        "afile.txt", "keep\n")) or c.out), r"output dir .*afile\.txt: .*afile\.txt exists and is not a directory")),
    # 45: an immutable dir or a read-only mount; see Ctx.not_writable for how it is simulated as root
    P(45, "output-dir-not-writable", Case("train", lambda c: _under_readonly(
        c, lambda c: train_argv(c.s["seen"], c.out)), r"output dir .*/imm/x: .*/imm is not writable")),
    P(46, "finished-run-other-config", Case("train", _finished_copy("--learning_rate", "1e-4"),
                                            r"--output_dir .*/out holds a finished run of train\.py with a different "
                                            r"configuration \(differing: learning_rate: 0\.001 -> 0\.0001\)"
                                            r".*--overwrite_output_dir")),
    P(47, "finished-run-more-checkpoints", Case("train", _more_checkpoints,
                                                r"holds a finished run of train\.py with a different configuration "
                                                r"\(differing: .*save_exposures.*train_file")),
    P(48, "output-dir-is-a-model", Case("train", _model_dir_as_output,
                                        r"--output_dir .*/out holds a model \(config\.json with model_type 'llama'\)")),
    P(49, "lora-target-matches-nothing", Case("train", tr("seen", "--lora_r", 4, "--lora_target_modules",
                                                          "query_key_value"),
                                              r"--lora_target_modules: 'query_key_value' matches no linear layer")),
    P(50, "model-path-missing", Case("train", lambda c: [*train_argv(c.s["seen"], c.out), "--model_name_or_path",
                                                         c.tmp / "no_such_model"],
                                     r"model '.*no_such_model' is neither a local directory nor a built-in name")),
    P(50, "model-hub-name", Case("train", lambda c: [*train_argv(c.s["seen"], c.out), "--model_name_or_path",
                                                     "someorg/some-model"],
                                 r"model 'someorg/some-model' is neither a local directory nor a built-in name")),
    P(51, "model-config-truncated", Case("train", lambda c: [*train_argv(c.s["seen"], c.out), "--model_name_or_path",
                                                             _damaged_model(c)],
                                         r"model/config\.json: not valid JSON \(.*the model directory is damaged")),
    P(52, "spaces-and-unicode-paths", Case("train", _spaces_build, code=0, check=_spaces_check)),
    P(53, "comma-in-file-name", Case("train", _comma_name, code=0, check=_config(
        lambda cfg, c: list(cfg["data_fingerprints"]) == [str(c.tmp / "seen,v2.jsonl")]))),
    P(54, "yaml-int-not-a-number", Case("train", _yaml("num_exposures: two\n"),
                                        r"^error: .*cfg\.yaml: num_exposures: invalid int value: 'two'")),
    P(55, "yaml-int-a-list", Case("train", _yaml("batch_size: [2, 4]\n"),
                                  r"^error: .*cfg\.yaml: batch_size: invalid int value: '2,4'")),
    P(56, "yaml-a-list", Case("train", _yaml("- a\n- b\n"),
                              r"^error: .*cfg\.yaml: expected a mapping of argument: value .*got a list$")),
    P(57, "yaml-a-scalar", Case("train", _yaml("42\n"),
                                r"^error: .*cfg\.yaml: expected a mapping of argument: value .*got an int$")),
    P(58, "yaml-5e-5-accepted", Case("train", _yaml("learning_rate: 5e-5\n"), code=0, check=_config(
        lambda cfg, c: cfg["args"]["learning_rate"] == 5e-5))),
    P(60, "resume-other-learning_rate", Case("train", _finished_copy("--resume", "--learning_rate", "1e-4"),
                                             r"different configuration.*learning_rate: 0\.001 -> 0\.0001")),
    # interruptions without a signal handler (SIGKILL), in-process: see Killed; the signal cases are elsewhere
    P(63, "killed-mid-run-resume", Case("train", _kill_then_resume(3), code=0,
                                        check=_same_weights_as_uninterrupted())),
    P(64, "killed-while-writing-checkpoint-resume", Case("train", _kill_then_resume(3, half_written=True), code=0,
                                                         check=_same_weights_as_uninterrupted())),
    P(66, "lora-dropout-killed-resume", Case("train", _kill_then_resume(3, lora=True), code=0,
                                             check=_same_weights_as_uninterrupted(lora=True))),
    P(67, "killed-before-any-checkpoint-resume", Case("train", _kill_then_resume(2), code=0,
                                                      check=_same_weights_as_uninterrupted())),
    P(61, "resume-changed-data", Case("train", lambda c: _interrupted(c, change=True),
                                      r"--resume: .*/train\.jsonl changed since .*/out started \(sha256")),
    P(61, "resume-identical-data-accepted", Case("train", lambda c: _interrupted(c, change=False), code=0,
                                                 check=_results(lambda r, c: not (c.out / "resume").exists()))),
]


@pytest.mark.parametrize("case", TRAIN)
def test_train(case, tmp_path, shared, monkeypatch, capsys):
    run_case(case, tmp_path, shared, monkeypatch, capsys)


# -------------------------------------------------------------------------------------------- test.py
def te(*extra, seen=None, unseen=None):
    def build(ctx):
        s = seen(ctx) if callable(seen) else seen
        u = unseen(ctx) if callable(unseen) else unseen
        return rec_argv(ctx.s, ctx.out, *[x(ctx) if callable(x) else x for x in extra], seen=s, unseen=u)
    return build


def _empty_dir(ctx):
    d = ctx.tmp / "emptyckpt"
    d.mkdir()
    return d


def _finished_test_copy(*extra):
    def build(ctx):
        ctx.copy(ctx.s["rec"])
        return rec_argv(ctx.s, ctx.out, *extra)
    return build


def _rerun_same(ctx, err):
    res = json.loads((ctx.out / "results.json").read_text())
    assert res == json.loads((ctx.s["rec"] / "results.json").read_text())


TEST = [
    P(8, "test-text_column-not-found", Case("test", te("--text_column", "sentence"),
                                            r"seen6\.jsonl: text column 'sentence' not found")),
    P(28, "test-non-utf8-byte", Case("test", te(seen=lambda c: c.w("latin1.jsonl", jsonl(_with_line3(
        "Caf\u00e9 sat.")).encode("latin-1"), binary=True)), r"latin1\.jsonl:3: not UTF-8 \(byte 0xe9")),
    P(68, "unequal-lengths-no-pair_id", Case("test", te(unseen=lambda c: c.w("unseen4.jsonl", text_rows(FOILS[:4], "u"))),
                                             r"pairing by row order needs equal lengths: --seen_file has 6 rows, "
                                             r"--unseen_file has 4")),
    P(69, "unseen-file-missing", Case("test", te(unseen=lambda c: c.tmp / "nope.jsonl"),
                                      r"nope\.jsonl: file not found")),
    P(70, "text-longer-than-model", Case("test", te(seen=lambda c: c.w("long.jsonl", [
        {"id": f"x{i}", "text": ("word " * 3000) if i == 2 else SENTS[i]} for i in range(6)])),
        r"1 item\(s\) are longer than the model's \d+ positions, e\.g\. 'seen:x2'")),
    P(71, "checkpoints-glob-matches-nothing", Case("test", te("--checkpoints", lambda c: f"{c.s['run']}/epoch_*"),
                                                   r"--checkpoints: '.*/run/epoch_\*' matches no directory")),
    P(72, "checkpoints-empty-dir", Case("test", te("--checkpoints", _empty_dir),
                                        r"checkpoint .*emptyckpt: holds neither a model")),
    P(73, "checkpoints-a-file", Case("test", te("--checkpoints", lambda c: c.s["seen"]),
                                     r"checkpoint .*seen6\.jsonl: not a directory")),
    P(74, "checkpoint-config-truncated", Case("test", te("--checkpoints", lambda c: _damaged_model(c)),
                                              r"model/config\.json: not valid JSON \(")),
    P(75, "checkpoint-half-safetensors", Case("test", te("--checkpoints", lambda c: _damaged_model(c, "weights")),
                                              r"model/model\.safetensors: truncated \(\d+ bytes, header says \d+\); "
                                              r"the checkpoint directory is damaged")),
    P(76, "seen-equals-unseen", Case("test", te(unseen=lambda c: c.s["seen"]),
                                     r"--seen_file and --unseen_file share texts.*leakage check failed: 6 overlapping")),
    P(77, "csv-unterminated-quote", Case("test", te(seen=lambda c: c.w(
        "quote.csv", 'id,text\na1,first text here\na2,"second text here\na3,third text here\n'),
        unseen=lambda c: c.w("u3.csv", "id,text\nb1,one foil\nb2,two foil\nb3,three foil\n")),
        r"quote\.csv:3: unterminated quoted field")),
    P(78, "finished-test-run-other-config", Case("test", _finished_test_copy("--batch_size", 2),
                                                 r"--output_dir .*/out holds a finished run of test\.py with a "
                                                 r"different configuration \(differing: batch_size: '16' -> '2'\)")),
    P(78, "finished-test-run-same-config-rerun", Case("test", _finished_test_copy(), code=0, check=_rerun_same)),
    P(80, "batch_size-zero", Case("test", te("--batch_size", 0), r"--batch_size must be >= 1, got 0")),
    P(81, "padding_side-middle", Case("test", te("--padding_side", "middle"),
                                      r"--padding_side must be left or right, got middle")),
]


@pytest.mark.parametrize("case", TEST)
def test_test_py(case, tmp_path, shared, monkeypatch, capsys):
    run_case(case, tmp_path, shared, monkeypatch, capsys)


# ------------------------------------------------------------------------------------------- generate
def ge(mode, input_file, *extra):
    def build(ctx):
        f = input_file(ctx) if callable(input_file) else ctx.s[input_file]
        return gen_argv(mode, f, ctx.out, *[x(ctx) if callable(x) else x for x in extra])
    return build


def _probe_rows(**line2):
    rows = [{"id": f"p{i}", "fact_id": f"f{i}", "question": f"What is code {i}?", "answer": f"{i}4821"}
            for i in range(3)]
    rows[1].update(line2)
    return rows


GENERATE = [
    P(71, "generate-checkpoints-glob-matches-nothing", Case("generate", ge(
        "qa", "probes", "--checkpoints", lambda c: f"{c.s['run']}/epoch_*"),
        r"--checkpoints: '.*/run/epoch_\*' matches no directory")),
    P(82, "csv-without-answer-column", Case("generate", ge("qa", lambda c: c.w(
        "probes_noanswer.csv", "id,question\np1,What is code 1?\np2,What is code 2?\n")),
        r"probes_noanswer\.csv: no 'answer' column; columns are \['id', 'question'\]")),
    P(83, "answer-not-extractable", Case("generate", ge("qa", lambda c: c.w("probes_unextract.jsonl",
                                                                            _probe_rows(answer="???"))),
                                         r"probes_unextract\.jsonl:2: answer '\?\?\?' cannot be matched")),
    P(84, "answer-empty", Case("generate", ge("qa", lambda c: c.w("probes_emptyans.jsonl", _probe_rows(answer=""))),
                               r"probes_emptyans\.jsonl:2: missing field 'answer'")),
    P(85, "tier_columns-missing-column", Case("generate", ge("qa", lambda c: c.w(
        "probes_1tier.csv", "id,q1,answer\np1,What is code 1?,14821\n"), "--tier_columns", "easy=q1,mid=q2"),
        r"probes_1tier\.csv: --tier_columns names column 'q2', which the file lacks")),
    P(86, "prefix-empty-file", Case("generate", ge("prefix", lambda c: c.w("empty.jsonl", "")),
                                    r"empty\.jsonl: file is empty")),
    P(87, "prefix_tokens-negative", Case("generate", ge("prefix", "seen", "--prefix_tokens", -4),
                                         r"--prefix_tokens must be positive integers")),
    P(88, "prefix_fraction-above-1", Case("generate", ge("prefix", "seen", "--prefix_fraction", 1.5),
                                          r"--prefix_fraction must be in \(0, 1\), got 1\.5")),
    P(89, "mode-unknown", Case("generate", ge("recall", "seen"), r"--mode must be prefix or qa, got recall")),
    P(90, "temperatures-negative", Case("generate", ge("qa", "probes", "--temperatures=-1"),
                                        r"temperatures must be >= 0")),
    P(91, "num_samples-zero", Case("generate", ge("prefix", "seen", "--num_samples", 0),
                                   r"invalid arguments:\n  - --num_samples and --repeats must be >= 1")),
    P(92, "prefix-longer-than-every-text", Case("generate", ge("prefix", "seen", "--prefix_tokens", 500),
                                                r"seen6\.jsonl: .*--prefix_tokens 500")),
]


@pytest.mark.parametrize("case", GENERATE)
def test_generate(case, tmp_path, shared, monkeypatch, capsys):
    run_case(case, tmp_path, shared, monkeypatch, capsys)


# --------------------------------------------------------------------------------------- finetune_dpo
def dp(rows_or_file, *extra):
    def build(ctx):
        if isinstance(rows_or_file, tuple):
            f = ctx.w(*rows_or_file[:2], binary=len(rows_or_file) > 2)
        else:
            f = ctx.s[rows_or_file]
        return dpo_argv(ctx.s, f, ctx.out, *[x(ctx) if callable(x) else x for x in extra])
    return build


def _pair_line(n, **change):
    rows = dpo_rows()
    rows[n - 1].update(change)
    return [{k: v for k, v in r.items() if v is not ...} for r in rows]


def _finished_dpo_copy(ctx):
    ctx.copy(ctx.s["dpo"])
    return dpo_argv(ctx.s, ctx.s["pairs"], ctx.out, "--learning_rate", "0.01")


DPO = [
    P(4, "dpo-bom-jsonl-read-normally", Case("finetune_dpo", dp(
        ("bom_pairs.jsonl", b"\xef\xbb\xbf" + jsonl(dpo_rows()).encode(), True)), code=0,
        check=_results(lambda r, c: r["n_pairs"] == 4))),
    P(93, "chosen-equals-rejected", Case("finetune_dpo", dp(("dpo_same.jsonl", _pair_line(3, rejected="24821"))),
                                         r"dpo_same\.jsonl:3: chosen equals rejected")),
    P(94, "rejected-chosen-with-spaces", Case("finetune_dpo", dp(("dpo_ws.jsonl", _pair_line(2, rejected=" 14821 "))),
                                              r"dpo_ws\.jsonl:2: chosen equals rejected")),
    P(95, "missing-rejected", Case("finetune_dpo", dp(("dpo_norej.jsonl", _pair_line(2, rejected=...))),
                                   r"dpo_norej\.jsonl:2: missing field\(s\) 'rejected'")),
    P(96, "empty-prompt", Case("finetune_dpo", dp(("dpo_noprompt.jsonl", _pair_line(3, prompt=""))),
                               r"dpo_noprompt\.jsonl:3: .*'prompt'")),
    P(97, "chosen-a-number", Case("finetune_dpo", dp(("dpo_numchosen.jsonl", _pair_line(4, chosen=52056))),
                                  r"dpo_numchosen\.jsonl:4: field 'chosen' must be a string, got int \(52056\)")),
    P(98, "sft_checkpoint-missing", Case("finetune_dpo", dp("pairs", "--sft_checkpoint",
                                                            lambda c: c.s["run"] / "checkpoints" / "exposure_9"),
                                         r"--sft_checkpoint .*exposure_9: checkpoint not found")),
    P(99, "whitespace-only-pairs", Case("finetune_dpo", dp(("ws.jsonl", "\n  \n")), r"ws\.jsonl: file is empty")),
    P(100, "save_epochs-beyond", Case("finetune_dpo", dp("pairs", "--save_epochs", "1,5", "--num_epochs", 1),
                                      r"--save_epochs \[1, 5\] goes beyond --num_epochs 1")),
    P(101, "beta-negative", Case("finetune_dpo", dp("pairs", "--beta=-1"),
                                 r"invalid arguments:\n  - --beta must be > 0\n  - --beta must be a finite number > 0, "
                                 r"got -1\.0$")),
    P(102, "finished-dpo-run-other-lr", Case("finetune_dpo", _finished_dpo_copy,
                                             r"--output_dir .*/out holds a finished run of finetune_dpo\.py with a "
                                             r"different configuration \(differing: learning_rate")),
]


@pytest.mark.parametrize("case", DPO)
def test_finetune_dpo(case, tmp_path, shared, monkeypatch, capsys):
    run_case(case, tmp_path, shared, monkeypatch, capsys)


# ---------------------------------------------------------------------------- membership_inference
def mi(members=None, nonmembers=None, *extra):
    def build(ctx):
        m = members(ctx) if callable(members) else ctx.s["seen"]
        n = nonmembers(ctx) if callable(nonmembers) else ctx.s["unseen"]
        return mia_argv(m, n, ctx.out, *[x(ctx) if callable(x) else x for x in extra])
    return build


def _mia_dir_without_nonmembers(ctx):
    d = ctx.tmp / "miadir_nonon"
    d.mkdir()
    shutil.copy(ctx.s["seen"], d / "members.jsonl")
    return ["--model_name_or_path", "tiny-llama", "--mia_dir", d, "--bootstrap", 0, "--reference_model", "none",
            "--output_dir", ctx.out]


MIA = [
    P(72, "mia-checkpoints-empty-dir", Case("membership_inference", mi(None, None, "--checkpoints", _empty_dir),
                                            r"checkpoint .*emptyckpt: holds neither a model")),
    P(103, "members-equal-nonmembers", Case("membership_inference", mi(None, lambda c: c.s["seen"]),
                                            r"members and non-members overlap.*leakage check failed: 6 overlapping")),
    P(104, "normalized-overlap", Case("membership_inference", mi(None, lambda c: c.w("near.jsonl", text_rows(
        FOILS[:5] + [SENTS[3].upper().rstrip(".") + "!"], "n"))),
        r"members and non-members overlap.*leakage check failed: 1 overlapping pair.*normalized")),
    P(105, "numeric-member-text", Case("membership_inference", mi(lambda c: c.w("mem_num.jsonl", _with_line3(12345))),
                                       r"mem_num\.jsonl:3: field 'text' must be a string, got int")),
    P(106, "mia_dir-without-nonmembers", Case("membership_inference", _mia_dir_without_nonmembers,
                                              r"miadir_nonon/nonmembers\.jsonl: file not found")),
    P(107, "nonmember-with-canary-copies", Case("membership_inference", mi(None, lambda c: c.w("non_canary.jsonl", [
        dict(r, canary_copies=3 if i == 2 else 0) for i, r in enumerate(text_rows(FOILS, "n"))])),
        r"non_canary\.jsonl:3: a non-member has canary_copies 3; expected 0")),
    P(108, "canary_copies-not-an-integer", Case("membership_inference", mi(lambda c: c.w("mem_canarystr.jsonl", [
        dict(r, canary_copies="many" if i == 2 else 1) for i, r in enumerate(GOOD6)])),
        r"mem_canarystr\.jsonl:3: canary_copies must be an integer, got 'many'")),
    P(109, "min_k-out-of-range", Case("membership_inference", mi(None, None, "--min_k", "0,150"),
                                      r"--min_k must be percentages in \(0, 100\], got '0,150'")),
    P(110, "bootstrap-negative", Case("membership_inference", mi(None, None, "--bootstrap=-5"),
                                      r"--bootstrap must be >= 0, got -5")),
    P(111, "empty-nonmembers", Case("membership_inference", mi(None, lambda c: c.w("empty.jsonl", "")),
                                    r"empty\.jsonl: file is empty")),
]


@pytest.mark.parametrize("case", MIA)
def test_membership_inference(case, tmp_path, shared, monkeypatch, capsys):
    run_case(case, tmp_path, shared, monkeypatch, capsys)


# -------------------------------------------------------------------------------------------- analyze
def _runs_root(ctx, breaks=None):
    """A finished expt1 sweep written by hand (tests/test_analyze_strict.py's layout), one file broken."""
    from test_analyze_strict import FULL, LORA, make_task

    ctx.out = ctx.tmp / "expt1"
    make_task(ctx.out, FULL, "full")
    make_task(ctx.out, LORA, "lora")
    if breaks:
        breaks(ctx.out)
    return [ctx.out]


def _cut(path: Path, keep=0.5):
    text = path.read_text()
    path.write_text(text[: int(len(text) * keep)])


def _stage(rel):
    from test_analyze_strict import FULL, LORA

    return rel.format(FULL=FULL, LORA=LORA)


def _an_empty(ctx):
    ctx.out = ctx.tmp / "an_empty"
    ctx.out.mkdir()
    return [ctx.out]


ANALYZE = [
    P(113, "empty-dir", Case("analyze", _an_empty, r"an_empty: no task results found")),
    P(114, "dir-missing", Case("analyze", lambda c: [setattr(c, "out", c.tmp / "an_missing") or c.out],
                               r"an_missing: not a directory")),
    P(115, "stage-results-truncated", Case("analyze", lambda c: _runs_root(c, lambda r: _cut(
        r / _stage("{FULL}/train/eval/recognition/results.json"))),
        r"/train/eval/recognition/results\.json: .*truncated JSON.*--skip_broken")),
    P(116, "stage-results-empty-list", Case("analyze", lambda c: _runs_root(c, lambda r: (
        r / _stage("{LORA}/train/eval/recall/results.json")).write_text("[]\n")),
        r"method=lora.*/train/eval/recall/results\.json: expected a JSON object, got an empty list.*--skip_broken")),
    P(117, "cell-json-truncated", Case("analyze", lambda c: _runs_root(c, lambda r: _cut(
        r / _stage("{LORA}/cell.json"))),
        r"method=lora.*/cell\.json: truncated JSON \(Unterminated string starting at line \d+ column \d+\) "
        r"\(pass --skip_broken to leave it out\)")),
]


@pytest.mark.parametrize("case", ANALYZE)
def test_analyze(case, tmp_path, shared_none, monkeypatch, capsys):
    run_case(case, tmp_path, shared_none, monkeypatch, capsys)


@pytest.fixture
def shared_none():
    return {}


# ------------------------------------------------------------------------------------------- run_task
def rt(*args):
    def build(ctx):
        ctx.out = ctx.tmp / "runs"
        return [*args, "--runs_root", ctx.out]
    return build


def _slurm_abc(ctx):
    ctx.monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "abc")
    return rt("expt1", "--size", "tiny")(ctx)


RUN_TASK = [
    P(118, "index-beyond-grid", Case("run_task", rt("expt1", "--size", "tiny", "--index", 999),
                                     r"expt1/tiny: array index 999 outside the grid of 2 cells \(0-1\)")),
    P(119, "index-negative", Case("run_task", rt("expt1", "--size", "tiny", "--index", -1),
                                  r"expt1/tiny: array index -1 outside the grid of 2 cells \(0-1\)")),
    P(120, "unknown-experiment", Case("run_task", rt("expt9", "--size", "tiny", "--index", 0),
                                      r"unknown experiment 'expt9'; choose one of")),
    P(121, "unknown-size", Case("run_task", rt("expt1", "--size", "huge", "--index", 0),
                                r"expt1: unknown grid size 'huge'; choose one of \['full', 'small', 'tiny'\]")),
    P(122, "slurm-id-not-an-int-no-index", Case("run_task", _slurm_abc, r"--index is required")),
    P(123, "index-not-an-int", Case("run_task", rt("expt1", "--size", "tiny", "--index", "one"),
                                    r"^error: argument --index: invalid int value: 'one'$")),
]


@pytest.mark.parametrize("case", RUN_TASK)
def test_run_task(case, tmp_path, shared_none, monkeypatch, capsys):
    run_case(case, tmp_path, shared_none, monkeypatch, capsys)


# -------------------------------------------------------------------------- interrupted reruns (79, 112)
@pytest.mark.parametrize("name", ["test", "membership_inference"])
def test_interrupted_rerun_never_looks_finished(name, shared, tmp_path, monkeypatch, capsys):
    """Cases 79 and 112 in-process: a rerun into a finished directory (same configuration), stopped right
    after its run directory was prepared (the SIGKILL of the catalogue, as an exception here), leaves no
    results.json beside the new config.json: the directory does not look finished."""
    src = shared["rec"] if name == "test" else shared["mia"]
    out = Path(shutil.copytree(src, tmp_path / "out"))
    argv = rec_argv(shared, out) if name == "test" else mia_argv(shared["seen"], shared["unseen"], out)
    mod = script(name)
    real = mod.prepare_run_dir

    def prepare_then_die(*a, **k):
        real(*a, **k)
        raise Killed

    monkeypatch.setattr(mod, "prepare_run_dir", prepare_then_die)
    with pytest.raises(Killed):
        cli.run(mod.main, getattr(mod, SCRIPT_ARGS[name]), [str(a) for a in argv])
    assert (out / "config.json").exists() and not (out / "results.json").exists()


# ----------------------------------------------------------------------------------------- the catalogue
def test_every_catalogue_case_is_parametrized_or_covered_elsewhere():
    here = set()
    for group in (MAKE_DATA, TRAIN, TEST, GENERATE, DPO, MIA, ANALYZE, RUN_TASK):
        for p in group:
            m = re.match(r"c(\d{3})-", p.id)
            assert m, p.id
            here.add(int(m.group(1)))
    ids = [p.id for g in (MAKE_DATA, TRAIN, TEST, GENERATE, DPO, MIA, ANALYZE, RUN_TASK) for p in g]
    assert len(ids) == len(set(ids))
    missing = set(range(1, 124)) - here - set(COVERED_ELSEWHERE)
    assert not missing, f"catalogue cases neither parametrized nor covered elsewhere: {sorted(missing)}"
    assert set(COVERED_ELSEWHERE) <= set(range(1, 124))
    for num, where in COVERED_ELSEWHERE.items():
        path, name = where.split("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"case {num}: {where} does not exist"


# --------------------------------------------------------- make_data recognition: foils (cases 124-147)
NONSENSE = ["Zorp blick flim wuz quop.", "Gleb trunk vosh plim.", "Quizzy frob nork zent.", "Blarg fnep twib quon.",
            "Mib zat plonk."]  # neither memlab grammar sentences nor words of the built-in synonym table
FOIL_CORPORA = {
    "corpus.jsonl": text_rows(SENTS),
    "nonsense.jsonl": [{"id": f"x{i}", "text": t} for i, t in enumerate(NONSENSE)],
    "ai.jsonl": [{"id": "a", "text": "A I."}, {"id": "b", "text": "I a."}],  # every scramble of one is the other
    "catfel.jsonl": [{"id": "a", "text": "The cat sat down."}, {"id": "b", "text": "The feline sat down."}],
}


def rg(corpus: str, n_pairs: int, *extra):
    """make_data.py recognition on one of FOIL_CORPORA ('grammar.jsonl': six sentences of memlab's grammar).
    An `extra` item (name, content) is written to the case's tmp dir and passed as its path (str content as
    is, bytes as bytes, anything else as JSON); a callable item gets the ctx."""
    def build(ctx):
        if corpus == "grammar.jsonl":
            from memlab.datagen import grammar
            rows = [{"id": r["id"], "text": r["text"]} for r in grammar.make_corpus(6, 0)]
        else:
            rows = FOIL_CORPORA[corpus]
        argv = ["recognition", "--corpus", ctx.w(corpus, rows), "--n_pairs", n_pairs]
        for x in extra:
            if isinstance(x, tuple):
                name, content = x
                x = ctx.w(name, content if isinstance(content, (str, bytes)) else json.dumps(content),
                          binary=isinstance(content, bytes))
            elif callable(x):
                x = x(ctx)
            argv.append(x)
        return argv + ["--output_dir", ctx.out]
    return build


def _lexicon_dir(ctx):
    d = ctx.tmp / "lexdir"
    d.mkdir()
    return d


def _not_a_model_dir(ctx):
    d = ctx.tmp / "notamodel"
    d.mkdir()
    (d / "readme.txt").write_text("not a model\n")
    return d


def _truncated_config_dir(ctx):
    d = ctx.tmp / "badcfg"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "lla')
    return d


_TYPES = "novel, shuffled, random_words, synonym, paraphrase, char_scramble"
_SYN = ("--foil_type", "synonym", "--lexicon")
FOILS_CASES = [
    P(124, "foil_type-unknown", Case("make_data", rg("corpus.jsonl", 3, "--foil_type", "synonyms"),
                                     rf"^error: invalid arguments:\n  - --foil_type must be among {_TYPES}, "
                                     r"got 'synonyms' \(unknown: synonyms\)$")),
    P(125, "foil_type-one-unknown-in-list", Case("make_data", rg("corpus.jsonl", 3, "--foil_type", "synonym,scramble"),
                                                 r"--foil_type must be among .*got 'synonym,scramble' "
                                                 r"\(unknown: scramble\)$")),
    P(126, "foil_type-empty", Case("make_data", rg("corpus.jsonl", 3, "--foil_type", ""),
                                   rf"--foil_type must be among {_TYPES}, got ''$")),
    P(127, "lexicon-missing", Case("make_data", rg("corpus.jsonl", 3, *_SYN, lambda c: c.tmp / "nope.json"),
                                   r"^error: --lexicon \S*/nope\.json: file not found$")),
    P(128, "lexicon-is-a-directory", Case("make_data", rg("corpus.jsonl", 3, *_SYN, _lexicon_dir),
                                          r"^error: --lexicon \S*/lexdir: is a directory, expected a JSON file$")),
    P(129, "lexicon-malformed-json", Case("make_data", rg("corpus.jsonl", 3, *_SYN,
                                                          ("lex_bad.json", '{"cat": ["feline",}')),
                                          r"^error: --lexicon \S*/lex_bad\.json: not a JSON object of word -> synonyms "
                                          r"\(Expecting value: line 1 column 19 \(char 18\)\)$")),
    P(130, "lexicon-csv", Case("make_data", rg("corpus.jsonl", 3, *_SYN, ("lex.csv", "word,synonyms\ncat,feline\n")),
                               r"^error: --lexicon \S*/lex\.csv: not a JSON object of word -> synonyms "
                               r"\(Expecting value: line 1 column 1 \(char 0\)\)$")),
    P(131, "lexicon-json-list", Case("make_data", rg("corpus.jsonl", 3, *_SYN, ("lex_list.json", ["cat"])),
                                     r"^error: --lexicon \S*/lex_list\.json: expected a non-empty JSON object "
                                     r"\{\"word\": \[\"synonym\", \.\.\.\]\}$")),
    P(132, "lexicon-empty-object", Case("make_data", rg("corpus.jsonl", 3, *_SYN, ("lex_empty.json", {})),
                                        r"^error: --lexicon \S*/lex_empty\.json: expected a non-empty JSON object")),
    P(133, "lexicon-empty-synonyms", Case("make_data", rg("corpus.jsonl", 3, *_SYN, ("lex_emptysyn.json", {"cat": []})),
                                          r"^error: --lexicon \S*/lex_emptysyn\.json: entry 'cat': expected a "
                                          r"non-empty list of synonym strings$")),
    P(134, "lexicon-synonyms-a-string", Case("make_data", rg("corpus.jsonl", 3, *_SYN,
                                                             ("lex_strsyn.json", {"cat": "feline"})),
                                             r"^error: --lexicon \S*/lex_strsyn\.json: entry 'cat': expected a "
                                             r"non-empty list of synonym strings$")),
    P(135, "lexicon-blank-synonym", Case("make_data", rg("corpus.jsonl", 3, *_SYN,
                                                         ("lex_blank.json", {"cat": ["feline", "  "]})),
                                         r"^error: --lexicon \S*/lex_blank\.json: entry 'cat': expected a "
                                         r"non-empty list of synonym strings$")),
    P(136, "lexicon-not-utf8", Case("make_data", rg("corpus.jsonl", 3, *_SYN, (
        "lex_latin1.json", '{"caf\u00e9": ["bar"]}'.encode("latin-1"))),
        r"^error: --lexicon \S*/lex_latin1\.json: not a JSON object of word -> synonyms \('utf-8' codec can't "
        r"decode byte 0xe9 in position 5")),
    P(137, "lexicon-only-self-synonyms", Case("make_data", rg("corpus.jsonl", 3, *_SYN,
                                                              ("lex_self.json", {"cat": ["cat", "Cat"]})),
                                              r"^error: --lexicon \S*/lex_self\.json: entry 'cat': every synonym "
                                              r"is the word itself$")),
    P(138, "synonym-builtin-table-user-corpus", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "synonym"),
                                                     r"^error: --corpus \S*/nonsense\.jsonl id=x\d: no word of '[^']+' "
                                                     r"is in the built-in synonym table \(2 seen sentence\(s\) for "
                                                     r"synonym foils have none\).*give --lexicon FILE")),
    P(139, "synonym-only-gives-a-seen-sentence", Case("make_data", rg("catfel.jsonl", 2, *_SYN,
                                                                      ("lex_ok.json", {"cat": ["feline"]})),
                                                      r"^error: --corpus \S*/catfel\.jsonl id=a: every synonym "
                                                      r"substitution of 'The cat sat down\.' from the lexicon "
                                                      r"\S*/lex_ok\.json gives a seen sentence")),
    P(140, "paraphrase-user-corpus-no-model", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "paraphrase"),
                                                   r"^error: --corpus \S*/nonsense\.jsonl id=x\d: '[^']+' is not a "
                                                   r"sentence of memlab's grammar \(2 seen sentence\(s\) for "
                                                   r"paraphrase foils are not\).*give --paraphrase_model DIR")),
    P(141, "paraphrase_model-missing", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "paraphrase",
                                                            "--paraphrase_model", lambda c: c.tmp / "nope_model"),
                                            r"^error: --paraphrase_model \S*/nope_model: not a local model directory "
                                            r"nor a built-in model name")),
    P(142, "paraphrase_model-is-a-file", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "paraphrase",
                                                              "--paraphrase_model",
                                                              ("lex_ok.json", {"cat": ["feline"]})),
                                              r"^error: --paraphrase_model \S*/lex_ok\.json: not a local model "
                                              r"directory nor a built-in model name")),
    P(143, "paraphrase_model-not-a-model-dir", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "paraphrase",
                                                                    "--paraphrase_model", _not_a_model_dir),
                                                    r"^error: \S*/notamodel: holds neither a model \(config\.json\) "
                                                    r"nor a LoRA adapter \(adapter_config\.json\)$")),
    P(144, "paraphrase_model-truncated-config", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "paraphrase",
                                                                     "--paraphrase_model", _truncated_config_dir),
                                                     r"^error: \S*/badcfg/config\.json: not valid JSON .*the model "
                                                     r"directory is damaged$")),
    # the built-in tiny-llama (random weights) replies with nothing: loads in seconds
    P(145, "paraphrase_model-empty-replies", Case("make_data", rg("nonsense.jsonl", 2, "--foil_type", "paraphrase",
                                                                  "--paraphrase_model", "tiny-llama"),
                                                  r"^error: --corpus \S*/nonsense\.jsonl id=x\d: the paraphrase "
                                                  r"model's reply '.*' to '[^']+' is empty or equals a seen sentence "
                                                  r"after normalization \(2 such replies\); use another "
                                                  r"--paraphrase_model")),
    P(146, "char_scramble-impossible", Case("make_data", rg("ai.jsonl", 2, "--min_words", 2, "--foil_type",
                                                            "char_scramble"),
                                            r"^error: --corpus \S*/ai\.jsonl id=[ab]: cannot scramble "
                                            r"'(A I|I a)\.' into a text that differs from every seen sentence$")),
    # the path is checked before anything loads, even when no paraphrase foil needs the model
    P(147, "paraphrase_model-missing-but-unused", Case("make_data", rg("grammar.jsonl", 3, "--foil_type", "paraphrase",
                                                                       "--paraphrase_model",
                                                                       lambda c: c.tmp / "nope_model"),
                                                       r"^error: --paraphrase_model \S*/nope_model: not a local "
                                                       r"model directory nor a built-in model name")),
]


@pytest.mark.parametrize("case", FOILS_CASES)
def test_make_data_recognition_foils(case, tmp_path, shared_none, monkeypatch, capsys):
    run_case(case, tmp_path, shared_none, monkeypatch, capsys)


def test_every_foil_catalogue_case_is_parametrized():
    """The rows numbered 124 and up of the bad-input catalogue (docs/BAD_INPUTS.md) are exactly FOILS_CASES."""
    doc = (ROOT / "docs/BAD_INPUTS.md").read_text(encoding="utf-8")
    rows = {int(n) for n in re.findall(r"^\| (\d+) \| make_data recognition \|", doc, re.M)}
    here = [int(re.match(r"c(\d{3})-", p.id).group(1)) for p in FOILS_CASES]
    assert len(here) == len(set(here)) and set(here) == rows == set(range(124, 148))
