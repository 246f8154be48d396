"""Per-fact learning events, SliCK knownness and analyze.py's per_item.csv / learning.csv (pure, no models)."""
import json
import math

import pandas as pd
import pytest

from helpers import script
from memlab.analysis.items import collect_facts
from memlab.analysis.stages import HELDOUT_KIND
from memlab.analysis.summary import learning_summary
from memlab.learning import (events_from_sequence, knownness, learned_fraction, learning_events, majority,
                             median_table, median_with_ci, recall_status, recognition_status, slick_category)


def qa_rows(table, tier_probes=None):
    """generate.py-like greedy rows from {(fact, tier, probe): [correct at exposure 1, 2, ...]}; None =
    not evaluated at that exposure."""
    rows = []
    for (fact, tier, probe), seq in table.items():
        for k, c in enumerate(seq, start=1):
            if c is not None:
                rows.append({"id": f"{fact}-{tier}-{probe}", "fact_id": fact, "tier": tier, "temperature": 0.0,
                             "repeat": 0, "correct": int(c), "checkpoint": f"exposure_{k}", "exposure": k})
    return pd.DataFrame(rows)


def events(df):
    ev = learning_events(recall_status(df))
    return {(r.fact_id, r.tier): r for r in ev.itertuples()}


def na(x):
    return x is None or pd.isna(x)


# ------------------------------------------------------------------------------------------ sequences
@pytest.mark.parametrize("recalled, first, criterion, forgetting", [
    ([0, 1, 1, 1, 1], 2, 2, 0),       # learned at 2 and kept
    ([0, 1, 0, 1, 1], 2, 4, 1),       # learned, forgotten, relearned: criterion = relearning point
    ([0, 0, 0, 0, 0], None, None, 0),  # never learned
    ([0, 0, 0, 0, 1], 5, 5, 0),       # recalled only at the last exposure
    ([1, 0, 1, 0, 0], 1, None, 2),    # forgotten at the end: no criterion
    ([1, 1, 1, 1, 1], 1, 1, 0),
])
def test_events_from_sequence(recalled, first, criterion, forgetting):
    ev = events_from_sequence([1, 2, 3, 4, 5], recalled)
    assert ev["first_recalled_exposure"] == first
    assert ev["exposures_to_criterion"] == criterion
    assert ev["forgetting_events"] == forgetting
    assert ev["n_evaluated_exposures"] == 5 and ev["last_exposure"] == 5


def test_events_use_evaluated_exposures_in_order():
    ev = events_from_sequence([10, 0, 3, 1], [1, 0, 1, 0])  # sorted: 0:F 1:F 3:T 10:T
    assert (ev["first_recalled_exposure"], ev["exposures_to_criterion"], ev["last_exposure"]) == (3, 3, 10)
    assert events_from_sequence([], [])["exposures_to_criterion"] is None


def test_majority_rule():
    assert majority([1, 0]) and majority([1]) and majority([1, 1, 0]) and majority([1, 0, 1, 0])
    assert not majority([0]) and not majority([1, 0, 0]) and not majority([])


