"""Recognition scoring: memlab's batched per-item scorer vs the seed's method (batch size 1, HF
`outputs.loss` per item), on the same items in the same run.

    python bench/bench_recognition.py                      # 600 corpus sentences, smollm2-135m
    python bench/bench_recognition.py --n_items 64 --chunk 32   # quick

Items come from data/corpus/sentences.jsonl (else generated mixed-length sentences); `--join_max K` joins
1..K consecutive sentences per item for longer, more mixed lengths. The two methods alternate over chunks
of `--chunk` items (which goes first alternates too), so load changes on a shared machine hit both alike;
the ratio is reported overall and as the median (min-max) over chunks. Model FLOP/s = 2 * N * scored
tokens / time, N = parameters in matmuls (LM head included, embedding lookup not), as a fraction of the
fp32 2048x2048 matmul peak measured in this run.
"""
from __future__ import annotations

import json
import random
import statistics

import torch
from common import ROOT, alternate, base_parser, final_peak, print_peak, print_speed_ratio, setup, timed

from memlab.likelihood import encode_items, score_items


def load_texts(n: int, join_max: int, seed: int) -> list[str]:
    path = ROOT / "data" / "corpus" / "sentences.jsonl"
    rng = random.Random(seed)
    if path.exists():
        sents = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    else:  # mixed-length filler sentences
        words = "the a cat dog river house keeper letter blue green seven apples walked quickly over under".split()
        sents = [" ".join(rng.choices(words, k=rng.randint(4, 40))).capitalize() + "." for _ in range(4 * n)]
    out, i = [], 0
    while len(out) < n:
        k = rng.randint(1, join_max)
        out.append(" ".join(sents[(i + j) % len(sents)] for j in range(k)))
        i += k
    return out


@torch.no_grad()
def seed_method(model, tok, texts) -> list[float]:
    """What a user runs: one item at a time, labels = input_ids, outputs.loss."""
    losses = []
    for t in texts:
        ids = tok(t, return_tensors="pt").input_ids
        losses.append(model(input_ids=ids, labels=ids).loss.item())
    return losses


def main() -> None:
    ap = base_parser(__doc__, n_items=600, chunk=100, unit="items")
    ap.add_argument("--join_max", type=int, default=1, help="join 1..K sentences per item")
    ap.add_argument("--seed", type=int, default=0, help="seed of the item sampling")
    args = ap.parse_args()
    peak_before, model, tok, n_params = setup(args.model, args.threads)
    texts = load_texts(args.n_items, args.join_max, args.seed)
    lengths = [len(tok(t).input_ids) for t in texts]
    print(f"model {args.model}: N = {n_params / 1e6:.1f}M matmul params; {len(texts)} items, tokens/item "
          f"min {min(lengths)} median {statistics.median(lengths)} max {max(lengths)}; threads {args.threads}")
    seed_method(model, tok, texts[:4])  # warm-up both paths
    score_items(model, encode_items(tok, [{"id": "w", "text": texts[0]}]), tok.pad_token_id)

    t_seed = t_ours = 0.0
    ratios, max_diff, scored = [], 0.0, 0
    for c, start in enumerate(range(0, len(texts), args.chunk)):
        chunk = texts[start:start + args.chunk]
        enc = encode_items(tok, [{"id": str(i), "text": t} for i, t in enumerate(chunk)])
        scored += sum(e.n_scored for e in enc)
        times = {}
        for method in alternate(c, ("seed", "ours")):
            with timed(times, method):
                if method == "seed":
                    base = seed_method(model, tok, chunk)
                else:
                    ours = [s.loss for s in score_items(model, enc, tok.pad_token_id, args.batch_size)]
        max_diff = max(max_diff, max(abs(x - y) for x, y in zip(base, ours)))
        t_seed += times["seed"]
        t_ours += times["ours"]
        ratios.append(times["seed"] / times["ours"])
        print(f"chunk {c}: seed {times['seed']:.2f}s  ours {times['ours']:.2f}s  ratio {ratios[-1]:.2f}x")
    peak = final_peak(peak_before)
    flops = 2 * n_params * scored
    print(f"max |loss_ours - loss_seed| over {len(texts)} items: {max_diff:.2e}")
    print(f"seed (batch size 1, outputs.loss): {t_seed:.2f}s  ours (length-sorted batches of {args.batch_size}): "
          f"{t_ours:.2f}s")
    print_speed_ratio(t_seed, t_ours, ratios)
    print_peak(peak, peak_before)
    print(f"model FLOP/s (2*N per scored token, {scored} tokens): seed {flops / t_seed / 1e9:.1f} GFLOP/s = "
          f"{flops / t_seed / peak:.0%} of peak; ours {flops / t_ours / 1e9:.1f} GFLOP/s = {flops / t_ours / peak:.0%}")


if __name__ == "__main__":
    main()
