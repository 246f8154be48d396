"""memlab's GPU paths, checked in one command on the machine at hand: at most 10 minutes, offline.

    bash scripts/gpu_check.sh                         # every check; gpu_check/report.md and report.json
    bash scripts/gpu_check.sh --out /tmp/gc           # elsewhere
    bash scripts/gpu_check.sh --only full,lora,scoring   # a subset (names: see --help)
    python bench/gpu_check.py --cpu_dry_run           # develop this script on a CPU (below)

Without a CUDA GPU (torch.cuda.is_available() false) it prints "no GPU: nothing run" and exits 0, having
built no model and written nothing.

The model is a randomly initialised Llama of TinyLlama-1.1B's shape (`LLAMA_1B`, 1,100,048,384 parameters
by `count_params`), built from its config on the GPU, so no weights travel; `tiny-llama` (memlab's
built-in test model) is used where exact agreement matters (fp32). Each check runs in its own try/except
(a failure is reported as FAILED with its error and the rest still run), in this order:

- `peak`: the bf16 matmul peak of this GPU, measured here (8192^3, best of 10, synchronized), before and
  after the other checks (the max is the peak). memlab.likelihood.matmul_peak_flops takes a dtype but
  allocates on the CPU and does not synchronize, so it cannot time a GPU; `matmul_peak` below can.
- `full`: bf16 mixed-precision full fine-tuning steps of the ~1B model (fp32 weights, autocast bf16 as
  accelerate's `--precision bf16` does, AdamW as train.py builds it, memlab's causal_lm_loss), random
  tokens, every token labelled: tokens/s and MFU = 6 * N * tokens/s / peak (N = matmul parameters, the
  LM head included, as bench/ counts them).
- `lora`: the same with a frozen bf16 base and rank-16 LoRA on every block linear layer: tokens/s, MFU by
  6N (comparable with `full`) and by 4N (the work LoRA does: no base weight gradients).
- `scoring` / `scoring_tiny`: memlab.likelihood.score_items (length-sorted batches) vs batch size 1 HF
  `outputs.loss` per item, on mixed-length random-token items, alternating chunks as
  bench/bench_recognition.py does: ratio and max |loss difference| (1B model in bf16; tiny-llama in fp32).
- `generation` / `generation_tiny`: memlab.generation.generate_requests vs one HF `generate` call per
  prompt (greedy), as bench/bench_generation.py does: ratio and identical greedy outputs. (The two bench
  scripts' baselines build their tensors on the CPU, so device-aware copies of them are here.) A random
  model's next-token distribution is nearly flat, so in bf16 near-ties make some greedy outputs differ;
  the fp32 tiny-llama run is the exactness check.
- `qlora`: the ~1B model saved once (bf16) and loaded in 4-bit NF4 (transformers BitsAndBytesConfig,
  double quantization, bf16 compute) + peft's prepare_model_for_kbit_training + rank-16 LoRA: a few steps,
  tokens/s and peak memory (torch.cuda.max_memory_allocated) beside bench/memory_plan.py's estimate.
  Skipped, with the reason, when bitsandbytes is not importable.
- `expt1`: `MEMLAB_GRID=tiny bash scripts/expt1_exposures.sh` (every cell, then analyze.py) into a
  temporary runs root: pass/fail and wall time.
- `ds_ref`, `zero2`, `zero3`, `ddp`: the same few full fine-tuning steps (bf16, AdamW, fixed random batch)
  in subprocesses under accelerate, the way train.py trains (memlab.training.make_accelerator,
  adamw_with_groups, causal_lm_loss): plain on one GPU (the reference), DeepSpeed ZeRO-2 and ZeRO-3 on one
  GPU (ds_config.json with the stage set), and DDP across all GPUs when there are several. Each run's
  per-step loss must match the reference within LOSS_RTOL (1% of the loss: autocast keeps fp32 weights
  and residual stream while DeepSpeed's bf16 engine runs bf16 weights, so bf16 rounding differs). The
  report also says whether the plain run's loss fell by more than the tolerance over the steps
  (plain_loss_drop_exceeds_tolerance), i.e. whether a lost update would show. Skipped when deepspeed is
  not importable (ddp needs only accelerate).

Targets (issue 12) are listed beside the measured values: scoring >= 20x batch size 1, generation >= 20x
one-by-one, bf16 full fine-tuning of the ~1B model >= 40% MFU. Time: the in-process checks are sized to
seconds each, expt1 and each subprocess to tens of seconds (about 5 minutes in all on one H100, by
estimate: it has not run on a GPU yet); checks still to start when BUDGET_S (9 minutes) have passed are
skipped, a subprocess still running at BUDGET_S + HARD_MARGIN_S is stopped with its process group, and
scripts/gpu_check.sh stops everything at 10 minutes. The report is rewritten after each check, so a run
cut short leaves what it measured.

--cpu_dry_run runs every check on the CPU with a micro Llama (`MICRO`) and tiny sizes, into
gpu_check/cpu_dry_run/ by default: for catching bugs without a GPU; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # bench/ modules (memory_plan, common), also when imported from tests
    sys.path.insert(0, str(HERE))
from memory_plan import count_matmul_params, count_params, memory_gib  # noqa: E402

# TinyLlama-1.1B's shape (a real Llama architecture): 1,100,048,384 parameters
LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                tie_word_embeddings=False)
# for --cpu_dry_run and the tests
MICRO = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=512, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False)

BUDGET_S = 540          # checks not started by then are skipped
HARD_MARGIN_S = 45      # a subprocess still running at budget + this is cut (scripts/gpu_check.sh stops all at 600 s)
LOSS_RTOL = 0.01        # DeepSpeed / DDP per-step loss vs the plain run
LORA_R = 16
TARGETS = (  # (check, figure, threshold, what)
    ("scoring", "ratio", 20.0, "batched scoring ≥ 20× batch-size-1 `outputs.loss`"),
    ("generation", "ratio", 20.0, "batched generation ≥ 20× one `generate` per item"),
    ("full", "mfu_6n", 0.40, "bf16 full fine-tuning of the ~1B model ≥ 40% MFU"),
)
# sizes per check: a few warm-up + timed steps, seconds each on a GPU
SIZES = {
    "gpu": dict(peak_n=8192, peak_repeats=10,
                train_batch=8, train_batch_mid=4, train_batch_small=2, train_seq=1024, train_warmup=3, train_steps=8,
                qlora_batch=4, qlora_seq=1024, qlora_warmup=2, qlora_steps=4,
                score_n=256, score_min=16, score_max=256, score_batch=64, score_chunk=128,
                gen_n=64, gen_min=24, gen_max=40, gen_new=24, gen_batch=32, gen_chunk=32,
                tiny_score_n=64, tiny_gen_n=16, tiny_gen_new=16,
                ds_batch=4, ds_seq=512, ds_steps=5, ds_lr=1e-4),
    "cpu": dict(peak_n=256, peak_repeats=3,
                train_batch=2, train_batch_mid=2, train_batch_small=2, train_seq=32, train_warmup=1, train_steps=2,
                qlora_batch=2, qlora_seq=32, qlora_warmup=1, qlora_steps=1,
                score_n=12, score_min=4, score_max=24, score_batch=4, score_chunk=6,
                gen_n=6, gen_min=4, gen_max=8, gen_new=4, gen_batch=3, gen_chunk=3,
                tiny_score_n=8, tiny_gen_n=4, tiny_gen_new=4,
                ds_batch=2, ds_seq=32, ds_steps=3, ds_lr=1e-3),
}
CHECKS = ("peak", "full", "lora", "scoring", "generation", "scoring_tiny", "generation_tiny", "qlora", "expt1",
          "ds_ref", "zero2", "zero3", "ddp", "fsdp")


# ------------------------------------------------------------------------------------------- pure helpers
def mfu(n_matmul: int, tokens_per_s: float, peak_flops: float, flops_per_param: int = 6) -> float:
    """Model FLOP utilisation: flops_per_param * N FLOPs per token (6 for a training step: forward 2N,
    backward 4N) at `tokens_per_s`, as a fraction of `peak_flops`."""
    return flops_per_param * n_matmul * tokens_per_s / peak_flops


def fmt(v) -> str:
    """A figure for the report: floats to 3 significant digits (fractions named *mfu* or *util* as %)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def fmt_figure(key: str, v) -> str:
    if isinstance(v, float) and ("mfu" in key or "util" in key):
        return f"{key} {v:.1%}"
    return f"{key} {fmt(v)}"


