"""The published membership-inference attacks (issue 13) against direct, independent implementations of
their papers' formulas: plain transformers + torch + numpy on tiny-llama, no memlab scoring code. One run of
membership_inference.py with every attack (recall, dc_pdd, neighbourhood, gradnorm, rmia, zlib) on a few
corpus sentences; per item, each score must equal the paper's formula within 1e-4. Plus bad input: one
`error:` line and exit 2."""
import csv
import json
import math
import shutil
import zlib

import numpy as np
import pytest
import torch

from memlab import attacks
from memlab.cli import run

from helpers import ROOT, script  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = ROOT / "data" / "corpus" / "sentences.jsonl"
N_PREFIX = 2


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def corpus_rows(lo, hi):
    return [json.loads(x) for x in CORPUS.read_text().splitlines()[lo:hi]]


def perturbed_copy(src, dst, scale, seed):
    """tiny-llama with seeded Gaussian noise on every weight: a second, different reference model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("published")
    members = write_jsonl(root / "m.jsonl", corpus_rows(0, 6))
    nonmembers = write_jsonl(root / "n.jsonl", corpus_rows(100, 106))
    small_corpus = write_jsonl(root / "corpus.jsonl", corpus_rows(200, 400))
    script("make_data").main(["freqs", "--corpus", str(small_corpus), "--model_name_or_path", "tiny-llama",
                              "--output_dir", str(root / "freqs")])
    target = perturbed_copy(tiny_llama, root / "target", 0.02, 1)  # the attacked model
    ref2 = perturbed_copy(tiny_llama, root / "ref2", 0.02, 2)
    mod = script("membership_inference")
    argv = ["--members", members, "--nonmembers", nonmembers, "--model_name_or_path", target,
            "--reference_model", "none", "--output_dir", root / "out", "--bootstrap", 0,
            "--attacks", "loss,zlib,zlib_total,recall,dc_pdd,neighbourhood,gradnorm,rmia",
            "--recall_prefix_n", N_PREFIX, "--freqs", root / "freqs", "--neighbours", 3, "--neighbour_rate", 0.2,
            "--reference_models", f"{tiny_llama},{ref2}", "--batch_size", 4]
    res = run(mod.main, mod.MiaArgs, [str(a) for a in argv])
    with open(root / "out" / "items.csv") as f:
        items = list(csv.DictReader(f))
    return {"root": root, "res": res, "items": items, "target": target, "refs": [tiny_llama, ref2],
            "members": corpus_rows(0, 6), "nonmembers": corpus_rows(100, 106), "corpus": corpus_rows(200, 400)}


# ---------------------------------------------------------------------- independent implementations
def hf(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def token_logprobs(model, ids, start):
    """log p(ids[t] | ids[:t]) for t >= start, one unpadded forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    return np.array([float(lp[t - 1, ids[t]]) for t in range(start, len(ids))])


def mean_nll(model, tok, text):
    return -token_logprobs(model, tok(text).input_ids, 1).mean()


def texts_by_id(fx):
    return {("member", r["id"]): r["text"] for r in fx["members"]} | \
        {("nonmember", r["id"]): r["text"] for r in fx["nonmembers"]}


def check(fx, column, expected, rel=0.0):
    texts = texts_by_id(fx)
    assert fx["items"], "no items"
    n = 0
    for row in fx["items"]:
        want = expected(texts[(row["split"], row["id"])], row)
        if want is None:
            continue
        assert float(row[column]) == pytest.approx(want, abs=1e-4, rel=rel), (column, row["id"])
        n += 1
    assert n >= 4, f"{column}: checked only {n} items"


# ------------------------------------------------------------------------------------------- tests
def test_recall_holds_apart_nonmembers(published):
    res = published["res"]
    held = [r["id"] for r in published["nonmembers"][:N_PREFIX]]
    assert res["recall"]["ids"] == held and res["n_nonmembers"] == 6 - N_PREFIX
    assert not {r["id"] for r in published["items"] if r["split"] == "nonmember"} & set(held)
    assert res["attacks"] == ["loss", "zlib", "zlib_total", "recall", "dc_pdd", "neighbourhood", "gradnorm", "rmia"]
    for a in res["attacks"]:
        assert "auc" in res["checkpoints"][0]["attacks"][a]["all"]
    print({a: round(v["all"]["auc"], 3) for a, v in res["checkpoints"][0]["attacks"].items()})


def test_zlib_is_carlini(published):
    """Carlini et al. 2021: log-perplexity / zlib bytes (negated: higher = member); zlib_total: total NLL."""
    model, tok = hf(published["target"])

    def z(text):
        return len(zlib.compress(text.encode("utf-8")))

    check(published, "zlib", lambda text, row: -mean_nll(model, tok, text) / z(text))
    check(published, "zlib_total",
          lambda text, row: token_logprobs(model, tok(text).input_ids, 1).sum() / z(text))


