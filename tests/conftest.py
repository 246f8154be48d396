"""Shared fixtures: tiny deterministic models (built once into the memlab cache) and the repo root."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# memlab itself is an installed package (pyproject.toml); the repository root stays first on sys.path because
# the tests import its top-level scripts as modules (`import train`, `import make_data`, `import test`, ...)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Spinning OpenMP threads stall badly when two processes share the 2 cores (seen: 7 s -> 58 s for one
# scoring run); passive waiting costs little when the machine is quiet. Subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a 2-core machine: with 2 threads each small matmul waits at OpenMP barriers for the
    other core (3-4x slower when another process shares the cores), so in-process tests of tiny models run
    single-threaded (modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture(scope="session")
def memorized(tmp_path_factory):
    """tiny-llama trained once by train.py on 20 chat facts + 10 plain sentences (make_data.py), with
    checkpoints after exposures 10, 30 and 60. Shared by the training and evaluation tests."""
    import make_data
    import train

    root = tmp_path_factory.mktemp("memorized")
    make_data.main(["facts", "--output_dir", str(root / "facts"), "--n_names", "0", "--n_objects", "20",
                    "--variants_per_fact", "1", "--seed", "3"])
    make_data.main(["recognition", "--output_dir", str(root / "rec"), "--n_pairs", "10", "--foil_type", "novel",
                    "--seed", "3"])
    results = train.main(train.TrainArgs(
        model_name_or_path="tiny-llama", train_file=f"{root}/facts/train_active_1.jsonl,{root}/rec/seen.jsonl",
        output_dir=str(root / "run"), num_exposures=60, save_exposures="10,30,60", learning_rate=1e-3,
        batch_size=5))
    return {"root": root, "facts": root / "facts", "rec": root / "rec", "run": root / "run", "results": results}


# The longest files first: `make test` runs two pytest-xdist workers (--dist loadfile), which take files in
# collection order; starting the SLURM file (mostly waiting on SLURM's requeue hold) and the heavy training
# files early keeps one worker from ending alone on them. Order inside a file is unchanged.
SLOW_FILES_FIRST = ("test_slurm.py", "test_train.py", "test_experiments_privacy.py", "test_experiments_more.py",
                    "test_experiments.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
