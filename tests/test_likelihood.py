"""Batched per-item scoring equals batch-size-1 scoring; checkpoints and adapters in one call
(memlab/likelihood.py). Tiny models get large random weights so that wrong masking or positions show."""
import random
import shutil
from pathlib import Path

import pytest
import torch

from memlab.io import DataError
from memlab.likelihood import (ItemScore, ModelPool, check_checkpoint_dir, distributed_map, encode_item,
                            encode_items, expand_checkpoints, matmul_params, score_checkpoints, score_items)



pytestmark = pytest.mark.usefixtures("one_thread")


WORDS = ("the cat dog sat ran on mat house blue green seven apples river bread keeper letter every "
         "evening sister valley 48213 code number quickly").split()


def mixed_items(n=11, seed=0):
    """Plain texts of 2 to 30 words, prompt/completion pairs and one chat item."""
    rng = random.Random(seed)
    items = [{"id": f"t{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 30)))} for i in range(n)]
    items += [{"id": f"pc{i}", "prompt": " ".join(rng.choices(WORDS, k=rng.randint(1, 12))),
               "completion": " " + " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))} for i in range(4)]
    items.append({"id": "chat", "messages": [{"role": "user", "content": "What is the code?"},
                                             {"role": "assistant", "content": "48213"}]})
    return items


def sharpened(src: Path, dst: Path, std: float = 0.3, seed: int = 0, noise_from: Path | None = None) -> Path:
    """Copy of a tiny model with large random matrices (peaked predictions) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(noise_from or src)
    torch.manual_seed(seed)
    for p in model.parameters():
        if p.dim() >= 2:
            p.data.add_(torch.randn_like(p) * 0.05) if noise_from else p.data.normal_(0, std)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def lora_adapter(base: Path, dst: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(base).save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def sharp_models(tmp_path_factory, tiny_llama, tiny_gpt2):
    root = tmp_path_factory.mktemp("sharp")
    return {"tiny-llama": sharpened(tiny_llama, root / "llama"), "tiny-gpt2": sharpened(tiny_gpt2, root / "gpt2", seed=1)}


@pytest.fixture(scope="session")
def checkpoint_runs(tmp_path_factory, sharp_models):
    """Two full-model checkpoints and two LoRA adapter checkpoints (train.py's layout) of the sharp llama."""
    root = tmp_path_factory.mktemp("runs")
    base = sharp_models["tiny-llama"]
    full, lora = root / "full" / "checkpoints", root / "lora" / "checkpoints"
    for k in (1, 2):
        sharpened(base, full / f"exposure_{k}", seed=k, noise_from=base)
        lora_adapter(base, lora / f"exposure_{k}", seed=k)
        for d in (full / f"exposure_{k}", lora / f"exposure_{k}"):
            (d / "trainer_state").mkdir()
            (d / "trainer_state" / "state.json").write_text('{"step": 1}')
    return {"base": base, "full": full, "lora": lora}


def reference_scores(model, tok, items) -> list[tuple[float, int]]:
    """The seed's method: one item at a time, HF `outputs.loss` (labels -100 outside the scored part)."""
    out = []
    for it in encode_items(tok, items):
        ids = torch.tensor([it.input_ids])
        labels = ids.clone()
        labels[0, :it.score_start] = -100
        with torch.no_grad():
            out.append((float(model(input_ids=ids, labels=labels).loss), it.n_scored))
    return out


def load(path):
    from memlab.models import load_model, load_tokenizer
    return load_model(str(path))[0].eval(), load_tokenizer(str(path))


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_equals_batch_size_one(sharp_models, kind, padding_side):
    model, tok = load(sharp_models[kind])
    items = mixed_items()
    expected = reference_scores(model, tok, items)
    got = score_items(model, encode_items(tok, items), tok.pad_token_id, batch_size=4, padding_side=padding_side,
                      token_logprobs=True)
    losses = [e[0] for e in expected]
    assert max(losses) - min(losses) > 0.5  # items really differ, so a shared batch loss would fail
    for it, (loss, n), s in zip(items, expected, got):
        assert s.id == it["id"] and s.n_tokens == n
        assert abs(s.loss - loss) < 1e-4, (it["id"], s.loss, loss)
        assert abs(-sum(s.token_logprobs) / n - s.loss) < 1e-5


def test_naive_left_padding_would_differ(sharp_models):
    """The check above can fail: without explicit position ids, left padding shifts GPT-2's positions."""
    model, tok = load(sharp_models["tiny-gpt2"])
    enc = encode_items(tok, mixed_items(4))
    T = max(len(e.input_ids) for e in enc)
    worst = 0.0
    for e in enc:
        ids = torch.tensor([[tok.pad_token_id] * (T - len(e.input_ids)) + e.input_ids])
        mask = (torch.arange(T) >= T - len(e.input_ids)).long()[None]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[0, T - len(e.input_ids):-1]
        naive = torch.nn.functional.cross_entropy(logits, torch.tensor(e.input_ids[1:])).item()
        alone = score_items(model, [e], tok.pad_token_id, batch_size=1)[0].loss
        worst = max(worst, abs(naive - alone))
    assert worst > 1e-3


def test_completion_only_and_chat_encoding(tiny_llama):
    from memlab.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    e = encode_item(tok, {"id": "a", "prompt": "The code is", "completion": " 48213"})
    assert tok.decode(e.input_ids[e.score_start:]) == " 48213"
    assert e.input_ids[:e.score_start] == tok("The code is").input_ids
    e = encode_item(tok, {"id": "c", "messages": [{"role": "user", "content": "Code?"},
                                                  {"role": "assistant", "content": "48213"}]})
    assert tok.decode(e.input_ids[e.score_start:]) == "48213<|im_end|>\n"  # answer + end of turn
    e2 = encode_item(tok, {"id": "c", "prompt": "Code?", "completion": "48213"}, chat=True)
    assert e2 == e
    with pytest.raises(DataError, match="at least 2"):
        encode_item(tok, {"id": "x", "text": "Hi"})


def test_distribution_stats_match_definition(sharp_models):
    model, tok = load(sharp_models["tiny-llama"])
    items = mixed_items(3)
    (s,) = score_items(model, encode_items(tok, items[:1]), tok.pad_token_id, token_logprobs=True,
                       distribution_stats=True)
    ids = torch.tensor([encode_items(tok, items[:1])[0].input_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, :-1], -1)
    mu = (lp.exp() * lp).sum(-1)
    var = (lp.exp() * lp ** 2).sum(-1) - mu ** 2
    assert torch.allclose(torch.tensor(s.token_mu), mu, atol=1e-4)
    assert torch.allclose(torch.tensor(s.token_var), var, atol=1e-3)
    assert torch.allclose(torch.tensor(s.token_logprobs), lp.gather(-1, ids[0, 1:, None])[:, 0], atol=1e-5)
    batched = score_items(model, encode_items(tok, items), tok.pad_token_id, batch_size=3, distribution_stats=True)
    assert torch.allclose(torch.tensor(batched[0].token_mu), mu, atol=1e-4)


def test_lora_adapter_batched_equals_single(checkpoint_runs):
    from memlab.models import load_tokenizer

    adapter = checkpoint_runs["lora"] / "exposure_1"
    pool = ModelPool()
    tok = load_tokenizer(str(adapter))
    items = mixed_items()
    with pool.use(adapter) as model:
        assert hasattr(model, "peft_config")
        expected = reference_scores(model, tok, items)
        got = score_items(model, encode_items(tok, items), tok.pad_token_id, batch_size=5, padding_side="left")
    assert max(abs(s.loss - e[0]) for s, e in zip(got, expected)) < 1e-4
    with pool.use(checkpoint_runs["base"]) as base:  # the cached base, adapter disabled
        base_scores = score_items(base, encode_items(tok, items), tok.pad_token_id)
    assert max(abs(a.loss - b.loss) for a, b in zip(base_scores, got)) > 1e-3


def test_several_checkpoints_one_call_without_reloading_base(checkpoint_runs, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from memlab.models import load_tokenizer

    items = mixed_items(5)
    specs = [f"{checkpoint_runs['full']}/exposure_*", f"{checkpoint_runs['lora']}/exposure_2,"
             f"{checkpoint_runs['lora']}/exposure_1"]
    tok = load_tokenizer(str(checkpoint_runs["base"]))
    expected = {}
    for d in expand_checkpoints(specs):  # each checkpoint scored on its own, loaded the plain way
        if (d / "adapter_config.json").exists():
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(checkpoint_runs["base"]), d).eval()
        else:
            model = AutoModelForCausalLM.from_pretrained(d).eval()
        expected[str(d)] = [e[0] for e in reference_scores(model, tok, items)]

    loaded = []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, *a, **k: (loaded.append(Path(path).resolve()), original(path, *a, **k))[1])
    results = score_checkpoints(str(checkpoint_runs["base"]), items, checkpoints=specs, batch_size=3)
    assert [label for label, _ in results] == list(expected)  # full paths: the names exposure_k clash
    assert len(loaded) == 3 and loaded.count(Path(checkpoint_runs["base"]).resolve()) == 1  # 2 full + 1 base
    rows = sum(len(s) for _, s in results)
    assert rows == 4 * len(items)
    for label, scores in results:
        assert max(abs(s.loss - e) for s, e in zip(scores, expected[label])) < 1e-4, label
    means = [sum(s.loss for s in scores) / len(scores) for _, scores in results]
    assert min(abs(a - b) for i, a in enumerate(means) for b in means[i + 1:]) > 1e-3  # all four differ


def test_expand_checkpoints(checkpoint_runs, tmp_path):
    full = checkpoint_runs["full"]
    for k in (10, 3):  # natural order: 1, 2, 3, 10
        shutil.copytree(full / "exposure_1", tmp_path / f"exposure_{k}")
    shutil.copytree(full / "exposure_1", tmp_path / "exposure_1")
    (tmp_path / ".exposure_4.tmp").mkdir()
    names = [p.name for p in expand_checkpoints(str(tmp_path / "exposure_*"))]
    assert names == ["exposure_1", "exposure_3", "exposure_10"]
    both = expand_checkpoints([f"{tmp_path}/exposure_1,{tmp_path}/exposure_3", str(tmp_path / "exposure_1")])
    assert [p.name for p in both] == ["exposure_1", "exposure_3"]
    with pytest.raises(DataError, match="matches no directory"):
        expand_checkpoints(str(tmp_path / "step_*"))
    with pytest.raises(DataError, match="no such directory"):
        expand_checkpoints(str(tmp_path / "nope"))


def test_checkpoint_errors(checkpoint_runs, tmp_path):
    from transformers import AutoTokenizer

    empty = tmp_path / "exposure_9"
    (empty / "trainer_state").mkdir(parents=True)
    with pytest.raises(DataError, match="holds neither a model .* nor a LoRA adapter"):
        check_checkpoint_dir(empty)
    with pytest.raises(DataError, match="holds neither"):
        score_checkpoints(str(checkpoint_runs["base"]), mixed_items(1), checkpoints=[str(empty)])
    # adapter whose saved tokenizer has an extra token / different special tokens than the base's
    for name, change in (("vocab", lambda t: t.add_tokens(["<new_token_xyz>"])),
                         ("special", lambda t: setattr(t, "eos_token", "<|endoftext|>"))):
        bad = tmp_path / f"bad_{name}"
        shutil.copytree(checkpoint_runs["lora"] / "exposure_1", bad)
        tok = AutoTokenizer.from_pretrained(bad)
        change(tok)
        tok.save_pretrained(bad)
        with pytest.raises(DataError, match="tokenizer"):
            score_checkpoints(str(checkpoint_runs["base"]), mixed_items(1), checkpoints=[str(bad)])


def test_distributed_map_dedupes_uneven_shards(monkeypatch):
    """Shards of 3 and 2 items; the gather returns a padding duplicate, as tensor gathers would."""
    import accelerate.utils

    class FakeAcc:
        num_processes, process_index = 2, 0

    items = [{"id": str(i), "w": i} for i in range(5)]
    fn = lambda shard: [ItemScore(it["id"], float(it["w"]), 1) for it in shard]  # noqa: E731

    def fake_gather(local):
        other = fn([it for i, it in enumerate(sorted(items, key=lambda x: -x["w"])) if i % 2 == 1])
        return local + other + local[:1]

    monkeypatch.setattr(accelerate.utils, "gather_object", fake_gather)
    out = distributed_map(fn, items, key=lambda it: it["id"], result_key=lambda s: s.id, weight=lambda it: it["w"],
                          accelerator=FakeAcc())
    assert [s.id for s in out] == [it["id"] for it in items]


def test_matmul_params_counts_lm_head_not_embeddings(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    emb = model.get_input_embeddings().weight.numel()
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert matmul_params(model) == linear + emb  # tied lm_head counted once, as a matmul


def test_transformers_without_boolean_logits_to_keep_falls_back_to_full_logits(sharp_models):
    """A forward that takes `logits_to_keep` only as an int or 1-D indices (transformers 5.17 on the lent
    GPU raised IndexError for the 2-D boolean form): training loss, DPO log-probs and scoring fall back
    to full logits, once per model class, with the same values."""
    from memlab import dpo, likelihood, training

    model, tok = load(sharp_models["tiny-llama"])

    class OldForward(torch.nn.Module):  # its own class name: the capability cache is per model class
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls, self.config = inner, [], inner.config

        def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
            self.calls.append(logits_to_keep)
            if torch.is_tensor(logits_to_keep) and logits_to_keep.dim() == 2:
                raise IndexError("too many indices for tensor of dimension 3")
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    old = OldForward(model)
    items = mixed_items()
    want = score_items(model, encode_items(tok, items), tok.pad_token_id, batch_size=4, token_logprobs=True)
    got = score_items(old, encode_items(tok, items), tok.pad_token_id, batch_size=4, token_logprobs=True)
    assert [round(s.loss, 4) for s in got] == [round(s.loss, 4) for s in want]
    assert likelihood._KEEP_MASK_OK["OldForward"] is False
    n_calls = len(old.calls)
    assert sum(torch.is_tensor(c) for c in old.calls) == 1  # tried once, then full logits only
    batch = training.collate([training.tokenize_item(it, "plain", tok, "all", 64) for it in items[:4]], tok.pad_token_id)
    with torch.no_grad():
        assert abs(training.causal_lm_loss(old, batch)[0].item() - training.causal_lm_loss(model, batch)[0].item()) < 1e-5
        assert torch.allclose(dpo.sequence_logps(old, batch), dpo.sequence_logps(model, batch), atol=1e-4)
    assert all(not torch.is_tensor(c) for c in old.calls[n_calls:])


@pytest.mark.parametrize("prompt, completion", [("The capital of France is ", "Paris"), ("Name: ", "Maya Lopez"),
                                                ("The capital of France is", " Paris"), ("Code ", "48213")])
def test_training_learns_exactly_the_tokens_scoring_scores(tiny_llama, prompt, completion):
    """A prompt ending in a space: the space merges into the completion's first token, which training
    learns and scoring scores (both tokenize the text whole); the scored tokens = the learned ones minus EOS."""
    from memlab import training
    from memlab.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    item = {"id": "x", "prompt": prompt, "completion": completion}
    ex = training.tokenize_item(item, "prompt_completion", tok, "completion", 128)
    learned = [t for t in ex["labels"] if t != training.IGNORE_INDEX]
    enc = encode_item(tok, item)
    assert learned[:-1] == enc.input_ids[enc.score_start:] and learned[-1] == tok.eos_token_id
    assert tok.decode(learned[:-1]).strip() == completion.strip()
