"""Forgetting and decay (memlab/analysis/forgetting.py) and the fact covariates of facts.csv
(memlab/analysis/fact_covariates.py): forgetting events, recognition kept and relearning savings on hand-made
per-item tables; decay fits recover the parameters of synthetic power-law and exponential curves and pick the
right form; data too thin to fit give one note, never a traceback."""
import numpy as np
import pandas as pd
import pytest

from memlab.analysis import forgetting
from memlab.analysis.fact_covariates import answer_kind

STEPS = np.array([0, 1, 2, 3, 5, 8, 13, 20, 30, 50])


def qa_rows(task, fact, recalled_at: dict, stage="recall", nll=None):
    """per_item.csv QA rows of one fact (two probes, tier easy, greedy) recalled or not at each exposure."""
    rows = []
    for e, r in recalled_at.items():
        for probe in ("a", "b"):
            rows.append({"expt": "x", "seed": 0, "task": task, "stage": stage, "checkpoint": f"exposure_{e}",
                         "exposure": e, "step": None, "item_id": f"{fact}-{probe}", "fact_id": fact, "tier": "easy",
                         "temperature": 0.0, "repeat": 0, "correct": int(r),
                         "answer_nll": None if nll is None else nll[e]})
    return rows


def pair_rows(task, sentence, pair, recalled: dict, recognized: dict):
    """per_item.csv rows of one studied sentence: its sentence recall and its recognition pair per exposure."""
    rows = []
    for e in recalled:
        base = {"expt": "x", "seed": 0, "task": task, "checkpoint": f"exposure_{e}", "exposure": e, "step": None}
        rows.append({**base, "stage": "sentence_recall", "item_id": sentence, "fact_id": sentence, "tier": "sentence",
                     "repeat": 0, "correct": int(recalled[e])})
        rows.append({**base, "stage": "recognition", "item_id": sentence, "fact_id": pair, "tier": "recognition",
                     "correct": int(recognized[e])})
    return rows


def test_forgetting_events_of_one_sequence():
    ev = forgetting.forgetting_events([0, 1, 2, 3, 5, 8], [False, True, True, False, False, True])
    assert ev == [{"first_recalled_at": 1, "learned_at": 1, "forgotten_at": 3, "relearned_at": 8,
                   "exact_first": True, "exact_relearn": False}]  # 5 -> 8: relearned after 4 to 5 exposures
    two = forgetting.forgetting_events([3, 1, 2, 4], [False, True, False, True])  # any order
    assert [(e["learned_at"], e["forgotten_at"], e["relearned_at"]) for e in two] == [(1, 2, 4)]
    assert forgetting.forgetting_events([1, 2], [True, True]) == []
    # expt7's grid: recalled at 1, lost at 2, back "at 5" (after 1 to 3 exposures): no savings from bounds
    table = forgetting.forgetting_table({"per_item": pd.DataFrame(qa_rows("t0", "f", {0: 0, 1: 1, 2: 0, 5: 1}))})
    r = table[table.tier == "easy"].iloc[0]
    assert (r.relearned_at, r.exposures_to_relearn) == (5, 3) and pd.isna(r.savings)
    assert forgetting.forgetting_events([1, 2], [False, False]) == []


def test_forgetting_table_savings_and_recognition_kept():
    rows = qa_rows("t0", "f1", {0: 0, 1: 0, 2: 1, 3: 0, 4: 1})  # first recall after 2 exposures, relearned in 1
    rows += qa_rows("t0", "f2", {0: 0, 1: 1, 2: 1, 3: 1, 4: 1})  # never forgotten
    rows += pair_rows("t0", "seen-1", "pair-1", {0: 0, 1: 1, 2: 0, 3: 0, 4: 0}, {0: 0, 1: 1, 2: 1, 3: 1, 4: 1})
    rows += pair_rows("t0", "seen-2", "pair-2", {0: 0, 1: 1, 2: 0, 3: 0, 4: 0}, {0: 0, 1: 1, 2: 0, 3: 0, 4: 0})
    per_item = pd.DataFrame(rows)
    table = forgetting.forgetting_table({"per_item": per_item})
    qa = table[(table.stage == "recall") & (table.tier == "easy")]
    assert list(qa.fact_id) == ["f1"]  # f2 was never forgotten
    r = qa.iloc[0]
    assert (r.first_recalled_at, r.learned_at, r.forgotten_at, r.relearned_at) == (2, 2, 3, 4)
    assert (r.exposures_to_first_recall, r.exposures_to_relearn) == (2, 1) and r.savings == pytest.approx(0.5)
    assert pd.isna(r.recognition_kept)  # a QA fact has no recognition pair
    assert set(table[table.stage == "recall"].tier) == {"easy", "all"}  # the pooled tier, as in learning.csv
    sent = table[table.stage == "sentence_recall"].set_index("fact_id")
    assert sent.loc["seen-1", "recognition_kept"] == True  # noqa: E712 (a nullable boolean)
    assert sent.loc["seen-2", "recognition_kept"] == False  # noqa: E712
    assert sent.relearned_at.isna().all() and sent.savings.isna().all()
    rec = table[table.stage == "recognition"]
    assert list(rec.fact_id) == ["pair-2"] and rec.forgotten_at.tolist() == [2]


