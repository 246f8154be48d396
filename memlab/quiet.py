"""What reaches the user's terminal: our lines, real warnings, and no library noise that is not about their run.

`install()` runs when memlab is imported (memlab/__init__.py), before any library logs. It does three things:

- **Known library noise is dropped by exact message**, each with the reason it is not about the user's run
  (`NOISE` below). Everything else a library logs or warns still shows: a filter per message, never a
  logger silenced as a whole, so a real warning from the same library is not hidden.
- **Repeated lines show once**: bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." on every 8-bit
  matmul (385 copies in one DPO run); the first one stays.
- **Library progress bars only on an interactive terminal**: transformers' "Loading weights" / "Writing
  model shards" bars (and huggingface_hub's) are off when stderr is not a TTY (SLURM logs, pipes, CI), where
  they are `\\r`/`[A` soup. memlab's own long loops use `progress()` here: tqdm on a terminal, a plain line
  every `LINE_EVERY_S` seconds elsewhere.

Decision (docs/DESIGN.md §9, "Terminal output"): the messages are matched by their start, so a library that rewords
one shows it again rather than hiding something new.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings

# (logger name, "drop" or "once", message start, why)
NOISE = (
    ("bitsandbytes.backends.cpu.ops", "drop", "Failed to load CPU gemm_4bit_forward from kernels-community",
     "bitsandbytes on a CPU with AVX-512 BF16 tries to fetch an optional 4-bit kernel from a model hub at import "
     "(peft imports bitsandbytes whether or not a k-bit flag is given); offline it falls back to its built-in "
     "CPU kernel, which is what every other CPU uses"),
    ("DeepSpeed", "drop", "Setting accelerator to CPU",
     "deepspeed's accelerator auto-detection, printed to stdout whenever a library imports deepspeed on a machine "
     "without a GPU; memlab reports the device it used in results.json under runtime.device"),
    ("bitsandbytes.autograd._functions", "once", "MatMul8bitLt: inputs will be cast",
     "bitsandbytes logs it on every 8-bit matmul (385 copies in one DPO run); the first one says it"),
)
# (category, message regex, action, why)
WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", "ignore",
     "peft calls transformers' deprecated property inside get_peft_model; nothing the user can change"),
)
LINE_EVERY_S = 60.0


class _Known(logging.Filter):
    """Drops the records of one logger that start with a known message ("drop"), or lets the first of each
    through ("once")."""

    def __init__(self):
        super().__init__()
        self.rules: dict[str, str] = {}
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed record is not ours to hide
            return True
        for start, action in self.rules.items():
            if message.startswith(start):
                if action == "drop" or start in self.seen:
                    return False
                self.seen.add(start)
        return True


def interactive() -> bool:
    """Whether stderr is a terminal a person is watching."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def install() -> None:
    """Idempotent: the filters, the warning rules and (off a terminal) the library progress bars."""
    for name, action, start, _why in NOISE:
        logger = logging.getLogger(name)  # the same object the library gets later: the filter stays on it
        known = next((f for f in logger.filters if isinstance(f, _Known)), None)
        if known is None:
            known = _Known()
            logger.addFilter(known)
        known.rules[start] = action
    for category, regex, action, _why in WARNINGS:
        warnings.filterwarnings(action, message=regex, category=category)
    if not interactive():
        # huggingface_hub reads this when imported, and transformers' logging follows it; libraries already
        # imported are switched off directly.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()


class _Lines:
    """tqdm's update/set_postfix/close for a log file: one plain line every `every_s` seconds and at the end.
    (tqdm has no line-per-report mode: off a terminal it still rewrites one line with carriage returns.)"""

    def __init__(self, total: int, initial: int, desc: str, every_s: float):
        self.total, self.n, self.desc, self.every_s = total, initial, desc, every_s
        self.postfix: dict = {}
        self.t0 = self.last = time.time()
        self.start = initial

    def set_postfix(self, **kw):
        self.postfix = kw

    def _line(self):
        rate = (self.n - self.start) / max(time.time() - self.t0, 1e-9)
        post = "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: step {self.n}/{self.total} ({rate:.2f} steps/s{post})", file=sys.stderr, flush=True)

    def update(self, n: int = 1):
        self.n += n
        if time.time() - self.last >= self.every_s:
            self.last = time.time()
            self._line()

    def close(self):
        if self.n > self.start:
            self._line()


class _Off:
    def set_postfix(self, **kw):
        pass

    def update(self, n: int = 1):
        pass

    def close(self):
        pass


def progress(total: int, desc: str, initial: int = 0, disable: bool = False, every_s: float | None = None):
    """A progress report for a long loop: tqdm on a terminal, plain lines in a log, nothing when `disable`
    (e.g. every rank but the first)."""
    if disable:
        return _Off()
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc)
    return _Lines(total, initial, desc, LINE_EVERY_S if every_s is None else every_s)
