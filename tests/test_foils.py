"""The foil designs of make_data.py recognition (synonym, paraphrase, char_scramble next to novel, shuffled,
random_words): each on the shipped corpus and on a user file, the leakage rejection inside each generator,
determinism by seed, bad input (one `error:` line, exit 2), items.csv's foil_type pass-through and analyze.py's
2AFC-by-foil-type table and plot. Deterministic properties only, no model trained."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import make_data
from helpers import ROOT, script
from memlab import evaluation
from memlab.datagen import grammar, leakage, recognition
from memlab.datagen.common import sub_rng
from memlab.datagen.lexicon import BUILTIN_SYNONYMS, read_lexicon
from memlab.io import DataError
from memlab.text import normalize_text

ALL = "novel,shuffled,random_words,synonym,paraphrase,char_scramble"
NEW = ("synonym", "paraphrase", "char_scramble")
USER_SENTENCES = [  # not sentences of memlab's grammar; each holds a word of the built-in synonym table
    "The old ferry crossed the harbour before noon.", "A strange noise woke the village at dawn.",
    "Our team repaired the broken bridge last spring.", "The tiny museum closed its doors in winter.",
    "Two students found a lost wallet on the tram.", "A heavy parcel arrived at the office yesterday.",
    "The bright kite drifted over the frozen lake.", "Several neighbors planted trees along the river.",
]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def dir_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}


def letters(text):
    return sorted(normalize_text(text).replace(" ", ""))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """60 pairs from the shipped corpus, every foil type in turn (10 each), seed 0 twice and seed 1."""
    root = tmp_path_factory.mktemp("foils")
    args = ["recognition", "--n_pairs", "60", "--foil_type", ALL]
    return {name: make_data.main(args + ["--output_dir", str(root / name), "--seed", seed])
            for name, seed in (("a", "0"), ("b", "0"), ("c", "1"))}


@pytest.fixture
def user_corpus(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"n": i, "sentence": s}) + "\n" for i, s in enumerate(USER_SENTENCES)))
    return path


# --------------------------------------------------------------------------------- the shipped corpus
def test_every_foil_type_on_the_shipped_corpus(shipped):
    out = shipped["a"]
    seen, unseen = read_jsonl(out / "seen.jsonl"), read_jsonl(out / "unseen.jsonl")
    assert Counter(u["foil_type"] for u in unseen) == {t: 10 for t in recognition.FOIL_TYPES}
    seen_keys = {normalize_text(s["text"]) for s in seen}
    for s, u in zip(seen, unseen):
        assert s["pair_id"] == u["pair_id"] and normalize_text(u["text"]) not in seen_keys
        if u["foil_type"] == "synonym":
            assert u["synonym"] in BUILTIN_SYNONYMS[u["replaced_word"].lower()]
            removed = Counter(s["text"].split()) - Counter(u["text"].split())
            assert set(w.strip(".,").lower() for w in removed) <= {u["replaced_word"].lower(), "a", "an"}
            assert u["synonym"].lower() in u["text"].lower()
        elif u["foil_type"] == "paraphrase":
            assert u["paraphrase_by"] == "grammar" and u["text"] in grammar.paraphrases(s["text"])
            names = {w.strip(".,") for w in s["text"].split()[1:] if w[:1].isupper()}
            assert all(n in u["text"] for n in names)  # the same people, in another surface form
        elif u["foil_type"] == "char_scramble":
            assert letters(u["text"]) == letters(s["text"])
            assert Counter("".join(sorted(w)) for w in normalize_text(u["text"]).split()) == \
                Counter("".join(sorted(w)) for w in normalize_text(s["text"]).split())
            assert u["source_id"] == s["source_id"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["leakage_check"]["passed"] and "built-in synonym table" in manifest["synonym_lexicon"]
    assert leakage.check_files([out / "seen.jsonl"], [out / "unseen.jsonl"])["passed"]


def test_foils_deterministic_by_seed(shipped):
    assert dir_bytes(shipped["a"]) == dir_bytes(shipped["b"])
    a, c = read_jsonl(shipped["a"] / "unseen.jsonl"), read_jsonl(shipped["c"] / "unseen.jsonl")
    for t in NEW:
        assert [u["text"] for u in a if u["foil_type"] == t] != [u["text"] for u in c if u["foil_type"] == t]


def test_grammar_paraphrases_every_frame():
    corpus = grammar.make_corpus(400, seed=5)
    for row in corpus:
        options = grammar.paraphrases(row["text"])
        assert options, row["text"]
        for p in options:
            assert normalize_text(p) != normalize_text(row["text"]) and p.endswith(".") and p[0].isupper()
    assert grammar.paraphrases("The ferry crossed the harbour.") == []
    assert grammar.paraphrases("Maya found an old lamp in the attic.") == [
        "In the attic, Maya found an old lamp.", "An old lamp was found by Maya in the attic."]
    assert grammar.paraphrases("This morning, Ben ate a cup of tea.")[1] == "A cup of tea was eaten by Ben this morning."


# ------------------------------------------------------------------------- leakage inside the generators
def test_synonym_foil_equal_to_a_seen_sentence_is_redrawn():
    corpus = [{"id": "s1", "text": "Maya found a lamp in the attic."},
              {"id": "s2", "text": "Maya found a light in the attic."}]
    lexicon = {"lamp": ("light",), "light": ("lamp",), "attic": ("loft",)}
    seen, unseen = recognition.make_recognition(corpus, 2, ["synonym"], 0, lexicon=lexicon)
    seen_keys = {normalize_text(s["text"]) for s in seen}
    for u in unseen:
        assert normalize_text(u["text"]) not in seen_keys and u["synonym"] == "loft"
    rng = sub_rng(0, "t")
    assert recognition.synonym_foil("Maya found a lamp.", {"lamp": ("light",)}, rng,
                                    {normalize_text("Maya found a light.")}) is None
    assert recognition.synonym_foil("Ann ate an apple.", {"apple": ("pear",)}, rng)[0] == "Ann ate a pear."


def test_char_scramble_and_paraphrase_redraw_or_refuse():
    # every scramble of "Ab ba" is "ab ba" (itself) or "ba ab" (the other seen sentence): all rejected
    corpus = [{"id": "x", "text": "Ab ba."}, {"id": "y", "text": "Ba ab."}]
    with pytest.raises(DataError, match="id=.*cannot scramble"):
        recognition.make_recognition(corpus, 2, ["char_scramble"], 0, min_words=2)
    text = "Maya found an old lamp in the attic."
    first, second = grammar.paraphrases(text)
    rng = sub_rng(0, "t")
    assert recognition.grammar_paraphrase_foil(text, rng, {normalize_text(first)}) == second
    assert recognition.grammar_paraphrase_foil(text, rng, {normalize_text(first), normalize_text(second)}) is None


def test_model_paraphrase_equal_to_a_seen_sentence_is_refused():
    corpus = [{"id": f"u{i}", "text": s} for i, s in enumerate(USER_SENTENCES)]
    with pytest.raises(DataError, match="equals a seen sentence"):
        recognition.make_recognition(corpus, 4, ["paraphrase"], 0, paraphraser=lambda texts: list(texts))
    seen, unseen = recognition.make_recognition(corpus, 4, ["paraphrase"], 0,
                                                paraphraser=lambda texts: [f"In other words: {t}" for t in texts])
    assert all(u["paraphrase_by"] == "model" and u["text"] == f"In other words: {s['text']}"
               for s, u in zip(seen, unseen))


# ---------------------------------------------------------------------------------------- user corpora
def test_user_corpus_synonym_char_scramble_and_model_paraphrase(tmp_path, user_corpus, monkeypatch):
    calls = []

    def fake_model(model_dir, *a, **k):  # stands in for the local instruct model (no weights in this test)
        calls.append(model_dir)
        return lambda texts: [" ".join(reversed(t.rstrip(".").split())) + "." for t in texts]

    monkeypatch.setattr(recognition, "model_paraphraser", fake_model)
    model_dir = tmp_path / "some_model"  # the path must exist (checked before anything loads)
    model_dir.mkdir()
    out = make_data.main(["recognition", "--corpus", str(user_corpus), "--n_pairs", "6", "--foil_type",
                          "synonym,char_scramble,paraphrase", "--paraphrase_model", str(model_dir),
                          "--output_dir", str(tmp_path / "r")])
    seen, unseen = read_jsonl(out / "seen.jsonl"), read_jsonl(out / "unseen.jsonl")
    assert calls == [str(model_dir)] and [u["foil_type"] for u in unseen] == ["synonym", "char_scramble", "paraphrase"] * 2
    for s, u in zip(seen, unseen):
        assert s["text"] in USER_SENTENCES and normalize_text(s["text"]) != normalize_text(u["text"])
        if u["foil_type"] == "char_scramble":
            assert letters(s["text"]) == letters(u["text"])
        elif u["foil_type"] == "paraphrase":
            assert u["paraphrase_by"] == "model"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["leakage_check"]["passed"] and manifest["paraphrase_prompt"] == recognition.PARAPHRASE_PROMPT
    # without paraphrase pairs the model is never loaded
    calls.clear()
    make_data.main(["recognition", "--corpus", str(user_corpus), "--n_pairs", "3", "--foil_type", "char_scramble",
                    "--paraphrase_model", str(model_dir), "--output_dir", str(tmp_path / "r2")])
    assert calls == []


def test_user_lexicon_file(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Zorbs glimmer under violet moons.\nQuaffles drift past silent ports.\n")
    with pytest.raises(DataError, match=r"id=.*is in the built-in synonym table.*--lexicon FILE"):
        make_data.main(["recognition", "--corpus", str(corpus), "--n_pairs", "2", "--foil_type", "synonym",
                        "--output_dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
    lex = tmp_path / "lex.json"
    lex.write_text(json.dumps({"violet": ["purple"], "silent": ["quiet", "hushed"]}))
    out = make_data.main(["recognition", "--corpus", str(corpus), "--n_pairs", "2", "--foil_type", "synonym",
                          "--lexicon", str(lex), "--output_dir", str(tmp_path / "r")])
    texts = sorted(u["text"] for u in read_jsonl(out / "unseen.jsonl"))
    assert texts[0].startswith("Quaffles drift past") and texts[1] == "Zorbs glimmer under purple moons."
    assert json.loads((out / "manifest.json").read_text())["synonym_lexicon"] == f"--lexicon {lex}"
    lex.write_text(json.dumps({"violet": "purple"}))
    with pytest.raises(DataError, match=r"lex\.json: entry 'violet'"):
        read_lexicon(lex)


def _cli(args, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "make_data.py"), "recognition", *args, "--output_dir", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    return p, out


@pytest.mark.parametrize("case,expected", [
    ("paraphrase_without_model", r"--paraphrase_model DIR"),
    ("unknown_foil_type", r"--foil_type must be among novel, shuffled, random_words, synonym, paraphrase, "
                          r"char_scramble, got 'novel,antonym' \(unknown: antonym\)"),
])
def test_bad_input_one_error_line_exit_2(tmp_path, user_corpus, case, expected):
    import re

    types = {"paraphrase_without_model": "paraphrase", "unknown_foil_type": "novel,antonym"}[case]
    p, out = _cli(["--corpus", str(user_corpus), "--n_pairs", "3", "--foil_type", types], tmp_path)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and re.search(expected, p.stderr), p.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------- items.csv and analyze.py
def test_recognition_rows_pass_foil_type_through():
    class S:
        def __init__(self, loss):
            self.loss, self.n_tokens = loss, 4

    rows = [{"id": "s0", "pair_id": "p0", "split": "seen"}, {"id": "s1", "pair_id": "p1", "split": "seen"},
            {"id": "u0", "pair_id": "p0", "split": "unseen", "foil_type": "synonym"},
            {"id": "u1", "pair_id": "p1", "split": "unseen", "foil_type": "char_scramble"}]
    out = evaluation.recognition_rows(rows, [S(1.0), S(2.0), S(3.0), S(1.5)], "exposure_1")
    assert [r["foil_type"] for r in out] == ["synonym", "char_scramble", "synonym", "char_scramble"]
    plain = evaluation.recognition_rows([{k: v for k, v in r.items() if k != "foil_type"} for r in rows],
                                        [S(1.0)] * 4, "exposure_1")
    assert "foil_type" not in plain[0]


def _items(exposures=(1, 2, 4)):
    """Synthetic recognition items.csv rows: 4 pairs per foil type; at exposure e the first `hits` pairs of
    each type have the seen item below its foil (novel learned fastest, char_scramble from the start)."""
    hits = {"novel": lambda e: min(4, e), "synonym": lambda e: min(4, e // 2), "char_scramble": lambda e: 4}
    rows = []
    for e in exposures:
        for foil, h in hits.items():
            for k in range(4):
                pid = f"{foil}-{k}"
                seen_loss = 1.0 if k < h(e) else 3.0
                rows += [{"id": f"s-{pid}", "pair_id": pid, "split": "seen", "loss": seen_loss, "n_tokens": 5,
                          "checkpoint": f"exposure_{e}", "foil_type": foil},
                         {"id": f"u-{pid}", "pair_id": pid, "split": "unseen", "loss": 2.0, "n_tokens": 5,
                          "checkpoint": f"exposure_{e}", "foil_type": foil}]
    return pd.DataFrame(rows)


def test_foil_type_table():
    from memlab.analysis.tables import foil_type_table

    t = foil_type_table(_items(), n_boot=100)
    assert len(t) == 9 and set(t.n_pairs) == {4}
    got = {(r.foil_type, r.exposure): r.two_afc for r in t.itertuples()}
    assert got[("novel", 1)] == 0.25 and got[("novel", 4)] == 1.0
    assert got[("synonym", 1)] == 0.0 and got[("synonym", 4)] == 0.5 and got[("char_scramble", 2)] == 1.0
    assert (t.two_afc_ci_low <= t.two_afc).all() and (t.two_afc <= t.two_afc_ci_high).all()
    assert foil_type_table(_items().drop(columns="foil_type")).empty


def test_analyze_writes_the_foil_type_table_and_plot(tmp_path):
    analyze = script("analyze")
    root = tmp_path / "expt1"
    for seed in (0, 1):
        task = root / f"model=m_seed={seed}"
        (task / "train" / "eval" / "recognition").mkdir(parents=True)
        (task / "cell.json").write_text(json.dumps({"expt": "expt1", "model": "m", "seed": seed, "method": "full"}))
        d = task / "train" / "eval" / "recognition"
        _items().to_csv(d / "items.csv", index=False)
        cks = [{"checkpoint": f"exposure_{e}", "path": "in-training", "exposure": e, "step": None, "two_afc": 0.5,
                "two_afc_ci_low": 0.2, "two_afc_ci_high": 0.8} for e in (1, 2, 4)]
        (d / "results.json").write_text(json.dumps({"checkpoints": cks, "n_pairs": 12}))
    res = analyze.main(analyze.AnalyzeArgs(runs_root=str(root)))
    assert "tidy_recognition_by_foil.csv" in res["csv"]
    table = pd.read_csv(root / "tidy_recognition_by_foil.csv")
    assert len(table) == 2 * 9 and set(table.foil_type) == {"novel", "synonym", "char_scramble"}
    assert {"model", "seed", "method", "task", "exposure", "two_afc", "two_afc_ci_low"} <= set(table.columns)
    png = root / "plots" / "recognition_by_foil_type.png"
    assert str(png) in res["plots"] and png.stat().st_size > 10_000
    # summary.txt: 2AFC per exposure x foil type (both seeds alike: the mean is each seed's value)
    block = res["summary"].split("Recognition 2AFC by foil type")[1].split("\n\n")[0].splitlines()  # up to the next block
    rows = {int(line.split()[0]): line.split()[1:] for line in block[2:] if line.split()[:1] != ["exposure"]}
    header = block[1].split()
    assert header == ["char_scramble", "novel", "synonym"]
    assert float(rows[1][header.index("novel")]) == 0.25 and float(rows[4][header.index("synonym")]) == 0.5


def test_model_paraphraser_runs_offline_and_greedy():
    """The real path (memlab.models + memlab.generation) on the built-in tiny random model: one string per
    text, the same on a second call (greedy). Its replies are not paraphrases: that is the model's business."""
    paraphrase = recognition.model_paraphraser("tiny-llama", max_new_tokens=8)
    texts = USER_SENTENCES[:3]
    first = paraphrase(texts)
    assert len(first) == 3 and all(isinstance(t, str) for t in first) and paraphrase(texts) == first
    assert recognition.clean_model_paraphrase('\n Paraphrase: "The ferry left early."\nmore') == "The ferry left early."
