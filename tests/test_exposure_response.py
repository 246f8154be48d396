"""mia_exposure.csv (memlab/analysis/exposure_response.py): membership inference against exposures, joined to the
members' recall. Hand-built per_item frames with known answers (no model): the loss attack's AUC rises as the
members' losses fall and equals memlab.metrics.roc_auc computed here independently; a mia row equals
memlab.attacks.attack_metrics (what tidy_mia.csv holds); recall is joined by item and checkpoint only; the
detectable-before-recallable verdict on handmade curves; degenerate inputs give notes, not tracebacks; and
analyze.py on a hand-written expt1 runs root writes the table with its documented columns, the plot and the
summary block."""
import numpy as np
import pandas as pd
import pytest

from memlab import attacks
from memlab.analysis import exposure_response as er
from memlab.analysis import plots
from memlab.metrics import roc_auc, tpr_at_fpr

CELL = {"expt": "expt1", "model": "m", "seed": 0, "method": "full"}
N_BOOT = 200  # enough for a CI; fast


def task_name(name="t0"):
    return {**CELL, "task": name}


def recognition_frame(n_pairs=20, exposures=(0, 1, 2, 3, 4), drop=0.25, seed=0, task="t0"):
    """Recognition rows (one per pair): foil losses ~ N(3, 0.3); the seen sentence's loss is an independent draw
    from the same distribution minus `drop` nats per exposure (expected AUC 0.5, 0.72, 0.88, 0.96, 0.99 at
    exposures 0..4). Sentence recall: sentence i is recalled at exposure e when i < n_pairs e / 4 (a quarter more
    per exposure), plus a non-member sentence that is always recalled (must not count)."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in exposures:
        seen, foil = rng.normal(3, 0.3, n_pairs) - drop * e, rng.normal(3, 0.3, n_pairs)
        for i in range(n_pairs):
            rows.append({**task_name(task), "stage": "recognition", "checkpoint": f"exposure_{e}", "exposure": e,
                         "item_id": f"seen-{i:04d}", "fact_id": f"pair-{i:04d}", "tier": "recognition",
                         "loss": seen[i], "foil_loss": foil[i], "correct": int(seen[i] < foil[i])})
            rows.append({**task_name(task), "stage": "sentence_recall", "checkpoint": f"exposure_{e}", "exposure": e,
                         "item_id": f"seen-{i:04d}", "fact_id": f"seen-{i:04d}", "tier": "sentence",
                         "correct": int(i < n_pairs * e / 4)})
        rows.append({**task_name(task), "stage": "sentence_recall", "checkpoint": f"exposure_{e}", "exposure": e,
                     "item_id": "other-0000", "fact_id": "other-0000", "tier": "sentence", "correct": 1})
    return pd.DataFrame(rows)


def test_loss_attack_auc_rises_with_exposure_and_equals_roc_auc():
    per_item = recognition_frame(n_pairs=100)
    t = er.mia_exposure({"per_item": per_item}, n_boot=N_BOOT)
    assert list(t.columns) == list(CELL) + ["task"] + er.COLUMNS
    assert list(t.exposure) == [0, 1, 2, 3, 4] and set(t.source) == {"recognition"} and set(t.attack) == {"loss"}
    for r in t.itertuples():
        g = per_item[(per_item.stage == "recognition") & (per_item.exposure == r.exposure)]
        scores, labels = np.r_[-g.loss, -g.foil_loss], np.r_[np.ones(len(g)), np.zeros(len(g))]
        assert r.auc == pytest.approx(roc_auc(scores, labels), abs=1e-12)  # the same numbers, computed here
        assert r.tpr_at_1pct_fpr == pytest.approx(tpr_at_fpr(scores, labels, 0.01), abs=1e-12)
        assert r.auc_ci_low <= r.auc <= r.auc_ci_high and (r.n_members, r.n_nonmembers) == (100, 100)
    auc = t.auc.to_numpy()
    assert auc[0] < 0.6 and auc[-1] > 0.97 and np.all(np.diff(auc) > 0.02) and auc[2] - auc[0] > 0.25
    assert t.auc_ci_low.iloc[0] < 0.5 < t.auc_ci_low.iloc[-1]  # chance before training, detected after
    # the join: members' sentence recall at the same checkpoint = e/4; the always-recalled non-member is not counted
    assert list(t.recall) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0]) and set(t.recall_n) == {100}
    assert set(t.recall_stage) == {"sentence_recall"}


def test_recognition_auc_and_ci_equal_the_in_training_evaluations():
    """The same AUC and pair-bootstrap CI as the recognition evaluation's results.json (tidy_recognition.csv)."""
    from memlab.evaluation import recognition_summary

    per_item = recognition_frame(n_pairs=12, exposures=(1,))
    t = er.mia_exposure({"per_item": per_item}, n_boot=N_BOOT).iloc[0]
    g = per_item[per_item.stage == "recognition"]
    want = recognition_summary(g.loss.to_numpy(), g.foil_loss.to_numpy(), len(g), N_BOOT, 0)
    assert (t.auc, t.auc_ci_low, t.auc_ci_high) == pytest.approx((want["auc"], want["auc_ci_low"],
                                                                   want["auc_ci_high"]), abs=1e-12)
    assert t.auc_ci_high - t.auc_ci_low > 0.05  # a real interval, not a degenerate one


