"""Recall generation: memlab's batched greedy decoding vs one HF `generate` call per item, on the same
prompts in the same run.

    python bench/bench_generation.py                                  # 32 prompts x 16 new tokens
    python bench/bench_generation.py --n_items 16 --batch_size 16 --chunk 16   # quick

Prompts are the first `--prefix_tokens` tokens of data/documents/documents.jsonl (else corpus sentences,
else generated text); both methods generate exactly `--max_new_tokens` tokens per item unless an eos
comes first. The methods alternate over chunks of `--chunk` prompts. Greedy outputs are compared token
by token. Model FLOP/s = 2 * N * (prompt + generated tokens) / time, N = parameters in matmuls (LM head
included, embedding lookup not), as a fraction of the fp32 2048x2048 matmul peak measured in this run.
"""
from __future__ import annotations

import json

import torch
from common import ROOT, alternate, base_parser, final_peak, print_peak, print_speed_ratio, setup, timed

from memlab.generation import GenRequest, generate_requests, stop_token_ids


def load_texts(n: int) -> list[str]:
    for rel in ("data/documents/documents.jsonl", "data/corpus/sentences.jsonl"):
        path = ROOT / rel
        if path.exists():
            texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
            if rel.endswith("sentences.jsonl"):  # join sentences so prompts have enough tokens
                texts = [" ".join(texts[i:i + 4]) for i in range(0, len(texts), 4)]
            return [texts[i % len(texts)] for i in range(n)]
    return [f"Item {i}: the keeper of the lighthouse wrote a long letter to his sister every evening." for i in range(n)]


@torch.no_grad()
def one_by_one(model, tok, prompts, max_new_tokens) -> list[list[int]]:
    """What a user runs: `generate` per prompt, greedy."""
    out = []
    for p in prompts:
        ids = torch.tensor([p])
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        out.append(gen[:gen.index(tok.eos_token_id)] if tok.eos_token_id in gen else gen)
    return out


def main() -> None:
    ap = base_parser(__doc__, n_items=32, chunk=16, unit="prompts")
    ap.add_argument("--prefix_tokens", type=int, default=32, help="prompt length in tokens")
    ap.add_argument("--max_new_tokens", type=int, default=16, help="tokens generated per prompt")
    args = ap.parse_args()
    peak_before, model, tok, n_params = setup(args.model, args.threads)
    prompts = [tok(t).input_ids[:args.prefix_tokens] for t in load_texts(args.n_items)]
    stops = stop_token_ids(tok, model)
    print(f"model {args.model}: N = {n_params / 1e6:.1f}M matmul params; {len(prompts)} prompts of <= {args.prefix_tokens} "
          f"tokens, {args.max_new_tokens} new tokens each; threads {args.threads}")
    one_by_one(model, tok, prompts[:1], 2)  # warm-up both paths
    generate_requests(model, [GenRequest("w", prompts[0], 2)], tok.pad_token_id, stops)

    t_base = t_ours = 0.0
    ratios, same, work = [], 0, 0
    for c, start in enumerate(range(0, len(prompts), args.chunk)):
        chunk = prompts[start:start + args.chunk]
        times = {}
        for method in alternate(c, ("base", "ours")):
            with timed(times, method):
                if method == "base":
                    base = one_by_one(model, tok, chunk, args.max_new_tokens)
                else:
                    reqs = [GenRequest(str(i), p, args.max_new_tokens) for i, p in enumerate(chunk)]
                    res = generate_requests(model, reqs, tok.pad_token_id, stops, args.batch_size)
                    ours = [res[str(i)] for i in range(len(chunk))]
        same += sum(x == y for x, y in zip(base, ours))
        work += sum(len(p) + len(g) for p, g in zip(chunk, ours))
        t_base += times["base"]
        t_ours += times["ours"]
        ratios.append(times["base"] / times["ours"])
        print(f"chunk {c}: one-by-one {times['base']:.2f}s  batched {times['ours']:.2f}s  ratio {ratios[-1]:.2f}x")
    peak = final_peak(peak_before)
    flops = 2 * n_params * work
    print(f"identical greedy outputs: {same}/{len(prompts)}")
    print(f"one-by-one generate: {t_base:.2f}s  batched (batches of {args.batch_size}): {t_ours:.2f}s")
    print_speed_ratio(t_base, t_ours, ratios)
    print_peak(peak, peak_before)
    print(f"model FLOP/s (2*N per prompt+generated token, {work} tokens): one-by-one {flops / t_base / 1e9:.1f} "
          f"GFLOP/s = {flops / t_base / peak:.0%} of peak; batched {flops / t_ours / 1e9:.1f} GFLOP/s = "
          f"{flops / t_ours / peak:.0%}")


if __name__ == "__main__":
    main()