def target_rows(results: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each issue-12 target; verdict: met, NOT met, or why it is missing."""
    rows = []
    for check, key, threshold, what in TARGETS:
        r = results.get("checks", {}).get(check)
        value = (r or {}).get("figures", {}).get(key)
        if r is None or value is None:
            status = "not run" if r is None else r.get("status", "?")
            rows.append((what, "—", f"no figure ({status})"))
            continue
        shown = f"{value:.1%}" if "mfu" in key else f"{value:.1f}×"
        rows.append((what, shown, "met" if value >= threshold else "NOT met"))
    return rows


def render_report(results: dict) -> str:
    """report.md from the results dict (what report.json holds)."""
    env = results.get("environment", {})
    lines = ["# memlab GPU check (scripts/gpu_check.sh)", ""]
    if results.get("cpu_dry_run"):
        lines += ["**CPU dry run** (`--cpu_dry_run`, micro model): the figures mean nothing.", ""]
    lines += [f"Date (UTC): {results.get('date', '?')}. Wall time: {fmt(results.get('wall_s'))} s. "
              f"Command: `{results.get('command', '?')}`.", ""]
    lines += ["| environment | |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in env.items()] + [""]
    model = results.get("model", {})
    if model:
        lines += [f"Model: randomly initialised Llama ({model.get('name')}), {model.get('params'):,} parameters "
                  f"({model.get('matmul_params'):,} in matmuls, N for MFU); peak: bf16 "
                  f"{fmt(results.get('peak_flops', 0.0) / 1e12)} TFLOP/s measured in this run.", ""]
    lines += ["## Targets (issue 12)", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in target_rows(results)] + [""]
    lines += ["## Checks", "", "| check | status | figures | seconds |", "|---|---|---|---|"]
    for name, r in results.get("checks", {}).items():
        figs = "; ".join(fmt_figure(k, v) for k, v in r.get("figures", {}).items())
        if r.get("status") != "OK":
            why = r.get("error") or r.get("why") or ""
            figs = (figs + "; " if figs else "") + why.replace("\n", " ").replace("|", "/")[:400]
        lines.append(f"| {name} | {r.get('status')} | {figs} | {fmt(r.get('seconds'))} |")
    lines += ["", "Notes: " + " ".join(results.get("notes", [])), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- environment
def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda (torch build)": torch.version.cuda}
    for pkg in ("transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "flash-attn", "safetensors"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device_info() -> dict:
    if not torch.cuda.is_available():
        return {"device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"}
    out = {"gpus": torch.cuda.device_count()}
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out[f"gpu {i}"] = f"{p.name}, {p.total_memory / 2 ** 30:.1f} GiB, compute capability {p.major}.{p.minor}"
    out["bf16 supported"] = torch.cuda.is_bf16_supported()
    return out


# ------------------------------------------------------------------------------------------- device helpers
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return None


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def matmul_peak(device, dtype=torch.bfloat16, n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of an n x n @ n x n matmul on `device` (best of `repeats`, synchronized)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del a, b
    return 2 * n ** 3 / best


def llama_config(cfg: dict):
    from transformers import LlamaConfig

    return LlamaConfig(**cfg, bos_token_id=1, eos_token_id=2, pad_token_id=0, attention_bias=False, mlp_bias=False)


def build_llama(cfg: dict, device, dtype=torch.float32, seed: int = 0):
    """A randomly initialised LlamaForCausalLM of shape `cfg`, built directly on `device`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(llama_config(cfg), dtype=dtype, attn_implementation="sdpa")
    return model.to(device)


def random_batch(vocab: int, batch: int, seq: int, seed: int, device="cpu") -> dict:
    """Random token ids (3..vocab-1, clear of pad/bos/eos), every token labelled, no padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    return {"input_ids": ids.to(device), "labels": ids.clone().to(device),
            "attention_mask": torch.ones_like(ids).to(device)}


def random_seqs(vocab: int, n: int, lo: int, hi: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def train_steps(model, optimizer, batch: dict, warmup: int, steps: int, device, autocast: bool = True) -> dict:
    """`warmup` + `steps` optimizer steps on one batch, the way train.py steps (memlab.training.causal_lm_loss,
    loss.item() each step); the last `steps` are timed."""
    from memlab import training

    dev = torch.device(device)
    model.train()
    losses, t0 = [], None
    for k in range(warmup + steps):
        if k == warmup:
            sync(dev)
            t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = training.causal_lm_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    sync(dev)
    dt = time.perf_counter() - t0
    return {"tokens_per_s": batch["input_ids"].numel() * steps / dt, "step_s": dt / steps,
            "loss_first": losses[0], "loss_last": losses[-1]}


def lora_wrap(model):
    from peft import LoraConfig, get_peft_model

    from memlab import training

    targets = training.resolve_lora_targets(model, "all-linear")
    return get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=targets, lora_dropout=0.0,
                                            task_type="CAUSAL_LM"))


@torch.no_grad()
def bs1_losses(model, seqs: list[list[int]]) -> list[float]:
    """What a user runs: one item at a time, labels = input_ids, outputs.loss (bench_recognition's baseline,
    with the tensors on the model's device)."""
    device = next(model.parameters()).device
    out = []
    for s in seqs:
        ids = torch.tensor([s], device=device)
        out.append(model(input_ids=ids, labels=ids).loss.item())
    return out


@torch.no_grad()
def one_by_one_generate(model, prompts: list[list[int]], max_new: int, pad_id: int, eos_id: int) -> list[list[int]]:
    """One greedy HF `generate` per prompt (bench_generation's baseline, on the model's device); the eos and
    what follows are cut, as generate_requests returns them."""
    device = next(model.parameters()).device
    out = []
    for p in prompts:
        ids = torch.tensor([p], device=device)
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=pad_id, eos_token_id=eos_id)[0, len(p):].tolist()
        out.append(gen[:gen.index(eos_id)] if eos_id in gen else gen)
    return out


# ------------------------------------------------------------------------------------------- the run
class Ctx:
    """What the checks share: device, model shape, sizes, output folders, clock, the measured peak."""

    def __init__(self, device, cfg: dict, sizes: dict, out: Path, budget_s: float, dry_run: bool,
                 tmp: Path | None = None):
        self.device, self.cfg, self.sizes, self.out, self.budget_s, self.dry_run = device, cfg, sizes, out, budget_s, dry_run
        self.t0 = time.time()
        # the saved ~1B model (2 GB), DeepSpeed configs, worker results and the expt1 runs; removed by main()
        self.tmp = tmp or Path(tempfile.mkdtemp(prefix="memlab_gpu_check_"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.logs = out / "logs"
        self.peak = None
        self.n_matmul = count_matmul_params(cfg)
        self._ckpt = None
        self.ds_reference = None  # per-step losses of the plain run (ds_ref)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def time_left(self) -> float:
        """Seconds a subprocess may still run: up to the hard limit (budget + HARD_MARGIN_S)."""
        return max(10.0, self.budget_s + HARD_MARGIN_S - self.elapsed())

    def gpu_mem_gib(self) -> float:
        d = torch.device(self.device)
        return torch.cuda.get_device_properties(d).total_memory / 2 ** 30 if d.type == "cuda" else 0.0

    def checkpoint(self) -> Path:
        """The random ~1B model saved once (bf16 safetensors, config) for the QLoRA load and the subprocesses."""
        if self._ckpt is None:
            path = self.tmp / "llama_random"
            model = build_llama(self.cfg, self.device, torch.bfloat16)
            model.save_pretrained(path)
            del model
            free_memory()
            self._ckpt = path
        return self._ckpt


def check_peak(ctx: Ctx) -> dict:
    s = ctx.sizes
    ctx.peak = matmul_peak(ctx.device, torch.bfloat16, s["peak_n"], s["peak_repeats"])
    return {"figures": {"bf16_tflops": ctx.peak / 1e12, "n": s["peak_n"]}}


def _train_batch_size(ctx: Ctx) -> int:
    """8 x 1024 tokens on an 80 GB card (full fine-tuning of the ~1B model without gradient checkpointing
    peaks near 40 GiB there), fewer on smaller cards."""
    s, mem = ctx.sizes, ctx.gpu_mem_gib()
    if ctx.dry_run or mem >= 64:
        return s["train_batch"]
    return s["train_batch_mid"] if mem >= 36 else s["train_batch_small"]


def check_full(ctx: Ctx) -> dict:
    from memlab import training

    s = ctx.sizes
    reset_peak_memory(ctx.device)
    model = build_llama(ctx.cfg, ctx.device, torch.float32)
    opt = training.adamw_with_groups(model, 1e-5, 0.0)
    batch = random_batch(ctx.cfg["vocab_size"], _train_batch_size(ctx), s["train_seq"], 0, ctx.device)
    r = train_steps(model, opt, batch, s["train_warmup"], s["train_steps"], ctx.device)
    del model, opt
    figs = {"batch": batch["input_ids"].shape[0], "seq": s["train_seq"], "tokens_per_s": r["tokens_per_s"],
            "step_s": r["step_s"], "mfu_6n": mfu(ctx.n_matmul, r["tokens_per_s"], ctx.peak) if ctx.peak else None,
            "peak_mem_gib": peak_memory_gib(ctx.device), "loss_first": r["loss_first"], "loss_last": r["loss_last"]}
    return {"figures": figs}


def check_lora(ctx: Ctx) -> dict:
    s = ctx.sizes
    reset_peak_memory(ctx.device)
    model = lora_wrap(build_llama(ctx.cfg, ctx.device, torch.bfloat16))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    batch = random_batch(ctx.cfg["vocab_size"], _train_batch_size(ctx), s["train_seq"], 0, ctx.device)
    r = train_steps(model, opt, batch, s["train_warmup"], s["train_steps"], ctx.device)
    n_adapter = sum(p.numel() for p in trainable)
    del model, opt, trainable
    peak = ctx.peak
    figs = {"batch": batch["input_ids"].shape[0], "seq": s["train_seq"], "adapter_params": n_adapter,
            "tokens_per_s": r["tokens_per_s"], "step_s": r["step_s"],
            "mfu_6n": mfu(ctx.n_matmul, r["tokens_per_s"], peak) if peak else None,
            "mfu_4n": mfu(ctx.n_matmul, r["tokens_per_s"], peak, 4) if peak else None,
            "peak_mem_gib": peak_memory_gib(ctx.device), "loss_first": r["loss_first"], "loss_last": r["loss_last"]}
    return {"figures": figs}


def _score_compare(ctx: Ctx, model, vocab: int, n: int, lo: int, hi: int, batch_size: int,
                   chunk: int) -> tuple[dict, int]:
    from common import alternate, timed

    from memlab.likelihood import EncodedItem, score_items

    seqs = random_seqs(vocab, n, lo, hi, seed=1)
    bs1_losses(model, seqs[:2])  # warm-up both paths
    score_items(model, [EncodedItem(str(i), s, 1) for i, s in enumerate(seqs[:batch_size])], 0, batch_size)
    t_base = t_ours = 0.0
    ratios, max_diff, tokens = [], 0.0, 0
    for c, start in enumerate(range(0, n, chunk)):
        part = seqs[start:start + chunk]
        enc = [EncodedItem(str(i), s, 1) for i, s in enumerate(part)]
        tokens += sum(e.n_scored for e in enc)
        times = {}
        for method in alternate(c, ("base", "ours")):
            with timed(times, method):
                if method == "base":
                    base = bs1_losses(model, part)
                else:
                    ours = [x.loss for x in score_items(model, enc, 0, batch_size)]
                sync(ctx.device)
        max_diff = max(max_diff, max(abs(a - b) for a, b in zip(base, ours)))
        t_base += times["base"]
        t_ours += times["ours"]
        ratios.append(times["base"] / times["ours"])
    figs = {"items": n, "tokens_per_item": f"{lo}-{hi}", "batch": batch_size, "bs1_s": t_base, "batched_s": t_ours,
            "ratio": t_base / t_ours, "chunk_ratios": ratios, "max_abs_dloss": max_diff}
    return figs, tokens


def check_scoring(ctx: Ctx) -> dict:
    s = ctx.sizes
    model = build_llama(ctx.cfg, ctx.device, torch.bfloat16).eval()
    figs, tokens = _score_compare(ctx, model, ctx.cfg["vocab_size"], s["score_n"], s["score_min"], s["score_max"],
                                  s["score_batch"], s["score_chunk"])
    del model
    figs["scored_tokens"] = tokens  # utilisation (2N per scored token): finalize() adds it against the peak
    return {"figures": figs}


def _tiny_llama(ctx: Ctx):
    from memlab.models import load_model

    model, _ = load_model("tiny-llama")
    return model.to(ctx.device).eval()


def check_scoring_tiny(ctx: Ctx) -> dict:
    s = ctx.sizes
    model = _tiny_llama(ctx)
    figs, _ = _score_compare(ctx, model, model.config.vocab_size, s["tiny_score_n"], s["score_min"], s["score_max"],
                             s["score_batch"], s["tiny_score_n"])
    return {"figures": figs}


def _gen_compare(ctx: Ctx, model, vocab: int, n: int, lo: int, hi: int, new: int, batch_size: int, chunk: int) -> dict:
    from common import alternate, timed

    from memlab.generation import GenRequest, generate_requests

    eos = model.config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    prompts = random_seqs(vocab, n, lo, hi, seed=2)
    one_by_one_generate(model, prompts[:1], 2, pad, eos)  # warm-up both paths
    generate_requests(model, [GenRequest("w", prompts[0], 2)], pad, [eos])
    t_base = t_ours = 0.0
    ratios, same = [], 0
    for c, start in enumerate(range(0, n, chunk)):
        part = prompts[start:start + chunk]
        times = {}
        for method in alternate(c, ("base", "ours")):
            with timed(times, method):
                if method == "base":
                    base = one_by_one_generate(model, part, new, pad, eos)
                else:
                    res = generate_requests(model, [GenRequest(str(i), p, new) for i, p in enumerate(part)], pad, [eos],
                                            batch_size)
                    ours = [res[str(i)] for i in range(len(part))]
                sync(ctx.device)
        same += sum(a == b for a, b in zip(base, ours))
        t_base += times["base"]
        t_ours += times["ours"]
        ratios.append(times["base"] / times["ours"])
    return {"prompts": n, "prompt_tokens": f"{lo}-{hi}", "new_tokens": new, "batch": batch_size,
            "one_by_one_s": t_base, "batched_s": t_ours, "ratio": t_base / t_ours, "chunk_ratios": ratios,
            "identical_greedy": f"{same}/{n}"}


def check_generation(ctx: Ctx) -> dict:
    s = ctx.sizes
    model = build_llama(ctx.cfg, ctx.device, torch.bfloat16).eval()
    figs = _gen_compare(ctx, model, ctx.cfg["vocab_size"], s["gen_n"], s["gen_min"], s["gen_max"], s["gen_new"],
                        s["gen_batch"], s["gen_chunk"])
    return {"figures": figs}


def check_generation_tiny(ctx: Ctx) -> dict:
    s = ctx.sizes
    model = _tiny_llama(ctx)
    figs = _gen_compare(ctx, model, model.config.vocab_size, s["tiny_gen_n"], s["gen_min"], s["gen_max"],
                        s["tiny_gen_new"], s["tiny_gen_n"], s["tiny_gen_n"])
    return {"figures": figs}


def check_qlora(ctx: Ctx) -> dict:
    try:
        importlib.import_module("bitsandbytes")
    except Exception as e:  # ImportError, or a build that fails at import (no CUDA library)
        return {"status": "SKIPPED", "why": f"bitsandbytes is not importable ({type(e).__name__}: {e})"}
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    s = ctx.sizes
    ckpt = ctx.checkpoint()
    reset_peak_memory(ctx.device)
    dev = torch.device(ctx.device)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(ckpt, quantization_config=quant, dtype=torch.bfloat16,
                                                 device_map={"": dev.index or 0} if dev.type == "cuda" else None)
    weights_gib = model.get_memory_footprint() / 2 ** 30
    n_4bit = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = lora_wrap(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    batch = random_batch(ctx.cfg["vocab_size"], s["qlora_batch"], s["qlora_seq"], 0, ctx.device)
    r = train_steps(model, opt, batch, s["qlora_warmup"], s["qlora_steps"], ctx.device)
    del model, opt, trainable
    plan = memory_gib(ctx.cfg, "qlora", tokens=s["qlora_batch"] * s["qlora_seq"])
    return {"figures": {"batch": s["qlora_batch"], "seq": s["qlora_seq"], "tokens_per_s": r["tokens_per_s"],
                        "step_s": r["step_s"], "linear4bit_layers": n_4bit, "weights_gib": weights_gib, "peak_mem_gib": peak_memory_gib(ctx.device),
                        "planned_gib (memory_plan, incl. 1 GiB context)": plan["total"],
                        "loss_first": r["loss_first"], "loss_last": r["loss_last"]}}


def _run_logged(ctx: Ctx, name: str, cmd: list[str], env: dict) -> tuple[int, float, str]:
    """Run `cmd` with stdout+stderr to logs/<name>.log, cut at the time left: (rc, seconds, log tail)."""
    ctx.logs.mkdir(parents=True, exist_ok=True)
    log = ctx.logs / f"{name}.log"
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        # its own process group, so a timeout also stops the launcher's workers (they hold the GPU)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=ctx.time_left())
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
            f.write(f"\n[gpu_check] stopped after {time.time() - t0:.0f} s: the run's time was up\n")
        except BaseException:  # SIGTERM (scripts/gpu_check.sh's 10-minute stop) or Ctrl-C: stop it too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    tail = log.read_text(errors="replace")[-1500:]
    return rc, time.time() - t0, tail


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MEMLAB_CALLER_DIR"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"}, **extra)
    return env


def check_expt1(ctx: Ctx) -> dict:
    runs = ctx.tmp / "runs"
    env = _clean_env(MEMLAB_GRID="tiny", MEMLAB_RUNS_ROOT=str(runs), MEMLAB_PYTHON=sys.executable)
    rc, secs, tail = _run_logged(ctx, "expt1", ["bash", str(ROOT / "scripts" / "expt1_exposures.sh")], env)
    cells = sorted(p.parent for p in (runs / "expt1").rglob("cell.json")) if (runs / "expt1").exists() else []
    done = [c for c in cells if (c / "results.json").exists()]
    figs = {"exit": rc, "wall_s": secs, "cells_done": f"{len(done)}/{len(cells)}",
            "summary_written": (runs / "expt1" / "summary.txt").exists()}
    if rc != 0 or not done or len(done) != len(cells):
        return {"status": "FAILED", "figures": figs, "error": f"exit {rc}; log {ctx.logs / 'expt1.log'}: ...{tail[-600:]}"}
    return {"figures": figs}


# --- DeepSpeed / DDP: subprocess workers under accelerate, compared with a plain run
def _ds_config(ctx: Ctx, stage: int) -> Path:
    cfg = json.loads((ROOT / "ds_config.json").read_text())
    cfg["zero_optimization"]["stage"] = stage
    path = ctx.tmp / f"ds_zero{stage}.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def _ds_batch(ctx: Ctx) -> int:
    n = max(1, torch.cuda.device_count()) if not ctx.dry_run else 1
    b = ctx.sizes["ds_batch"]
    return n * math.ceil(b / n)  # the same global batch splits evenly across the DDP ranks


def _worker(ctx: Ctx, name: str, launch: list[str]) -> dict:
    """Run the training worker under `launch`; its JSON result, or raise with the log's tail."""
    s = ctx.sizes
    out = ctx.tmp / f"{name}.json"
    cmd = launch + [str(HERE / "gpu_check.py"), "--worker", "--ckpt", str(ctx.checkpoint()), "--worker_out", str(out),
                    "--batch", str(_ds_batch(ctx)), "--seq", str(s["ds_seq"]), "--steps", str(s["ds_steps"]),
                    "--lr", str(s["ds_lr"])]
    env = _clean_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rc, secs, tail = _run_logged(ctx, name, cmd, env)
    if rc != 0 or not out.exists():
        raise RuntimeError(f"exit {rc} after {secs:.0f} s; log {ctx.logs / (name + '.log')}: ...{tail[-700:]}")
    res = json.loads(out.read_text())
    res["wall_s"] = secs
    return res


def _launcher(n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes", str(n),
            "--dynamo_backend", "no", *extra]


def _compare(ctx: Ctx, res: dict) -> dict:
    ref = ctx.ds_reference
    figs = {"processes": res["num_processes"], "distributed_type": res["distributed_type"],
            "mixed_precision": res["mixed_precision"], "deepspeed_bf16": res.get("deepspeed_bf16"),
            "tokens_per_s": res["tokens_per_s"], "peak_mem_gib_rank0": res.get("peak_mem_gib"),
            "losses": res["losses"], "wall_s": res["wall_s"]}
    if ref is None:
        return {"status": "FAILED", "figures": figs, "error": "no reference losses (ds_ref did not run)"}
    diffs = [abs(a - b) for a, b in zip(res["losses"], ref)]
    tol = [LOSS_RTOL * abs(b) for b in ref]
    figs["max_abs_dloss_vs_plain"] = max(diffs)
    figs["tolerance"] = f"{LOSS_RTOL:.0%} of the loss ({min(tol):.3g}-{max(tol):.3g})"
    # the comparison can tell a lost update only when the plain run's loss moves by more than the tolerance
    figs["plain_loss_drop_exceeds_tolerance"] = ref[0] - ref[-1] > max(tol)
    if len(diffs) != len(ref) or any(d > t for d, t in zip(diffs, tol)):
        return {"status": "FAILED", "figures": figs, "error": f"losses differ from the plain run {fmt(ref)} beyond "
                                                              f"{LOSS_RTOL:.0%}"}
    return {"figures": figs}


def _need_deepspeed() -> str | None:
    try:
        importlib.import_module("deepspeed")
    except Exception as e:
        return f"deepspeed is not importable ({type(e).__name__}: {e})"
    return None


def check_ds_ref(ctx: Ctx) -> dict:
    res = _worker(ctx, "ds_ref", [sys.executable])
    ctx.ds_reference = res["losses"]
    return {"figures": {"processes": 1, "mixed_precision": res["mixed_precision"], "tokens_per_s": res["tokens_per_s"], "peak_mem_gib": res.get("peak_mem_gib"),
                        "losses": res["losses"], "loss_drop": res["losses"][0] - res["losses"][-1],
                        "wall_s": res["wall_s"]}}


def check_zero(ctx: Ctx, stage: int) -> dict:
    why = _need_deepspeed()
    if why:
        return {"status": "SKIPPED", "why": why}
    res = _worker(ctx, f"zero{stage}", _launcher(1, "--use_deepspeed", "--deepspeed_config_file",
                                                 str(_ds_config(ctx, stage))))
    out = _compare(ctx, res)
    out["figures"]["zero_stage"] = res.get("zero_stage")
    return out


def check_ddp(ctx: Ctx) -> dict:
    n = torch.cuda.device_count()
    if n < 2:
        return {"status": "SKIPPED", "why": f"{n} GPU: DDP needs several"}
    return _compare(ctx, _worker(ctx, "ddp", _launcher(n, "--multi_gpu")))


def check_fsdp(ctx: Ctx) -> dict:
    """train.py under `accelerate launch --config_file accelerate_fsdp_config.yaml` (the recognition study's FSDP
    settings: full shard, size-based wrap, full state dict) on every GPU, full fine-tuning of tiny-llama for 2
    exposures; then test.py loads the run directory (its final/ model). FSDP cannot run on CPU (train.py refuses
    it there), so this is its only check."""
    n = max(1, torch.cuda.device_count())
    out, data = ctx.tmp / "fsdp_run", ctx.tmp / "fsdp_data"
    data.mkdir(parents=True, exist_ok=True)
    sents = [f"Sentence {i} says that the {w} is on the table." for i, w in enumerate(("cup", "book", "key", "pen"))]
    (data / "seen.jsonl").write_text("".join(json.dumps({"sent": t}) + "\n" for t in sents))
    (data / "unseen.jsonl").write_text("".join(json.dumps({"sent": t.replace("table", "floor")}) + "\n" for t in sents))
    env = _clean_env(OMP_NUM_THREADS="1")
    rc, secs, tail = _run_logged(ctx, "fsdp", _launcher(n, "--config_file", str(ROOT / "accelerate_fsdp_config.yaml"))
                                 + [str(ROOT / "train.py"), "--model_name_or_path", "tiny-llama", "--train_file",
                                    str(data / "seen.jsonl"), "--output_dir", str(out), "--num_exposures", "2",
                                    "--batch_size", "2", "--learning_rate", "1e-3", "--overwrite_output_dir"], env)
    if rc != 0 or not (out / "results.json").exists():
        return {"status": "FAILED", "error": f"train.py exit {rc}; log {ctx.logs / 'fsdp.log'}: ...{tail[-600:]}"}
    res = json.loads((out / "results.json").read_text())
    rc2, secs2, tail2 = _run_logged(ctx, "fsdp_test", [sys.executable, str(ROOT / "test.py"), "--model_name_or_path",
                                                       str(out), "--seen_file", str(data / "seen.jsonl"),
                                                       "--unseen_file", str(data / "unseen.jsonl"), "--bootstrap", "0",
                                                       "--output_dir", str(ctx.tmp / "fsdp_test"),
                                                       "--overwrite_output_dir"], env)
    figs = {"processes": res.get("num_processes"), "distributed_type": res.get("distributed_type"),
            "train_wall_s": secs, "test_exit": rc2, "test_wall_s": secs2}
    if "FSDP" not in str(res.get("distributed_type")) or rc2 != 0:
        return {"status": "FAILED", "figures": figs, "error": f"not FSDP, or test.py could not load it: ...{tail2[-400:]}"}
    return {"figures": figs}


CHECK_FUNCS = {"peak": check_peak, "full": check_full, "lora": check_lora, "scoring": check_scoring,
               "generation": check_generation, "scoring_tiny": check_scoring_tiny,
               "generation_tiny": check_generation_tiny, "qlora": check_qlora, "expt1": check_expt1,
               "ds_ref": check_ds_ref, "zero2": lambda ctx: check_zero(ctx, 2), "zero3": lambda ctx: check_zero(ctx, 3),
               "ddp": check_ddp, "fsdp": check_fsdp}


def run_one(ctx: Ctx, name: str) -> dict:
    """One check in its own try/except: {'status': OK | FAILED | SKIPPED, 'figures', 'error'/'why', 'seconds'}."""
    if ctx.elapsed() >= ctx.budget_s:
        return {"status": "SKIPPED", "why": f"global deadline: {ctx.budget_s:.0f} s used before it started"}
    t0 = time.time()
    try:
        r = CHECK_FUNCS[name](ctx)
        r.setdefault("status", "OK")
    except Exception as e:  # noqa: BLE001 - any failure is reported and the next check runs
        oom = isinstance(e, torch.OutOfMemoryError) if hasattr(torch, "OutOfMemoryError") else False
        r = {"status": "FAILED", "error": ("out of memory: " if oom else "") + f"{type(e).__name__}: {e}"[:1500],
             "traceback": traceback.format_exc()[-3000:]}
    free_memory()
    r["seconds"] = time.time() - t0
    return r


def finalize(results: dict, ctx: Ctx) -> None:
    """Peak = max of the measurements before and after; MFU figures recomputed against it."""
    peaks = [p for p in (results.get("peak_before"), results.get("peak_after")) if p]
    if not peaks:
        return
    results["peak_flops"] = peak = max(peaks)
    checks = results["checks"]
    for name, factors in (("full", (6,)), ("lora", (6, 4))):
        figs = checks.get(name, {}).get("figures", {})
        for f in factors:
            if figs.get("tokens_per_s"):
                figs[f"mfu_{f}n"] = mfu(ctx.n_matmul, figs["tokens_per_s"], peak, f)
    figs = checks.get("scoring", {}).get("figures", {})
    if figs.get("scored_tokens"):
        for key in ("bs1", "batched"):
            figs[f"{key}_util"] = 2 * ctx.n_matmul * figs["scored_tokens"] / figs[f"{key}_s"] / peak


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(render_report(results))


def run_all(ctx: Ctx, names: list[str], command: str) -> dict:
    results = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "command": command,
               "cpu_dry_run": ctx.dry_run, "environment": {**device_info(), **versions()},
               "model": {"name": "micro Llama (dry run)" if ctx.dry_run else "TinyLlama-1.1B shape, random init",
                         "config": ctx.cfg, "params": count_params(ctx.cfg), "matmul_params": ctx.n_matmul},
               "checks": {}, "notes": list(NOTES)}
    if not ctx.dry_run and not torch.cuda.is_bf16_supported():
        results["notes"].append("This GPU does not support bf16 (compute capability < 8.0): the bf16 checks fail "
                                "or run emulated.")
    for name in names:
        print(f"[gpu_check {ctx.elapsed():5.0f} s] {name} ...", flush=True)
        r = run_one(ctx, name)
        results["checks"][name] = r
        if name == "peak" and ctx.peak:
            results["peak_before"] = ctx.peak
        shown = "; ".join(fmt_figure(k, v) for k, v in r.get("figures", {}).items())
        print(f"[gpu_check {ctx.elapsed():5.0f} s] {name}: {r['status']} {shown} {r.get('error') or r.get('why') or ''}",
              flush=True)
        results["wall_s"] = ctx.elapsed()
        finalize(results, ctx)
        write_report(results, ctx.out)
    if "peak" in names and ctx.peak and ctx.elapsed() < ctx.budget_s:
        try:
            results["peak_after"] = matmul_peak(ctx.device, torch.bfloat16, ctx.sizes["peak_n"], ctx.sizes["peak_repeats"])
        except Exception as e:  # noqa: BLE001
            results["notes"].append(f"Peak after the checks not measured: {type(e).__name__}: {e}.")
    results["wall_s"] = ctx.elapsed()
    finalize(results, ctx)
    write_report(results, ctx.out)
    return results


NOTES = [
    "MFU = 6·N·tokens/s / peak (4·N for LoRA's mfu_4n: no base weight gradients), N = matmul parameters;",
    "*_util = 2·N per scored or processed token / time / peak. Ratios compare two methods in the same run on the",
    "same items, alternating chunks. DeepSpeed/DDP losses are per-step means over the same global batch,",
    f"compared with the plain accelerate run within {LOSS_RTOL:.0%} of the loss. Subprocess logs are in logs/.",
]


# ------------------------------------------------------------------------------------------- worker
def worker(args) -> int:
    """One training run under accelerate (launched by _worker): per-step losses, tokens/s, peak memory."""
    from transformers import AutoModelForCausalLM

    from memlab import training

    out = Path(args.worker_out)
    acc = training.make_accelerator("bf16", "none", out.parent)
    model = AutoModelForCausalLM.from_pretrained(args.ckpt, dtype=torch.float32)
    vocab = model.config.vocab_size
    optimizer = training.adamw_with_groups(model, args.lr, 0.0)
    world = acc.num_processes
    ds = acc.state.deepspeed_plugin
    if ds is not None:  # as train.py fills ds_config.json's "auto" entries
        ds.deepspeed_config.update({"train_micro_batch_size_per_gpu": args.batch // world,
                                    "gradient_accumulation_steps": 1, "train_batch_size": args.batch,
                                    "gradient_clipping": 0.0})
    model, optimizer = acc.prepare(model, optimizer)
    full = random_batch(vocab, args.batch, args.seq, seed=0)
    mine = {k: v[acc.process_index::world].to(acc.device) for k, v in full.items()}
    reset_peak_memory(acc.device)
    model.train()
    losses, t0 = [], None
    for step in range(args.steps):
        if step == 1:  # the first step (allocation, DeepSpeed buckets) is not timed
            sync(acc.device)
            t0 = time.perf_counter()
        loss, _ = training.causal_lm_loss(model, mine)
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(acc.reduce(loss.detach().float().reshape(1), reduction="mean").item())
    sync(acc.device)
    dt = time.perf_counter() - t0 if t0 else float("nan")
    if acc.is_main_process:
        out.write_text(json.dumps({"losses": losses, "tokens_per_s": args.batch * args.seq * (args.steps - 1) / dt,
                                   "num_processes": world, "distributed_type": str(acc.distributed_type),
                                   "zero_stage": ds.zero_stage if ds is not None else None,
                                   "mixed_precision": acc.mixed_precision,
                                   "deepspeed_bf16": ds.deepspeed_config.get("bf16", {}).get("enabled") if ds else None,
                                   "peak_mem_gib": peak_memory_gib(acc.device)}))
    acc.wait_for_everyone()
    acc.end_training()
    return 0


# ------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="report folder (default: gpu_check/, or gpu_check/cpu_dry_run/)")
    ap.add_argument("--only", default="", help="comma-separated checks to run, of: " + ",".join(CHECKS))
    ap.add_argument("--budget_s", type=float, default=BUDGET_S, help="checks not started by then are skipped")
    ap.add_argument("--cpu_dry_run", action="store_true", help="run every check on the CPU with a micro Llama "
                                                               "(developing this script; figures meaningless)")
    # the training worker of ds_ref / zero2 / zero3 / ddp (run under accelerate launch)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--worker_out", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, default=1e-4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        ap.error(f"unknown check(s) {unknown}; known: {','.join(CHECKS)}")
    if "peak" not in names and {"full", "lora", "qlora", "scoring"} & set(names):
        names.insert(0, "peak")  # MFU and utilisation need it
    if {"zero2", "zero3", "ddp"} & set(names) and "ds_ref" not in names:
        names.insert(names.index(next(n for n in names if n in ("zero2", "zero3", "ddp"))), "ds_ref")
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print("no GPU: nothing run (torch.cuda.is_available() is False; nothing written)")
        return 0
    dry = args.cpu_dry_run
    out = Path(args.out) if args.out else ROOT / "gpu_check" / ("cpu_dry_run" if dry else "")
    ctx = Ctx("cpu" if dry else "cuda:0", MICRO if dry else LLAMA_1B, SIZES["cpu" if dry else "gpu"], out,
              args.budget_s, dry)
    if dry:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    def on_term(signum, frame):  # so that `finally` runs: subprocesses stopped, the temporary folder removed
        raise SystemExit(124)
    signal.signal(signal.SIGTERM, on_term)
    try:
        results = run_all(ctx, names, "bash scripts/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]))
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(f"report: {out / 'report.md'} (and report.json)")
    for t, m, v in target_rows(results):
        print(f"  {t}: {m} ({v})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
