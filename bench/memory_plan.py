"""GPU memory planning by arithmetic: what fits for a 135M / 1B / 8B / 13B Llama-shaped model, fully
fine-tuned (plain, DeepSpeed ZeRO-2, ZeRO-3), with LoRA or with QLoRA, on 16 / 24 / 80 GB GPUs.

    python bench/memory_plan.py                    # the README's "Memory planning" table (Markdown)
    python bench/memory_plan.py --tokens 4096 --zero_gpus 8

The README table is this script's output with the defaults (tests/test_gpu_check.py checks they agree).
Parameter counts come from each architecture's shape (`count_params`, also used by bench/gpu_check.py and
tested against real instantiated models). Bytes per GPU, all estimates:

- full fine-tuning, bf16 mixed precision through accelerate (train.py --precision bf16): fp32 weights 4 +
  fp32 gradients 4 + AdamW moments 8 = 16 bytes/param, plus 2 for the bf16 weight copies autocast keeps
  for the backward pass = 18;
- DeepSpeed ZeRO-2 on N GPUs (bf16 weights replicated, everything else sharded): 2 + 14/N bytes/param;
  ZeRO-3 (weights sharded too): 16/N bytes/param (the ZeRO paper's 2 + 2 + 12 with K = 12);
- LoRA: the frozen base in bf16 (2 bytes/param) + the adapter (rank 16 on every linear layer of every
  block) at 16 bytes per adapter param (fp32 weights, gradients, AdamW);
- QLoRA: linear layers of the blocks in 4-bit NF4 with double quantization (0.5 bytes/param + 1/64 for
  the 8-bit block scales + 4/(64*256) for their fp32 scales), the other parameters (embeddings, LM head,
  norms) in fp32 as peft's prepare_model_for_kbit_training leaves them (4 bytes/param), + the adapter;
- activations per micro-batch of T tokens with gradient checkpointing (every row): the bf16 input of each
  block (2*h bytes per token per layer) plus one block recomputed during backward, (24*h + 8*i) bytes per
  token (sdpa attention, no dropout); the loss over all T tokens: 12 bytes per logit (bf16 logits, their
  fp32 log-softmax and its gradient), T x vocab;
- 1 GiB for the CUDA context, cuBLAS workspace and allocator slack.
A configuration "fits" a card when the total is at most 95% of its memory. Without gradient
checkpointing the activations grow to L x T x (24*h + 8*i) bytes (8B model, T = 2048: about 13 GiB).
"""
from __future__ import annotations

import argparse

GIB = 2 ** 30

# the models our users study, by their published shapes (Hugging Face config.json names)
MODELS = {
    "SmolLM2-135M": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "Llama-3.2-1B": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    "Llama-3-8B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
    "Llama-2-13B": dict(hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                        intermediate_size=13824, vocab_size=32000, tie_word_embeddings=False),
}
GPUS_GIB = (16, 24, 80)
FIT_FRACTION = 0.95
OVERHEAD_GIB = 1.0
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + 8-bit block scales (64) + fp32 scales of those (256)
LORA_R = 16
TOKENS = 2048   # tokens per micro-batch (batch size x sequence length)
ZERO_GPUS = 4

_FLAGS = {
    "full": "`--precision bf16 --gradient_checkpointing`",
    "zero2": "full + DeepSpeed ZeRO-2 (`ds_config.json`), {n} GPUs",
    "zero3": "full + DeepSpeed ZeRO-3 (`\"stage\": 3`), {n} GPUs",
    "lora": f"`--lora_r {LORA_R} --lora_alpha {2 * LORA_R} --lora_target_modules all-linear --precision bf16 "
            "--gradient_checkpointing`",
    "qlora": "`--load_in_4bit` + the LoRA flags",
}
METHOD_NAMES = {"full": "full", "zero2": "full, ZeRO-2 ×{n}", "zero3": "full, ZeRO-3 ×{n}", "lora": "LoRA r16",
                "qlora": "QLoRA r16 (NF4)"}


def _get(cfg, key: str):
    return cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)


