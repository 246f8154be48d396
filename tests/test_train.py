"""train.py on tiny models: real memorization, LoRA, checkpoints, exact resume, loss masks, DDP, DeepSpeed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import make_data
import train
from memlab import training
from memlab.io import DataError
from memlab.models import load_model, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(scope="module")
def facts20(tmp_path_factory):
    """20 object facts from make_data.py, one exam-style chat variant each."""
    out = tmp_path_factory.mktemp("facts") / "facts"
    make_data.main(["facts", "--output_dir", str(out), "--n_names", "0", "--n_objects", "20",
                    "--variants_per_fact", "1", "--seed", "3"])
    return out


def args(**kw) -> train.TrainArgs:
    base = dict(model_name_or_path="tiny-llama", learning_rate=1e-3, batch_size=4, num_exposures=2)
    base.update(kw)
    return train.TrainArgs(**base)


def greedy_recall(model_dir, rows) -> float:
    """Share of chat rows whose assistant answer appears in the greedy reply to the user turn."""
    tok = load_tokenizer(str(model_dir))
    model, _ = load_model(str(model_dir))
    model.eval()
    hits = 0
    for r in rows:
        enc = tok.apply_chat_template(r["messages"][:1], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += r["messages"][1]["content"] in reply
    return hits / len(rows)


def test_tiny_model_memorizes_20_facts(memorized, tiny_llama):
    train_file = memorized["facts"] / "train_active_1.jsonl"
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    assert len(rows) == 20
    assert greedy_recall(tiny_llama, rows) <= 0.10
    res = memorized["results"]
    assert res["loss_per_exposure"]["60"] < res["loss_per_exposure"]["1"]
    assert greedy_recall(memorized["run"] / "checkpoints" / "exposure_60", rows) >= 0.90


def test_chat_labels_only_on_assistant_tokens(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    item = {"id": "x", "messages": [{"role": "user", "content": "What is the code of the lamp?"},
                                    {"role": "assistant", "content": "48213"}]}
    ex = training.tokenize_item(item, "chat", tok, "completion", 256)
    learned = tok.decode([i for i, l in zip(ex["input_ids"], ex["labels"]) if l != training.IGNORE_INDEX])
    assert learned.strip() == "48213<|im_end|>"
    assert all(l == training.IGNORE_INDEX or l == i for i, l in zip(ex["input_ids"], ex["labels"]))
    everything = training.tokenize_item(item, "chat", tok, "all", 256)
    assert everything["labels"] == everything["input_ids"]
    pc = training.tokenize_item({"id": "y", "prompt": "Q: lamp?\nA:", "completion": " 48213"}, "prompt_completion",
                         tok, "completion", 256)
    assert tok.decode([i for i, l in zip(pc["input_ids"], pc["labels"]) if l != training.IGNORE_INDEX]) == " 48213<|im_end|>"


def test_sparse_logit_loss_equals_hf_loss(tiny_llama, tiny_gpt2):
    torch.manual_seed(0)
    for path in (tiny_llama, tiny_gpt2):
        model, _ = load_model(str(path))
        ids = torch.randint(5, 40000, (3, 11))
        mask = torch.ones_like(ids)
        mask[2, 7:] = 0
        labels = ids.masked_fill(mask == 0, training.IGNORE_INDEX)
        labels[:, :3] = training.IGNORE_INDEX
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        ours, n = training.causal_lm_loss(model, batch)
        assert n == int((labels[:, 1:] != training.IGNORE_INDEX).sum())
        assert abs(ours.item() - model(**batch).loss.item()) < 1e-5


def test_checkpoints_exactly_as_requested_and_reload(facts20, tmp_path):
    out = tmp_path / "run"
    res = train.main(args(train_file=str(facts20 / "train_passive_1.jsonl"), output_dir=str(out),
                          num_exposures=3, save_exposures="1,3", save_steps="log", batch_size=2))
    assert res["steps"] == 30 and res["steps_per_exposure"] == 10
    expected = {"exposure_1", "exposure_3"} | {f"step_{s:07d}" for s in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30]}
    assert {p.name for p in (out / "checkpoints").iterdir()} == expected
    assert training.log_steps(250) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 200]
    # every checkpoint reloads; later ones differ from earlier ones
    w = {}
    for name in ("step_0000001", "exposure_1", "exposure_3"):
        model, _ = load_model(str(out / "checkpoints" / name))
        w[name] = model.get_input_embeddings().weight.detach().clone()
    assert not torch.equal(w["step_0000001"], w["exposure_3"])
    # only the newest checkpoint keeps optimizer state (--keep_optimizer_state last)
    with_opt = [p.name for p in (out / "checkpoints").iterdir() if (p / "trainer_state" / "optimizer.pt").exists()]
    assert with_opt == ["step_0000030"] or with_opt == ["exposure_3"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {"step", "exposure", "loss", "lr", "tokens_per_s", "padding_fraction"} <= set(rows[0])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["args"]["save_steps"] == "log" and "torch" in cfg["versions"]


def test_lora_changes_only_adapter_and_reloads(facts20, tmp_path, tiny_llama):
    out = tmp_path / "lora"
    train.main(args(train_file=str(facts20 / "train_active_1.jsonl"), output_dir=str(out), num_exposures=2,
                    save_exposures="2", lora_r=4, lora_alpha=8, lora_target_modules="attn", merge_on_save=True,
                    learning_rate=5e-3))
    ck = out / "checkpoints" / "exposure_2"
    assert (ck / "adapter_config.json").exists() and not (ck / "model.safetensors").exists()
    adapter = load_file(ck / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0
    # base weights untouched: the reloaded model with the adapter disabled equals the base
    base, _ = load_model(str(tiny_llama))
    peft_model, _ = load_model(str(ck))
    base_sd = base.state_dict()
    frozen = {n.replace(".base_layer", ""): p for n, p in peft_model.get_base_model().state_dict().items()
              if "lora_" not in n}
    assert set(frozen) == set(base_sd)
    assert all(torch.equal(base_sd[n], p) for n, p in frozen.items())
    # reloaded adapter reproduces the eval loss of the merged export
    merged, _ = load_model(str(ck / "merged"))
    tok = load_tokenizer(str(ck))
    item = json.loads((facts20 / "train_active_1.jsonl").read_text().splitlines()[0])
    ex = training.tokenize_item(item, "chat", tok, "completion", 256)
    batch = training.collate([ex], tok.pad_token_id)
    with torch.no_grad():
        l_adapter = training.causal_lm_loss(peft_model.eval(), batch)[0].item()
        l_merged = training.causal_lm_loss(merged.eval(), batch)[0].item()
        l_base = training.causal_lm_loss(base.eval(), batch)[0].item()
    assert abs(l_adapter - l_merged) < 1e-4 and abs(l_adapter - l_base) > 1e-3


def test_lora_aliases_resolve_on_llama_and_gpt2(tiny_llama, tiny_gpt2):
    llama, _ = load_model(str(tiny_llama))
    gpt2, _ = load_model(str(tiny_gpt2))
    assert training.resolve_lora_targets(llama, "attn") == ["self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj",
                                                     "self_attn.v_proj"]
    assert training.resolve_lora_targets(llama, "mlp") == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    assert len(training.resolve_lora_targets(llama, "all-linear")) == 7
    assert training.resolve_lora_targets(llama, "q,k") == ["self_attn.k_proj", "self_attn.q_proj"]
    assert training.resolve_lora_targets(gpt2, "attn") == ["attn.c_attn", "attn.c_proj"]
    assert training.resolve_lora_targets(gpt2, "mlp") == ["mlp.c_fc", "mlp.c_proj"]
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(gpt2, LoraConfig(r=2, target_modules=training.resolve_lora_targets(gpt2, "mlp")))
    hit = {n.rsplit(".lora_A", 1)[0].split(".h.")[1] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert hit == {"0.mlp.c_fc", "0.mlp.c_proj", "1.mlp.c_fc", "1.mlp.c_proj"}  # not attn.c_proj
    with pytest.raises(DataError, match=r"'wq' matches no linear layer.*q_proj"):
        training.resolve_lora_targets(llama, "wq")


def run_cli(*cli_args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([PY, "train.py", *map(str, cli_args)], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_signal_then_resume_equals_uninterrupted(facts20, tmp_path):
    common = ["--model_name_or_path", "tiny-llama", "--train_file", facts20 / "train_active_1.jsonl",
              "--num_exposures", "3", "--save_exposures", "2,3", "--batch_size", "4", "--learning_rate", "1e-3",
              "--lora_r", "4", "--lora_dropout", "0.1"]  # dropout: RNG state must be restored too
    full = run_cli(*common, "--output_dir", tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    # off a terminal: no progress-bar soup, no library loading bars (memlab/quiet.py)
    assert "\r" not in full.stderr and "Loading weights" not in full.stderr, full.stderr[-2000:]
    cut = run_cli(*common, "--output_dir", tmp_path / "cut", "--debug_signal_at_step", "7")
    assert cut.returncode == train.EXIT_REQUEUE, cut.stderr[-2000:]
    assert (tmp_path / "cut" / "resume" / "trainer_state" / "optimizer.pt").exists()
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = run_cli(*common, "--output_dir", tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(tmp_path / "full/checkpoints/exposure_3/adapter_model.safetensors")
    b = load_file(tmp_path / "cut/checkpoints/exposure_3/adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 16))
    # a different configuration refuses to resume
    bad = run_cli(*common[:-4], "--lora_r", "8", "--output_dir", tmp_path / "cut", "--resume")
    assert bad.returncode == 2 and "different configuration" in bad.stderr and "lora_r" in bad.stderr


def test_real_two_process_ddp(facts20, tmp_path):
    cmd = [str(Path(PY).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", "train.py",
           "--model_name_or_path", "tiny-llama", "--train_file", str(facts20 / "train_active_1.jsonl"),
           "--num_exposures", "2", "--save_exposures", "2", "--batch_size", "4", "--output_dir", str(tmp_path / "ddp")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # a gloo start-up failure happens about once in ten runs; retry once
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert res["num_processes"] == 2
    assert len(res["param_digests"]) == 2 and res["ranks_identical"]
    assert res["steps_per_exposure"] == 3  # 5 batches of 4, padded to 6, 2 per step


def test_deepspeed_zero2_on_cpu(facts20, tmp_path):
    pytest.importorskip("deepspeed")
    cmd = [str(Path(PY).parent / "accelerate"), "launch", "--use_deepspeed", "--deepspeed_config_file",
           "ds_config.json", "--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no", "train.py",
           "--model_name_or_path", "tiny-llama", "--train_file", str(facts20 / "train_active_1.jsonl"),
           "--num_exposures", "1", "--save_exposures", "1", "--batch_size", "4", "--output_dir", str(tmp_path / "ds")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "ds" / "results.json").read_text())
    assert res["distributed_type"] == "DistributedType.DEEPSPEED" and res["num_processes"] == 2
    assert res["ranks_identical"]
    assert (tmp_path / "ds/checkpoints/exposure_1/trainer_state/deepspeed").is_dir()
    assert (tmp_path / "ds/checkpoints/exposure_1/model.safetensors").exists()


def test_embedded_model_two_lora_steps_and_save(tmp_path, smollm2):
    f = tmp_path / "two.jsonl"
    f.write_text("\n".join(json.dumps({"id": str(i), "messages": [
        {"role": "user", "content": f"What is the code of item {i}?"},
        {"role": "assistant", "content": f"{48213 + i}"}]}) for i in range(4)) + "\n")
    res = train.main(args(model_name_or_path="smollm2-135m", train_file=str(f), output_dir=str(tmp_path / "run"),
                          num_exposures=1, save_exposures="1", batch_size=2, lora_r=8))
    assert res["steps"] == 2
    assert (tmp_path / "run/checkpoints/exposure_1/adapter_model.safetensors").exists()


@pytest.mark.parametrize("problem, kwargs, message", [
    ("unknown target", dict(lora_r=4, lora_target_modules="wq"), "matches no linear layer"),
    ("block size", dict(block_size=4096), "above the model's maximum of 1024"),
    ("save beyond", dict(save_exposures="1,5"), "goes beyond --num_exposures 2"),
])
def test_bad_arguments(facts20, tmp_path, problem, kwargs, message):
    with pytest.raises(DataError, match=message):
        train.main(args(train_file=str(facts20 / "train_active_1.jsonl"), output_dir=str(tmp_path / "r"), **kwargs))


def test_bad_data(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        train.main(args(train_file=str(empty), output_dir=str(tmp_path / "r")))
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    tok = load_tokenizer("tiny-llama")
    tok.chat_template = None
    with pytest.raises(DataError, match="no chat template; pass --chat_template plain"):
        training.ensure_chat_template(tok, None, chat)
    training.ensure_chat_template(tok, "plain", chat)
    assert "Assistant: a" in tok.apply_chat_template(json.loads(chat.read_text())["messages"], tokenize=False)