# ------------------------------------------------------------------------------------- table to events
def test_learning_events_from_items_table():
    df = qa_rows({
        ("f1", "easy", 0): [0, 1, 1, 1],        # learned at 2 and kept
        ("f2", "easy", 0): [1, 0, 1, 1],        # learned, forgotten, relearned
        ("f3", "easy", 0): [0, 0, 0, 0],        # never
        ("f4", "easy", 0): [0, 0, 0, 1],        # only at the last exposure
        # majority with 2 probes: exposure 1: 0/2, exposure 2: 1/2 (recalled), exposure 3: 1/2, exposure 4: 2/2
        ("f5", "mid", 0): [0, 1, 0, 1],
        ("f5", "mid", 1): [0, 0, 1, 1],
        # verbatim evaluated only at exposures 2 and 4; a tier of its own, never in `all`
        ("f1", "verbatim", 0): [None, 1, None, 0],
    })
    # sampled rows are ignored by the greedy rule
    df = pd.concat([df, qa_rows({("f3", "easy", 0): [1, 1, 1, 1]}).assign(temperature=0.5)], ignore_index=True)
    ev = events(df)
    f1 = ev[("f1", "easy")]
    assert (f1.first_recalled_exposure, f1.exposures_to_criterion, f1.forgetting_events) == (2, 2, 0)
    f2 = ev[("f2", "easy")]
    assert (f2.first_recalled_exposure, f2.exposures_to_criterion, f2.forgetting_events) == (1, 3, 1)
    f3 = ev[("f3", "easy")]
    assert na(f3.first_recalled_exposure) and na(f3.exposures_to_criterion) and f3.forgetting_events == 0
    f4 = ev[("f4", "easy")]
    assert (f4.first_recalled_exposure, f4.exposures_to_criterion, f4.forgetting_events) == (4, 4, 0)
    f5 = ev[("f5", "mid")]
    assert (f5.first_recalled_exposure, f5.exposures_to_criterion, f5.forgetting_events) == (2, 2, 0)
    v = ev[("f1", "verbatim")]
    assert v.n_evaluated_exposures == 2 and v.last_exposure == 4
    assert (v.first_recalled_exposure, v.forgetting_events) == (2, 1) and na(v.exposures_to_criterion)
    # unevaluated tiers: no row (f2 has no mid, no verbatim probes)
    assert ("f2", "mid") not in ev and ("f2", "verbatim") not in ev
    # `all` pools the non-verbatim probes: f1 all == f1 easy (its verbatim 0 at exposure 4 does not count)
    a = ev[("f1", "all")]
    assert (a.first_recalled_exposure, a.exposures_to_criterion, a.n_evaluated_exposures) == (2, 2, 4)
    assert {t for _, t in ev} == {"easy", "mid", "verbatim", "all"}


def test_recall_status_keeps_an_only_all_tier_and_drops_stepped_checkpoints():
    df = qa_rows({("f1", "all", 0): [0, 1]})
    df = pd.concat([df, df.iloc[:1].assign(checkpoint="step_0000010", exposure=None)], ignore_index=True)
    st = recall_status(df)
    assert list(st.tier) == ["all", "all"] and list(st.exposure) == [1, 2] and list(st.recalled) == [False, True]


def test_recognition_events():
    rows = []
    seqs = {"p1": [(3.0, 2.0), (2.0, 2.5), (1.5, 2.5)],   # recognized from 2 on
            "p2": [(1.0, 2.0), (3.0, 2.0), (1.0, 2.0)],   # recognized, lost, regained
            "p3": [(2.0, 2.0), (2.5, 2.0), (2.2, 2.1)]}   # never (a tie is not recognition)
    for pair, seq in seqs.items():
        for k, (seen, foil) in enumerate(seq, start=1):
            rows += [{"id": f"s{pair}", "pair_id": pair, "split": "seen", "loss": seen, "exposure": k},
                     {"id": f"u{pair}", "pair_id": pair, "split": "unseen", "loss": foil, "exposure": k}]
    rows.append({"id": "s_lonely", "pair_id": "p4", "split": "seen", "loss": 0.1, "exposure": 1})  # no foil
    st = recognition_status(pd.DataFrame(rows))
    assert set(st.tier) == {"recognition"} and "p4" not in set(st.fact_id)
    row = st[(st.fact_id == "p1") & (st.exposure == 2)].iloc[0]
    assert (row.loss, row.foil_loss, row.item_id, bool(row.recalled)) == (2.0, 2.5, "sp1", True)
    ev = {r.fact_id: r for r in learning_events(st).itertuples()}
    assert (ev["p1"].first_recalled_exposure, ev["p1"].exposures_to_criterion, ev["p1"].forgetting_events) == (2, 2, 0)
    assert (ev["p2"].first_recalled_exposure, ev["p2"].exposures_to_criterion, ev["p2"].forgetting_events) == (1, 3, 1)
    assert na(ev["p3"].first_recalled_exposure) and na(ev["p3"].exposures_to_criterion)


