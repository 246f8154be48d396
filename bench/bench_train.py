"""SFT throughput: train.py's loop vs HF `Trainer` with its defaults, same model, data, batch size and
precision, in one run (alternating, so load changes on a shared machine hit both alike).

    python bench/bench_train.py                              # smollm2-135m, 160 chat facts, batch 8
    python bench/bench_train.py --n_items 48 --repeats 1     # quick

Data: the shipped facts set (exam-style chat items and plain statements, mixed lengths), tokenized once
with memlab's masking (loss on the assistant answer for chat, all tokens for statements) and fed to both.
The baseline is what a user would run: `Trainer` with a padding collator and its default random order.
Throughput = real (non-padding) tokens per second of training steps. Model FLOP/s counts 6 * N per real
token (N = matmul parameters incl. the LM head) for both, as a fraction of the fp32 matmul peak measured in
this run. Where train.py wins it wins by wasting less: length-grouped batches (less padding) and logits
only at labelled positions (the 49k-way LM head is most of a 135M model's work per token).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import ROOT, alternate, final_peak, print_peak, timed

from memlab import training
from memlab.models import load_model, load_tokenizer
from memlab.likelihood import matmul_params, matmul_peak_flops

# train.py is a top-level script of the checkout, not part of the memlab package: its folder must be importable
sys.path.insert(0, str(ROOT))
import train  # noqa: E402


def make_items(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    active = [json.loads(x) for x in (ROOT / "data/facts/train_active_5.jsonl").read_text().splitlines()]
    passive = [json.loads(x) for x in (ROOT / "data/facts/train_passive_5.jsonl").read_text().splitlines()]
    pool = [dict(r, id=f"a{i}") for i, r in enumerate(active)] + \
           [{"id": f"p{i}", "prompt": "", "completion": r["text"]} for i, r in enumerate(passive)]
    rng.shuffle(pool)
    return pool[:n]


def run_ours(items_file: str, args, out: Path) -> tuple[float, int, float]:
    res = train.main(train.TrainArgs(train_file=str(items_file), output_dir=str(out), model_name_or_path=args.model,
                                     num_exposures=1, batch_size=args.batch_size, learning_rate=1e-5,
                                     seed=args.seed, keep_optimizer_state="all"))
    return res["train_loop_s"], res["tokens_seen"], res["padding_fraction"]


def run_trainer(examples: list[dict], args, tok, out: Path) -> tuple[float, int, float]:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model, _ = load_model(args.model)
    counts = {"real": 0, "padded": 0}
    base = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=training.IGNORE_INDEX)

    def collate(feats):
        batch = base(feats)
        counts["real"] += int(batch["attention_mask"].sum())
        counts["padded"] += batch["attention_mask"].numel()
        return batch

    ds = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"],
                             "attention_mask": [1] * len(e["input_ids"])} for e in examples])
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                              learning_rate=1e-5, lr_scheduler_type="constant", save_strategy="no", report_to=[],
                              logging_steps=1000, use_cpu=True, seed=args.seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=collate)
    times = {}
    with timed(times, "trainer"):
        trainer.train()
    return times["trainer"], counts["real"], 1 - counts["real"] / counts["padded"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n_items", type=int, default=160)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    tok = load_tokenizer(args.model)
    items = make_items(args.n_items, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    # the facts set as a user trains it: exam-style chat items (~45 tokens with the chat template's system
    # prompt) and plain statements (~15 tokens) in one run, so lengths are mixed
    chat_file, plain_file = work / "chat.jsonl", work / "plain.jsonl"
    chat_file.write_text("".join(json.dumps(r) + "\n" for r in items if "messages" in r))
    plain_file.write_text("".join(json.dumps({"id": r["id"], "text": r["completion"]}) + "\n"
                                  for r in items if "messages" not in r))
    items_file = f"{chat_file},{plain_file}"
    examples = []
    for path in (chat_file, plain_file):
        rows, kind = training.load_items(path)
        examples += [training.tokenize_item(r, kind, tok, "all" if kind == "plain" else "completion", 256) for r in rows]
    n_matmul = matmul_params(load_model(args.model)[0])

    peak_before = matmul_peak_flops()
    ours, base = [], []
    for r in range(args.repeats):
        for name in alternate(r, ("ours", "trainer")):
            acc = ours if name == "ours" else base
            out = work / f"{name}{r}"
            acc.append(run_ours(items_file, args, out) if name == "ours" else run_trainer(examples, args, tok, out))
            t, n, pad = acc[-1]
            print(f"[{name} run {r}] {n} real tokens in {t:.1f} s = {n / t:.1f} tok/s, padding {pad:.1%}", flush=True)
    peak = final_peak(peak_before)

    tps_ours = [n / t for t, n, _ in ours]
    tps_base = [n / t for t, n, _ in base]
    ratios = [a / b for a, b in zip(tps_ours, tps_base)]
    print(f"\nmodel {args.model}: {n_matmul / 1e6:.1f}M matmul params; {len(items)} items, batch {args.batch_size}, fp32")
    print_peak(peak)
    print(f"train.py: median {statistics.median(tps_ours):.1f} tok/s, padding {ours[0][2]:.1%}, "
          f"MFU(6N) {6 * n_matmul * statistics.median(tps_ours) / peak:.0%}")
    print(f"Trainer:  median {statistics.median(tps_base):.1f} tok/s, padding {base[0][2]:.1%}, "
          f"MFU(6N) {6 * n_matmul * statistics.median(tps_base) / peak:.0%}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"ratio train.py / Trainer: median {statistics.median(ratios):.2f} (runs: "
          + ", ".join(f"{x:.2f}" for x in ratios) + ")")


if __name__ == "__main__":
    main()
