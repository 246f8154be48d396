"""Damaged model, adapter and checkpoint directories give one clear error before any weights load
(`check_model_dir`, wired into `resolve_model_path`), and a disk that fills up while a checkpoint is written
gives one error and leaves no half-written checkpoint (`checkpoint_write_guard` in `save_checkpoint`)."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mounted_tmpfs
from memlab import training
from memlab.io import DataError
from memlab.models import BUILTIN_MODELS, check_model_dir, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
SENTS = ["the cat sat on the mat", "a dog ran to the river every evening", "seven blue apples",
         "the keeper wrote a letter to his sister", "green bread", "the code number is 48213"]

pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def truncate(path: Path, size: int) -> int:
    """Cut `path` to `size` bytes; returns its former size."""
    before = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size)
    return before


def run_cli(script, *argv, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240)


def assert_one_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def model_copy(tmp_path, tiny_llama):
    return Path(shutil.copytree(tiny_llama, tmp_path / "model"))


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    return (write_jsonl(d / "seen.jsonl", [{"text": s} for s in SENTS[:3]]),
            write_jsonl(d / "unseen.jsonl", [{"text": s} for s in SENTS[3:]]))


# ------------------------------------------------------------------------------------------ the checker
def test_builtin_and_intact_dirs_pass(model_copy):
    for name in BUILTIN_MODELS:  # the tiny ones are built from smollm2-135m's tokenizer, so all three exist
        assert check_model_dir(resolve_model_path(name, weights_required=True), weights_required=True)
    assert resolve_model_path(str(model_copy), weights_required=True) == model_copy


def test_truncated_config_json(model_copy):
    cfg = model_copy / "config.json"
    truncate(cfg, cfg.stat().st_size // 2)
    with pytest.raises(DataError, match=r"config\.json: not valid JSON \(.+\); the model directory is damaged"):
        check_model_dir(model_copy)
    with pytest.raises(DataError, match=r"config\.json: not valid JSON"):
        resolve_model_path(str(model_copy))  # what load_model / load_tokenizer call first
    cfg.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"config\.json: not valid JSON \(expected an object, got list\)"):
        check_model_dir(model_copy)


def test_half_size_safetensors(model_copy):
    weights = model_copy / "model.safetensors"
    full = weights.stat().st_size
    truncate(weights, full // 2)
    with pytest.raises(DataError, match=rf"model\.safetensors: truncated \({full // 2} bytes, header says {full}\); "
                                        r"the model directory is damaged"):
        resolve_model_path(str(model_copy))
    truncate(weights, 5)
    with pytest.raises(DataError, match=r"model\.safetensors: truncated \(5 bytes"):
        check_model_dir(model_copy)
    weights.write_bytes((20).to_bytes(8, "little") + b"not json at all here")
    with pytest.raises(DataError, match=r"model\.safetensors: safetensors header unreadable"):
        check_model_dir(model_copy)


def test_large_json_cut_short_and_missing_weights(model_copy):
    tok = model_copy / "tokenizer.json"  # ~3.5 MB: checked at its ends, not parsed
    truncate(tok, tok.stat().st_size - 100)
    with pytest.raises(DataError, match=r"tokenizer\.json: not valid JSON \(.*truncated\)"):
        check_model_dir(model_copy)
    shutil.copy(resolve_model_path("tiny-llama") / "tokenizer.json", tok)
    (model_copy / "model.safetensors").unlink()
    assert check_model_dir(model_copy)  # a config-only directory still serves --from_scratch and tokenizers
    with pytest.raises(DataError, match=r"config\.json but no weights"):
        check_model_dir(model_copy, weights_required=True)


def test_sharded_index(model_copy):
    weights = model_copy / "model.safetensors"
    weights.rename(model_copy / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"index\.json: names shard\(s\) that are missing: "
                                        r"\['model-00002-of-00002\.safetensors'\]"):
        check_model_dir(model_copy)
    (model_copy / "model.safetensors.index.json").write_text('{"weight_map": {"a": ')
    with pytest.raises(DataError, match=r"model\.safetensors\.index\.json: not valid JSON"):
        check_model_dir(model_copy)


def test_truncated_lora_adapter(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft_model.peft_config["default"].base_model_name_or_path = str(tiny_llama)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert resolve_model_path(str(adapter), weights_required=True) == adapter
    weights = adapter / "adapter_model.safetensors"
    full = weights.stat().st_size
    truncate(weights, full - 10)
    with pytest.raises(DataError, match=rf"adapter_model\.safetensors: truncated \({full - 10} bytes, header says "
                                        rf"{full}\); the LoRA adapter directory is damaged"):
        resolve_model_path(str(adapter))
    weights.unlink()
    with pytest.raises(DataError, match=r"no adapter_model\.safetensors or adapter_model\.bin"):
        resolve_model_path(str(adapter), weights_required=True)
    (adapter / "adapter_config.json").write_text('{"r": 2, ')
    with pytest.raises(DataError, match=r"adapter_config\.json: not valid JSON .*LoRA adapter directory is damaged"):
        resolve_model_path(str(adapter))


# ------------------------------------------------------------------------------- through the real scripts
def run_in_process(name, argv, capsys):
    """A script's real entry point (`cli.run`: parse, main, DataError -> one line + exit 2) in this process."""
    from helpers import script
    from memlab.cli import run

    mod = script(name)
    args_type = {"test": "RecognitionArgs", "train": "TrainArgs"}[name]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(mod.main, getattr(mod, args_type), [str(a) for a in argv])
    return subprocess.CompletedProcess(name, e.value.code, "", capsys.readouterr().err)


