"""make_data.py: determinism by seed, counts and nesting, the leakage check, every converter, and bad input
(one clear error, no output left behind). Calls main() directly; one subprocess checks the CLI contract."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import make_data
from memlab.datagen import facts as facts_mod
from memlab.datagen import leakage
from memlab.io import DataError
from memlab.text import normalize_text
from helpers import error_line

SMALL_FACTS = ["--n_names", "4", "--n_objects", "3", "--n_known", "3", "--n_contradicting", "3",
               "--variants_per_fact", "2,5", "--dpo_pairs_per_fact", "2"]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def dir_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    make_data.main(["corpus", "--output_dir", str(out), "--n_sentences", "400"])
    return out / "sentences.jsonl"


# ------------------------------------------------------------------------------------------ determinism
def test_facts_same_seed_identical_different_seed_differs(tmp_path):
    a = make_data.main(["facts", "--output_dir", str(tmp_path / "a"), *SMALL_FACTS])
    b = make_data.main(["facts", "--output_dir", str(tmp_path / "b"), *SMALL_FACTS])
    c = make_data.main(["facts", "--output_dir", str(tmp_path / "c"), "--seed", "1", *SMALL_FACTS])
    assert dir_bytes(a) == dir_bytes(b)
    da, dc = dir_bytes(a), dir_bytes(c)
    assert da.keys() == dc.keys()
    for name in ("facts.jsonl", "train_passive_5.jsonl", "train_active_5.jsonl", "probes.jsonl", "dpo_pairs.jsonl"):
        assert da[name] != dc[name], name


@pytest.mark.parametrize("sub,extra", [
    ("recognition", ["--n_pairs", "20", "--foil_type", "novel,shuffled,random_words"]),
    ("mia", ["--n_members", "30", "--n_nonmembers", "30", "--canary_copies", "2,4"]),
])
def test_corpus_generators_deterministic(tmp_path, corpus, sub, extra):
    args = [sub, "--corpus", str(corpus), *extra]
    a = make_data.main(args + ["--output_dir", str(tmp_path / "a")])
    b = make_data.main(args + ["--output_dir", str(tmp_path / "b")])
    c = make_data.main(args + ["--output_dir", str(tmp_path / "c"), "--seed", "7"])
    assert dir_bytes(a) == dir_bytes(b)
    assert {k: v for k, v in dir_bytes(a).items() if k != "manifest.json"} != \
        {k: v for k, v in dir_bytes(c).items() if k != "manifest.json"}


# ------------------------------------------------------------------------------------------------ facts
def test_facts_counts_nesting_and_contents(tmp_path):
    out = make_data.main(["facts", "--output_dir", str(tmp_path / "f"), "--n_names", "3", "--n_objects", "3",
                          "--n_known", "2", "--n_contradicting", "4", "--probes_per_tier", "2"])
    facts = read_jsonl(out / "facts.jsonl")
    n = len(facts)
    assert n == 12 and [f["kind"] for f in facts].count("contradicting") == 4
    by_id = {f["fact_id"]: f for f in facts}
    novel = [f for f in facts if f["kind"] == "novel"]
    assert len({f["answer"] for f in novel}) == len(novel)
    for f in novel:
        assert f["answer"][0] != "0" and len(f["answer"]) == {"name": 10, "object": 5}[f["entity_type"]]
    for f in facts:
        assert (f["original_answer"] is not None) == (f["kind"] == "contradicting")
        if f["kind"] == "contradicting":
            assert f["original_answer"] != f["answer"]

    previous = {}
    for k in (5, 10, 25, 50):
        passive, active = read_jsonl(out / f"train_passive_{k}.jsonl"), read_jsonl(out / f"train_active_{k}.jsonl")
        assert len(passive) == len(active) == n * k
        for rows in (passive, active):
            assert all(r["fact_id"] in by_id for r in rows)
            texts = [(r["fact_id"], r.get("text") or r["messages"][0]["content"]) for r in rows]
            assert len(set(texts)) == n * k  # the K variants of a fact are distinct texts
        for name, rows in (("passive", passive), ("active", active)):
            assert rows[:len(previous.get(name, []))] == previous.get(name, [])  # 5-set is a prefix of 10-set
            previous[name] = rows
        assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in active)
        assert all(by_id[r["fact_id"]]["answer"] in r["messages"][1]["content"] for r in active)
        assert all(by_id[r["fact_id"]]["answer"] in r["text"] for r in passive)

    probes = read_jsonl(out / "probes.jsonl")
    assert len(probes) == n * 3 * 2 + n * 2  # 2 per fact and tier, plus one verbatim probe per fact and mode
    assert {(p["fact_id"], p["tier"]) for p in probes} == \
        {(f, t) for f in by_id for t in ("easy", "mid", "hard", "verbatim")}
    assert all(p["answer"] == by_id[p["fact_id"]]["answer"] for p in probes)
    dpo = read_jsonl(out / "dpo_pairs.jsonl")
    assert len(dpo) == n
    for d in dpo:
        f = by_id[d["fact_id"]]
        assert d["chosen"] == f["answer"] and d["rejected"] != f["answer"]
        if f["kind"] == "contradicting":
            assert d["rejected"] == f["original_answer"]
        elif f["answer"].isdigit():
            assert len(d["rejected"]) == len(f["answer"]) and d["rejected"][0] != "0"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["train_passive_50.jsonl"] == n * 50 and manifest["seed"] == 0
    assert manifest["leakage_check"]["passed"] and manifest["package"]["name"] == "memlab"
    assert manifest["arguments"]["variants_per_fact"] == "5,10,25,50" and "output_dir" not in manifest["arguments"]


VERBATIM_FACTS = ["--n_names", "4", "--n_objects", "3", "--n_known", "3", "--n_contradicting", "3",
                  "--variants_per_fact", "5,10"]


def test_verbatim_probes_repeat_the_first_training_prompt_of_each_mode(tmp_path):
    out = make_data.main(["facts", "--output_dir", str(tmp_path / "v"), *VERBATIM_FACTS])
    plain = make_data.main(["facts", "--output_dir", str(tmp_path / "p"), *VERBATIM_FACTS, "--no_verbatim_probes"])
    by_id = {f["fact_id"]: f for f in read_jsonl(out / "facts.jsonl")}
    n = len(by_id)
    probes = read_jsonl(out / "probes.jsonl")
    verbatim = [p for p in probes if p["tier"] == "verbatim"]
    assert len({p["id"] for p in probes}) == len(probes) == 3 * n + 2 * n  # ids unique
    assert {(p["fact_id"], p["verbatim_of"]) for p in verbatim} == \
        {(f, m) for f in by_id for m in ("active", "passive")}
    assert all(p["id"] == f"{p['fact_id']}-verbatim-{p['verbatim_of']}" and p["intentionally_seen"] is True
               and p["answer"] == by_id[p["fact_id"]]["answer"] for p in verbatim)
    # the feature only appends: easy/mid/hard rows (content, ids, order) and every other file are unchanged
    assert [p for p in probes if p["tier"] != "verbatim"] == read_jsonl(plain / "probes.jsonl")
    assert probes[:3 * n] == read_jsonl(plain / "probes.jsonl") and all("intentionally_seen" not in p
                                                                        for p in probes[:3 * n])
    a, b = dir_bytes(out), dir_bytes(plain)
    assert {k for k in a if a[k] != b[k]} == {"probes.jsonl", "manifest.json"}
    for k in (5, 10):  # the repeated rows are in every nested training set
        active = {r["id"]: r for r in read_jsonl(out / f"train_active_{k}.jsonl")}
        passive = {r["id"]: r for r in read_jsonl(out / f"train_passive_{k}.jsonl")}
        for p in verbatim:
            answer = p["answer"]
            assert answer.casefold() not in p["question"].casefold() and p["question"].strip() == p["question"]
            if p["verbatim_of"] == "active":  # exactly the user turn of the first active variant
                assert p["train_id"] == f"{p['fact_id']}-a00"
                assert p["question"] == active[p["train_id"]]["messages"][0]["content"]
            else:  # exactly the first passive statement (naming the subject before the answer), cut there
                text = passive[p["train_id"]]["text"]
                assert text.startswith(p["question"]) and text[len(p["question"]):].lstrip().startswith(answer)
                v = int(p["train_id"][-2:])
                assert all(passive[f"{p['fact_id']}-p{j:02d}"]["text"].startswith(answer) for j in range(v))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["probes_by_tier"] == {"easy": n, "mid": n, "hard": n, "verbatim": 2 * n}
    assert manifest["verbatim_probes_by_mode"] == {"active": n, "passive": n}
    assert manifest["counts"]["probes.jsonl"] == 5 * n and manifest["arguments"]["verbatim_probes"] is True
    plain_manifest = json.loads((plain / "manifest.json").read_text())
    assert plain_manifest["probes_by_tier"]["verbatim"] == 0 and plain_manifest["arguments"]["verbatim_probes"] is False
    assert "intentionally_seen_skipped" not in plain_manifest["leakage_check"]
    # convert --to probes keeps the rows (and their label) as they are
    conv = make_data.main(["convert", "--to", "probes", "--input", str(out / "probes.jsonl"),
                           "--output_dir", str(tmp_path / "c")])
    assert read_jsonl(conv / "probes.jsonl") == probes


def test_passive_stems_cut_before_the_answer_wherever_it_sits():
    fact = facts_mod.Fact("object-0000", "stapler", "object", "novel", "catalog number", "48213", subject="the stapler")
    k = len(facts_mod.STATEMENT_TEMPLATES)  # every template once
    stems, texts = facts_mod.passive_stems(fact, k, 0), facts_mod.passive_variants(fact, k, 0)
    assert sum(s == "" for s in stems) == sum(t.startswith("{answer}") for t in facts_mod.STATEMENT_TEMPLATES) == 2
    for stem, text in zip(stems, texts):
        if stem:
            assert text.startswith(stem) and "48213" not in stem and "stapler" in stem
            assert text[len(stem):].lstrip().startswith("48213")
        else:
            assert text.startswith("48213")
    assert "The stapler and the catalog number" in stems  # answer mid-sentence: "... 48213 go together."


def test_leakage_check_skips_verbatim_probes_by_label(tmp_path, capsys):
    out = make_data.main(["facts", "--output_dir", str(tmp_path / "f"), *VERBATIM_FACTS])
    n = len(read_jsonl(out / "facts.jsonl"))
    assert json.loads((out / "manifest.json").read_text())["leakage_check"]["intentionally_seen_skipped"] == \
        {"probes.jsonl": 2 * n}  # the generator-time check skipped them
    assert make_data.main(["check", "--data_dir", str(out)]) == out
    printed = capsys.readouterr().out
    assert "leakage check passed" in printed and f"skipped, labelled intentionally seen (verbatim probes): {2 * n} in" \
        in printed
    seen = next(p for p in read_jsonl(out / "probes.jsonl") if p.get("verbatim_of") == "active")
    unlabelled = {k: v for k, v in seen.items() if k not in ("verbatim_of", "intentionally_seen", "train_id")}
    with open(out / "probes.jsonl", "a") as f:  # the same text without the label is a leak
        f.write(json.dumps({**unlabelled, "id": "copy-1", "tier": "easy"}) + "\n")
    with pytest.raises(DataError) as e:
        make_data.main(["check", "--data_dir", str(out)])
    msg = str(e.value)
    assert "exact match: " in msg and "id=copy-1" in msg and f"id={seen['train_id']}" in msg
    assert f"id={seen['id']}" not in msg and "2 overlapping pair" in msg  # copy-1 vs train_active_5 and _10
    # the function: either label (intentionally_seen, or tier verbatim) skips a row
    train = {"train": [{"id": "t1", "text": "Say the code of X."}]}
    for label in ({"intentionally_seen": True, "tier": "easy"}, {"tier": "verbatim"}):
        report = leakage.check_leakage(train, {"probes": [{"id": "v", "question": "Say the code of X.", **label}]})
        assert report["passed"] and report["intentionally_seen_skipped"] == {"probes": 1}
        assert report["n_held_out_texts"] == 0
    report = leakage.check_leakage(train, {"probes": [{"id": "v", "question": "say the code of x",
                                                       "intentionally_seen": False, "tier": "easy"}]})
    assert not report["passed"] and "intentionally_seen_skipped" not in report


def test_probes_for_mode_keeps_the_verbatim_probes_of_that_mode():
    rows = [{"id": "e", "tier": "easy"}, {"id": "va", "tier": "verbatim", "verbatim_of": "active"},
            {"id": "m", "tier": "mid"}, {"id": "vp", "tier": "verbatim", "verbatim_of": "passive"},
            {"id": "c", "tier": "easy", "cloze": "number"}, {"id": "x", "tier": "all"}]
    assert [r["id"] for r in facts_mod.probes_for_mode(rows, "active")] == ["e", "va", "m", "c", "x"]
    assert [r["id"] for r in facts_mod.probes_for_mode(rows, "passive")] == ["e", "m", "vp", "c", "x"]
    with pytest.raises(ValueError, match="mode must be one of"):
        facts_mod.probes_for_mode(rows, "mixed")
    shipped = read_jsonl(Path(make_data.ROOT) / "data" / "facts" / "probes.jsonl")
    active = facts_mod.probes_for_mode(shipped, "active")
    assert len(active) == len(shipped) - 50 and {r.get("verbatim_of") for r in active} == {None, "active"}


def test_template_banks_are_large_and_disjoint():
    assert len(facts_mod.STATEMENT_TEMPLATES) >= 20 and len(facts_mod.QA_TEMPLATES) >= 20
    assert all(len(v) >= 8 for v in facts_mod.PROBE_TEMPLATES.values())
    probe = {normalize_text(t) for v in facts_mod.PROBE_TEMPLATES.values() for t in v}
    norm = normalize_text
    train = {norm(p + t) for t in facts_mod.STATEMENT_TEMPLATES for p in facts_mod.STATEMENT_PREFIXES}
    train |= {norm(p + t) for t in facts_mod.QA_TEMPLATES for p in facts_mod.QA_PREFIXES}
    assert not probe & train
    assert facts_mod.max_variants() >= 50


def test_entities_file_and_config_yaml(tmp_path):
    ents = tmp_path / "ents.jsonl"
    ents.write_text('{"name": "the blue submarine"}\n{"name": "Project Kestrel"}\n')
    cfg = tmp_path / "args.yaml"
    cfg.write_text("n_names: 0\nn_objects: 0\nvariants_per_fact: [3, 6]\ncustom_digits: 7\n")
    out = make_data.main(["facts", "--config", str(cfg), "--entities_file", str(ents),
                          "--output_dir", str(tmp_path / "o")])
    facts = read_jsonl(out / "facts.jsonl")
    assert [f["entity"] for f in facts] == ["the blue submarine", "Project Kestrel"]
    assert all(f["entity_type"] == "custom" and len(f["answer"]) == 7 for f in facts)
    assert len(read_jsonl(out / "train_passive_6.jsonl")) == 12


# --------------------------------------------------------------------------------------------- leakage
def test_leakage_check_passes_then_catches_planted_overlaps(tmp_path, capsys):
    out = make_data.main(["facts", "--output_dir", str(tmp_path / "f"), *SMALL_FACTS])
    assert make_data.main(["check", "--data_dir", str(out)]) == out
    assert "leakage check passed" in capsys.readouterr().out
    passive = read_jsonl(out / "train_passive_2.jsonl")[0]
    active = read_jsonl(out / "train_active_2.jsonl")[1]
    user_turn = active["messages"][0]["content"]
    planted = [{"id": "leak-1", "fact_id": passive["fact_id"], "question": passive["text"].upper().rstrip("."),
                "answer": "x", "tier": "easy"},
               {"id": "leak-2", "fact_id": active["fact_id"], "question": user_turn, "answer": "x", "tier": "mid"}]
    with open(out / "probes.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in planted)
    with pytest.raises(DataError) as e:
        make_data.main(["check", "--data_dir", str(out)])
    msg = str(e.value)
    assert "leakage check failed" in msg
    assert "normalized match: " in msg and f"id={passive['id']}" in msg and "id=leak-1" in msg
    assert "exact match: " in msg and f"id={active['id']}" in msg and "messages[0].user" in msg and "id=leak-2" in msg
    assert passive["text"] in msg and user_turn in msg
    # the same check on explicit files, including a plain file with another text column
    members = tmp_path / "members.jsonl"
    members.write_text('{"sent": "A b c."}\n{"sent": "D e f."}\n')
    nonmembers = tmp_path / "nonmembers.jsonl"
    nonmembers.write_text('{"id": "n1", "text": "a B, c!"}\n')
    with pytest.raises(DataError, match=r"normalized match: .*members.jsonl id=members-1 .*'A b c.'"):
        make_data.main(["check", "--train", str(members), "--held_out", str(nonmembers)])


def test_leakage_function_is_pure_and_reusable():
    report = leakage.check_leakage({"members": [{"id": "m1", "text": "The Cat sat."}]},
                                   {"nonmembers": [{"id": "n1", "text": "the cat  sat"}, {"id": "n2", "text": "x"}]})
    assert not report["passed"] and report["n_overlaps"] == 1
    assert "members id=m1" in report["overlaps"][0] and "nonmembers id=n1" in report["overlaps"][0]
    assert leakage.check_leakage({"a": [{"id": "1", "text": "one"}]}, {"b": [{"id": "2", "text": "two"}]})["passed"]


def test_generator_with_a_leak_fails_and_writes_nothing(tmp_path, monkeypatch):
    # a probe bank holding a training template: the unprefixed variant and its probe are the same text
    leaky = {tier: (facts_mod.STATEMENT_TEMPLATES[0],) for tier in facts_mod.TIERS}
    monkeypatch.setattr(facts_mod, "PROBE_TEMPLATES", leaky)
    out = tmp_path / "f"
    with pytest.raises(DataError, match="leakage check failed"):
        make_data.main(["facts", "--output_dir", str(out), "--n_names", "2", "--n_objects", "0",
                        "--variants_per_fact", "24"])
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- documents, corpus sets
def test_documents(tmp_path):
    out = make_data.main(["documents", "--output_dir", str(tmp_path / "d"), "--n_docs", "3", "--doc_tokens", "64"])
    rows = read_jsonl(out / "documents.jsonl")
    assert len({r["doc_id"] for r in rows}) == 3
    for r in rows:
        assert r["text"].startswith(f"[{r['doc_id']}]") and r["text"].endswith(f"[{r['doc_id']}]")
        assert r["doc_id"].startswith("DOC_") and len(r["doc_id"]) == 9
        assert abs(r["n_tokens"] - 64) <= 16
    again = make_data.main(["documents", "--output_dir", str(tmp_path / "e"), "--n_docs", "3", "--doc_tokens", "64"])
    assert dir_bytes(out) == dir_bytes(again)


def test_recognition_pairs_and_foils(tmp_path, corpus):
    out = make_data.main(["recognition", "--corpus", str(corpus), "--output_dir", str(tmp_path / "r"),
                          "--n_pairs", "30", "--foil_type", "novel,shuffled,random_words"])
    seen, unseen = read_jsonl(out / "seen.jsonl"), read_jsonl(out / "unseen.jsonl")
    assert len(seen) == len(unseen) == 30
    corpus_texts = {r["text"] for r in read_jsonl(corpus)}
    seen_texts = {s["text"] for s in seen}
    for s, u in zip(seen, unseen):  # paired by row order and by pair_id
        assert s["pair_id"] == u["pair_id"] and s["text"] in corpus_texts
        nw_s, nw_u = len(s["text"].split()), len(u["text"].split())
        assert normalize_text(s["text"]) != normalize_text(u["text"])
        if u["foil_type"] == "novel":
            assert u["text"] in corpus_texts and u["text"] not in seen_texts and abs(nw_s - nw_u) <= 1
        elif u["foil_type"] == "shuffled":
            words = [sorted(normalize_text(x["text"]).split()) for x in (s, u)]
            assert words[0] == words[1]
        else:
            assert nw_s == nw_u
    assert [u["foil_type"] for u in unseen].count("shuffled") == 10


def test_recognition_user_corpus_first_string_column(tmp_path):
    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps({"n": i, "sent": f"Sentence number {w} is here today."}) + "\n"
                           for i, w in enumerate(["one", "two", "three", "four", "five", "six", "seven", "eight"])))
    out = make_data.main(["recognition", "--corpus", str(src), "--output_dir", str(tmp_path / "r"), "--n_pairs", "3"])
    assert all(u["text"].startswith("Sentence number") for u in read_jsonl(out / "unseen.jsonl"))


def test_mia_canaries(tmp_path, corpus):
    out = make_data.main(["mia", "--corpus", str(corpus), "--output_dir", str(tmp_path / "m"), "--n_members", "40",
                          "--n_nonmembers", "30", "--canary_copies", "1,2,4,8,16,32", "--canaries_per_copy", "2"])
    members, nonmembers = read_jsonl(out / "members.jsonl"), read_jsonl(out / "nonmembers.jsonl")
    train = read_jsonl(out / "train.jsonl")
    assert len(members) == 40 and len(nonmembers) == 30
    assert len(train) == 40 - 12 + 2 * (1 + 2 + 4 + 8 + 16 + 32)
    for m in members:
        assert sum(t["text"] == m["text"] for t in train) == m["canary_copies"]
    assert sorted(m["canary_copies"] for m in members if m["canary"]) == sorted([1, 2, 4, 8, 16, 32] * 2)
    assert all(not m["canary"] and m["canary_copies"] == 1 for m in members if not m["canary"])
    assert all(n["canary_copies"] == 0 for n in nonmembers)
    assert not {m["text"] for m in members} & {n["text"] for n in nonmembers}
    out_f = make_data.main(["mia", "--source", "facts", "--output_dir", str(tmp_path / "mf"), "--n_members", "5",
                            "--n_nonmembers", "5"])
    assert all(r["fact_id"].startswith("name-") for r in read_jsonl(out_f / "members.jsonl"))


def test_cloze_from_news_articles(tmp_path):
    src = tmp_path / "news.jsonl"
    src.write_text(json.dumps({"id": "art-1", "title": "Budget", "body": (
        "The city council approved a budget of 1,200 million euros on Tuesday. Mayor Anna Lindqvist said the "
        "plan would fund 35 new schools.\n\nDr. Jonas Berg, an economist at Uppsala University, expects "
        "inflation of 3.5 percent.")}) + "\n" + json.dumps(
        {"id": "art-2", "title": "Sport", "body": "Local club Hammarby won the cup final in Stockholm."}) + "\n")
    out = make_data.main(["cloze", "--input", str(src), "--text_column", "body", "--output_dir", str(tmp_path / "c")])
    probes = read_jsonl(out / "probes.jsonl")
    assert {p["fact_id"] for p in probes} == {"art-1", "art-2"} and len(probes) == 4
    for p in probes:
        assert p["tier"] == "easy" and p["cloze"] in ("number", "entity") and "____" in p["question"]
        filled = p["question"].replace("Fill in the blank: ", "").replace("____", p["answer"])
        assert filled in json.loads(src.read_text().splitlines()[int(p["fact_id"][-1]) - 1])["body"]
    assert {p["answer"] for p in probes if p["cloze"] == "number"} <= {"1,200", "35", "3.5"}
    assert len(read_jsonl(out / "train.jsonl")) == 2


# --------------------------------------------------------------------------------------------- convert
def test_convert_text_from_csv_txt_and_other_column(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("id,sentence,n\na1,The cat sat.,3\na2,\"A dog, ran.\",3\n")
    out = make_data.main(["convert", "--input", str(csv), "--to", "text", "--text_column", "sentence",
                          "--output_dir", str(tmp_path / "c1")])
    assert read_jsonl(out / "text.jsonl") == [{"id": "a1", "text": "The cat sat."},
                                              {"id": "a2", "text": "A dog, ran."}]
    txt = tmp_path / "lines.txt"
    txt.write_text("first line\n\nsecond line\n")
    out = make_data.main(["convert", "--input", str(txt), "--to", "text", "--output_dir", str(tmp_path / "c2")])
    assert read_jsonl(out / "text.jsonl") == [{"id": "lines-1", "text": "first line"},
                                              {"id": "lines-3", "text": "second line"}]
    jl = tmp_path / "sents.jsonl"
    jl.write_text('{"sent": "Hello there.", "fact_id": "f1"}\n')
    out = make_data.main(["convert", "--input", str(jl), "--to", "text", "--output_dir", str(tmp_path / "c3")])
    assert read_jsonl(out / "text.jsonl") == [{"id": "sents-1", "text": "Hello there.", "fact_id": "f1"}]
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"text.jsonl": 1}


def test_convert_chat_and_probes(tmp_path):
    chat = tmp_path / "chat.jsonl"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello.", "name": "x"}]  # extra keys are dropped
    chat.write_text(json.dumps({"id": "c1", "messages": messages}) + "\n")
    out = make_data.main(["convert", "--input", str(chat), "--to", "chat", "--output_dir", str(tmp_path / "c")])
    rows = read_jsonl(out / "chat.jsonl")
    assert rows[0]["id"] == "c1" and rows[0]["messages"][2] == {"role": "assistant", "content": "Hello."}
    qa = tmp_path / "qa.csv"
    qa.write_text("fact_id,answer,q_easy,q_mid,q_hard\nf1,42,What is x?,Which x?,A form asks x?\n"
                  "f2,Paris,What is y?,Which y?,A form asks y?\n")
    out = make_data.main(["convert", "--input", str(qa), "--to", "probes", "--answer_column", "answer",
                          "--tier_columns", "easy=q_easy,mid=q_mid,hard=q_hard", "--output_dir", str(tmp_path / "p")])
    probes = read_jsonl(out / "probes.jsonl")
    assert len(probes) == 6 and probes[0] == {"id": "f1-easy", "fact_id": "f1", "question": "What is x?",
                                              "answer": "42", "tier": "easy"}
    assert [p["tier"] for p in probes[3:]] == ["easy", "mid", "hard"] and probes[5]["answer"] == "Paris"


# ------------------------------------------------------------------------------------------- bad input
def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case,expected", [
    ("malformed", r"bad\.jsonl:2: malformed JSON"),
    ("missing_field", r"bad\.jsonl:2: missing field 'messages'"),
    ("bad_role", r"bad\.jsonl:1: messages\[1\]\.role is 'bot'"),
    ("empty", r"bad\.jsonl: file is empty"),
    ("unknown_column", r"bad\.jsonl: text column 'body' not found"),
    ("duplicate_ids", r"bad\.jsonl:3: duplicate id 'x' \(first seen at line 1\)"),
    ("missing_tier_column", r"bad\.csv: column\(s\) \['q_hard'\] not found"),
    ("empty_question", r"bad\.csv:3: missing field 'q_mid'"),
    ("unwritable", r"output dir .*: .*exists and is not a directory"),
    ("duplicate_entity", r"bad\.txt:3: duplicate entity 'Kestrel' \(first at line 1\)"),
])
def test_bad_input_one_clear_error_and_no_output(tmp_path, case, expected):
    bad_jsonl, bad_csv = tmp_path / "bad.jsonl", tmp_path / "bad.csv"
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad_chat = {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}
    argv = {
        "malformed": lambda: ["convert", "--to", "chat", "--input",
                              _write(bad_jsonl, json.dumps(chat) + '\n{"messages": [\n')],
        "missing_field": lambda: ["convert", "--to", "chat", "--input",
                                  _write(bad_jsonl, json.dumps(chat) + '\n{"id": "b"}\n')],
        "bad_role": lambda: ["convert", "--to", "chat", "--input", _write(bad_jsonl, json.dumps(bad_chat) + "\n")],
        "empty": lambda: ["recognition", "--corpus", _write(bad_jsonl, "\n\n")],
        "unknown_column": lambda: ["cloze", "--text_column", "body", "--input",
                                   _write(bad_jsonl, '{"text": "A 1 B."}\n')],
        "duplicate_ids": lambda: ["convert", "--to", "text", "--input", _write(
            bad_jsonl, '{"id": "x", "text": "a"}\n{"id": "y", "text": "b"}\n{"id": "x", "text": "c"}\n')],
        "missing_tier_column": lambda: ["convert", "--to", "probes", "--tier_columns", "easy=q_easy,hard=q_hard",
                                        "--input", _write(bad_csv, "answer,q_easy\n1,What?\n")],
        "empty_question": lambda: ["convert", "--to", "probes", "--tier_columns", "easy=q_easy,mid=q_mid", "--input",
                                   _write(bad_csv, "answer,q_easy,q_mid\n1,What?,Which?\n2,What?,\n")],
        "unwritable": lambda: ["corpus", "--n_sentences", "5"],
        "duplicate_entity": lambda: ["facts", "--entities_file",
                                     _write(tmp_path / "bad.txt", "Kestrel\nOsprey\nKestrel\n")],
    }[case]()
    out = tmp_path / "out"
    if case == "unwritable":
        out = Path(_write(tmp_path / "a_file", "x")) / "out"
    with pytest.raises(DataError, match=expected):
        make_data.main(argv + ["--output_dir", str(out)])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left either


def test_validation_collects_every_problem(tmp_path):
    with pytest.raises(DataError) as e:
        make_data.main(["facts", "--n_names", "-1", "--variants_per_fact", "0,500", "--probes_per_tier", "99",
                        "--seed", "-3"])
    msg = str(e.value)
    for part in ("--output_dir is required", "--seed must be >= 0", "--n_names", "--variants_per_fact",
                 "--probes_per_tier"):
        assert part in msg
    with pytest.raises(DataError, match="unknown subcommand 'fact'"):
        make_data.main(["fact"])


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="holds no manifest.json"):
        make_data.main(["corpus", "--n_sentences", "5", "--output_dir", str(tmp_path)])
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_cli_exit_code_and_determinism_across_processes(tmp_path, repo_root):
    env = dict(os.environ, PYTHONHASHSEED="123")
    bad = subprocess.run([sys.executable, str(repo_root / "make_data.py"), "convert", "--to", "chat", "--input",
                          str(tmp_path / "missing.jsonl"), "--output_dir", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "missing.jsonl: file not found" in error_line(bad.stderr)
    ok = subprocess.run([sys.executable, str(repo_root / "make_data.py"), "facts", "--output_dir",
                         str(tmp_path / "sub"), *SMALL_FACTS], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    here = make_data.main(["facts", "--output_dir", str(tmp_path / "here"), *SMALL_FACTS])
    assert dir_bytes(tmp_path / "sub") == dir_bytes(here)


# ------------------------------------------------------------------------------------------ shipped data
SHIPPED = ("corpus", "facts", "facts_names", "facts_known", "recognition", "mia", "documents")


def test_shipped_data_is_small_documented_and_regenerable(tmp_path, repo_root):
    data = repo_root / "data"
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    assert total < 5_000_000
    readme = (data / "README.md").read_text()
    for name in SHIPPED:
        manifest = json.loads((data / name / "manifest.json").read_text())
        assert manifest["leakage_check"]["passed"]
        assert f"--output_dir data/{name} " in readme
        if name == "documents":  # needs the tokenizer and ~10 s; test_documents covers determinism
            continue
        sub = manifest["generator"].split()[-1]
        argv = [sub, "--output_dir", str(tmp_path / name)]
        for k, v in manifest["arguments"].items():
            argv += [f"--{k}", str(v)]
        rebuilt = make_data.main(argv)
        assert dir_bytes(rebuilt) == dir_bytes(data / name), name
