"""finetune_dpo.py and memlab/dpo.py: the loss on hand values, sequence log-probs, DPO after a real SFT run
(margin up, QA accuracy kept), the frozen-SFT reference for full and adapter checkpoints, on-policy pairs
from a generate.py items.csv, and bad input."""
import csv
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import finetune_dpo
import make_data
import train
from memlab import dpo, training
from memlab.cli import run
from memlab.generation import GenRequest, generate_requests, qa_prompt_ids, stop_token_ids
from memlab.io import DataError
from memlab.models import load_model, load_tokenizer
from memlab.likelihood import encode_item, score_items


pytestmark = pytest.mark.usefixtures("one_thread")


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def write_jsonl(path, rows) -> Path:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


def pair_logps(model_dir, pairs) -> torch.Tensor:
    """(N, 2) [chosen, rejected] log-probs under a model loaded afresh from disk."""
    tok = load_tokenizer(str(model_dir))
    model, _ = load_model(str(model_dir))
    model.eval()
    ex = [dpo.tokenize_pair(p, tok, 256) for p in pairs]
    with torch.no_grad():
        lp = dpo.sequence_logps(model, dpo.collate_pairs(ex, tok.pad_token_id))
    return torch.stack([lp[:len(pairs)], lp[len(pairs):]], dim=1)


def qa_accuracy(model_dir, pairs) -> float:
    """Share of pairs whose greedy answer to the prompt is exactly the chosen (true) answer."""
    tok = load_tokenizer(str(model_dir))
    model, _ = load_model(str(model_dir))
    reqs = [GenRequest(p["id"], qa_prompt_ids(tok, p["prompt"]), 8) for p in pairs]
    out = generate_requests(model, reqs, tok.pad_token_id, stop_token_ids(tok, model), 16)
    return sum(tok.decode(out[p["id"]], skip_special_tokens=True).strip() == p["chosen"] for p in pairs) / len(pairs)


def answer_token_accuracy(model_dir, pairs) -> float:
    """Greedy QA per answer token: share of the chosen answers' tokens (end of turn included, ~70 for 10
    pairs) that are the model's argmax given the prompt and the true answer so far."""
    tok = load_tokenizer(str(model_dir))
    model, _ = load_model(str(model_dir))
    model.eval()
    batch = training.collate([dpo.tokenize_pair(p, tok, 256)["chosen"] for p in pairs], tok.pad_token_id)
    with torch.no_grad():
        pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].argmax(-1)
    labels = batch["labels"][:, 1:]
    scored = labels != training.IGNORE_INDEX
    return float((pred == labels)[scored].float().mean())


def dir_digest(path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def dpo_args(**kw) -> finetune_dpo.DPOArgs:
    # lr 2e-4, not 1e-3: at 1e-3 DPO lowered the true answer's log-prob too in 16 of 18 runs (other SFT
    # seeds/batch sizes, an AVX-512 Xeon; by up to 5.5 nats, answer-token accuracy by up to 0.24), so
    # "QA kept" held on one machine by luck
    base = dict(learning_rate=2e-4, num_epochs=2, batch_size=4, beta=0.1)
    base.update(kw)
    return finetune_dpo.DPOArgs(**base)


# ------------------------------------------------------------------------------------------- pure math
def test_losses_on_hand_computed_values():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -2.0])
    rc, rr = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    # row 0: h = (-1 + 2) - (-3 + 2) = 2; row 1: h = 0
    losses, cw, rl = dpo.preference_loss(pc, pr, rc, rr, beta=0.5, loss_type="sigmoid")
    assert torch.allclose(losses, torch.tensor([math.log(1 + math.exp(-1.0)), math.log(2.0)]), atol=1e-6)
    assert torch.allclose(cw, torch.tensor([0.5, 0.0])) and torch.allclose(rl, torch.tensor([-0.5, 0.0]))
    ipo, _, _ = dpo.preference_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")  # (h - 1/(2*0.5))^2
    assert torch.allclose(ipo, torch.tensor([1.0, 1.0]))
    ipo, _, _ = dpo.preference_loss(pc, pr, rc, rr, beta=0.25, loss_type="ipo")  # (h - 2)^2
    assert torch.allclose(ipo, torch.tensor([0.0, 4.0]))
    stats = dpo.reward_stats(cw, rl)
    assert stats == {"reward_margin": 0.5, "reward_accuracy": 0.5, "chosen_reward": 0.25, "rejected_reward": -0.25}
    with pytest.raises(ValueError):
        dpo.preference_loss(pc, pr, rc, rr, 0.1, "hinge")


