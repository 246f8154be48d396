"""Which facts take longer (memlab/analysis/survival.py): the discrete-time hazard model recovers a known hazard
ratio from simulated facts, Kaplan–Meier equals the textbook values, censored facts are never events, and data
the model cannot be fitted on give one line saying why (never a traceback, never an absurd ratio)."""
import numpy as np
import pandas as pd
import pytest

from memlab.analysis import survival

EXPOSURES = 6


def simulated_learning(hr: float, n_a: int = 110, n_b: int = 90, seeds=(0, 1, 2), rng_seed: int = 0) -> pd.DataFrame:
    """learning.csv rows of facts in two methods; per evaluated exposure, a fact at risk reaches criterion with
    the grouped proportional-hazards probability 1 - exp(-exp(a_t) * hr) for method b (hr = 1 for a);
    never reached by exposure 6: censored there."""
    rng = np.random.default_rng(rng_seed)
    base = np.log(-np.log(1 - np.array([0.10, 0.15, 0.20, 0.20, 0.15, 0.10])))  # a_t per exposure
    rows = []
    for seed in seeds:
        for method, n, ratio in (("a", n_a, 1.0), ("b", n_b, hr)):
            for f in range(n):
                t = next((e + 1 for e in range(EXPOSURES) if rng.random() < 1 - np.exp(-np.exp(base[e]) * ratio)), None)
                rows.append({"expt": "sim", "seed": seed, "method": method, "task": f"seed={seed}_method={method}",
                             "stage": "recall", "fact_id": f"{method}-{f}", "tier": "all",
                             "first_recalled_exposure": t, "exposures_to_criterion": t, "forgetting_events": 0,
                             "n_evaluated_exposures": EXPOSURES + 1, "last_exposure": EXPOSURES})
    return pd.DataFrame(rows)


def hazard_row(learning: pd.DataFrame) -> pd.Series:
    table, notes = survival.difficulty({"learning": learning})
    assert len(table) == 1, notes
    return table.iloc[0]


def test_a_covariate_that_halves_the_hazard_is_found():
    r = hazard_row(simulated_learning(hr=0.5))
    assert r.covariate == "method" and r.level == "b vs a"
    assert r.ci_low < 0.5 < r.ci_high and r.ci_high < 1, r.to_dict()
    assert 0.35 < r.hazard_ratio < 0.7 and r.p_value < 0.001
    assert r.n_facts == 600 and 0 < r.n_events < 600


def test_no_effect_gives_a_ci_around_one_in_most_simulations():
    covered = sum(hazard_row(simulated_learning(hr=1.0, rng_seed=s)).pipe(lambda r: r.ci_low < 1 < r.ci_high)
                  for s in range(10))
    assert covered >= 8  # nominal 95%: 8 of 10 leaves a wide margin on a fixed seed


def test_kaplan_meier_equals_the_textbook_and_censored_facts_are_never_events():
    times = pd.DataFrame({"time": [1, 2, 2, 3, 4, 5], "event": [1, 1, 0, 1, 0, 1], "g": ["x"] * 6})
    curves, p = survival.kaplan_meier(times, "g")
    km = curves["x"]
    # product-limit by hand: t=1: 6 at risk, 1 event; t=2: 5 at risk, 1 event (the fact censored at 2 is still
    # at risk there); t=3: 3 at risk, 1 event; t=4: censored only (no step); t=5: 1 at risk, 1 event
    assert km.time.tolist() == [1, 2, 3, 5]
    assert np.allclose(km.surv, [5 / 6, 5 / 6 * 4 / 5, 5 / 6 * 4 / 5 * 2 / 3, 0.0])
    assert p is None  # one level: no log-rank test
    assert ((km.ci_low <= km.surv) & (km.surv <= km.ci_high)).all()
    learning = simulated_learning(hr=1.0, n_a=20, n_b=20, seeds=(0,))
    t, at_zero = survival.survival_times(learning)
    never = learning.exposures_to_criterion.isna()
    assert at_zero == 0 and t.event.sum() == (~never).sum()  # a fact never at criterion is never an event
    assert (t[t.event == 0].time == EXPOSURES).all()  # ... it is censored at its last evaluated exposure


@pytest.mark.parametrize("change,why", [
    (lambda d: d[d.fact_id.str.endswith(("-1", "-2", "-3"))], "fact(s) at risk (< 10)"),
    (lambda d: d.assign(exposures_to_criterion=None), "0 fact(s) reached criterion (< 3)"),
    (lambda d: d.assign(method="a"), "no covariate varies"),
    (lambda d: d.assign(exposures_to_criterion=np.where(d.method == "b", 1, d.exposures_to_criterion)),
     "method left out of the model: level b separates perfectly"),
])
def test_unfittable_data_is_one_line_saying_why(change, why):
    learning = change(simulated_learning(hr=0.5, seeds=(0,)))
    table, notes = survival.difficulty({"learning": learning})
    assert table.empty and any(why in n for n in notes), notes
    text = survival.survival_summary({"learning": learning})
    assert why in text and "no model fitted" in text
    assert (table.hazard_ratio.abs() < 1e6).all()


def test_facts_known_before_training_are_not_at_risk():
    learning = simulated_learning(hr=1.0, n_a=15, n_b=15, seeds=(0,))
    learning.loc[learning.index[:4], "exposures_to_criterion"] = 0
    t, at_zero = survival.survival_times(learning)
    assert at_zero == 4 and len(t) == len(learning) - 4


def test_fact_covariates_join_from_facts_csv_and_a_collinear_one_is_left_out_by_name():
    learning = simulated_learning(hr=0.5, seeds=(0, 1))
    facts = learning[["task", "fact_id", "method"]].drop_duplicates().assign(
        answer_kind=lambda d: np.where(d.method == "b", "name", "number"),  # = method: cannot be told apart
        answer_tokens=lambda d: np.random.default_rng(0).integers(1, 6, len(d)))  # no effect on learning
    table, notes = survival.difficulty({"learning": learning, "facts": facts.drop(columns="method")})
    assert set(table.covariate) == {"method", "answer_tokens"}, notes
    tokens = table[table.covariate == "answer_tokens"].iloc[0]
    assert tokens.level == "per answer token" and tokens.ci_low < 1 < tokens.ci_high
    assert any("answer_kind left out of the model: determined by the covariates before it" in n for n in notes)
    method = table[table.covariate == "method"].iloc[0]
    assert method.ci_low < 0.5 < method.ci_high < 1