# ------------------------------------------------------------------------------------------- SliCK
@pytest.mark.parametrize("greedy, sampled, category", [
    ([1, 1, 1], [0, 0], "HighlyKnown"),
    ([1], [], "HighlyKnown"),
    ([1, 0, 1], [1, 1], "MaybeKnown"),
    ([0, 1], [0, 0], "MaybeKnown"),
    ([0, 0, 0], [0, 1, 0], "WeaklyKnown"),
    ([0, 0], [0, 0, 0], "Unknown"),
    ([0], [], "Unknown"),
])
def test_slick_category(greedy, sampled, category):
    assert slick_category(greedy, sampled) == category


def test_slick_category_needs_greedy_answers():
    with pytest.raises(ValueError):
        slick_category([], [1])


def knownness_items(spec, checkpoint="smollm2-135m"):
    """generate.py knownness rows from {(fact, tier): (greedy correct per probe, sampled correct list)}."""
    rows = []
    for (fact, tier), (greedy, sampled) in spec.items():
        for p, c in enumerate(greedy):
            rows.append({"id": f"{fact}-{tier}-{p}", "fact_id": fact, "tier": tier, "temperature": 0.0,
                         "repeat": 0, "correct": c, "checkpoint": checkpoint})
        for r, c in enumerate(sampled):
            rows.append({"id": f"{fact}-{tier}-0", "fact_id": fact, "tier": tier, "temperature": 0.5,
                         "repeat": r, "correct": c, "checkpoint": checkpoint})
    return pd.DataFrame(rows)


def test_knownness_table():
    items = knownness_items({
        ("hk", "easy"): ([1], [0] * 8), ("hk", "hard"): ([1], [1] * 8),
        ("hk", "verbatim"): ([0], [0] * 8),                       # verbatim ignored: still HighlyKnown
        ("mk", "easy"): ([1], [1] * 8), ("mk", "hard"): ([0], [0] * 8),
        ("wk", "easy"): ([0], [0] * 7 + [1]), ("wk", "mid"): ([0], [0] * 8),
        ("uk", "easy"): ([0], [0] * 8), ("uk", "verbatim"): ([1], [1] * 8),  # verbatim right: still Unknown
        ("sampled_at_1", "easy"): ([0], []),
    })
    # samples at another temperature do not count unless asked for
    items = pd.concat([items, knownness_items({("sampled_at_1", "easy"): ([], [1])}).assign(temperature=1.0)])
    cats = knownness(items)
    assert cats.to_dict() == {"hk": "HighlyKnown", "mk": "MaybeKnown", "wk": "WeaklyKnown", "uk": "Unknown",
                              "sampled_at_1": "Unknown"}
    assert knownness(items, sampling_temperature=1.0)["sampled_at_1"] == "WeaklyKnown"
    with pytest.raises(ValueError):
        knownness(pd.concat([items, items.assign(checkpoint="exposure_1")]))


# ------------------------------------------------------------------------------------------ summaries
def test_learned_fraction_counts_never_learned_in_denominator():
    assert list(learned_fraction([1, 2, None, float("nan")], [0, 1, 2, 10])) == [0, 0.25, 0.5, 0.5]


def test_median_not_reached():
    m = median_with_ci([1, None, None, None, 2], n_boot=200)
    assert math.isinf(m["median"]) and math.isinf(m["ci_high"]) and m["n_reached"] == 2 and m["n_facts"] == 5
    assert not math.isnan(m["ci_low"])
    m = median_with_ci([1, 2, 3], n_boot=200)
    assert m["median"] == 2 and 1 <= m["ci_low"] <= 2 <= m["ci_high"] <= 3
    t = median_table(pd.DataFrame({"tier": ["easy"] * 3 + ["hard"] * 3,
                                   "exposures_to_criterion": [1, 2, 2, None, None, 5],
                                   "last_exposure": [10] * 6}), ["tier"], n_boot=200)
    text = dict(zip(t.tier, t.text))
    assert text["easy"].startswith("2 [") and text["hard"].startswith(">10 [") and text["hard"].endswith(", >10]")


