"""The analysis of a sweep (analyze.py is its command line; every output file and column: docs/analysis.md).

- stages.py: where each stage's results are (`stage_dir`, the one stage -> directory map) and the stage-name
  groups; standard library only.
- readers.py: the strict reads (`Inputs`, `BrokenInput`), and `cell_status` (stale and unfinished cells).
- tables.py: the tidy tables (`TABLES`: name -> rows of one task; `collect`), `foil_type_table`.
- items.py: per_item.csv and learning.csv (`collect_facts`).
- canaries.py: memorization vs canary copies (`canary_table`, tidy_canaries.csv rows).
- summary.py: summary.txt's blocks (`SUMMARIES`).
- plots.py: every plot (`PLOTS_FROM_TABLES`, `PLOTS_FROM_FACTS`); the only module that imports matplotlib.
- survival.py: which facts take longer (Kaplan–Meier, log-rank, discrete-time hazard model: difficulty.csv).
- fact_covariates.py: facts.csv, each fact's covariates (answer kind and length, prior answer NLL, variants, copies).
- forgetting.py: forgetting.csv (forgetting events, recognition kept, relearning savings) and decay.csv (power law
  vs exponential decay against interference steps).
- exposure_response.py: mia_exposure.csv, membership inference against exposures beside the members' recall.
- output.py: writing the outputs atomically.

`registries()` gives analyze.py what it builds; an experiment module can add its own tables, plots and
summary blocks to them.
"""
from __future__ import annotations


def derived_tables(facts: dict) -> dict:
    """Tables computed from per_item/learning/facts, written beside them (<name>.csv when not empty), in order
    (each sees the ones before it): difficulty.csv (hazard ratios of learning: survival.py), forgetting.csv and
    decay.csv (forgetting.py), mia_exposure.csv (membership inference against exposures: exposure_response.py)."""
    # imported here: statsmodels and scipy only when there is something to analyze
    import pandas as pd

    from memlab.analysis import exposure_response, forgetting, survival

    derived = [
        ("difficulty", lambda f: survival.difficulty(f)[0]),
        ("forgetting", forgetting.forgetting_table),
        ("decay", forgetting.decay_table),
        ("mia_exposure", lambda f: exposure_response.mia_exposure(f)),
    ]
    out = dict(facts)
    for name, table in derived:
        out[name] = table(out)
    # where there was something to analyze, an empty difficulty/forgetting table is written as a header alone, so
    # "no fact was forgotten" is not read as "not analysed" (summary.txt says why a model was not fitted)
    if not facts.get("learning", pd.DataFrame()).empty:
        for name in ("difficulty", "forgetting"):
            out[name].attrs["write_empty"] = True
    return {name: out[name] for name, _ in derived}


def registries() -> tuple[dict, list, list, dict]:
    """(tidy tables: name -> rows_fn(task, cell, inputs), plots of the tidy tables, plots of per_item/learning,
    summary.txt blocks: name -> fn(tables, facts)), fresh copies of the modules' defaults in their order; the
    tidy tables end with `canaries`."""
    # imported here, not at the top: importing memlab.analysis.stages must not load pandas and matplotlib
    from memlab.analysis import canaries, plots, summary, tables

    return ({**tables.TABLES, "canaries": canaries.canary_rows}, list(plots.PLOTS_FROM_TABLES),
            list(plots.PLOTS_FROM_FACTS), dict(summary.SUMMARIES))
