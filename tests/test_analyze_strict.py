"""analyze.py reads strictly: a present but broken cell.json / results.json / items.csv / facts.jsonl is one
`error:` line naming the file and exit 2; --skip_broken leaves that cell or stage out, lists it on stderr and
in summary.txt. A stage with no results.json (not run, not finished) is still simply left out.

The runs root is written by hand in the layout of a finished expt1 sweep (no models): two cells (full and
LoRA fine-tuning), each with knownness/, train/results.json and the in-training evaluation
train/eval/{recall,recognition}/ (items.csv + results.json), plus data/facts/facts.jsonl."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from helpers import ROOT, error_line, script
from memlab import cli
from memlab.analysis import plots, summary

FACTS = ("object-0000", "object-0001", "object-0002")
EXPOSURES = (1, 2)
FULL = "model=m_seed=0_method=full_mode=active"
LORA = "model=m_seed=0_method=lora_mode=active"


def write_stage(d, items: list[dict], results: dict):
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(items).to_csv(d / "items.csv", index=False)
    (d / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def qa_items(checkpoints, correct):
    return [{"id": f"{f}-{tier}0", "fact_id": f, "question": "q?", "response": "5", "extracted_answer": "5",
             "answer": "5", "correct": correct(i, k), "error": 1 - correct(i, k), "tier": tier,
             "temperature": 0.0, "repeat": 0, "checkpoint": ck}
            for k, ck in enumerate(checkpoints) for i, f in enumerate(FACTS) for tier in ("easy", "verbatim")]


def qa_results(checkpoints):
    return {"script": "train.py (in-training evaluation)", "mode": "qa", "error_rates": [
        {"checkpoint": ck, "tier": tier, "temperature": 0.0, "error_rate": 0.5, "error_rate_ci_low": 0.2,
         "error_rate_ci_high": 0.8, "n": 3, "path": "in-training", "exposure": e, "step": None}
        for ck, e in zip(checkpoints, EXPOSURES) for tier in ("all", "easy", "verbatim")]}


def make_task(root, name, method):
    task = root / name
    task.mkdir(parents=True)
    (task / "cell.json").write_text(json.dumps({"expt": "expt1", "size": "tiny", "index": 0, "model": "m",
                                                "seed": 0, "method": method, "mode": "active"}, indent=2) + "\n")
    facts = task / "data" / "facts"
    facts.mkdir(parents=True)
    (facts / "facts.jsonl").write_text("".join(json.dumps({"id": f, "fact_id": f, "kind": "novel", "answer": "5",
                                                           "original_answer": None}) + "\n" for f in FACTS))
    base = [dict(r, checkpoint="base") for r in qa_items(["base"], lambda i, k: int(i == 0))]
    write_stage(task / "knownness", base, {"script": "generate.py", "mode": "qa", "error_rates": []})
    (task / "train").mkdir()
    (task / "train" / "results.json").write_text(json.dumps({"loss_per_exposure": {"1": 2.4, "2": 1.2},
                                                             "final_loss": 1.2, "num_exposures": 2}))
    cks = [f"exposure_{e}" for e in EXPOSURES]
    write_stage(task / "train" / "eval" / "recall", qa_items(cks, lambda i, k: int(i <= k)), qa_results(cks))
    rec = [{"id": f"{s}{p}", "pair_id": p, "split": split, "loss": loss - k, "n_tokens": 5, "checkpoint": ck}
           for k, ck in enumerate(cks) for p in ("p1", "p2")
           for s, split, loss in (("s", "seen", 3.0), ("u", "unseen", 2.5))]
    ck = [{"checkpoint": c, "path": "in-training", "exposure": e, "step": None, "two_afc": 0.75, "two_afc_ci_low": 0.5,
           "two_afc_ci_high": 1.0} for c, e in zip(cks, EXPOSURES)]
    write_stage(task / "train" / "eval" / "recognition", rec, {"checkpoints": ck, "n_pairs": 2})
    return task


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "PLOTS_FROM_TABLES", [])  # plots are not under test here (slow)
    monkeypatch.setattr(plots, "PLOTS_FROM_FACTS", [])
    root = tmp_path / "expt1"
    make_task(root, FULL, "full")
    make_task(root, LORA, "lora")
    return root


def truncate(path, keep=0.5):
    text = path.read_text()
    path.write_text(text[: int(len(text) * keep)])


def analyze(root, capsys, *flags):
    """Run analyze.py's entry point in-process: (exit status, stdout, stderr)."""
    mod = script("analyze")
    try:
        cli.run(mod.main, mod.AnalyzeArgs, ["--runs_root", str(root), *flags])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