# --------------------------------------------------------------------------------------- analyze.py
def write_run(d, items: pd.DataFrame, results: dict):
    d.mkdir(parents=True, exist_ok=True)
    items.to_csv(d / "items.csv", index=False)
    (d / "results.json").write_text(json.dumps(results))


def make_task(root, name, method, recall, recog_layout="train/eval"):
    task = root / "expt1" / name
    task.mkdir(parents=True)
    (task / "cell.json").write_text(json.dumps({"expt": "expt1", "size": "tiny", "index": 0, "model": "m",
                                                "seed": 0, "method": method, "mode": "active"}))
    (task / "data" / "facts").mkdir(parents=True)
    (task / "data" / "facts" / "facts.jsonl").write_text(
        "".join(json.dumps({"fact_id": f, "kind": "novel"}) + "\n" for f in ("f1", "f2", "f3")))
    rows = []
    for k, by_fact in enumerate(recall):  # exposure k: {fact: (easy, verbatim) correct}
        for fact, (easy, verb) in by_fact.items():
            for tier, c in (("easy", easy), ("verbatim", verb)):
                rows.append({"id": f"{fact}-{tier}", "fact_id": fact, "question": "q?", "response": "a",
                             "extracted_answer": "a", "answer": "a", "correct": c, "error": 1 - c, "tier": tier,
                             "temperature": 0.0, "repeat": 0, "checkpoint": f"exposure_{k}"})
    rates = [{"checkpoint": f"exposure_{k}", "exposure": k, "step": None, "tier": "all", "temperature": 0.0,
              "n": 3, "error_rate": 0.5, "error_rate_ci_low": 0.2, "error_rate_ci_high": 0.8} for k in range(len(recall))]
    write_run(task / "train" / "eval" / "recall", pd.DataFrame(rows), {"error_rates": rates})
    rec = []
    for k in range(len(recall)):
        for p in ("p1", "p2"):
            rec += [{"id": f"s{p}", "pair_id": p, "split": "seen", "loss": 3.0 - k, "n_tokens": 5,
                     "checkpoint": f"exposure_{k}"},
                    {"id": f"u{p}", "pair_id": p, "split": "unseen", "loss": 2.5, "n_tokens": 5,
                     "checkpoint": f"exposure_{k}"}]
    ck = [{"checkpoint": f"exposure_{k}", "exposure": k, "two_afc": 0.5, "two_afc_ci_low": 0.1,
           "two_afc_ci_high": 0.9} for k in range(len(recall))]
    rec_dir = task / ("train/eval/recognition" if recog_layout == "train/eval" else "recognition")
    write_run(rec_dir, pd.DataFrame(rec), {"checkpoints": ck})
    kn = knownness_items({("f1", "easy"): ([1], [1] * 8), ("f2", "easy"): ([0], [0] * 7 + [1]),
                          ("f3", "easy"): ([0], [0] * 8), ("f3", "verbatim"): ([1], [1] * 8)})
    write_run(task / "knownness", kn, {"error_rates": []})
    return task


