"""Library noise stays off the user's terminal (memlab/quiet.py), real warnings do not, and memlab's own
progress is plain lines in a log. These hold on every CPU: the filters are checked by emitting the exact
records the libraries emit (some CPUs never trigger them), and the real imports are checked as well."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from memlab import quiet

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=300)


def test_each_known_library_line_is_dropped_or_shown_once_and_other_lines_still_show():
    rules = [(name, action, start) for name, action, start, _why in quiet.NOISE]
    p = py(f"""
        import logging, memlab
        for name, action, start in {rules!r}:
            log = logging.getLogger(name)
            log.warning(start + ": %s", "details the library adds")
            log.warning(start + ": %s", "details the library adds")
            log.warning("a real warning from %s", name)
        """)
    assert p.returncode == 0, p.stderr
    lines = (p.stdout + p.stderr).splitlines()
    for name, action, start in rules:
        assert sum(line.startswith(start) for line in lines) == (1 if action == "once" else 0), p.stderr
        assert f"a real warning from {name}" in lines, p.stderr


def test_the_deprecation_warning_peft_triggers_is_dropped_and_others_are_not():
    p = py("""
        import warnings, memlab
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
        """)
    assert "is_gradient_checkpointing" not in p.stderr and "something else is deprecated" in p.stderr


def test_importing_the_heavy_libraries_after_memlab_prints_nothing():
    # On a CPU with AVX-512 BF16 bitsandbytes logs a kernels-community line at import, and deepspeed prints its
    # accelerator detection on stdout on any machine without a GPU.
    p = py("import memlab, peft, bitsandbytes, deepspeed, accelerate, transformers")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == "", p.stdout + p.stderr


def test_progress_off_a_terminal_is_plain_lines(capsys):
    bar = quiet.progress(10, "train", every_s=0.0)
    bar.set_postfix(loss=1.23456, exposure=2)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines()[-1].startswith("train: step 3/10") and "loss=1.235" in err and "exposure=2" in err
    off = quiet.progress(10, "train", disable=True)
    off.update(5)
    off.close()
    assert capsys.readouterr().err == ""
