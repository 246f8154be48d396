"""Collect a sweep's results into tidy CSVs, per-item and per-fact tables, summary.txt and plots.

    python analyze.py runs/expt1            # one experiment's tasks
    python analyze.py runs                  # every experiment below runs/

Reads every task directory (one with cell.json) below RUNS_ROOT and the results of its finished stages, and
writes into RUNS_ROOT (atomically: a failed or killed run leaves the previous outputs) tidy_<table>.csv,
per_item.csv, learning.csv, summary.txt and plots/*.png. Every output file and column: docs/analysis.md.

Reading is strict: an input that is present but truncated, malformed or of the wrong layout is one `error:`
line naming the file, exit 2, nothing written; `--skip_broken` leaves its task or stage out instead, with a
warning on stderr and a `skipped ...` line at the top of summary.txt.

The work is done in memlab/analysis/; the tables, plots and summary blocks come from its registries, plus
what each experiment module adds (memlab/experiments/exptN_*.py: TABLES, PLOTS, SUMMARIES).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from memlab import cli
from memlab.analysis import derived_tables, registries
from memlab.analysis.items import collect_facts
from memlab.analysis.output import clean_leftovers, write_outputs_atomically, write_tables
from memlab.analysis.readers import BrokenInput, Inputs, cell_status
from memlab.analysis.summary import summary_text
from memlab.analysis.tables import collect
from memlab.experiments.registry import modules as experiment_modules
from memlab.io import DataError, write_text_atomic
from memlab.rundir import lock_dir


@dataclass
class AnalyzeArgs:
    runs_root: Optional[str] = cli.arg(None, "a sweep root (runs/expt1) or a root of several experiments (runs/) "
                                       "whose task directories (those with cell.json) are read; required, and may "
                                       "also be given as the first positional argument")
    include_stale: bool = cli.arg(False, "also merge the cells whose settings.json differs from the sweep root's "
                                  "config.yaml (run under another config, e.g. before a --force on other cells); by "
                                  "default they are left out, and listed in summary.txt either way")
    skip_broken: bool = cli.arg(False, "leave out the cells and stages whose cell.json, results.json, items.csv or "
                                "facts.jsonl is present but unreadable (truncated, malformed, wrong layout) instead "
                                "of failing; each is listed on stderr and in summary.txt")


def all_registries() -> tuple[dict, list, list, dict]:
    """(tidy tables, plots of the tidy tables, plots of per_item/learning, summary blocks): memlab/analysis's,
    then what each experiment module adds, in experiment order (docs/adding_an_experiment.md). A name already
    taken keeps its first definition."""
    tables, table_plots, fact_plots, summaries = registries()
    for module in experiment_modules().values():
        for name, rows in getattr(module, "TABLES", {}).items():
            tables.setdefault(name, rows)
        table_plots += [plot for plot in getattr(module, "PLOTS", ()) if plot not in table_plots]
        for name, block in getattr(module, "SUMMARIES", {}).items():
            summaries.setdefault(name, block)
    return tables, table_plots, fact_plots, summaries


def lock_and_clean(args: AnalyzeArgs) -> Path:
    """The checked root, locked (one analyze per root at a time; array tasks ending together take turns), with
    what a killed analyze left there removed."""
    cli.collect_errors([(args.runs_root is not None, "RUNS_ROOT is required: python analyze.py runs/expt1")])
    root = Path(args.runs_root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    lock_dir(root, wait_s=900)
    clean_leftovers(root)
    return root


def read(root: Path, args: AnalyzeArgs, tables: dict, stale: list[Path]
         ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], list[str]]:
    """(tidy tables, per-item/per-fact tables, lines naming the broken files skipped) of every task below root,
    the stale cells left out unless --include_stale."""
    inputs = Inputs(skip_broken=args.skip_broken, excluded=() if args.include_stale else stale)
    try:
        tidy = collect(root, inputs, tables)
        facts = collect_facts(root, inputs)
        facts.update(derived_tables(facts))
    except BrokenInput as e:
        raise DataError(f"{e} (pass --skip_broken to leave it out)") from None
    skipped = inputs.report(root)
    for line in skipped:
        print(f"warning: --skip_broken: skipped {line}", file=sys.stderr)
    if all(df.empty for df in [*tidy.values(), *facts.values()]):
        raise DataError(f"{root}: no task results found (no cell.json with finished stages below it"
                        + (f"; {len(skipped)} broken file(s) skipped)" if skipped else ")"))
    return tidy, facts, skipped


def report_notes(args: AnalyzeArgs, stale_lines: list[str], unfinished: list[str]) -> list[str]:
    """The notes on what was merged (stale cells, unfinished cells), printed to stderr; returned for summary.txt."""
    notes = []
    if stale_lines:
        notes.append(f"{'included' if args.include_stale else 'left out'} {len(stale_lines)} stale cell(s), run with "
                     f"other settings than config.yaml{'' if args.include_stale else ' (--include_stale merges them)'}: "
                     + "; ".join(stale_lines))
    if unfinished:
        notes.append(f"{len(unfinished)} unfinished cell(s) (no results.json; their finished stages are used): "
                     + ", ".join(unfinished))
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    return notes


def build_outputs(root: Path, tidy: dict, facts: dict, header: list[str], table_plots: list, fact_plots: list,
                  summaries: dict) -> dict:
    """Write the CSVs, the plots and summary.txt (`header` lines first) atomically into root."""
    def build(out: Path) -> dict:
        written = write_tables(out, tidy, facts)
        drawn = [plot(tidy, out / "plots") for plot in table_plots]
        drawn += [plot(facts, out / "plots") for plot in fact_plots]
        plots = [p for d in drawn for p in (d if isinstance(d, list) else [d]) if p]  # one plot may draw several
        table = summary_text(tidy, facts, summaries)
        # first, so nobody reads the tables without knowing what is missing from them or what they merge
        if header:
            table = "\n".join(header) + f"\n\n{table}"
        write_text_atomic(out / "summary.txt", table + "\n")
        return {"csv": written, "plots": [str(root / "plots" / Path(p).name) for p in plots], "summary": table}

    return write_outputs_atomically(root, build)


def main(args: AnalyzeArgs) -> dict:
    root = lock_and_clean(args)
    tables, table_plots, fact_plots, summaries = all_registries()
    stale, stale_lines, unfinished = cell_status(root)
    tidy, facts, skipped = read(root, args, tables, stale)
    notes = report_notes(args, stale_lines, unfinished)
    header = ([f"skipped {len(skipped)} broken input file(s) (--skip_broken): {'; '.join(skipped)}"] if skipped
              else []) + notes
    result = build_outputs(root, tidy, facts, header, table_plots, fact_plots, summaries)
    print(result["summary"])
    print(f"wrote {', '.join(result['csv'])} and {len(result['plots'])} plot(s) in {root}")
    return result


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-"):
        argv = ["--runs_root", argv[0]] + argv[1:]
    cli.run(main, AnalyzeArgs, argv)