def test_analyze_writes_per_item_and_learning(tmp_path):
    analyze = script("analyze")
    recall = [{"f1": (1, 1), "f2": (0, 0), "f3": (0, 1)},   # exposure 0 (before training)
              {"f1": (1, 1), "f2": (1, 1), "f3": (0, 1)},
              {"f1": (1, 1), "f2": (0, 1), "f3": (0, 1)},
              {"f1": (1, 1), "f2": (1, 1), "f3": (0, 1)}]
    make_task(tmp_path, "full_task", "full", recall)
    make_task(tmp_path, "lora_task", "lora", recall, recog_layout="old")  # the older TASK/recognition layout
    root = tmp_path / "expt1"
    res = analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    assert {"per_item.csv", "learning.csv", "tidy_recall.csv", "tidy_recognition.csv"} <= set(res["csv"])
    for plot in ("learning_ecdf.png", "learning_by_knownness.png"):
        assert (root / "plots" / plot).stat().st_size > 10_000
    # tidy tables read both layouts
    assert len(pd.read_csv(root / "tidy_recall.csv")) == 8 and len(pd.read_csv(root / "tidy_recognition.csv")) == 8

    learn = pd.read_csv(root / "learning.csv", dtype={"fact_id": str})
    assert {"method", "task", "stage", "fact_id", "tier", "first_recalled_exposure", "exposures_to_criterion",
            "forgetting_events", "n_evaluated_exposures", "last_exposure", "knownness"} <= set(learn.columns)
    assert set(learn.tier) == {"easy", "all", "verbatim", "recognition"}
    row = learn[(learn.method == "full") & (learn.fact_id == "f2") & (learn.tier == "easy")].iloc[0]
    assert (row.first_recalled_exposure, row.exposures_to_criterion, row.forgetting_events) == (1, 3, 1)
    assert row.knownness == "WeaklyKnown" and row.n_evaluated_exposures == 4 and row.last_exposure == 3
    f1 = learn[(learn.fact_id == "f1") & (learn.tier == "easy")]
    assert set(f1.exposures_to_criterion) == {0} and set(f1.knownness) == {"HighlyKnown"}
    f3 = learn[(learn.fact_id == "f3")]
    assert f3[f3.tier == "easy"].exposures_to_criterion.isna().all()  # verbatim never pooled into `all`
    assert f3[f3.tier == "all"].exposures_to_criterion.isna().all()
    assert (f3[f3.tier == "verbatim"].exposures_to_criterion == 0).all()
    assert set(f3.knownness.dropna()) == {"Unknown"}
    rec = learn[learn.tier == "recognition"]
    assert set(rec.fact_id) == {"p1", "p2"} and set(rec.exposures_to_criterion) == {1}  # 2.0 < 2.5 from exposure 1
    assert rec.knownness.isna().all() and len(learn) == 2 * (3 * 3 + 2)

    items = pd.read_csv(root / "per_item.csv", dtype={"fact_id": str})
    assert set(items.stage) == {"recall", "recognition", "knownness"}
    assert {"task", "method", "checkpoint", "exposure", "step", "item_id", "fact_id", "tier", "temperature",
            "correct", "loss", "foil_loss", "knownness", "kind"} <= set(items.columns)
    r = items[(items.stage == "recognition") & (items.method == "full") & (items.exposure == 1)
              & (items.fact_id == "p1")].iloc[0]
    assert (r.loss, r.foil_loss, r.correct, r.tier, r.item_id) == (2.0, 2.5, 1, "recognition", "sp1")
    assert len(items[items.stage == "knownness"]) == 2 * (4 * 9)  # 4 probes x (1 greedy + 8 samples), 2 tasks
    assert (items[items.stage == "knownness"].exposure == 0).all()
    summary = (root / "summary.txt").read_text()
    assert "Median exposures to criterion" in summary and ">3" in summary
    mtime = (root / "learning.csv").stat().st_mtime_ns
    analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    assert (root / "learning.csv").stat().st_mtime_ns == mtime  # unchanged content: not rewritten


