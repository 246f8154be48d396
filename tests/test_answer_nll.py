"""answer_nll (issue 24, item 1): every QA probe's teacher-forced NLL of its true answer, in generate.py's and in
the in-training evaluation's items.csv, equals a plain transformers forward pass on the same model; per_item.csv
carries it."""
import csv

import pytest
import torch
from transformers import AutoModelForCausalLM

import make_data
import train
from helpers import script
from memlab.likelihood import render_chat
from memlab.models import load_tokenizer, resolve_model_path

pytestmark = pytest.mark.usefixtures("one_thread")
generate = script("generate")


def plain_answer_nll(model, tok, question: str, answer: str) -> float | None:
    """Mean NLL of the answer's tokens after the chat prompt, by one plain forward pass; None when the answer's
    first token merges with the prompt's last (then the prompt alone is not a prefix of the whole text)."""
    prompt = render_chat(tok, [{"role": "user", "content": question}], add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False).input_ids
    ids = tok(prompt + answer, add_special_tokens=False).input_ids
    if ids[:len(p_ids)] != p_ids or len(ids) == len(p_ids):
        return None
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return float(-sum(logp[t - 1, ids[t]] for t in range(len(p_ids), len(ids))) / (len(ids) - len(p_ids)))


def check(rows, model, tok) -> int:
    """Every row with a plain value matches it to 1e-4; returns how many were compared."""
    n = 0
    for r in rows:
        want = plain_answer_nll(model, tok, r["question"], r["answer"])
        if want is None:
            continue
        assert abs(float(r["answer_nll"]) - want) < 1e-4, (r["id"], r["answer_nll"], want)
        assert abs(float(r["answer_nll_sum"]) - want * int(r["answer_tokens"])) < 1e-3
        n += 1
    return n


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_answer_nll_in_training_and_in_generate_equals_a_plain_forward_pass(tmp_path):
    make_data.main(["facts", "--output_dir", str(tmp_path / "facts"), "--n_names", "0", "--n_objects", "6",
                    "--variants_per_fact", "1", "--seed", "7"])
    probes = str(tmp_path / "facts" / "probes.jsonl")
    out = tmp_path / "run"
    train.main(train.TrainArgs(model_name_or_path="tiny-llama", output_dir=str(out), num_exposures=1,
                               learning_rate=3e-3, batch_size=4, train_file=f"{tmp_path}/facts/train_active_1.jsonl",
                               eval_probes_file=probes, eval_exposures="0,1", save_exposures="1",
                               eval_temperatures="0", eval_max_new_tokens=8, eval_bootstrap=0))
    rows = read_csv(out / "eval" / "recall" / "items.csv")
    tok = load_tokenizer("tiny-llama")
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny-llama", weights_required=True)).eval()
    ckpt = out / "checkpoints" / "exposure_1"
    tuned = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    n0 = check([r for r in rows if r["checkpoint"] == "exposure_0"], base, tok)
    n1 = check([r for r in rows if r["checkpoint"] == "exposure_1"], tuned, tok)
    assert n0 >= 10 and n1 >= 10  # most probes compared (those whose answer does not merge into the prompt)
    # training moved the answers' likelihood: the column measures the model it was read from
    nll = {(r["checkpoint"], r["id"]): float(r["answer_nll"]) for r in rows}
    assert any(abs(nll[("exposure_0", i)] - nll[("exposure_1", i)]) > 1e-3 for _, i in nll)

    generate.main(generate.GenerateArgs(mode="qa", input_file=probes, output_dir=str(tmp_path / "qa"),
                                        model_name_or_path="tiny-llama", checkpoints=[str(ckpt)], max_new_tokens=8,
                                        temperatures="0", bootstrap=0))
    gen = read_csv(tmp_path / "qa" / "items.csv")
    assert check(gen, tuned, tok) >= 10
    in_training = {r["id"]: float(r["answer_nll"]) for r in rows if r["checkpoint"] == "exposure_1"}
    assert all(abs(float(r["answer_nll"]) - in_training[r["id"]]) < 1e-4 for r in gen)  # one machinery
