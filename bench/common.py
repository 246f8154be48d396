"""What the benchmarks in bench/ share: the checkout's root, loading the model under test, the alternating
order of the two methods, timing, the fp32 matmul peak and the summary lines they print.

Imported as `common` by the bench_*.py scripts next to it (running one puts bench/ first on sys.path);
memlab itself is an installed package (pyproject.toml).
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from memlab.models import load_model, load_tokenizer
from memlab.likelihood import matmul_params, matmul_peak_flops

ROOT = Path(__file__).resolve().parents[1]


def base_parser(doc: str, n_items: int, chunk: int, unit: str):
    """The flags every benchmark has (model, item count, alternation chunk, batch size, threads); each script
    adds its own."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="model under test (built-in name or local directory)")
    ap.add_argument("--n_items", type=int, default=n_items, help=f"{unit} measured")
    ap.add_argument("--chunk", type=int, default=chunk, help=f"{unit} per alternation chunk")
    ap.add_argument("--batch_size", type=int, default=16, help="memlab's batch size")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return ap


def setup(model_name: str, threads: int):
    """Threads set, the matmul peak measured before anything is loaded, then the model in eval mode and its
    tokenizer: (peak_before, model, tok, N = parameters in matmuls)."""
    torch.set_num_threads(threads)
    peak_before = matmul_peak_flops()
    model, _ = load_model(model_name)
    model.eval()
    tok = load_tokenizer(model_name)
    return peak_before, model, tok, matmul_params(model)


def final_peak(peak_before: float) -> float:
    """The fp32 matmul peak of this run: the best of the measurement before and one now."""
    return max(peak_before, matmul_peak_flops())


def alternate(c: int, methods: tuple[str, str]) -> tuple[str, str]:
    """The two methods in the order chunk / run `c` runs them: which goes first alternates, so load changes on
    a shared machine hit both alike."""
    return methods if c % 2 == 0 else methods[::-1]


@contextmanager
def timed(times: dict, key: str):
    """`with timed(times, "ours"): ...` records the block's wall time (seconds) as times["ours"]."""
    t0 = time.perf_counter()
    yield
    times[key] = time.perf_counter() - t0


def print_speed_ratio(t_base: float, t_ours: float, ratios: list[float]) -> None:
    print(f"speed ratio {t_base / t_ours:.2f}x overall; per chunk median {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


def print_peak(peak: float, peak_before: float | None = None) -> None:
    before = "" if peak_before is None else f" (before {peak_before / 1e9:.1f})"
    print(f"matmul peak (fp32 2048^3): {peak / 1e9:.1f} GFLOP/s{before}")
