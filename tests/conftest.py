"""Shared fixtures: tiny deterministic models (built once into the memlab cache) and the repo root."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Spinning OpenMP threads stall badly when two processes share the 2 cores (seen: 7 s -> 58 s for one
# scoring run); passive waiting costs little when the machine is quiet. Subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from memlab.models import resolve_model_path
    return resolve_model_path("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2() -> Path:
    from memlab.models import resolve_model_path
    return resolve_model_path("tiny-gpt2")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from memlab.models import resolve_model_path
    return resolve_model_path("smollm2-135m")