def test_recall_formula(published):
    """Xie et al. 2024: LL(x | P) / LL(x) (higher = member, as the authors' ROC), P = the held-apart
    non-members; LL(x|P) over all of x's tokens after P, LL(x) over all but x's first (the authors' code)."""
    model, tok = hf(published["target"])
    prefix = " ".join(r["text"] for r in published["nonmembers"][:N_PREFIX])
    p_ids = tok(prefix).input_ids

    def expected(text, row):
        ids = tok(text).input_ids
        ll = token_logprobs(model, ids, 1).mean()
        ll_cond = token_logprobs(model, p_ids + ids, len(p_ids)).mean()
        return ll_cond / ll

    check(published, "recall", expected)


def test_dc_pdd_formula(published):
    """Zhang et al. 2024: mean over first occurrences of min(p_i * log(1 / f_i), a), f Laplace-smoothed."""
    model, tok = hf(published["target"])
    counts = np.zeros(len(tok))
    for r in published["corpus"]:
        for t in tok(r["text"]).input_ids:
            counts[t] += 1
    f = (counts + 1) / (counts.sum() + len(counts))
    table = json.loads((published["root"] / "freqs" / "freqs.json").read_text())
    assert table["counts"] == counts.astype(int).tolist()
    rec = published["res"]["dc_pdd"]["freqs"]
    assert rec["tokenizer"] == str(published["target"]) or rec["tokenizer"] == "tiny-llama"
    assert len(rec["sha256"]) == 64 and published["res"]["dc_pdd"]["a"] == 0.01

    def expected(text, row):
        ids = tok(text).input_ids
        probs = np.exp(token_logprobs(model, ids, 1))
        seen, alphas = set(), []
        for tid, p in zip(ids[1:], probs):
            if tid not in seen:
                seen.add(tid)
                alphas.append(min(p * math.log(1 / f[tid]), 0.01))
        return float(np.mean(alphas))

    check(published, "dc_pdd", expected)


def test_neighbourhood_formula(published):
    """Mattern et al. 2023: loss(x) - mean loss of its neighbours (negated). The neighbours are regenerated with
    the same seeded word substitution; the losses and the formula are computed independently."""
    model, tok = hf(published["target"])
    res = published["res"]
    assert res["neighbourhood"]["neighbour_source"] == "corpus_word_substitution"
    texts = texts_by_id(published)
    vocab = attacks.word_vocabulary([texts[(r["split"], r["id"])] for r in published["items"]])

    def expected(text, row):
        seed = [0, zlib.crc32(f"{row['split']}:{row['id']}".encode())]
        nbs = attacks.substitute_neighbours(text, vocab, 3, 0.2, seed)
        assert len(nbs) == 3 and all(nb != text for nb in nbs)
        n_words = len(text.split())
        for nb in nbs:  # max(1, round(0.2 * words)) words replaced, the rest kept
            kept = sum(a == b for a, b in zip(text.split(), nb.split()))
            assert kept >= n_words - max(1, round(0.2 * n_words))
        return float(np.mean([mean_nll(model, tok, nb) for nb in nbs]) - mean_nll(model, tok, text))

    check(published, "neighbourhood", expected)
    again = attacks.substitute_neighbours("The cat sat on the mat.", vocab, 3, 0.2, [0, 1])
    assert again == attacks.substitute_neighbours("The cat sat on the mat.", vocab, 3, 0.2, [0, 1])


def test_gradnorm_formula(published):
    """-||d mean-NLL / d theta||_2 over all parameters of a full model."""
    model, tok = hf(published["target"])
    assert published["res"]["checkpoints"][0]["gradnorm"]["parameters"] == "all"

    def expected(text, row):
        ids = torch.tensor([tok(text).input_ids])
        model.zero_grad()
        logits = model(ids).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
        loss.backward()
        sq = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None)
        return -math.sqrt(sq)

    check(published, "gradnorm", expected, rel=1e-4)


def test_rmia_formula(published):
    """Zarifzadeh et al. 2024: fraction of population z with [p(x|θ)/p(x)] / [p(z|θ)/p(z)] > 1, p(.|θ) =
    exp(-mean NLL), p(x) = mean over the 2 reference models, z = the evaluated non-members but x itself."""
    model, tok = hf(published["target"])
    refs = [hf(r) for r in published["refs"]]
    texts = texts_by_id(published)

    def ratio(text):
        p_t = math.exp(-mean_nll(model, tok, text))
        return p_t / np.mean([math.exp(-mean_nll(m, t, text)) for m, t in refs])

    pop = [(r["id"], ratio(texts[("nonmember", r["id"])])) for r in published["items"] if r["split"] == "nonmember"]

    def expected(text, row):
        rx = ratio(text)
        others = [rz for zid, rz in pop if not (row["split"] == "nonmember" and zid == row["id"])]
        return sum(rx / rz > 1 for rz in others) / len(others)

    check(published, "rmia", expected)
    assert published["res"]["rmia"]["n_population"] == len(pop)


