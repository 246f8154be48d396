"""Metric definitions against hand-computed values (memlab/metrics.py)."""
import numpy as np
import pytest

from memlab import answers, metrics as M


# ------------------------------------------------------------------------------------------ recognition
def test_two_afc_hand_computed():
    # pairs: 1<2 yes, 2<1 no, 3<4 yes -> 2/3; a tie is a miss
    assert M.two_afc_accuracy([1, 2, 3], [2, 1, 4]) == pytest.approx(2 / 3)
    assert M.two_afc_accuracy([1.0], [1.0]) == 0.0
    with pytest.raises(ValueError):
        M.two_afc_accuracy([1, 2], [1])


def test_roc_auc_hand_computed():
    # positives 0.9 and 0.7, negatives 0.8 and 0.6: 0.9 beats both, 0.7 beats 0.6 only -> 3/4
    assert M.roc_auc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert M.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # tie counts half
    assert M.roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    # recognition: AUC of -loss with seen positive; seen losses 1, 3 vs unseen 2, 4 -> (1<2, 1<4, 3<4)/4
    loss_seen, loss_unseen = np.array([1.0, 3.0]), np.array([2.0, 4.0])
    assert M.roc_auc(-np.r_[loss_seen, loss_unseen], [1, 1, 0, 0]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        M.roc_auc([1, 2], [1, 1])


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.integers(0, 2, 40)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert M.roc_auc(s, y) == pytest.approx(brute)


def test_roc_curve_and_tpr_at_fpr():
    fpr, tpr, thr = M.roc_curve([4, 3, 2, 1], [1, 0, 1, 0])
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr[0] == np.inf and thr[1:].tolist() == [4, 3, 2, 1]
    assert M.tpr_at_fpr([4, 3, 2, 1], [1, 0, 1, 0], 0.0) == 0.5
    assert M.tpr_at_fpr([4, 3, 2, 1], [1, 0, 1, 0], 0.5) == 1.0
    # 100 negatives: at 1% FPR one negative may score above the threshold
    scores = np.r_[np.arange(100) / 100, [0.995, 0.985, 0.5]]
    labels = np.r_[np.zeros(100), np.ones(3)]
    assert M.tpr_at_fpr(scores, labels, 0.01) == pytest.approx(2 / 3)
    assert M.tpr_at_fpr(scores, labels, 0.0) == pytest.approx(1 / 3)


def test_bootstrap_ci_hand_computed():
    # replicate the resampling by hand: same generator, same index draws, percentile of the means
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    rng = np.random.default_rng(7)
    means = [x[rng.integers(0, 5, 5)].mean() for _ in range(50)]
    lo, hi = M.bootstrap_ci(np.mean, x, n_boot=50, seed=7)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert M.bootstrap_ci(np.mean, np.full(10, 3.0), n_boot=100) == (3.0, 3.0)
    lo, hi = M.bootstrap_ci(np.mean, np.random.default_rng(1).normal(size=1000), n_boot=1000)
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(1000), rel=0.15)  # normal theory
    assert all(np.isnan(M.bootstrap_ci(np.mean, x, n_boot=0)))


def test_bootstrap_resamples_pairs_for_2afc():
    # every pair has seen < unseen, but seen losses overlap unseen ones across pairs: resampling pairs
    # keeps 2AFC at 1 in every resample, whereas resampling the two arrays independently would not
    seen = np.array([1.0, 2.0, 3.0, 4.0])
    unseen = seen + 0.5
    assert M.bootstrap_ci(M.two_afc_accuracy, seen, unseen, n_boot=200) == (1.0, 1.0)
    lo, _ = M.bootstrap_ci(M.two_afc_accuracy, seen, unseen, n_boot=200, paired=False)
    assert lo < 1.0
    r = M.with_ci(M.two_afc_accuracy, seen, unseen, n_boot=0)
    assert r == {"value": 1.0, "ci_low": None, "ci_high": None}


def test_grouped_means_clusters_rows_by_item():
    rows = [{"id": "a", "g": 1, "v": 1.0}, {"id": "a", "g": 1, "v": 0.0}, {"id": "b", "g": 1, "v": 1.0},
            {"id": "c", "g": 2, "v": None}]
    out = {r["g"]: r for r in M.grouped_means(rows, ["g"], ["v"], "id", n_boot=20)}
    assert out[1]["n"] == 2 and out[1]["n_rows"] == 3
    assert out[1]["v"] == pytest.approx(0.75)  # item means 0.5 and 1.0
    assert out[2]["v"] is None


# --------------------------------------------------------------------------------------------- recall
def test_token_level_recall_metrics():
    assert M.exact_match([1, 2, 3], [1, 2, 3]) == 1.0
    assert M.exact_match([1, 2], [1, 2, 3]) == 0.0
    assert M.token_accuracy([1, 2, 4], [1, 2, 3]) == pytest.approx(2 / 3)
    assert M.token_accuracy([1], [1, 2, 3]) == pytest.approx(1 / 3)  # stopped early: the rest is wrong
    assert M.token_accuracy([9, 2, 3], [1, 2, 3]) == pytest.approx(2 / 3)  # position-wise, not prefix
    assert M.longest_common_prefix([1, 2, 4, 3], [1, 2, 3, 3]) == 2
    assert M.longest_common_prefix([9, 2], [1, 2]) == 0