def test_recall_join_is_by_task_item_and_checkpoint():
    """Another task's recall, and recall at another checkpoint, never enter a row."""
    a = recognition_frame(task="a", exposures=(1, 2))
    b = recognition_frame(task="b", exposures=(1, 2), seed=1)
    b.loc[b.stage == "sentence_recall", "correct"] = 1  # task b recalls everything
    t = er.mia_exposure({"per_item": pd.concat([a, b], ignore_index=True)}, n_boot=N_BOOT)
    got = t.set_index(["task", "exposure"]).recall
    assert got[("a", 1)] == pytest.approx(0.25) and got[("a", 2)] == pytest.approx(0.5)
    assert got[("b", 1)] == 1.0 and got[("b", 2)] == 1.0


def mia_frame(k=2, seed=0):
    """membership_inference.py per_item rows at checkpoint exposure_k: 30 ordinary members, 4 canaries with 4
    copies (clearly lower loss) and 30 non-members; attack `zlib` is not run (NaN)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(64):
        split, copies, nll = (("member", 1, rng.normal(2.8, 0.3)) if i < 30 else
                              ("member", 4, rng.normal(1.5, 0.3)) if i < 34 else ("nonmember", 0, rng.normal(3, 0.3)))
        rows.append({**task_name(), "stage": "mia", "checkpoint": f"exposure_{k}", "exposure": k, "item_id": f"x{i}",
                     "split": split, "canary_copies": copies, "loss": nll, "mia_loss": -nll,
                     "mia_min_k_20": -nll - rng.normal(0, 0.5), "mia_zlib": np.nan})
    return pd.DataFrame(rows)


def test_mia_rows_equal_attack_metrics_and_sit_at_epochs_times_copies():
    per_item = mia_frame()
    extraction = pd.DataFrame([{**task_name(), "stage": "extraction", "checkpoint": "exposure_2", "item_id": f"x{i}",
                                "exact_match": float(i < 32)} for i in range(30, 34)])  # canaries: 2 of 4 exact
    t = er.mia_exposure({"per_item": pd.concat([per_item, extraction], ignore_index=True)}, n_boot=N_BOOT)
    assert set(t.attack) == {"loss", "min_k_20"}  # zlib did not run: no row
    assert sorted(zip(t.group, t.copies, t.exposure)) == [("1", 1, 2)] * 2 + [("4", 4, 8)] * 2
    neg = per_item[per_item.split == "nonmember"]
    for r in t.itertuples():
        pos = per_item[(per_item.split == "member") & (per_item.canary_copies == r.copies)]
        want = attacks.attack_metrics(pos[f"mia_{r.attack}"], neg[f"mia_{r.attack}"], N_BOOT, 0)
        for col in ("auc", "auc_ci_low", "auc_ci_high", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "n_members",
                    "n_nonmembers"):
            assert getattr(r, col) == pytest.approx(want[col], abs=1e-12), col
    loss = t[t.attack == "loss"].set_index("copies")
    assert loss.auc[4] > 0.99 and loss.auc[1] < 0.8  # the canaries stand out
    assert loss.recall[4] == 0.5 and loss.recall_n[4] == 4 and loss.recall_stage[4] == "extraction"
    assert loss.recall_n[1] == 0 and np.isnan(loss.recall[1])  # nothing extracted for ordinary members


def facts_frame():
    """expt7-like QA rows: 6 trained known facts and 6 held-out known facts, probes easy, mid, verbatim, at
    exposures 0 and 1. At 1 the trained facts' answer NLL drops by 2 nats; trained fact j answers its easy and
    mid probes correctly when j < 3 (recalled under the majority rule), only its easy one when j == 3 (1 of 2:
    recalled too), none otherwise; no verbatim probe is answered."""
    rng = np.random.default_rng(3)
    rows = []
    for e in (0, 1):
        for j in range(12):
            kind = "known" if j < 6 else "known (held out)"
            for tier in ("easy", "mid", "verbatim"):
                nll = rng.normal(4, 0.2) - (2 if e == 1 and kind == "known" else 0)
                correct = int(e == 1 and tier != "verbatim" and (j < 3 or (j == 3 and tier == "easy")))
                rows.append({**task_name(), "stage": "prior_recall_base" if e == 0 else "prior_recall",
                             "checkpoint": "m" if e == 0 else "exposure_1", "exposure": e,
                             "item_id": f"f{j}-{tier}", "fact_id": f"f{j}", "tier": tier, "temperature": 0.0,
                             "repeat": 0, "correct": correct, "answer_nll": nll, "kind": kind})
    for j in range(2):  # novel facts have no held-out counterpart: never members
        rows.append({**task_name(), "stage": "prior_recall", "checkpoint": "exposure_1", "exposure": 1,
                     "item_id": f"n{j}-easy", "fact_id": f"n{j}", "tier": "easy", "temperature": 0.0, "repeat": 0,
                     "correct": 1, "answer_nll": 0.1, "kind": "novel"})
    return pd.DataFrame(rows)


def test_facts_source_trained_known_vs_held_out():
    t = er.mia_exposure({"per_item": facts_frame()}, n_boot=N_BOOT).set_index(["group", "exposure"])
    assert set(t.index) == {("all", 0), ("all", 1), ("verbatim", 0), ("verbatim", 1)}
    assert set(t.n_members) == {6} and set(t.n_nonmembers) == {6} and set(t.source) == {"facts"}
    assert t.auc[("all", 1)] == 1.0 and t.auc[("verbatim", 1)] == 1.0 and t.auc_ci_low[("all", 1)] > 0.5
    # recall by the group's own probes: 4 of 6 trained facts recalled on the reworded probes, none verbatim
    assert t.recall[("all", 1)] == pytest.approx(4 / 6) and t.recall[("verbatim", 1)] == 0.0
    assert t.recall[("all", 0)] == 0.0 and t.recall_stage[("all", 0)] == "prior_recall_base"


def verdict_table(curves: dict) -> pd.DataFrame:
    """A mia_exposure-like table of loss-attack rows: task -> list of (exposure, auc_ci_low, recall, recall_n)."""
    rows = []
    for task, points in curves.items():
        for e, lo, recall, n in points:
            rows.append({**task_name(task), "source": "recognition", "group": "all", "checkpoint": f"exposure_{e}",
                         "exposure": e, "copies": 1, "attack": "loss", "n_members": 10, "n_nonmembers": 10,
                         "auc": lo + 0.1, "auc_ci_low": lo, "auc_ci_high": min(lo + 0.2, 1), "recall": recall,
                         "recall_n": n, "recall_stage": "sentence_recall"})
    return pd.DataFrame(rows)


def test_first_detectable_vs_first_recallable():
    curves = {
        "yes": [(0, 0.3, 0.0, 10), (1, 0.55, 0.0, 10), (2, 0.7, 0.5, 10), (3, 0.8, 1.0, 10)],
        "yes_never_recalled": [(0, 0.3, 0.0, 10), (1, 0.6, 0.1, 10), (2, 0.7, 0.4, 10)],
        "no": [(0, 0.3, 0.0, 10), (1, 0.45, 0.6, 10), (2, 0.6, 0.9, 10)],
        "tie": [(0, 0.3, 0.0, 10), (1, 0.4, 0.2, 10), (2, 0.51, 0.5, 10)],
        "no_never_detected": [(0, 0.3, 0.0, 10), (1, 0.4, 0.7, 10)],
        "neither": [(0, 0.3, 0.0, 10), (1, 0.5, 0.49, 10)],  # CI low must EXCEED 0.5; recall must reach 0.5
        "confounded": [(0, 0.6, 0.0, 10), (1, 0.9, 0.1, 10)],  # told apart before training
        "known_before": [(0, 0.3, 0.8, 10), (1, 0.9, 0.9, 10)],
        "no_recall": [(1, 0.7, np.nan, 0), (2, 0.9, np.nan, 0)],
    }
    v = er.verdicts(verdict_table(curves)).set_index("task")
    want = {"yes": ("yes", 1, 2), "yes_never_recalled": ("yes", 1, None), "no": ("no", 2, 1), "tie": ("no", 2, 2),
            "no_never_detected": ("no", None, 1), "neither": ("undetermined", None, None),
            "confounded": ("undetermined", 0, None), "known_before": ("undetermined", 1, 0),
            "no_recall": ("undetermined", 1, None)}
    for task, (verdict, d, r) in want.items():
        got = v.loc[task]
        assert got.verdict == verdict, (task, got.why)
        assert (None if pd.isna(got.first_detectable) else int(got.first_detectable)) == d, task
        assert (None if pd.isna(got.first_recallable) else int(got.first_recallable)) == r, task
    assert v.loc["yes"].detect_auc_ci_low == 0.55 and v.loc["yes"].recall_there == 0.5
    assert "both first at exposure 2" in v.loc["tie"].why and "no recall" in v.loc["no_recall"].why
    text = er.detect_recall_summary({"mia_exposure": verdict_table(curves)})
    assert text.startswith("Detectable before recallable?")
    assert "1 (AUC 0.65 [0.55, 0.75])" in text and "2 (recall 0.50)" in text


def test_degenerate_inputs_give_notes_not_tracebacks(tmp_path):
    empty = er.mia_exposure({"per_item": pd.DataFrame()})
    assert empty.empty and er.detect_recall_summary({"mia_exposure": empty}) == ""
    assert plots.plot_detect_vs_recall({"mia_exposure": empty}, tmp_path) is None
    assert er.mia_exposure({}).empty and er.verdicts(empty).empty

    one_pair = recognition_frame(n_pairs=1, exposures=(0, 1))
    no_foils = recognition_frame(n_pairs=5, exposures=(1,), task="nofoil").assign(foil_loss=np.nan)
    mia = mia_frame()
    one_class = mia[mia.split == "member"].assign(task="members_only")  # no non-member at all
    dpo = mia_frame(k=1).assign(task="dpo", checkpoint="epoch_1", exposure=pd.NA)  # not on the exposure axis
    per_item = pd.concat([one_pair, no_foils, one_class, dpo], ignore_index=True)
    t = er.mia_exposure({"per_item": per_item}, n_boot=N_BOOT)
    assert t.empty
    notes = t.attrs["notes"]
    assert any("t0: recognition at exposure_0: no AUC: 1 member(s), 1 non-member(s) (< 2 of each)" in n for n in notes)
    assert any("nofoil: recognition at exposure_1: no AUC: 0 member(s), 0 non-member(s)" in n for n in notes)
    assert any("members_only: mia loss at exposure_2, 1 copies: no AUC: 30 member(s), 0 non-member(s)" in n
               for n in notes)
    assert any("dpo: mia checkpoint(s) epoch_1 not on an exposure axis" in n for n in notes)
    text = er.detect_recall_summary({"mia_exposure": t})
    assert "no AUC" in text and "not on an exposure axis" in text


def test_analyze_writes_table_plot_and_summary(tmp_path, monkeypatch):
    """analyze.py on a hand-written expt1 runs root (test_analyze_strict's cells) whose in-training recognition
    has 8 pairs at exposures 0, 1, 2 (the seen losses fall) and whose sentence recall rises."""
    import test_analyze_strict as strict
    from helpers import script
    from test_docs_columns import DOC, columns_of, undocumented

    monkeypatch.setattr(plots, "PLOTS_FROM_TABLES", [])  # only the plot under test
    monkeypatch.setattr(plots, "PLOTS_FROM_FACTS", [plots.plot_detect_vs_recall])
    root = tmp_path / "expt1"
    for name, method in ((strict.FULL, "full"), (strict.LORA, "lora")):
        task = strict.make_task(root, name, method)
        cks = [f"exposure_{e}" for e in (0, 1, 2)]
        rec = [{"id": f"{s}{p}", "pair_id": f"p{p}", "split": split, "n_tokens": 5, "checkpoint": ck,
                "loss": 3.0 + 0.1 * p + (0.05 - 1.0 * e if split == "seen" else 0.0)}
               for e, ck in enumerate(cks) for p in range(8) for s, split in (("s", "seen"), ("u", "unseen"))]
        strict.write_stage(task / "train" / "eval" / "recognition", rec, {"n_pairs": 8, "checkpoints": [
            {"checkpoint": ck, "exposure": e, "step": None, "two_afc": 0.5} for e, ck in enumerate(cks)]})
        sent = [{"id": f"s{p}", "fact_id": f"s{p}", "checkpoint": ck, "prefix": 0.5, "prefix_tokens": 4, "sample": 0,
                 "exact_match": float(p < 4 * e), "token_accuracy": float(p < 4 * e)}
                for e, ck in enumerate(cks) for p in range(8)]
        strict.write_stage(task / "train" / "eval" / "prefix_recall", sent, {"by_prefix": []})
    analyze = script("analyze")
    res = analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    assert "mia_exposure.csv" in res["csv"] and (root / "plots" / "detect_vs_recall.png").stat().st_size > 10_000
    t = pd.read_csv(root / "mia_exposure.csv")
    assert list(t.columns) == ["expt", "model", "seed", "method", "mode", "task"] + er.COLUMNS
    assert len(t) == 6 and set(t.n_members) == {8}
    full = t[t.method == "full"].set_index("exposure")
    # seen 3.05 + 0.1p vs foil 3.0 + 0.1q: before training a seen sentence beats (is below) only the foils of the
    # later pairs q > p, 28 of 64 (member, non-member) pairs; after one exposure (-1 nat) every seen sentence wins
    assert full.auc[0] == pytest.approx(28 / 64) and full.auc_ci_low[0] < 0.5
    assert full.auc[1] == 1.0 and full.auc[2] == 1.0
    assert list(full.recall) == [0.0, 0.5, 1.0]
    summary = (root / "summary.txt").read_text()
    block = summary[summary.index("Detectable before recallable?"):]
    assert "1 (AUC 1.00 [1.00, 1.00])" in block and "1 (recall 0.50)" in block  # both at 1: not before
    assert "both first at exposure 1" in block
    cols, plot_names = columns_of(root)
    assert not [m for m in undocumented(cols, plot_names, DOC.read_text(encoding="utf-8"))
                if m.startswith(("mia_exposure.csv", "plots: detect"))]