# the three cases of docs/BAD_INPUTS.md (115, 116, 117): the file to break, how, and what is left out with
# --skip_broken
CASES = {
    "truncated_stage_results": (f"{FULL}/train/eval/recognition/results.json", truncate, "truncated JSON"),
    "stage_results_empty_list": (f"{LORA}/train/eval/recall/results.json", lambda p: p.write_text("[]\n"),
                                 "expected a JSON object, got an empty list"),
    "truncated_cell_json": (f"{LORA}/cell.json", truncate, "truncated JSON"),
}


def test_healthy_root_reads_cleanly(runs, capsys):
    code, out, err = analyze(runs, capsys)
    assert code == 0, err
    assert "warning" not in err and "skipped" not in (runs / "summary.txt").read_text()
    recall = pd.read_csv(runs / "tidy_recall.csv")
    assert set(recall.method) == {"full", "lora"} and recall.accuracy.notna().all()
    assert len(pd.read_csv(runs / "tidy_recognition.csv")) == 4


@pytest.mark.parametrize("case", CASES)
def test_broken_file_is_an_error(runs, capsys, case):
    rel, breaks, problem = CASES[case]
    breaks(runs / rel)
    code, out, err = analyze(runs, capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert str(runs / rel) in line and problem in line and "--skip_broken" in line
    assert not (runs / "summary.txt").exists() and not list(runs.glob("tidy_*.csv"))  # nothing written


@pytest.mark.parametrize("case", CASES)
def test_skip_broken_leaves_it_out_and_says_so(runs, capsys, case):
    rel, breaks, problem = CASES[case]
    breaks(runs / rel)
    code, out, err = analyze(runs, capsys, "--skip_broken")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: --skip_broken: skipped")]
    assert len(warnings) == 1 and rel in warnings[0] and problem in warnings[0]
    summary = (runs / "summary.txt").read_text()
    first = summary.splitlines()[0]
    assert first.startswith("skipped 1 broken input file(s)") and rel in first and problem in first
    recall, recog = pd.read_csv(runs / "tidy_recall.csv"), pd.read_csv(runs / "tidy_recognition.csv")
    assert recall.accuracy.notna().all() and recog.two_afc.notna().all()
    if case == "truncated_stage_results":  # full's recognition left out; its recall and the LoRA cell stay
        assert set(recog.method) == {"lora"} and set(recall.method) == {"full", "lora"}
        assert "recognition" not in set(pd.read_csv(runs / "per_item.csv").query("method == 'full'").stage)
    elif case == "stage_results_empty_list":  # LoRA's recall left out (also from per_item / learning)
        assert set(recall.method) == {"full"} and set(recog.method) == {"full", "lora"}
        items = pd.read_csv(runs / "per_item.csv")
        assert "recall" not in set(items[items.method == "lora"].stage)
    else:  # the whole LoRA cell left out
        assert set(recall.method) == set(recog.method) == {"full"}
        assert "lora" not in summary.split("\n\n", 1)[1]
    assert "full" in summary  # the healthy cell is still summarized


def test_skip_broken_lists_every_file(runs, capsys):
    for rel, breaks, _ in CASES.values():
        breaks(runs / rel)
    code, out, err = analyze(runs, capsys, "--skip_broken")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: --skip_broken: skipped")]
    assert len(warnings) == 2  # LoRA's recall is not even read once its cell.json is broken
    first = (runs / "summary.txt").read_text().splitlines()[0]
    assert first.startswith("skipped 2 broken input file(s)")
    assert CASES["truncated_stage_results"][0] in first and CASES["truncated_cell_json"][0] in first
    assert set(pd.read_csv(runs / "tidy_recall.csv").method) == {"full"}


@pytest.mark.parametrize("rel, breaks, problem", [
    (f"{FULL}/train/eval/recall/items.csv", truncate, "truncated CSV"),
    (f"{FULL}/train/eval/recall/items.csv", lambda p: p.unlink(), "missing"),
    (f"{FULL}/data/facts/facts.jsonl", lambda p: truncate(p, 0.8), "truncated JSON"),
    (f"{FULL}/train/results.json", lambda p: p.write_text('{"loss_per_exposure": [2.4]}'),
     "'loss_per_exposure': expected an object"),
    (f"{FULL}/train/eval/recall/results.json", lambda p: p.write_text('{"error_rates": [{"tier": "all"}]}'),
     "error_rates[0]: missing key(s)"),
    (f"{LORA}/train/eval/recognition/results.json", lambda p: p.write_text('{"n_pairs": 2}'),
     "missing key(s) ['checkpoints']"),
    (f"{LORA}/cell.json", lambda p: p.write_text(""), "empty file"),
])
def test_other_broken_inputs(runs, capsys, rel, breaks, problem):
    breaks(runs / rel)
    code, out, err = analyze(runs, capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert str(runs / rel) in line and problem in line


def test_absent_stage_is_not_an_error(runs, capsys):
    """No results.json: the stage did not run or has not finished (items.csv may already be there)."""
    (runs / LORA / "train" / "eval" / "recognition" / "results.json").unlink()
    for p in (runs / FULL / "knownness").iterdir():
        p.unlink()
    code, out, err = analyze(runs, capsys)
    assert code == 0, err
    assert "warning" not in err and "skipped" not in (runs / "summary.txt").read_text()
    assert set(pd.read_csv(runs / "tidy_recognition.csv").method) == {"full"}


def test_cli_exit_status(runs):
    """The real entry point (positional RUNS_ROOT): exit 2 with one `error:` line naming the file."""
    rel, breaks, problem = CASES["stage_results_empty_list"]
    breaks(runs / rel)
    p = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(runs)], capture_output=True, text=True,
                       cwd=ROOT)
    assert p.returncode == 2 and error_line(p.stderr)
    assert rel in p.stderr and problem in p.stderr


