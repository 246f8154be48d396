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