# ------------------------------------------------------------------------------------------ bad input
def run_cli(argv, capsys):
    mod = script("membership_inference")
    with pytest.raises(SystemExit) as e:
        run(mod.main, mod.MiaArgs, [str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert e.value.code == 2 and len(lines) == 1, err
    return err


@pytest.fixture
def small(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", corpus_rows(0, 3))
    n = write_jsonl(tmp_path / "n.jsonl", corpus_rows(100, 103))
    return ["--members", m, "--nonmembers", n, "--model_name_or_path", "tiny-llama", "--reference_model", "none",
            "--output_dir", tmp_path / "out", "--bootstrap", 0]


def test_recall_without_prefix_set(small, capsys, tmp_path):
    err = run_cli(small + ["--attacks", "loss,recall", "--recall_prefix_n", 0], capsys)
    assert "recall needs a prefix of known non-member texts" in err
    err = run_cli(small + ["--attacks", "recall", "--recall_prefix_n", 3], capsys)  # none would be left
    assert "recall needs a prefix" in err
    assert not (tmp_path / "out").exists()


def other_tokenizer_model(tiny_llama, dst):
    """tiny-llama's weights (symlinked) with a tokenizer that has two added tokens."""
    from transformers import AutoTokenizer

    dst.mkdir()
    for f in tiny_llama.glob("*.safetensors"):
        (dst / f.name).symlink_to(f)
    shutil.copy(tiny_llama / "config.json", dst / "config.json")
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.add_tokens(["<canary_1>", "<canary_2>"])
    tok.save_pretrained(dst)
    return dst


def test_missing_and_mismatched_freqs(small, capsys, tmp_path, tiny_llama):
    err = run_cli(small + ["--attacks", "dc_pdd", "--freqs", tmp_path / "nothing"], capsys)
    assert "no token frequency table" in err and "make_data.py freqs" in err
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_rows(200, 210))
    other = other_tokenizer_model(tiny_llama, tmp_path / "other")
    script("make_data").main(["freqs", "--corpus", str(corpus), "--model_name_or_path", str(other),
                              "--output_dir", str(tmp_path / "otherfreqs")])
    err = run_cli(small + ["--attacks", "dc_pdd", "--freqs", tmp_path / "otherfreqs"], capsys)
    assert "made with another tokenizer" in err


def test_reference_models_tokenizer_mismatch(small, capsys, tmp_path, tiny_llama):
    ref = other_tokenizer_model(tiny_llama, tmp_path / "ref")
    err = run_cli(small + ["--attacks", "rmia", "--reference_models", f"{tiny_llama},{ref}"], capsys)
    assert "--reference_models" in err and "tokenizer differs" in err


def test_unknown_attack_and_rmia_without_references(small, capsys):
    err = run_cli(small + ["--attacks", "loss,zlibb"], capsys)
    assert "unknown attack(s) zlibb" in err and "valid: loss, zlib, zlib_total" in err and "rmia" in err
    err = run_cli(small + ["--attacks", "rmia"], capsys)
    assert "--attacks rmia needs --reference_models" in err


def test_pure_functions_exact():
    lp = [-1.0, -2.0, -3.0, -4.0, -10.0]  # mean -4, sum -20; zlib_bytes("abc") = 11
    assert attacks.zlib_score(lp, "abc") == pytest.approx(-4 / 11)
    assert attacks.zlib_total_score(lp, "abc") == pytest.approx(-20 / 11)
    assert attacks.recall_score([-6.0, -6.0], lp) == pytest.approx(1.5)
    f = attacks.laplace_frequencies([3, 0, 1])  # (c + 1) / (4 + 3)
    assert f.tolist() == pytest.approx([4 / 7, 1 / 7, 2 / 7])
    # ids 0, 1, 0, 2: first occurrences 0, 1, 3; p = 1, 0.5, -, 0.25
    got = attacks.dc_pdd_score([0, 1, 0, 2], np.log([1.0, 0.5, 0.9, 0.25]), f, a=10.0)
    assert got == pytest.approx((math.log(7 / 4) + 0.5 * math.log(7) + 0.25 * math.log(7 / 2)) / 3)
    assert attacks.dc_pdd_score([0, 1, 0, 2], np.log([1.0, 0.5, 0.9, 0.25]), f, a=0.01) == pytest.approx(0.01)
    assert attacks.neighbourhood_score(2.0, [3.0, 4.0]) == 1.5
    assert attacks.gradnorm_score(3.0) == -3.0
    # x ratios: exp(-1)/exp(-2) = e; z ratios 1, e^2 -> LR(x, z) = e, e^-1 -> 1 of 2 above gamma 1
    got = attacks.rmia_scores([1.0], [[2.0]], [1.0, 0.0], [[1.0], [2.0]])
    assert got.tolist() == [0.5]
    assert attacks.rmia_scores([1.0], [[2.0]], [1.0, 0.0], [[1.0], [2.0]], same=[0]).tolist() == [0.0]


# ------------------------------------------------------------------- the masked-LM and LoRA code paths
def tiny_bert(dst, words):
    """A random 2-layer BERT masked LM with a word-level vocabulary (offline, seeded)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(set(words))
    tk = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    BertTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                      mask_token="[MASK]").save_pretrained(dst)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(cfg).eval().save_pretrained(dst)
    return dst


def test_neighbourhood_with_masked_lm(tmp_path, tiny_llama):
    rows_m, rows_n = corpus_rows(0, 3), corpus_rows(100, 103)
    words = attacks.word_vocabulary([r["text"] for r in rows_m + rows_n + corpus_rows(300, 340)])
    bert = tiny_bert(tmp_path / "bert", words)
    m, n = write_jsonl(tmp_path / "m.jsonl", rows_m), write_jsonl(tmp_path / "n.jsonl", rows_n)
    mod = script("membership_inference")
    res = run(mod.main, mod.MiaArgs, [str(a) for a in [
        "--members", m, "--nonmembers", n, "--model_name_or_path", "tiny-llama", "--reference_model", "none",
        "--output_dir", tmp_path / "out", "--bootstrap", 0, "--attacks", "loss,neighbourhood", "--neighbours", 2,
        "--neighbour_rate", 0.3, "--neighbour_model", bert]])
    assert res["neighbourhood"]["neighbour_source"] == "masked_lm"
    with open(tmp_path / "out" / "items.csv") as f:
        items = list(csv.DictReader(f))
    model, tok = hf(tiny_llama)
    texts = [r["text"] for r in rows_m + rows_n]
    seeds = [[0, zlib.crc32(f"{s}:{r['id']}".encode())] for s, rs in (("member", rows_m), ("nonmember", rows_n))
             for r in rs]
    nbs = mod.mlm_neighbours(str(bert), texts, 2, 0.3, seeds)
    assert nbs == mod.mlm_neighbours(str(bert), texts, 2, 0.3, seeds)  # deterministic
    for text, row, nb in zip(texts, items, nbs):
        for x in nb:  # the replaced words come from the masked LM's vocabulary
            changed = [b for a, b in zip(text.split(), x.split()) if a != b]
            assert 1 <= len(changed) <= max(1, round(0.3 * len(text.split())))
            assert all(w.strip(".,").lower() in words for w in changed)
        want = float(np.mean([mean_nll(model, tok, x) for x in nb]) - mean_nll(model, tok, text))
        assert float(row["neighbourhood"]) == pytest.approx(want, abs=1e-4)


def test_gradnorm_lora_adapter(tmp_path, tiny_llama):
    """An adapter checkpoint: the gradient w.r.t. its LoRA parameters only."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    rows_m, rows_n = corpus_rows(0, 3), corpus_rows(100, 103)
    m, n = write_jsonl(tmp_path / "m.jsonl", rows_m), write_jsonl(tmp_path / "n.jsonl", rows_n)
    mod = script("membership_inference")
    res = run(mod.main, mod.MiaArgs, [str(a) for a in [
        "--members", m, "--nonmembers", n, "--model_name_or_path", tiny_llama, "--checkpoints", tmp_path / "adapter",
        "--reference_model", "none", "--output_dir", tmp_path / "out", "--bootstrap", 0, "--attacks", "gradnorm"]])
    info = res["checkpoints"][0]["gradnorm"]
    with open(tmp_path / "out" / "items.csv") as f:
        items = list(csv.DictReader(f))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "adapter").eval()
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    assert info == {"parameters": "lora", "n_parameters": sum(p.numel() for p in lora)}
    _, tok = hf(tiny_llama)
    for p in lora:
        p.requires_grad_(True)
    for r, row in zip(rows_m + rows_n, items):
        ids = torch.tensor([tok(r["text"]).input_ids])
        loss = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:])
        grads = torch.autograd.grad(loss, lora)
        want = -math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        assert float(row["gradnorm"]) == pytest.approx(want, rel=1e-4, abs=1e-6)