# ------------------------------------------------------------------ what analyze merged (issue 21 item 5)
def _settings(root, values: dict, cells: dict):
    from omegaconf import OmegaConf

    (root / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(
        {"expt": "expt1", "size": "tiny", "grid": {}, "settings": values, "overrides": []})))
    for name, mine in cells.items():
        (root / name / "settings.json").write_text(json.dumps({"overrides": [], **mine}))
        (root / name / "results.json").write_text("{}\n")


def test_a_cell_run_under_another_config_is_left_out_and_listed(runs, capsys):
    _settings(runs, {"num_exposures": 2, "lr_full": 1e-4},
              {FULL: {"num_exposures": 2, "lr_full": 1e-4}, LORA: {"num_exposures": 1, "lr_full": 1e-4}})
    code, out, err = analyze(runs, capsys)
    assert code == 0, err
    recall = pd.read_csv(runs / "tidy_recall.csv")
    assert set(recall.method) == {"full"}  # the stale LoRA cell is not merged
    first = (runs / "summary.txt").read_text().splitlines()[0]
    assert first.startswith("left out 1 stale cell(s)") and LORA in first and "num_exposures: 1 -> 2" in first
    assert "note: left out 1 stale cell(s)" in err
    code, out, err = analyze(runs, capsys, "--include_stale")
    assert code == 0 and set(pd.read_csv(runs / "tidy_recall.csv").method) == {"full", "lora"}
    assert (runs / "summary.txt").read_text().startswith("included 1 stale cell(s)")


def test_unfinished_cells_are_listed(runs, capsys):
    _settings(runs, {"num_exposures": 2}, {FULL: {"num_exposures": 2}})
    code, out, err = analyze(runs, capsys)
    assert code == 0 and f"1 unfinished cell(s) (no results.json; their finished stages are used): {LORA}" in \
        (runs / "summary.txt").read_text()