def test_scripts_report_damaged_dirs(tmp_path, model_copy, pair_files, capsys):
    """docs/BAD_INPUTS.md 75 and 74 (test.py --checkpoints), 51 (train.py, truncated config.json): exit 2, one line,
    no output directory left; the first through a real subprocess."""
    seen, unseen = pair_files
    half = Path(shutil.copytree(model_copy, tmp_path / "half"))
    truncate(half / "model.safetensors", (half / "model.safetensors").stat().st_size // 2)
    proc = run_cli("test.py", "--seen_file", seen, "--unseen_file", unseen, "--model_name_or_path", "tiny-llama",
                   "--checkpoints", half, "--output_dir", tmp_path / "out75")
    assert_one_error(proc, f"{half}/model.safetensors: truncated (", "the checkpoint directory is damaged")
    assert not (tmp_path / "out75").exists()

    truncate(model_copy / "config.json", 100)
    proc = run_in_process("test", ["--seen_file", seen, "--unseen_file", unseen, "--model_name_or_path", "tiny-llama",
                                   "--checkpoints", model_copy, "--output_dir", tmp_path / "out74"], capsys)
    assert_one_error(proc, f"{model_copy}/config.json: not valid JSON (")
    proc = run_in_process("train", ["--model_name_or_path", model_copy, "--train_file", seen,
                                    "--output_dir", tmp_path / "out51", "--num_exposures", 1], capsys)
    assert_one_error(proc, f"{model_copy}/config.json: not valid JSON (", "the model directory is damaged")
    assert not (tmp_path / "out51").exists()


# ------------------------------------------------------------------------------------------- disk full
def _tiny_save(tmp_path, tiny_llama, path):
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    acc = Accelerator(cpu=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    optimizer = training.torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = training.torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def save():
        training.save_checkpoint(acc, model, tok, optimizer, scheduler, training.TrainState(step=1), {"seed": 0}, path,
                          with_optimizer=True, merge=False, keep_optimizer_state="last", run_dir=tmp_path)
    return model, save


def test_disk_full_while_saving_is_one_error_and_cleans_up(tmp_path, tiny_llama, monkeypatch):
    path = tmp_path / "checkpoints" / "exposure_1"
    path.parent.mkdir()
    model, save = _tiny_save(tmp_path, tiny_llama, path)
    save()  # a good checkpoint first: a failed re-save must leave it intact
    before = sorted(p.name for p in path.iterdir())
    weights_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6  # fp32, embeddings tied to lm_head once

    real_save = training.torch.save

    def full_disk(obj, f, *a, **k):  # the optimizer file is half-written when the disk fills up
        Path(f).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(training.torch, "save", full_disk)
    with pytest.raises(DataError) as e:
        save()
    msg = str(e.value)
    assert msg.startswith(f"disk full while saving checkpoint {path} (needed about ")
    assert f"the weights ({weights_mb:.0f} MB) and optimizer state ({2 * weights_mb:.0f} MB) being written" in msg
    assert f"MB free on {training._mount_point(tmp_path)})" in msg
    assert not (tmp_path / "checkpoints" / ".exposure_1.tmp").exists()
    assert sorted(p.name for p in path.iterdir()) == before

    # safetensors' own error text (docs/BAD_INPUTS.md 59), and a quota
    def safetensors_full(self, *a, **k):
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(training.torch, "save", real_save)
    monkeypatch.setattr(type(model), "save_pretrained", safetensors_full)
    with pytest.raises(DataError, match=r"^disk full while saving checkpoint"):
        save()
    monkeypatch.setattr(type(model), "save_pretrained",
                        lambda self, *a, **k: (_ for _ in ()).throw(OSError(errno.EDQUOT, "Disk quota exceeded")))
    with pytest.raises(DataError, match=r"^disk quota exceeded while saving checkpoint"):
        save()
    # anything else is not disguised, but the partial checkpoint still goes
    monkeypatch.setattr(type(model), "save_pretrained", lambda self, *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        save()
    assert not (tmp_path / "checkpoints" / ".exposure_1.tmp").exists()
    assert sorted(p.name for p in path.iterdir()) == before


def test_train_into_a_full_tmpfs(tmp_path, pair_files):
    """docs/BAD_INPUTS.md 59 for real: a 2 MB tmpfs cannot hold tiny-llama's 13 MB checkpoint."""
    with mounted_tmpfs(tmp_path / "disk", "2m") as disk:
        out = disk / "run"
        proc = run_cli("train.py", "--model_name_or_path", "tiny-llama", "--train_file", pair_files[0],
                       "--output_dir", out, "--num_exposures", 1, "--save_exposures", 1, "--batch_size", 3)
        line = assert_one_error(proc, f"disk full while saving checkpoint {out}/checkpoints/exposure_1 (needed about ",
                                f"MB free on {disk})")
        assert "the weights (" in line and "optimizer state (" in line
        assert not list(disk.rglob("*.tmp")), sorted(map(str, disk.rglob("*")))