def param_groups(cfg) -> dict:
    """Parameter counts of a Llama-shaped config (dict or transformers LlamaConfig), no biases:
    `block_linear` (q, k, v, o, gate, up, down of every layer), `norms`, `embed`, `lm_head` (0 when tied),
    and `lora` (rank-16 adapters on every block linear layer)."""
    h, L = _get(cfg, "hidden_size"), _get(cfg, "num_hidden_layers")
    heads, kv, i, V = (_get(cfg, k) for k in ("num_attention_heads", "num_key_value_heads", "intermediate_size",
                                             "vocab_size"))
    hd = h // heads
    q, kv_dim = heads * hd, kv * hd
    linear_shapes = [(h, q), (h, kv_dim), (h, kv_dim), (q, h), (h, i), (h, i), (i, h)]  # (in, out)
    return {"block_linear": L * sum(a * b for a, b in linear_shapes),
            "norms": L * 2 * h + h,
            "embed": V * h,
            "lm_head": 0 if _get(cfg, "tie_word_embeddings") else V * h,
            "lora": L * sum(LORA_R * (a + b) for a, b in linear_shapes)}


def count_params(cfg) -> int:
    """All parameters of the model built from `cfg` (a tied LM head counted once)."""
    g = param_groups(cfg)
    return g["block_linear"] + g["norms"] + g["embed"] + g["lm_head"]


def count_matmul_params(cfg) -> int:
    """Parameters in matmuls, as memlab.likelihood.matmul_params counts them: every block linear layer and
    the LM head (counted even when tied to the embeddings), not the embedding lookup or the norms."""
    g = param_groups(cfg)
    return g["block_linear"] + _get(cfg, "vocab_size") * _get(cfg, "hidden_size")


def memory_gib(cfg, method: str, tokens: int = TOKENS, n_gpus: int = ZERO_GPUS) -> dict:
    """Estimated memory per GPU (GiB): {'states': weights + gradients + optimizer, 'activations', 'total'}."""
    g = param_groups(cfg)
    n = count_params(cfg)
    h, L, i, V = (_get(cfg, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"))
    if method == "full":
        states = 18 * n
    elif method == "zero2":
        states = (2 + 14 / n_gpus) * n
    elif method == "zero3":
        states = 16 / n_gpus * n
    elif method == "lora":
        states = 2 * n + 16 * g["lora"]
    elif method == "qlora":
        states = NF4_BYTES * g["block_linear"] + 4 * (n - g["block_linear"]) + 16 * g["lora"]
    else:
        raise ValueError(f"unknown method {method!r}")
    acts = tokens * (L * 2 * h + 24 * h + 8 * i) + 12 * tokens * V
    total = (states + acts) / GIB + OVERHEAD_GIB
    return {"states": states / GIB, "activations": acts / GIB, "total": total}


def fits(total_gib: float, gpu_gib: float) -> bool:
    return total_gib <= FIT_FRACTION * gpu_gib


def table_rows(tokens: int = TOKENS, n_gpus: int = ZERO_GPUS) -> list[dict]:
    rows = []
    for name, cfg in MODELS.items():
        for method in ("full", "zero2", "zero3", "lora", "qlora"):
            m = memory_gib(cfg, method, tokens, n_gpus)
            rows.append({"model": name, "params": count_params(cfg), "method": method, **m,
                         "fits": {gpu: fits(m["total"], gpu) for gpu in GPUS_GIB}})
    return rows


def markdown_table(tokens: int = TOKENS, n_gpus: int = ZERO_GPUS) -> str:
    head = ("| model (params) | method | weights + grads + optimizer | activations | total per GPU | "
            + " | ".join(f"{g} GB" for g in GPUS_GIB) + " | flags |")
    lines = [head, "|" + "---|" * (6 + len(GPUS_GIB))]
    for r in table_rows(tokens, n_gpus):
        ok = " | ".join("✓" if r["fits"][g] else "✗" for g in GPUS_GIB)
        size = f"{r['params'] / 1e6:.0f}M" if r["params"] < 1e9 else f"{r['params'] / 1e9:.2f}B"
        lines.append(f"| {r['model']} ({size}) | {METHOD_NAMES[r['method']].format(n=n_gpus)} | "
                     f"{r['states']:.1f} GiB | {r['activations']:.1f} GiB | {r['total']:.1f} GiB | {ok} | "
                     f"{_FLAGS[r['method']].format(n=n_gpus)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=TOKENS, help="tokens per micro-batch (batch size x length)")
    ap.add_argument("--zero_gpus", type=int, default=ZERO_GPUS, help="GPUs the ZeRO rows shard across")
    args = ap.parse_args()
    print(markdown_table(args.tokens, args.zero_gpus), end="")


if __name__ == "__main__":
    main()