def test_per_item_other_stages(tmp_path):
    """Step-labelled recognition (expt2), membership inference (expt4/6) and prefix recall (expt5) rows."""
    task = tmp_path / "other" / "cell0"
    task.mkdir(parents=True)
    (task / "cell.json").write_text(json.dumps({"expt": "x", "seed": 1}))
    rec = [{"id": f"{s}{p}", "pair_id": p, "split": split, "loss": loss, "n_tokens": 3, "checkpoint": ck}
           for ck in ("exposure_3", "step_0000010") for p in ("a", "b")
           for s, split, loss in (("s", "seen", 1.0), ("u", "unseen", 2.0))]
    write_run(task / "retention_recognition", pd.DataFrame(rec), {"checkpoints": []})
    mia = pd.DataFrame([{"id": "m1", "split": "member", "canary_copies": 2, "checkpoint": "exposure_10",
                         "target_nll": 1.5, "reference_nll": 2.0, "n_tokens": 4, "zlib_bytes": 9, "loss": -1.5,
                         "zlib": 0.1, "min_k_20": -1.0, "ref_diff": 0.5},
                        {"id": "n1", "split": "nonmember", "canary_copies": 0, "checkpoint": "exposure_10",
                         "target_nll": 2.5, "reference_nll": 2.4, "n_tokens": 4, "zlib_bytes": 9, "loss": -2.5,
                         "zlib": 0.2, "min_k_20": -2.0, "ref_diff": -0.1}])
    write_run(task / "mia", mia, {"checkpoints": []})
    prefix = pd.DataFrame([{"id": "d1", "fact_id": "d1", "checkpoint": "exposure_1", "prefix": 8, "prefix_tokens": 8,
                            "sample": 0, "target_tokens": 5, "suffix_tokens": 5, "generated_tokens": 5,
                            "exact_match": 1.0, "token_accuracy": 1.0, "lcp_tokens": 5, "rouge_l": 1.0,
                            "id_recalled": None, "generated": "x", "true_continuation": "x"}])
    write_run(task / "prefix_recall", prefix, {"by_prefix": []})
    facts = collect_facts(tmp_path / "other")
    items = facts["per_item"]
    assert facts["learning"].empty and set(items.stage) == {"retention_recognition", "mia", "prefix_recall"}
    r = items[items.stage == "retention_recognition"]
    assert len(r) == 4 and set(r.correct) == {1} and r[r.checkpoint == "step_0000010"].exposure.isna().all()
    assert set(r[r.checkpoint == "step_0000010"].step) == {10}
    m = items[items.stage == "mia"].set_index("item_id")
    assert m.loc["m1", "loss"] == 1.5 and m.loc["n1", "mia_ref_diff"] == -0.1 and m.loc["m1", "canary_copies"] == 2
    assert "mia_loss" in m and "mia_min_k_20" in m
    p = items[items.stage == "prefix_recall"].iloc[0]
    assert (p.exposure, p.prefix_tokens, p.exact_match) == (1, 8, 1.0)


def test_heldout_known_facts_stay_out_of_the_learning_summary():
    """expt7's held-out known facts are never trained: kept in learning.csv, left out of the summary."""
    rows = [{"method": "full", "stage": "prior_recall", "tier": "all", "fact_id": f"f{i}", "kind": "novel",
             "knownness": "Unknown", "exposures_to_criterion": 2, "first_recalled_exposure": 2,
             "forgetting_events": 0, "n_evaluated_exposures": 3, "last_exposure": 5} for i in range(4)]
    rows += [{**r, "fact_id": f"h{i}", "kind": HELDOUT_KIND, "knownness": "MaybeKnown",
              "exposures_to_criterion": None, "first_recalled_exposure": None} for i, r in enumerate(rows)]
    df = pd.DataFrame(rows)
    for c in ("exposures_to_criterion", "first_recalled_exposure"):
        df[c] = df[c].astype("Int64")
    text = learning_summary({"learning": df})
    line = [x for x in text.splitlines() if x.split()[:2] == ["full", "all"]][0].split()
    assert line[2:4] == ["4", "4"]  # n_facts, n_reached: the 4 trained facts only
    assert "MaybeKnown" not in text  # the held-out facts' category has no trained fact