def test_a_nan_loss_in_recognition_items_is_an_error_naming_the_line(runs, capsys):
    items = runs / FULL / "train" / "eval" / "recognition" / "items.csv"
    lines = items.read_text().splitlines()
    cols = lines[0].split(",")
    row = lines[2].split(",")
    row[cols.index("loss")] = "nan"
    lines[2] = ",".join(row)
    items.write_text("\n".join(lines) + "\n")
    code, out, err = analyze(runs, capsys)
    assert code == 2
    assert "line 3: loss is nan, not a finite number" in error_line(err) and "recognition/items.csv" in err


def test_a_failed_analyze_leaves_the_previous_outputs_whole(runs, capsys, monkeypatch):
    code, _, err = analyze(runs, capsys)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in runs.iterdir() if p.is_file()}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(summary, "summary_table", full_disk)  # fails after the tidy CSVs were written (to the temp dir)
    code, _, err = analyze(runs, capsys)
    assert code == 2 and "No space left on device" in error_line(err) and "previous outputs are unchanged" in err
    assert {p.name: p.read_bytes() for p in runs.iterdir() if p.is_file()} == before
    assert not list(runs.glob(".analyze-*"))


def test_a_read_only_root_is_one_error(runs, capsys):
    import os

    if os.geteuid() == 0:
        import subprocess

        if subprocess.run(["chattr", "+i", str(runs)], capture_output=True).returncode != 0:
            pytest.skip("root ignores permissions and chattr is not available here")
        try:
            code, _, err = analyze(runs, capsys)
        finally:
            subprocess.run(["chattr", "-i", str(runs)], capture_output=True)
    else:
        runs.chmod(0o555)
        try:
            code, _, err = analyze(runs, capsys)
        finally:
            runs.chmod(0o755)
    assert code == 2 and "cannot write the analysis" in error_line(err)


def test_a_second_analyze_waits_for_the_first(runs, capsys):
    """Every array task of a sweep ends with analyze.py on the same root: one at a time, the later one waits."""
    import time

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom memlab import rundir\n"
                               "rundir.lock_dir(sys.argv[1]); print('held', flush=True); time.sleep(3)", str(runs)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.time()
    code, out, err = analyze(runs, capsys)
    holder.wait(timeout=30)
    assert code == 0, err
    assert "is being written by pid" in err and "waiting for it" in err and time.time() - t0 >= 1.5


def test_registries_keep_the_output_order():
    """tidy_*.csv, the plots and summary.txt's blocks come from memlab.analysis's registries, in this order
    (the order of the CSVs in `wrote ...` and of summary.txt's blocks); stages.py loads neither pandas nor
    matplotlib."""
    from memlab.analysis import registries

    tables, table_plots, fact_plots, summaries = registries()
    assert list(tables) == ["mia", "mia_items", "dpo", "recall", "recognition", "train", "sentence_recall",
                            "recognition_by_foil", "retention", "error_rates", "prefix", "prior", "canaries"]
    assert table_plots[-1] is plots.plot_canaries and len(table_plots) == 11
    assert fact_plots == [plots.plot_learning_ecdf, plots.plot_learning_by_knownness, plots.plot_survival,
                          plots.plot_hazard_ratios, plots.plot_detect_vs_recall, plots.plot_decay]  # issue 24
    assert list(summaries) == ["conditions", "learning", "canaries", "foil_types", "difficulty", "forgetting",
                               "detect_vs_recall"]
    code = ("import sys; import memlab.analysis.stages; "
            "sys.exit(bool({'pandas', 'matplotlib'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_mean_lines_without_cis_draw_without_a_band(tmp_path):
    """MIA results scored with --bootstrap 0 (expt4 bootstrap=0) have no auc_ci_* columns: the rank plot is
    drawn (lines without bands), not a KeyError."""
    rows = [{"rank": r, "modules": m, "seed": s, "attack": "loss", "group": "all", "auc": 0.5 + r / 100}
            for r in (4, 16) for m in ("q_proj", "v_proj") for s in (0, 1)]
    path = plots.plot_mia_rank_module({"mia": pd.DataFrame(rows)}, tmp_path)
    assert path is not None and path.stat().st_size > 5_000
