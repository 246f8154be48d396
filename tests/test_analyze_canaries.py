"""analyze.py's memorization-vs-duplication table (tidy_canaries.csv), plot (plots/canaries_by_copies.png) and
summary block, on hand-written expt4 task directories (no models): mia/items.csv + results.json in the layout of
membership_inference.py, extraction/items.csv + results.json in the layout of generate.py --mode prefix.

Scores are chosen so every number is known: members with 4 copies score above every non-member (AUC 1, TPR 1),
members with 16 copies below every non-member (AUC 0, TPR 0), ordinary members (1 copy) in between."""
import json

import numpy as np
import pandas as pd
import pytest

from helpers import script
from memlab import attacks, cli
from memlab.analysis import plots
from memlab.analysis.canaries import canary_table
from memlab.metrics import roc_auc

NONMEMBER_LOSS = [-2.0, -2.2, -2.4, -2.6, -2.8]  # `loss` = -NLL: higher = member
MEMBERS = [("m-ord-0", 1, -2.1), ("m-ord-1", 1, -2.5), ("m-ord-2", 1, -3.5),
           ("m-c4-0", 4, -0.5), ("m-c4-1", 4, -0.9),      # above every non-member
           ("m-c16-0", 16, -5.0), ("m-c16-1", 16, -6.0)]  # below every non-member
CHECKPOINT = "exposure_3"


def mia_items(copies: bool = True) -> list[dict]:
    rows = [{"id": i, "source_id": f"s-{i}", "split": "member", "canary_copies": c, "checkpoint": CHECKPOINT,
             "target_nll": -loss, "reference_nll": 4.0, "n_tokens": 8, "zlib_bytes": 40, "loss": loss,
             "zlib": loss / 40, "min_k_20": 2 * loss} for i, c, loss in MEMBERS]
    rows += [{"id": f"n-{k}", "source_id": f"s-n{k}", "split": "nonmember", "canary_copies": 0,
              "checkpoint": CHECKPOINT, "target_nll": -loss, "reference_nll": 4.0, "n_tokens": 8, "zlib_bytes": 40,
              "loss": loss, "zlib": loss / 40, "min_k_20": 2 * loss} for k, loss in enumerate(NONMEMBER_LOSS)]
    if not copies:  # your own members: membership_inference.py gives every member 1
        for r in rows:
            r["canary_copies"] = 1 if r["split"] == "member" else 0
    return rows


# canary id -> [(sample, exact_match, token_accuracy)]: 4 copies: one of two extracted (0.5), token accuracy
# (1.0 + (0.2 + 0.6) / 2) / 2 = 0.7 (the second canary's two samples averaged first); 16 copies: both
EXTRACTION = {"m-c4-0": [(0, 1.0, 1.0)], "m-c4-1": [(0, 0.0, 0.2), (1, 0.0, 0.6)],
              "m-c16-0": [(0, 1.0, 1.0)], "m-c16-1": [(0, 1.0, 1.0)]}


def extraction_items() -> list[dict]:
    return [{"id": i, "fact_id": i, "checkpoint": CHECKPOINT, "prefix": 0.5, "prefix_tokens": 4, "sample": s,
             "target_tokens": 5, "suffix_tokens": 5, "generated_tokens": 5, "exact_match": em, "token_accuracy": ta,
             "generated": "x", "true_continuation": "y"} for i, samples in EXTRACTION.items() for s, em, ta in samples]