def test_sequence_logps_equal_the_shared_scorer(tiny_llama):
    """Sum of completion log-probs, sparse or dense logits, padded in a batch = −loss·n of memlab.likelihood."""
    tok = load_tokenizer(str(tiny_llama))
    model, _ = load_model(str(tiny_llama))
    pairs = [{"id": "a", "prompt": "Code of the lamp?", "chosen": "48213", "rejected": "9"},
             {"id": "b", "prompt": "What is the catalog number of the small brass doorknob?", "chosen": "1",
              "rejected": "a much longer wrong answer"}]
    ex = [dpo.tokenize_pair(p, tok, 256) for p in pairs]
    batch = dpo.collate_pairs(ex, tok.pad_token_id)
    with torch.no_grad():
        sparse, dense = dpo.sequence_logps(model, batch), dpo.sequence_logps(model, batch, sparse_logits=False)
    assert torch.allclose(sparse, dense, atol=1e-4)
    items = [encode_item(tok, {"id": f"{p['id']}-{s}", "messages": [
        {"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p[s]}]})
        for s in ("chosen", "rejected") for p in pairs]
    ref = torch.tensor([-s.loss * s.n_tokens for s in score_items(model, items, tok.pad_token_id)])
    assert torch.allclose(sparse, ref, atol=1e-3)


# ------------------------------------------------------------------------------------- full SFT -> DPO
@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    out = tmp_path_factory.mktemp("facts") / "facts"
    make_data.main(["facts", "--output_dir", str(out), "--n_names", "0", "--n_objects", "10",
                    "--variants_per_fact", "1", "--seed", "3"])
    return out


@pytest.fixture(scope="module")
def matching_pairs(facts, tmp_path_factory):
    """make_data's DPO pairs (true answer vs a distractor), asked with the SFT training question."""
    rejected = {p["fact_id"]: p["rejected"] for p in read_jsonl(facts / "dpo_pairs.jsonl")}
    rows = [{"id": r["id"] + "-dpo", "fact_id": r["fact_id"], "prompt": r["messages"][0]["content"],
             "chosen": r["messages"][1]["content"], "rejected": rejected[r["fact_id"]]}
            for r in read_jsonl(facts / "train_active_1.jsonl")]
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", rows)


@pytest.fixture(scope="module")
def sft_full(facts, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "full"
    train.main(train.TrainArgs(model_name_or_path="tiny-llama", train_file=str(facts / "train_active_1.jsonl"),
                               output_dir=str(out), num_exposures=40, save_exposures="40", batch_size=4,
                               learning_rate=5e-3))
    return out / "checkpoints" / "exposure_40"


@pytest.fixture(scope="module")
def dpo_full(sft_full, matching_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "full"
    before = dir_digest(sft_full)
    res = finetune_dpo.main(dpo_args(sft_checkpoint=str(sft_full), pairs_file=str(matching_pairs),
                                     output_dir=str(out), save_epochs="1"))
    assert dir_digest(sft_full) == before  # the SFT checkpoint on disk is untouched
    return out, res


def test_dpo_raises_margin_and_keeps_qa_accuracy(dpo_full, sft_full, matching_pairs):
    """Asserted on teacher-forced quantities with effect-size margins, not on how many of 10 greedy answers
    are exactly right: the SFT model answers with top-1/top-2 logit gaps of 0.1-0.2, so that count is a coin
    toss across CPUs (0.2 -> 0.5 on the 2-core EPYC, 0.5 -> 0.4 and 0.4 -> 0.1 on an AVX-512 Xeon). Seen in
    12 runs with other SFT seeds and batch sizes (Xeon) and the test's own run (EPYC, Xeon 1 and 4 threads):
    margin +1.4 to +3.0 nats, >= 8 of 10 pairs up; chosen log-prob -0.33 to +1.34 nats; answer-token
    accuracy -0.03 to +0.11 (SFT: 0.61 to 0.87). A policy driven to garbage loses tens of nats and most tokens."""
    out, res = dpo_full
    pairs = read_jsonl(matching_pairs)
    policy = out / "checkpoints" / "epoch_2"
    sft, fresh = pair_logps(sft_full, pairs), pair_logps(policy, pairs)  # the saved policy, reloaded
    # the preference: the log-prob margin chosen - rejected rises, on most pairs (reward = beta x the rise)
    assert res["after"]["logp_margin"] > res["before"]["logp_margin"] + 0.5
    assert abs(float((fresh[:, 0] - fresh[:, 1]).mean()) - res["after"]["logp_margin"]) < 1e-2
    assert res["after"]["reward_margin"] > 0.05 and res["after"]["reward_accuracy"] >= 0.7
    # QA kept: the true answer stays as likely as after SFT, and stays the greedy choice token by token
    acc_sft, acc_dpo = answer_token_accuracy(sft_full, pairs), answer_token_accuracy(policy, pairs)
    msg = (f"margin {res['before']['logp_margin']:.2f} -> {res['after']['logp_margin']:.2f}, chosen log-prob "
           f"{float(sft[:, 0].mean()):.2f} -> {float(fresh[:, 0].mean()):.2f}, answer tokens {acc_sft:.3f} -> {acc_dpo:.3f}")
    print(msg)
    assert float(fresh[:, 0].mean()) > float(sft[:, 0].mean()) - 1.5, msg
    assert acc_dpo >= acc_sft - 0.1, msg


def test_full_reference_is_the_frozen_sft_model(dpo_full, sft_full, matching_pairs, tiny_llama):
    out, res = dpo_full
    ref = res["reference"]
    assert ref["kind"] == "frozen_sft" and ref["mechanism"] == "separate_copy"
    assert Path(ref["path"]) == sft_full.resolve()
    assert ref["unchanged"] and ref["digest_start"] == ref["digest_end"] and ref["max_abs_logp_change"] == 0
    sft_model, _ = load_model(str(sft_full))
    assert training.param_digest(sft_model.named_parameters()) == ref["digest_end"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["reference"]["kind"] == "frozen_sft" and cfg["reference"]["path"] == str(sft_full.resolve())
    pairs = read_jsonl(matching_pairs)
    stored = torch.tensor([[r["chosen_logp"], r["rejected_logp"]] for r in read_jsonl(out / "reference_logps.jsonl")])
    assert torch.allclose(stored, pair_logps(sft_full, pairs), atol=1e-3)
    assert not torch.allclose(stored, pair_logps(tiny_llama, pairs), atol=1.0)  # not the pre-SFT base


def test_run_directory_contract(dpo_full):
    out, res = dpo_full
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]
    assert (out / "checkpoints" / "epoch_2" / "model.safetensors").exists()
    assert (out / "checkpoints" / "epoch_2" / "tokenizer_config.json").exists()
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == res["steps"] == 2 * res["steps_per_epoch"] == 6  # 10 pairs / 4 per batch -> 3 steps
    assert {"step", "epoch", "loss", "reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp",
            "lr"} <= set(rows[0])
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-4 and abs(rows[0]["reward_margin"]) < 1e-6  # policy == reference
    assert len(read_jsonl(out / "pairs.jsonl")) == 10
    with open(out / "items.csv") as f:
        items = list(csv.DictReader(f))
    assert len(items) == 10 and {"id", "fact_id", "logp_margin_before", "logp_margin_after"} <= set(items[0])
    assert json.loads((out / "results.json").read_text())["final"] == rows[-1]


def test_precomputed_reference_gives_the_same_run(dpo_full, sft_full, matching_pairs, tmp_path):
    out, res = dpo_full
    res2 = finetune_dpo.main(dpo_args(sft_checkpoint=str(sft_full), pairs_file=str(matching_pairs),
                                      output_dir=str(tmp_path / "pre"), precompute_reference=True))
    assert res2["reference"]["mechanism"].startswith("policy_before_update")
    assert "digest_end" not in res2["reference"]  # nothing left to check: the reference was never a second model
    for a, b in zip(read_jsonl(out / "metrics.jsonl"), read_jsonl(tmp_path / "pre" / "metrics.jsonl")):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["reward_margin"] - b["reward_margin"]) < 1e-5


def test_new_lora_on_full_sft_uses_sft_as_reference(dpo_full, sft_full, matching_pairs, tmp_path):
    out = tmp_path / "lora"
    res = finetune_dpo.main(dpo_args(sft_checkpoint=str(sft_full), pairs_file=str(matching_pairs), output_dir=str(out),
                                     num_epochs=1, lora_r=4, lora_alpha=8, learning_rate=1e-2, loss="ipo"))
    assert res["reference"]["mechanism"] == "adapters_disabled" and res["reference"]["unchanged"]
    assert res["after"]["logp_margin"] > res["before"]["logp_margin"]
    assert read_jsonl(out / "reference_logps.jsonl") == read_jsonl(dpo_full[0] / "reference_logps.jsonl")
    ckpt = out / "checkpoints" / "epoch_1"
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(sft_full.resolve())  # the adapter sits on the SFT model
    assert not torch.allclose(pair_logps(ckpt, read_jsonl(matching_pairs)),
                              pair_logps(sft_full, read_jsonl(matching_pairs)))  # the adapter learned


# ---------------------------------------------------------------------------------- adapter SFT -> DPO
@pytest.fixture(scope="module")
def sft_adapter(facts, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "lora"
    train.main(train.TrainArgs(model_name_or_path="tiny-llama", train_file=str(facts / "train_active_1.jsonl"),
                               output_dir=str(out), num_exposures=3, save_exposures="3", batch_size=4,
                               learning_rate=2e-2, lora_r=4, lora_alpha=8))
    return out / "checkpoints" / "exposure_3"


def test_adapter_reference_is_the_sft_adapter_not_the_base(sft_adapter, facts, tmp_path, tiny_llama):
    pairs_file = facts / "dpo_pairs.jsonl"
    pairs = read_jsonl(pairs_file)
    before = dir_digest(sft_adapter)
    out = tmp_path / "dpo"
    res = finetune_dpo.main(dpo_args(sft_checkpoint=str(sft_adapter), pairs_file=str(pairs_file),
                                     output_dir=str(out), num_epochs=1, learning_rate=1e-2))
    ref = res["reference"]
    assert res["policy"] == "continue_sft_adapter" and ref["mechanism"] == "frozen_adapter_copy"
    assert ref["unchanged"] and ref["digest_start"] == ref["digest_end"] and ref["max_abs_logp_change"] == 0
    assert dir_digest(sft_adapter) == before
    stored = torch.tensor([[r["chosen_logp"], r["rejected_logp"]] for r in read_jsonl(out / "reference_logps.jsonl")])
    assert torch.allclose(stored, pair_logps(sft_adapter, pairs), atol=1e-3)
    assert not torch.allclose(stored, pair_logps(tiny_llama, pairs), atol=0.1)  # adapters off = base: not used
    ckpt = out / "checkpoints" / "epoch_1"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "reference").exists()
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == json.loads((sft_adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"]
    assert res["after"]["logp_margin"] > res["before"]["logp_margin"]
    assert abs(float(pair_logps(ckpt, pairs).diff(dim=1).neg().mean()) - res["after"]["logp_margin"]) < 1e-2
    # only the continued adapter trains, and switching the reference adapter in and out changes nothing:
    # the same run with reference log-probs precomputed (reference adapter deleted before training) agrees
    sft_params = sum(t.numel() for t in load_file(sft_adapter / "adapter_model.safetensors").values())
    assert json.loads((out / "config.json").read_text())["policy"]["trainable_params"] == sft_params
    res2 = finetune_dpo.main(dpo_args(sft_checkpoint=str(sft_adapter), pairs_file=str(pairs_file),
                                      output_dir=str(tmp_path / "pre"), num_epochs=1, learning_rate=1e-2,
                                      precompute_reference=True))
    assert abs(res2["after"]["logp_margin"] - res["after"]["logp_margin"]) < 1e-4


# ------------------------------------------------------------------------------------------ on-policy
COLUMNS = ["id", "fact_id", "question", "response", "extracted_answer", "answer", "correct", "error", "tier",
           "temperature", "repeat", "checkpoint"]


def write_items_csv(path, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(dict(zip(COLUMNS, r)))
    return Path(path)


def test_on_policy_pairs_from_generate_items(tmp_path, sft_full, facts):
    fact = read_jsonl(facts / "facts.jsonl")
    f0, f1 = fact[0], fact[1]
    q0, q1 = f"What is the {f0['attribute']} of the {f0['entity']}?", f"And of the {f1['entity']}?"
    items = write_items_csv(tmp_path / "items.csv", [
        ("p0", f0["fact_id"], q0, "It is 12345.", "12345", f0["answer"], 0, 1, "easy", 0.0, 0, "exposure_40"),
        ("p0", f0["fact_id"], q0, f"It is {f0['answer']}.", f0["answer"], f0["answer"], 1, 0, "easy", 1.0, 0,
         "exposure_40"),
        ("p0", f0["fact_id"], q0, "It is 12345.", "12345", f0["answer"], 0, 1, "easy", 1.0, 1, "exposure_40"),
        ("p0", f0["fact_id"], q0, "99999", "99999", f0["answer"], 0, 1, "easy", 1.0, 2, "exposure_40"),
        ("p1", f1["fact_id"], q1, "", "", f1["answer"], 0, 1, "mid", 0.0, 0, "exposure_40"),
        ("p1", f1["fact_id"], q1, "no idea", "", f1["answer"], 0, 1, "mid", 1.0, 0, "exposure_40"),
    ])
    pairs, counts = dpo.pairs_from_generate(items, facts / "facts.jsonl")
    assert [(p["id"], p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("p0-onpolicy0", q0, f0["answer"], "It is 12345."), ("p0-onpolicy1", q0, f0["answer"], "99999"),
        ("p1-onpolicy0", q1, f1["answer"], "no idea")]
    assert counts == {"rows": 6, "correct": 1, "empty_answer": 1, "duplicate": 1, "equals_truth": 0, "pairs": 3}
    assert [p["rejected"] for p in dpo.pairs_from_generate(items, rejected_field="extracted_answer")[0]] == [
        "12345", "99999"]  # csv answers as the truth; empty extractions skipped
    # end to end through the command line
    out = tmp_path / "run"
    run(finetune_dpo.main, finetune_dpo.DPOArgs, [
        "--sft_checkpoint", str(sft_full), "--pairs_from_generate", str(items), "--facts", str(facts / "facts.jsonl"),
        "--output_dir", str(out), "--num_epochs", "1", "--batch_size", "2", "--precompute_reference"])
    assert [p["rejected"] for p in read_jsonl(out / "pairs.jsonl")] == ["It is 12345.", "99999", "no idea"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pairs"]["source"] == "on_policy" and cfg["pairs"]["correct"] == 1 and cfg["reference"]["precomputed"]
    assert json.loads((out / "results.json").read_text())["n_pairs"] == 3


def test_on_policy_errors(tmp_path, facts):
    row = ("p0", "object-0000", "Q?", "1", "1", "2", 0, 1, "easy", 0.0, 0)
    two = write_items_csv(tmp_path / "two.csv", [row + ("exposure_1",), row + ("exposure_2",)])
    with pytest.raises(DataError, match=r"several checkpoints \['exposure_1', 'exposure_2'\].*--generate_checkpoint"):
        dpo.pairs_from_generate(two)
    assert len(dpo.pairs_from_generate(two, checkpoint="exposure_2")[0]) == 1
    with pytest.raises(DataError, match=r"two.csv:2: answer '2' differs from .*facts.jsonl's"):
        dpo.pairs_from_generate(two, facts / "facts.jsonl", checkpoint="exposure_1")
    (tmp_path / "bad.csv").write_text("id,question\nx,y\n")
    with pytest.raises(DataError, match=r"bad.csv: not a generate.py --mode qa items.csv: lacks column\(s\) "
                                        r"\['fact_id', 'correct', 'response', 'answer'\]"):
        dpo.pairs_from_generate(tmp_path / "bad.csv")
    right = write_items_csv(tmp_path / "right.csv", [("p", "f", "Q?", "7", "7", "7", 1, 0, "easy", 0.0, 0, "c")])
    with pytest.raises(DataError, match="no wrong answers to learn from"):
        dpo.pairs_from_generate(right)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_pairs_named_by_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "fact_id": "f", "prompt": "Q?", "chosen": "1", "rejected": "2"},
        {"id": "b", "fact_id": "f", "prompt": "Q?", "chosen": "12345", "rejected": " 12345"},
        {"id": "c", "fact_id": "f", "prompt": "Q?", "chosen": "1"},
        {"id": "d", "prompt": "", "chosen": "1", "rejected": "2"}])
    with pytest.raises(DataError) as e:
        dpo.load_pairs(f)
    msg = str(e.value)
    assert msg.startswith("3 bad DPO pair(s)")
    assert f"{f}:2: chosen equals rejected ('12345')" in msg
    assert f"{f}:3: missing field(s) 'rejected'" in msg and f"{f}:4: missing field(s) 'prompt'" in msg
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "Q?", "chosen": "1", "rejected": "2"}])
    assert dpo.load_pairs(ok)[0]["id"] == dpo.load_pairs(ok)[0]["fact_id"] == "ok-1"


def test_bad_arguments_and_missing_checkpoint(tmp_path, capsys, sft_adapter):
    with pytest.raises(DataError) as e:
        finetune_dpo.main(dpo_args(sft_checkpoint=str(tmp_path / "nope"), output_dir=str(tmp_path / "o"),
                                   loss="hinge", beta=0))
    msg = str(e.value)
    assert f"--sft_checkpoint {tmp_path / 'nope'}: checkpoint not found" in msg
    assert "give exactly one of --pairs_file and --pairs_from_generate" in msg
    assert "--loss must be one of ('sigmoid', 'ipo'), got 'hinge'" in msg and "--beta must be > 0" in msg
    with pytest.raises(DataError, match="LoRA adapter of rank 4, which DPO continues"):
        finetune_dpo.validate(dpo_args(sft_checkpoint=str(sft_adapter), output_dir="o", pairs_file="p", lora_r=8))
    with pytest.raises(DataError, match="checkpoint not found"):
        dpo.build_policy_and_reference(str(tmp_path / "nope"), None)
    with pytest.raises(SystemExit) as e:
        run(finetune_dpo.main, finetune_dpo.DPOArgs, ["--sft_checkpoint", str(tmp_path / "nope"),
                                                      "--output_dir", str(tmp_path / "o"), "--pairs_file", "x"])
    assert e.value.code == 2
    assert "error: invalid arguments:" in capsys.readouterr().err