def test_rouge_l_hand_computed():
    # LCS "the cat on the mat" = 5 words of 6 on both sides -> P = R = F1 = 5/6
    assert M.rouge_l_f1("The cat sat on the mat", "the cat is on the mat.") == pytest.approx(5 / 6)
    # P = 2/2, R = 2/4 -> F1 = 2/3
    assert M.rouge_l_f1("red blue", "red green blue yellow") == pytest.approx(2 / 3)
    assert M.rouge_l_f1("", "something") == 0.0
    assert M.lcs_length("ABCBDAB", "BDCABA") == 4


def test_prompt_text_is_never_credited():
    prompt = "alpha beta gamma delta"
    true_cont = " epsilon zeta"
    # a model that parrots its prompt gets nothing, though the prompt is part of the document
    parroted = prompt
    m = M.recall_metrics([11, 12, 13, 14], [21, 22], parroted, true_cont)
    assert m["exact_match"] == m["token_accuracy"] == m["lcp_tokens"] == m["rouge_l"] == 0
    # the true continuation repeats prompt words: a wrong continuation must still score 0, whereas
    # scoring prompt+continuation against the whole text would give ROUGE-L 0.8
    prompt, true_cont, gen = "red red red red", " blue", " green"
    assert M.rouge_l_f1(gen, true_cont) == 0.0
    assert M.rouge_l_f1(prompt + gen, prompt + true_cont) == pytest.approx(0.8)


def test_prefix_tasks_split_prompt_from_target(tiny_llama):
    from memlab.generation import prefix_tasks
    from memlab.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = tok(text).input_ids
    tasks, skipped = prefix_tasks([{"id": "x", "text": text}, {"id": "short", "text": "hi"}], tok, [4, 200],
                                  max_new_tokens=5)
    (t,) = tasks
    assert t.prompt_ids == ids[:4] and t.target_ids == ids[4:9] and t.suffix_tokens == len(ids) - 4
    assert skipped == {"4": 1, "200": 2}
    tasks, _ = prefix_tasks([{"id": "x", "text": text}], tok, prefix_fraction=0.5, max_new_tokens=0)
    assert tasks[0].prompt_ids + tasks[0].target_ids == ids and len(tasks[0].prompt_ids) == round(len(ids) / 2)


def test_closing_identifier():
    assert M.closing_identifier("[DOC_48213] some text [/DOC_48213]") == "[/DOC_48213]"
    assert M.closing_identifier("[DOC_7] a [DOC_7]") == "[DOC_7]"
    assert M.closing_identifier("[DOC_7] no closing tag") is None
    assert M.closing_identifier("plain text [DOC_7]") is None
    m = M.recall_metrics([1], [2], "and so on [/DOC_1]", "x", closing_id="[/DOC_1]")
    assert m["id_recalled"] == 1.0 and M.recall_metrics([1], [2], "a", "b")["id_recalled"] is None


# ----------------------------------------------------------------------------------------- QA extraction
@pytest.mark.parametrize("response,answer,extracted,correct", [
    # extra digits: a longer number must not match by substring
    ("The code is 123456.", "12345", None, False),
    ("It is 912345 or maybe 12345", "12345", "12345", True),
    # separators
    ("The population is 12,345 people.", "12345", "12345", True),
    ("The population is 12 345 people.", "12345", "12345", True),
    ("It is 12345.", "12,345", "12345", True),
    ("1 234 567 890 is the number", "1234567890", "1234567890", True),
    # several numbers: the first with the answer's digit count
    ("In 2019 there were 54321 cars and 12345 bikes", "12345", "54321", False),
    ("In 2019 there were 12345 visitors", "12345", "12345", True),
    ("Between 1990 and 2019 123 people came", "123", "123", True),
    ("Answer: 7", "7", "7", True),
    # decimals are not integers
    ("About 12345.6 units", "12345", None, False),
    # no number
    ("I do not know.", "12345", None, False),
    ("", "42", None, False),
    # text answers: normalized (case, punctuation, whitespace), on word boundaries
    ("The capital is Paris.", "Paris", "paris", True),
    ("the capital is PARIS!!", "paris", "paris", True),
    ("It is   New-York, of course", "new york", "new york", True),
    ("Parisian food is great", "Paris", None, False),
    ("I think it is Lyon", "Paris", None, False),
])
def test_answer_extraction(response, answer, extracted, correct):
    assert answers.extract_answer(response, answer) == extracted
    assert answers.answer_correct(response, answer) == (extracted, correct)


def test_answer_matchable():
    assert answers.answer_is_matchable("42") and answers.answer_is_matchable("12,345") and answers.answer_is_matchable("Paris")
    assert not answers.answer_is_matchable("") and not answers.answer_is_matchable("?!") and not answers.answer_is_matchable(None)
    assert answers.numeric_answer("12 345") == "12345" and answers.numeric_answer("12a") is None