def simulated_decay(form, a, b, n_facts=200, seed=0, steps=STEPS):
    """Binary recall per fact x step with P(recalled at t) = the form's curve (a fact's draws independent)."""
    rng = np.random.default_rng(seed)
    p = forgetting.FORMS[form](steps.astype(float), a, b)
    t = np.tile(steps, n_facts)
    y = (rng.random((n_facts, len(steps))) < p).astype(float).ravel()
    fact = np.repeat(np.arange(n_facts), len(steps))
    return t, y, fact


@pytest.mark.parametrize("form,a,b", [("power law", 0.9, 0.5), ("exponential", 0.9, 0.08)])
def test_decay_fit_recovers_the_parameters_and_picks_the_form(form, a, b):
    t, y, fact = simulated_decay(form, a, b)
    rows, why = forgetting.fit_decay(t, y, fact, n_boot=100)
    assert why is None
    fits = {r["form"]: r for r in rows}
    assert fits[form]["better"] and not fits[next(f for f in fits if f != form)]["better"]
    best = fits[form]
    assert best["a_ci_low"] < a < best["a_ci_high"], best
    assert best["b_ci_low"] < b < best["b_ci_high"], best
    assert best["b_ci_low"] > 0  # a decay, told from no decay
    assert best["n_facts"] == 200 and best["last_step"] == 50


def test_decay_of_a_continuous_measure():
    rng = np.random.default_rng(1)
    t = np.tile(STEPS, 60).astype(float)
    fact = np.repeat(np.arange(60), len(STEPS))
    y = 0.8 * np.exp(-0.05 * t) + rng.normal(0, 0.05, len(t))
    fits = {r["form"]: r for r in forgetting.fit_decay(t, y, fact, n_boot=100)[0]}
    assert fits["exponential"]["better"] and abs(fits["exponential"]["b"] - 0.05) < 0.01


@pytest.mark.parametrize("t,y,fact,why", [
    (STEPS[:3].repeat(3), np.ones(9) * 0.5, np.tile([0, 1, 2], 3), "fact(s) (< 5)"),
    (np.tile([0, 1], 10), np.zeros(20), np.repeat(np.arange(10), 2), "step(s) evaluated (< 3)"),
    (np.tile(STEPS, 10), np.ones(100), np.repeat(np.arange(10), 10), "no change across steps"),
])
def test_decay_too_thin_to_fit_is_a_note(t, y, fact, why):
    rows, note = forgetting.fit_decay(t, y, fact)
    assert rows == [] and why in note


def test_decay_table_from_retention_rows_and_its_summary():
    t, y, fact = simulated_decay("power law", 0.95, 0.6, n_facts=40, seed=3)
    rows = []
    for step, recalled, f in zip(t, y, fact):
        for probe in ("a", "b"):
            rows.append({"expt": "expt2", "seed": 0, "study_exposures": 5, "task": "t0", "stage": "retention_recall",
                         "checkpoint": "exposure_0" if step == 0 else f"step_{step:07d}",
                         "exposure": 0 if step == 0 else None, "step": None if step == 0 else step,
                         "item_id": f"f{f}-{probe}", "fact_id": f"f{f}", "tier": "easy", "temperature": 0.0,
                         "repeat": 0, "correct": int(recalled), "answer_nll": 0.2 + 0.1 * step})
    facts = {"per_item": pd.DataFrame(rows)}
    table = forgetting.decay_table(facts)
    assert set(table.measure) == {"recall", "answer_probability"} and set(table.group) == {"all"}
    assert table.groupby("measure").better.sum().tolist() == [1, 1]
    prob = table[(table.measure == "answer_probability") & (table.form == "exponential")].iloc[0]
    assert prob.b == pytest.approx(0.1, abs=1e-4) and prob.better  # exp(-(0.2 + 0.1 t)) is exactly exponential
    facts["decay"] = table
    facts["forgetting"] = forgetting.forgetting_table(facts)
    text = forgetting.forgetting_summary(facts)
    assert "retention_recall recall (all): power law" in text and "better fit:" in text
    assert "retention_recall/all:" in text  # forgetting events counted on the step axis
    assert facts["forgetting"].time_axis.eq("step").all()


@pytest.mark.parametrize("answer,attribute,kind", [
    ("52056", "catalog number", "number"), ("3", "atomic number", "number"), ("1,234.5", None, "number"),
    ("1963", "year", "date"), ("1963", "catalog number", "number"), ("12 May 1990", None, "date"),
    ("May 12, 1990", None, "date"), ("1990-05-12", None, "date"), ("Helsinki", "capital", "name"),
    ("Marie Curie", None, "name"), ("Republic of the Congo", None, "name"), ("blue", "colour", "word"),
    ("ice cream", None, "word"), ("H2O", None, "other"), ("", None, "other"), (None, None, "other"),
])
def test_answer_kind(answer, attribute, kind):
    assert answer_kind(answer, attribute) == kind