def write_stage(d, items: list[dict], results: dict):
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(items).to_csv(d / "items.csv", index=False)
    (d / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def make_task(root, rank: int, extraction: bool = True, copies: bool = True):
    task = root / f"model=m_seed=0_rank={rank}_modules=q_proj"
    task.mkdir(parents=True)
    (task / "cell.json").write_text(json.dumps({"expt": "expt4", "size": "tiny", "index": 0, "model": "m",
                                                "seed": 0, "rank": rank, "modules": "q_proj"}))
    items = mia_items(copies)
    names = ["loss", "zlib", "min_k_20"]
    results = {"script": "membership_inference.py", "n_members": len(MEMBERS), "n_nonmembers": len(NONMEMBER_LOSS),
               "checkpoints": [{"checkpoint": CHECKPOINT, "attacks": attacks.evaluate_attacks(items, names, 0)}]}
    write_stage(task / "mia", items, results)
    if extraction:
        write_stage(task / "extraction", extraction_items(),
                    {"script": "generate.py", "mode": "prefix", "by_prefix": []})
    return task


@pytest.fixture
def analyze():
    return script("analyze")


@pytest.fixture
def quiet_plots(analyze, monkeypatch):
    """Only the canary plot is drawn (the others are not under test here and slow)."""
    monkeypatch.setattr(plots, "PLOTS_FROM_TABLES", [plots.plot_canaries])
    monkeypatch.setattr(plots, "PLOTS_FROM_FACTS", [])
    return analyze


def group(t: pd.DataFrame, copies: int, attack: str = "loss") -> pd.Series:
    (row,) = [r for _, r in t[(t.attack == attack) & (t.canary_copies == copies)].iterrows()]
    return row


def test_canary_table_groups():
    t = canary_table(pd.DataFrame(mia_items()), pd.DataFrame(extraction_items()), n_boot=50)
    assert len(t) == 3 * 3  # attacks x copies groups, one checkpoint
    assert set(t.canary_copies) == {1, 4, 16} and set(t.checkpoint) == {CHECKPOINT} and (t.exposure == 3).all()
    assert list(t.groupby("canary_copies").n_members.first()) == [3, 2, 2] and (t.n_nonmembers == 5).all()
    above, below = group(t, 4), group(t, 16)
    assert above.auc == 1.0 and above.tpr_at_1pct_fpr == 1.0 and above.tpr_at_10pct_fpr == 1.0
    assert above.auc_ci_low == above.auc_ci_high == 1.0
    assert below.auc == 0.0 and below.tpr_at_1pct_fpr == 0.0 and below.tpr_at_10pct_fpr == 0.0
    ordinary = group(t, 1)  # -2.1 beats 4 of 5 non-members, -2.5 beats 2, -3.5 none: 6 / 15
    assert ordinary.auc == pytest.approx(6 / 15)
    assert ordinary.auc_ci_low <= ordinary.auc <= ordinary.auc_ci_high
    assert ordinary.tpr_at_1pct_fpr == 0.0  # 5 non-members: 1% FPR = no false positive; -2.1 < -2.0
    # extraction: only for canaries; per canary its samples are averaged first
    assert pd.isna(ordinary.extraction_exact_match) and pd.isna(ordinary.extraction_n)
    assert above.extraction_n == 2 and above.extraction_exact_match == 0.5
    assert above.extraction_token_accuracy == pytest.approx(0.7)
    assert below.extraction_exact_match == 1.0 and below.extraction_token_accuracy == 1.0
    assert above.extraction_prefix == "0.5"
    assert (t.groupby("canary_copies").extraction_exact_match.nunique(dropna=False) == 1).all()  # same per attack


def test_agrees_with_membership_inference_results():
    """Same score orientation and definitions as membership_inference.py's results.json by_canary_copies."""
    items = mia_items()
    ref = attacks.evaluate_attacks(items, ["loss", "zlib", "min_k_20"], 0)
    t = canary_table(pd.DataFrame(items), n_boot=0)
    for attack, res in ref.items():
        for c, g in res["by_canary_copies"].items():
            row = group(t, int(c), attack)
            assert row.auc == pytest.approx(g["auc"]) and row.tpr_at_1pct_fpr == pytest.approx(g["tpr_at_1pct_fpr"])
            assert row.n_members == g["n_members"] and row.n_nonmembers == g["n_nonmembers"]
    members = [r for r in items if r["split"] == "member" and r["canary_copies"] == 1]
    nonmembers = [r for r in items if r["split"] == "nonmember"]
    scores = [r["loss"] for r in members + nonmembers]
    labels = [1] * len(members) + [0] * len(nonmembers)
    assert group(t, 1).auc == pytest.approx(roc_auc(scores, labels))
    assert pd.isna(t.extraction_exact_match).all()  # no extraction given


def test_no_copies_information_gives_no_rows():
    assert canary_table(pd.DataFrame(mia_items(copies=False))).empty
    assert canary_table(pd.DataFrame(mia_items()).drop(columns="canary_copies")).empty
    assert canary_table(None).empty and canary_table(pd.DataFrame()).empty


def test_non_finite_attack_is_left_out():
    df = pd.DataFrame(mia_items())
    df["ref_diff"] = np.nan  # no reference model: the column is there but empty
    t = canary_table(df, n_boot=0)
    assert set(t.attack) == {"loss", "zlib", "min_k_20"}


def test_analyze_writes_table_plot_and_summary(tmp_path, quiet_plots):
    analyze = quiet_plots
    root = tmp_path / "expt4"
    make_task(root, 4)
    make_task(root, 16, extraction=False)  # a cell without extraction still gets its MIA rows
    res = analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    assert "tidy_canaries.csv" in res["csv"]
    t = pd.read_csv(root / "tidy_canaries.csv")
    assert {"expt", "model", "seed", "rank", "modules", "task", "checkpoint", "attack", "canary_copies", "n_members",
            "auc", "auc_ci_low", "auc_ci_high", "tpr_at_1pct_fpr", "tpr_at_10pct_fpr", "extraction_exact_match",
            "extraction_token_accuracy"} <= set(t.columns)
    assert len(t) == 2 * 3 * 3 and set(t["rank"]) == {4, 16}
    r4, r16 = t[t["rank"] == 4], t[t["rank"] == 16]
    assert group(r4, 4).extraction_exact_match == 0.5 and group(r16, 4).auc == 1.0
    assert r16.extraction_exact_match.isna().all() and group(r16, 16).auc == 0.0
    png = root / "plots" / "canaries_by_copies.png"
    assert str(png) in res["plots"] and png.stat().st_size > 10_000
    summary = (root / "summary.txt").read_text()
    assert "Memorization vs canary copies" in summary and "tidy_canaries: 18 rows" in summary


def test_user_members_without_copies_no_rows_no_error(tmp_path, quiet_plots):
    analyze = quiet_plots
    root = tmp_path / "expt4"
    make_task(root, 4, copies=False)
    res = analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    assert "tidy_mia.csv" in res["csv"] and "tidy_canaries.csv" not in res["csv"]
    assert not (root / "tidy_canaries.csv").exists() and not (root / "plots" / "canaries_by_copies.png").exists()
    assert "Memorization vs canary copies" not in (root / "summary.txt").read_text()


def test_broken_extraction_is_strict_or_skipped(tmp_path, quiet_plots, capsys):
    analyze = quiet_plots
    root = tmp_path / "expt4"
    task = make_task(root, 4)
    items = task / "extraction" / "items.csv"
    items.write_text(items.read_text()[:-20])  # truncated
    with pytest.raises(SystemExit) as e:
        cli.run(analyze.main, analyze.AnalyzeArgs, ["--runs_root", str(root)])
    assert e.value.code == 2 and str(items) in capsys.readouterr().err
    cli.run(analyze.main, analyze.AnalyzeArgs, ["--runs_root", str(root), "--skip_broken"])
    t = pd.read_csv(root / "tidy_canaries.csv")
    assert len(t) == 9 and t.extraction_exact_match.isna().all()  # MIA rows stay, the extraction is left out
    assert "extraction/items.csv" in (root / "summary.txt").read_text().splitlines()[0]


def test_roc_lowest_fpr_is_one_over_the_non_members():
    """plots/mia_roc.png's rule: a curve's FPR-0 points are drawn at 1/n_nonmembers, the axis starts at the
    smallest such 1/n of the curves."""
    fig, ax = plots.plt.subplots()
    plots._roc_lines(ax, [("four", [0.9, 0.8, 0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0, 0, 0]),
                          ("eight", [0.9] + [k / 10 for k in range(8)], [1] + [0] * 8)])
    four, eight = ax.get_lines()[:2]
    assert min(four.get_xdata()) == pytest.approx(1 / 4) and min(eight.get_xdata()) == pytest.approx(1 / 8)
    assert ax.get_xlim()[0] == pytest.approx(1 / 8) and ax.get_xscale() == "log"
    plots.plt.close(fig)
