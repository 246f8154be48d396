"""Every column of every CSV that analyze.py writes is documented in docs/analysis.md (issue 23), and so is
every plot. Nothing heavy runs: no model is loaded.

The rule, applied to docs/analysis.md:
- a CSV's section is the heading (any level) whose text holds the file name in backticks (`tidy_recall.csv`),
  down to the next heading of the same or a higher level;
- a column is documented when its name appears in backticks in its file's section, or in the section
  "Cell axes" (the grid axes and `task`, which start every table and are documented there once);
- a backticked name with `<...>` placeholders documents every column it matches (`mia_<attack>` documents
  `mia_loss`, `min_k_<k>` documents `min_k_20`);
- a plot is documented when its file name appears in backticks in the section "Plots".

Where the column lists come from:
1. tests/data/analyze_columns.json: the header of every CSV (and the name of every plot) that analyze.py
   wrote for tiny runs of all seven experiments (every stage of every pipeline, real tiny models). Regenerate
   it after running each template at the tiny size into one root, e.g.
       for t in scripts/expt[1-7]_*.sh; do MEMLAB_GRID=tiny MEMLAB_RUNS_ROOT=/tmp/base-runs bash $t; done
       python tests/test_docs_columns.py /tmp/base-runs > tests/data/analyze_columns.json
2. analyze.py's `main`, run here on the hand-written runs roots of the suite (tests/test_analyze_strict.py's
   expt1 cells and tests/test_analyze_canaries.py's expt4 cells, no models): whatever it writes today.
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "analysis.md"
FIXTURE = ROOT / "tests" / "data" / "analyze_columns.json"
CELL_AXES_SECTION = "Cell axes"
PLOTS_SECTION = "Plots"
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
TICKED = re.compile(r"`([^`\n]+)`")


def sections(text: str) -> list[tuple[int, str, str]]:
    """(level, heading text, body down to the next heading of the same or a higher level) of every heading,
    fenced code skipped."""
    lines, heads, fenced = text.split("\n"), [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = HEADING.match(line) if not fenced else None
        if m:
            heads.append((i, len(m.group(1)), m.group(2)))
    out = []
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
        out.append((level, title, "\n".join(lines[i + 1:end])))
    return out


def names_in(body: str) -> set[str]:
    """The backticked names of a section (a span with commas or spaces is split into its names)."""
    return {w for span in TICKED.findall(body) for w in re.split(r"[\s,]+", span) if w}


def matches(column: str, names: set[str]) -> bool:
    if column in names:
        return True
    for n in names:
        if "<" in n:
            pattern = "".join(".+" if p.startswith("<") else re.escape(p) for p in re.split(r"(<[^>]*>)", n) if p)
            if re.fullmatch(pattern, column):
                return True
    return False


def undocumented(columns: dict[str, list[str]], plots: list[str], text: str) -> list[str]:
    """'file: column' for every column (and 'plots: name' for every plot) the page does not document."""
    secs = sections(text)
    axes = set().union(*[names_in(body) for _, title, body in secs if title == CELL_AXES_SECTION])
    plot_names = set().union(*[names_in(body) for _, title, body in secs if title == PLOTS_SECTION])
    out = []
    for file, cols in sorted(columns.items()):
        own = [body for _, title, body in secs if f"`{file}`" in title]
        if not own:
            out.append(f"{file}: no section (a heading with `{file}` in backticks)")
            continue
        names = set().union(*map(names_in, own))
        out += [f"{file}: {c}" for c in cols if not matches(c, names) and c not in axes]
    out += [f"plots: {p}" for p in plots if p not in plot_names]
    return out


def columns_of(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """{csv file name: its columns, in order of first appearance} over every CSV directly in `root` and in its
    experiment folders, and the plot names under their plots/."""
    cols: dict[str, list[str]] = {}
    for f in sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv")):
        with f.open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        seen = cols.setdefault(f.name, [])
        seen += [c for c in header if c not in seen]
    plots = sorted({p.name for p in list(root.glob("plots/*.png")) + list(root.glob("*/plots/*.png"))})
    return cols, plots


def test_columns_of_real_runs_are_documented():
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len(fixture["csv"]) >= 15, sorted(fixture["csv"])  # every table of the seven experiments
    missing = undocumented(fixture["csv"], fixture["plots"], DOC.read_text(encoding="utf-8"))
    assert not missing, "not documented in docs/analysis.md (see this file's docstring for the rule):\n  " + \
        "\n  ".join(missing)


def test_columns_analyze_writes_now_are_documented(tmp_path):
    """analyze.py's main on the suite's hand-written expt1 and expt4 runs roots: every CSV it writes, every
    column and every plot is documented."""
    from helpers import script
    from memlab import attacks
    import test_analyze_canaries
    import test_analyze_strict

    root = tmp_path / "runs"
    test_analyze_strict.make_task(root / "expt1", test_analyze_strict.FULL, "full")
    test_analyze_strict.make_task(root / "expt1", test_analyze_strict.LORA, "lora")
    for rank, extraction in ((4, True), (16, False)):
        task = test_analyze_canaries.make_task(root / "expt4", rank, extraction=extraction)
        # with the bootstrap CIs membership_inference.py writes by default (the fixture's n_boot=0 leaves them
        # empty, which the expt4 plots cannot draw)
        results = json.loads((task / "mia" / "results.json").read_text())
        results["checkpoints"][0]["attacks"] = attacks.evaluate_attacks(
            test_analyze_canaries.mia_items(), ["loss", "zlib", "min_k_20"], 20)
        (task / "mia" / "results.json").write_text(json.dumps(results))
    analyze = script("analyze")
    res = analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    cols, plots = columns_of(root)
    assert set(res["csv"]) == set(cols) and {"tidy_recall.csv", "tidy_canaries.csv", "learning.csv",
                                              "per_item.csv", "tidy_mia_items.csv"} <= set(cols), sorted(cols)
    missing = undocumented(cols, plots, DOC.read_text(encoding="utf-8"))
    assert not missing, "not documented in docs/analysis.md (see this file's docstring for the rule):\n  " + \
        "\n  ".join(missing)


def test_the_rule_reports_what_is_not_documented():
    """The check can fail: a column whose only mention is removed, a column documented in another file's
    section, a file without a section and an undocumented plot are reported; cell axes and placeholders
    document what they should."""
    page = "\n".join([
        "# analysis", "## Cell axes", "| `expt` | `seed` |",
        "## `tidy_a.csv`", "| `checkpoint` | `mia_<attack>` | `loss_ci_low`, `loss_ci_high` |",
        "### more of tidy_a", "`deep`",
        "## `tidy_b.csv`", "`other`",
        "## Plots", "`a.png`"])
    cols = {"tidy_a.csv": ["expt", "seed", "checkpoint", "mia_loss", "loss_ci_low", "loss_ci_high", "deep",
                           "other", "gone"],
            "tidy_c.csv": ["expt"]}
    assert undocumented(cols, ["a.png", "b.png"], page) == [
        "tidy_a.csv: other", "tidy_a.csv: gone", "tidy_c.csv: no section (a heading with `tidy_c.csv` in backticks)",
        "plots: b.png"]
    # the real page without one column's documentation fails
    text = DOC.read_text(encoding="utf-8")
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert "`train_loss`" in text
    missing = undocumented(fixture["csv"], fixture["plots"], text.replace("`train_loss`", "train loss"))
    assert missing == ["tidy_train.csv: train_loss"], missing


if __name__ == "__main__":  # python tests/test_docs_columns.py RUNS_ROOT > tests/data/analyze_columns.json
    found, found_plots = columns_of(Path(sys.argv[1]))
    print(json.dumps({"source": "headers of the CSVs and names of the plots analyze.py wrote for tiny runs of "
                                "scripts/expt1..7 (tests/test_docs_columns.py)",
                      "csv": found, "plots": found_plots}, indent=1))
