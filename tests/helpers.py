"""Helpers shared by test modules (import as `from helpers import script`)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    """Import a top-level script as a module (test.py would otherwise clash with the stdlib `test`)."""
    mod_name = f"memlab_script_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, ROOT / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    return sys.modules[mod_name]


def error_message(err: str) -> str:
    """Our `error:` message in a script's stderr: exactly one line starting with `error:`, nothing but indented
    continuation lines after it (the "invalid arguments" list, a leakage report), no traceback. Lines before
    it are not ours (a library may log on some CPUs and not others, memlab/quiet.py drops the known ones);
    checking our line keeps a test independent of them."""
    assert "Traceback" not in err, err[-3000:]
    lines = err.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(starts) == 1, err[-3000:]
    rest = lines[starts[0] + 1:]
    assert all(not line.strip() or line[:1].isspace() for line in rest), err[-3000:]
    return "\n".join(lines[starts[0]:])


def error_line(err: str) -> str:
    """`error_message` that must be one line (no continuation lines)."""
    message = error_message(err)
    assert "\n" not in message, err[-3000:]
    return message


def mounted_tmpfs(disk: Path, size: str):
    """A context manager: a small tmpfs mounted on `disk` (created) for a full-disk test, unmounted after;
    the test is skipped where mounting is not possible (not root, no mount, a container without it)."""
    import contextlib
    import os
    import shutil
    import subprocess

    import pytest

    @contextlib.contextmanager
    def mounted():
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a small tmpfs needs root (and mount)")
        disk.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({probe.stderr.strip() or probe.returncode})")
        try:
            yield disk
        finally:
            subprocess.run(["umount", str(disk)], check=False)
    return mounted()
