"""Collect a sweep's results into tidy CSVs and the standard plots.

    python analyze.py runs/expt1            # one experiment's tasks
    python analyze.py runs                  # every experiment below runs/

Reads every task directory (one with cell.json) below RUNS_ROOT and the results.json of its stages.
Writes into RUNS_ROOT/ (atomically): `tidy_recall.csv` (one row per task x checkpoint x tier x temperature),
`tidy_recognition.csv` (task x checkpoint), `tidy_train.csv` (task x exposure: training loss), and
`plots/*.png`. Each CSV row carries the task's grid cell (model, seed, method, mode, ...) so it can be
grouped by any axis. Recall is QA accuracy = 1 - error rate, with the bootstrap 95% CI from generate.py.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from memlab import cli
from memlab.io import DataError, write_csv_atomic, write_text_atomic


@dataclass
class AnalyzeArgs:
    runs_root: Optional[str] = None  # a sweep root (runs/expt1) or a root of several experiments (runs/)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(root: Path) -> dict[str, pd.DataFrame]:
    """Tidy tables from every task below `root` (finished stages only; unfinished tasks contribute what
    they have)."""
    recall, recog, train = [], [], []
    for cell_file in sorted(root.rglob("cell.json")):
        task = cell_file.parent
        c = _load(cell_file) or {}
        cell = {k: v for k, v in c.items() if k not in ("size", "index")}
        cell["task"] = task.name
        r = _load(task / "recall" / "results.json")
        for row in (r or {}).get("error_rates", []):
            recall.append({**cell, **{k: row.get(k) for k in ("checkpoint", "exposure", "step", "tier", "temperature", "n")},
                           "accuracy": 1 - row["error_rate"], "accuracy_ci_low": 1 - row["error_rate_ci_high"],
                           "accuracy_ci_high": 1 - row["error_rate_ci_low"]})
        r = _load(task / "recognition" / "results.json")
        for row in (r or {}).get("checkpoints", []):
            recog.append({**cell, **{k: v for k, v in row.items() if k != "path"}})
        r = _load(task / "train" / "results.json")
        for k, loss in ((r or {}).get("loss_per_exposure") or {}).items():
            train.append({**cell, "exposure": int(k), "train_loss": loss})
    return {"recall": pd.DataFrame(recall), "recognition": pd.DataFrame(recog), "train": pd.DataFrame(train)}


def _series_label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all"


def _varying(df: pd.DataFrame, axes: list[str]) -> list[str]:
    return [a for a in axes if a in df and df[a].nunique() > 1]


def plot_exposures(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Recall (QA accuracy, all tiers, greedy) and recognition (2AFC) against exposures, one line per
    condition (model/method/mode), mean over seeds with the min-max of per-seed CIs as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, rg = tables["recall"], tables["recognition"]
    if rec.empty and rg.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    conds = ["model", "method", "mode"]
    panels = [(axes[0], rec[(rec.tier == "all") & (rec.temperature == 0)] if not rec.empty else rec, "accuracy",
               "accuracy_ci_low", "accuracy_ci_high", "QA recall (accuracy, all tiers, greedy)"),
              (axes[1], rg, "two_afc", "two_afc_ci_low", "two_afc_ci_high", "recognition (2AFC accuracy)")]
    for ax, df, y, lo, hi, title in panels:
        if df.empty:
            ax.set_title(f"{title}: no data")
            continue
        keys = _varying(df, conds) or [k for k in conds if k in df][:1]
        for _, g in df.groupby(keys, sort=True):
            m = g.groupby("exposure").agg(y=(y, "mean"), lo=(lo, "min"), hi=(hi, "max")).reset_index()
            line, = ax.plot(m.exposure, m.y, marker="o", label=_series_label(g.iloc[0], keys))
            ax.fill_between(m.exposure, m.lo, m.hi, alpha=0.15, color=line.get_color())
        ax.set_xlabel("exposures (epochs over the study set)")
        ax.set_ylabel(f"{y.replace('_', ' ')} (fraction, 95% CI band)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if "two_afc" in rg:
        axes[1].axhline(0.5, color="grey", ls="--", lw=1)
    fig.suptitle("Recall and recognition vs exposures")
    fig.tight_layout()
    path = out / "recall_recognition_vs_exposures.png"
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    """Save a figure atomically (a concurrent analyze.py never leaves a torn PNG)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def summary_table(tables: dict[str, pd.DataFrame]) -> str:
    """Recall (all tiers, greedy) and recognition per condition and exposure, as a text table."""
    rec, rg = tables["recall"], tables["recognition"]
    parts = []
    keys = [k for k in ("model", "method", "mode") if k in rec]
    if not rec.empty:
        t = rec[(rec.tier == "all") & (rec.temperature == 0)].groupby(keys + ["exposure"])["accuracy"].mean()
        parts.append(t.rename("qa_recall"))
    if not rg.empty:
        parts.append(rg.groupby(keys + ["exposure"])["two_afc"].mean().rename("recognition_2afc"))
    if not parts:
        return "no finished tasks"
    return pd.concat(parts, axis=1).round(3).to_string()


def main(a: AnalyzeArgs) -> dict:
    cli.collect_errors([(a.runs_root is not None, "RUNS_ROOT is required: python analyze.py runs/expt1")])
    root = Path(a.runs_root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    tables = collect(root)
    if all(df.empty for df in tables.values()):
        raise DataError(f"{root}: no task results found (no cell.json with finished stages below it)")
    written = []
    for name, df in tables.items():
        if not df.empty:
            write_csv_atomic(root / f"tidy_{name}.csv", df)
            written.append(f"tidy_{name}.csv")
    plots = [p for p in [plot_exposures(tables, root / "plots")] if p]
    table = summary_table(tables)
    write_text_atomic(root / "summary.txt", table + "\n")
    print(table)
    print(f"wrote {', '.join(written)} and {len(plots)} plot(s) in {root}")
    return {"csv": written, "plots": [str(p) for p in plots], "summary": table}


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-"):
        argv = ["--runs_root", argv[0]] + argv[1:]
    cli.run(main, AnalyzeArgs, argv)
