"""The studies memlab replaces run as they are (docs/COMING_FROM.md): the recognition/recall study's six
command shapes with exactly its flags, every run_clm_no_trainer flag accepted or refused with a reason, and
its data designs (overlapping probes, canary copies, ID documents)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import error_line
from memlab import cli, compat, metrics
from memlab.io import DataError, ensure_ids

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
N = 12  # pairs of the recognition data used


def run(*args, cwd):
    return subprocess.run([PY, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The repository's recognition data in the study's own format ({"sent", "sent_id", "url_id"}), and a
    model trained by the study's train command shape."""
    d = tmp_path_factory.mktemp("orhan")
    for split in ("seen", "unseen"):
        rows = [json.loads(line) for line in (ROOT / "data/recognition" / f"{split}.jsonl").read_text().splitlines()]
        (d / f"{split}.json").write_text("".join(json.dumps({"sent": r["text"], "sent_id": i, "url_id": 7}) + "\n"
                                                 for i, r in enumerate(rows[:N])))
    # shape 1: train (sweeps), exactly the study's flags
    p = run(ROOT / "train.py", "--model_name_or_path", "tiny-llama", "--train_file", "seen.json",
            "--per_device_train_batch_size", 4, "--learning_rate", "0.001", "--output_dir", "out", "--save_prefix",
            "expt1", "--block_size", 128, "--num_train_epochs", 3, "--overwrite_cache", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"d": d, "train": p}


def test_train_shape_writes_the_original_npz_and_records_memlab_names(study):
    d = study["d"]
    assert "note: --overwrite_cache has no effect here" in study["train"].stderr
    z = np.load(d / "out" / "expt1_results.npz")
    assert set(z.files) == {"train_losses_ckpt", "completed_steps"}
    assert int(z["completed_steps"]) == 9 and z["train_losses_ckpt"].shape == (9,)  # 12 items / 4 x 3 epochs
    logged = [json.loads(line)["loss"] for line in (d / "out" / "metrics.jsonl").read_text().splitlines()]
    assert np.allclose(z["train_losses_ckpt"], logged)
    args = json.loads((d / "out" / "config.json").read_text())["args"]
    assert args["batch_size"] == 4 and args["num_exposures"] == 3 and "per_device_train_batch_size" not in args


def test_test_shape_mean_accuracy_is_two_afc(study):
    d = study["d"]
    p = run(ROOT / "test.py", "--model_name_or_path", "out", "--seen_file", "seen.json", "--unseen_file", "unseen.json",
            "--per_device_eval_batch_size", 1, "--output_dir", "rec", "--save_prefix", "expt1", "--block_size", 128,
            "--overwrite_cache", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "--model_name_or_path out is a train.py run directory: using its final/ model" in p.stderr
    z = np.load(d / "rec" / "expt1_results.npz")
    assert set(z.files) == {"seen_losses", "unseen_losses", "accuracies", "mean_accuracy"}
    assert z["seen_losses"].shape == z["unseen_losses"].shape == z["accuracies"].shape == (N,)
    assert np.array_equal(z["accuracies"], (z["seen_losses"] < z["unseen_losses"]).astype(float))
    two_afc = json.loads((d / "rec" / "results.json").read_text())["checkpoints"][0]["two_afc"]
    assert float(z["mean_accuracy"]) == pytest.approx(two_afc, abs=1e-12)


def test_generate_shape_is_recall_from_the_first_half_with_rouge_score(study):
    from rouge_score import rouge_scorer

    d = study["d"]
    p = run(ROOT / "generate.py", "--model_name_or_path", "out", "--seen_file", "seen.json",
            "--per_device_eval_batch_size", 1, "--output_dir", "gen", "--save_prefix", "expt1", "--block_size", 128,
            "--overwrite_cache", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    z = np.load(d / "gen" / "expt1_results.npz")  # plain string arrays: no allow_pickle needed
    assert set(z.files) == {"ground_truths", "completions", "prompts", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert len(z["prompts"]) == N
    sents = [json.loads(line)["sent"] for line in (d / "seen.json").read_text().splitlines()]
    for prompt, truth, sent in zip(z["prompts"], z["ground_truths"], sents):
        assert sent.startswith(prompt.strip()) and sent.endswith(truth.strip())
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    per = [scorer.score(t, c) for t, c in zip(z["ground_truths"], z["completions"])]
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert float(z[k]) == pytest.approx(np.mean([s[k].fmeasure for s in per]), abs=1e-12)
    items = (d / "gen" / "items.csv").read_text().splitlines()[0].split(",")
    assert {"prompt", "rouge1", "rouge2", "rougeLsum"} <= set(items)


def test_retention_shape_checkpoint_every_n_steps_addressable_as_step_n(study):
    d = study["d"]
    p = run(ROOT / "train.py", "--model_name_or_path", "out", "--train_file", "unseen.json",
            "--per_device_train_batch_size", 4, "--learning_rate", "0.001", "--output_dir", "ret", "--block_size", 128,
            "--num_train_epochs", 1, "--checkpointing_steps", 1, cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(c.name for c in (d / "ret" / "checkpoints").iterdir()) == [f"step_{s:07d}" for s in (1, 2, 3)]
    t = run(ROOT / "test.py", "--model_name_or_path", "ret/step_2", "--seen_file", "seen.json", "--unseen_file",
            "unseen.json", "--output_dir", "rec_step2", "--bootstrap", 0, cwd=d)
    assert t.returncode == 0, t.stderr[-3000:]
    assert "ret/checkpoints/step_0000002" in t.stderr


def test_max_train_steps_stops_mid_exposure_and_saves_final(study):
    d = study["d"]
    p = run(ROOT / "train.py", "--model_name_or_path", "tiny-llama", "--train_file", "seen.json",
            "--per_device_train_batch_size", 4, "--output_dir", "steps", "--max_train_steps", 4,
            "--checkpointing_steps", 2, cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (d / "steps" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # 3 steps per exposure: the second exposure stops after its first step
    assert (d / "steps" / "final").is_dir() and not (d / "steps" / "checkpoints" / "exposure_2").exists()
    assert sorted(c.name for c in (d / "steps" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    assert json.loads((d / "steps" / "config.json").read_text())["args"]["max_steps"] == 4
    bad = run(ROOT / "train.py", "--model_name_or_path", "tiny-llama", "--train_file", "seen.json",
              "--per_device_train_batch_size", 4, "--output_dir", "steps_bad", "--max_train_steps", 2,
              "--save_exposures", 1, cwd=d)
    assert bad.returncode == 2 and "beyond --max_steps 2" in error_line(bad.stderr)
    assert not (d / "steps_bad").exists()


def test_from_scratch_shape_on_a_local_file(study):
    d = study["d"]
    p = run(ROOT / "train.py", "--model_name_or_path", "tiny-llama", "--use_pretrained_weights", "False",
            "--train_file", "seen.json", "--per_device_train_batch_size", 4, "--output_dir", "scratch",
            "--num_train_epochs", 1, "--checkpointing_steps", "epoch", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    args = json.loads((d / "scratch" / "config.json").read_text())["args"]
    assert args["from_scratch"] is True and args["save_exposures"] == "all"
    assert (d / "scratch" / "checkpoints" / "exposure_1").is_dir()
    hub = run(ROOT / "train.py", "--use_pretrained_weights", "False", "--dataset_name", "wikitext",
              "--dataset_config_name", "wikitext-103-raw-v1", "--output_dir", "x", cwd=d)
    assert hub.returncode == 2 and "--dataset_name: memlab runs offline" in error_line(hub.stderr)
    assert not (d / "x").exists()


def test_accelerate_launch_one_cpu_process(study):
    d = study["d"]
    cmd = [Path(PY).parent / "accelerate", "launch", "--cpu", "--num_processes", 1, "--num_machines", 1,
           "--mixed_precision", "no", "--dynamo_backend", "no", ROOT / "train.py", "--model_name_or_path",
           "tiny-llama", "--train_file", "seen.json", "--per_device_train_batch_size", 4, "--output_dir", "acc",
           "--save_prefix", "expt1", "--num_train_epochs", 1, "--overwrite_cache"]
    p = subprocess.run(list(map(str, cmd)), cwd=d, capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (d / "acc" / "expt1_results.npz").exists()


# ------------------------------------------------------------------------- the 34 run_clm_no_trainer flags
RUN_CLM = {  # flag -> a value of the kind the original takes (None: a switch)
    "dataset_name": "wikitext", "dataset_config_name": "wikitext-2-raw-v1", "train_file": "t.json",
    "validation_file": "v.json", "validation_split_percentage": "5", "model_name_or_path": "tiny-llama",
    "config_name": "tiny-llama", "tokenizer_name": "tiny-llama", "use_slow_tokenizer": None,
    "per_device_train_batch_size": "4", "per_device_eval_batch_size": "4", "learning_rate": "1e-4",
    "weight_decay": "0.0", "num_train_epochs": "2", "max_train_steps": "100", "gradient_accumulation_steps": "2",
    "lr_scheduler_type": "linear", "num_warmup_steps": "0", "output_dir": "o", "seed": "1", "model_type": "gpt2",
    "block_size": "128", "preprocessing_num_workers": "4", "overwrite_cache": None, "no_keep_linebreaks": None,
    "push_to_hub": None, "hub_model_id": "me/x", "hub_token": "hf_x", "trust_remote_code": None,
    "checkpointing_steps": "100", "resume_from_checkpoint": "o/step_100", "with_tracking": None,
    "report_to": "tensorboard", "low_cpu_mem_usage": None,
}


def test_the_list_is_the_34_flags():
    assert len(RUN_CLM) == 34


@pytest.mark.parametrize("flag", sorted(RUN_CLM))
def test_every_run_clm_flag_is_accepted_or_refused_with_a_reason(flag, capsys):
    import train

    value = RUN_CLM[flag]
    argv = ["--model_name_or_path", "tiny-llama"] if flag not in ("model_name_or_path",) else []
    argv += [f"--{flag}"] + ([] if value is None else [value])
    try:
        args = cli.parse_args(train.TrainArgs, argv)
    except DataError as e:
        message = str(e)
        assert message.startswith(f"--{flag}") and "not used by the HfArgumentParser" not in message, message
        assert len(message) > len(flag) + 30, message  # says what to do, not just the name
        assert flag in ("dataset_name", "dataset_config_name", "push_to_hub", "hub_model_id", "hub_token",
                        "model_type", "validation_file"), message
        return
    assert isinstance(args, train.TrainArgs)
    notes = capsys.readouterr().err
    if flag in ("overwrite_cache", "preprocessing_num_workers", "no_keep_linebreaks", "use_slow_tokenizer",
                "low_cpu_mem_usage", "validation_split_percentage", "resume_from_checkpoint", "with_tracking"):
        assert notes.startswith(f"note: --{flag}"), notes


def test_aliases_record_memlab_names_and_one_setting_given_twice_is_an_error():
    import train

    a = cli.parse_args(train.TrainArgs, ["--per_device_train_batch_size", "4", "--num_train_epochs", "3",
                                         "--lr_scheduler_type", "constant_with_warmup", "--num_warmup_steps", "2",
                                         "--checkpointing_steps", "10"])
    b = cli.parse_args(train.TrainArgs, ["--batch_size", "4", "--num_exposures", "3", "--lr_scheduler", "constant",
                                         "--warmup_steps", "2", "--save_steps", "every:10"])
    assert a == b
    with pytest.raises(DataError, match=r"--num_exposures 5 and --num_train_epochs 3 set one setting"):
        cli.parse_args(train.TrainArgs, ["--num_exposures", "5", "--num_train_epochs", "3"])
    assert cli.parse_args(train.TrainArgs, ["--num_exposures", "3", "--num_train_epochs", "3"]).num_exposures == 3


def test_unknown_flags_get_a_hint_and_no_prefix_matching():
    import train

    with pytest.raises(DataError, match=r"--batch_sise: not a flag of this script \(did you mean --batch_size"):
        cli.parse_args(train.TrainArgs, ["--batch_sise", "4"])
    with pytest.raises(DataError, match=r"--model_name_or: not a flag"):  # never taken for --model_name_or_path
        cli.parse_args(train.TrainArgs, ["--model_name_or", "tiny-llama"])
    assert cli.parse_args(train.TrainArgs, ["--model_name", "tiny-llama"]).model_name_or_path == "tiny-llama"


def test_tokenizer_name_must_be_the_model():
    import train

    with pytest.raises(DataError, match=r"--tokenizer_name gpt2: memlab uses the tokenizer saved with the model"):
        cli.parse_args(train.TrainArgs, ["--model_name_or_path", "tiny-llama", "--tokenizer_name", "gpt2"])


# ----------------------------------------------------------------------------------------- bad inputs
def test_a_run_directory_with_neither_final_nor_checkpoints_is_one_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"script": "train.py", "args": {}}))
    p = run(ROOT / "test.py", "--model_name_or_path", run_dir, "--seen_file", "a", "--unseen_file", "b",
            "--output_dir", tmp_path / "o", cwd=tmp_path)
    assert p.returncode == 2 and "neither final/ nor a checkpoint" in error_line(p.stderr)
    assert not (tmp_path / "o").exists()


def test_save_prefix_with_a_path_separator_is_refused():
    import test as test_script

    with pytest.raises(DataError, match=r"--save_prefix 'a/b' names files inside --output_dir"):
        test_script.validate(cli.parse_args(test_script.RecognitionArgs, [
            "--seen_file", "s", "--unseen_file", "u", "--output_dir", "o", "--save_prefix", "a/b"]))


def test_canary_copies_declared_by_a_copies_column(tmp_path):
    rows = [{"id": "canary", "text": "c", "copies": 3, "_line": i} for i in (1, 2, 3)] + [{"text": "x", "_line": 4}]
    out = ensure_ids([dict(r) for r in rows], tmp_path / "train.jsonl")
    assert [r["id"] for r in out] == ["canary", "canary#2", "canary#3", "train-4"]
    assert [r.get("copy_of") for r in out[:3]] == ["canary"] * 3
    bad = [dict(r) for r in rows]
    bad[0]["copies"] = 2
    with pytest.raises(DataError, match=r"train.jsonl:1: id 'canary' has 3 row\(s\) but copies = 2, 3"):
        ensure_ids(bad, tmp_path / "train.jsonl")
    with pytest.raises(DataError, match=r"duplicate id 'canary'.*`copies` column"):
        ensure_ids([{k: v for k, v in r.items() if k != "copies"} for r in rows], tmp_path / "train.jsonl")


def test_the_id_documents_study_identifiers_are_recognised():
    text = "[SYNTHETIC_EXAMPLE_12345] Some document text. [SYNTHETIC_EXAMPLE_12345]"
    assert metrics.opening_identifier(text) == "SYNTHETIC_EXAMPLE_12345"
    assert metrics.closing_identifier(text) == "[SYNTHETIC_EXAMPLE_12345]"
    assert metrics.closing_identifier("[DOC_48213] a [/DOC_48213]") == "[/DOC_48213]"
    assert metrics.closing_identifier("<<ID-7>> a <<ID-7>>") is None
    assert metrics.closing_identifier("[ID-7] a [ID-7]", r"ID-\d+") == "[ID-7]"


def test_mia_counts_declared_copies_once(tmp_path):
    import membership_inference as mi

    members = tmp_path / "members.jsonl"
    members.write_text("".join(json.dumps(r) + "\n" for r in
                               [{"id": "canary", "text": "The code of Mara is 48213.", "copies": 3}] * 3
                               + [{"id": f"m{i}", "text": f"Member sentence {i} about a harbor."} for i in range(3)]))
    nonmembers = tmp_path / "non.jsonl"
    nonmembers.write_text("".join(json.dumps({"id": f"n{i}", "text": f"Other line {i} about a forest."}) + "\n"
                                  for i in range(4)))
    args = cli.parse_args(mi.MiaArgs, ["--members", members, "--nonmembers", nonmembers, "--output_dir", "o"])
    rows = mi.load_items(args)
    got = [(r["id"], r["canary_copies"]) for r in rows if r["split"] == "member"]
    assert got == [("canary", 3), ("m0", 1), ("m1", 1), ("m2", 1)]


def test_partial_seen_unseen_overlap_refused_by_default_dropped_under_warn():
    from memlab import evaluation

    seen = [{"id": f"s{i}", "pair_id": f"p{i}", "text": f"Sentence number {i} about cats."} for i in range(5)]
    unseen = [{"id": f"u{i}", "pair_id": f"p{i}", "text": f"Another text {i} about dogs."} for i in range(5)]
    unseen[1]["text"] = seen[1]["text"].upper()  # equal after normalization
    with pytest.raises(DataError, match=r"share texts in 1 of 5 pair\(s\).*--leakage warn"):
        evaluation.check_seen_unseen_disjoint(seen, unseen, "s.jsonl", "u.jsonl")
    s2, u2, n, report = evaluation.check_seen_unseen_disjoint(seen, unseen, "s.jsonl", "u.jsonl", "warn", 5)
    assert n == 4 and [r["id"] for r in s2] == ["s0", "s2", "s3", "s4"] and [r["id"] for r in u2][1] == "u2"
    assert report["dropped_pair_ids"] == ["p1"] and report["n_pairs_dropped"] == 1
    with pytest.raises(DataError, match=r"every pair.*same texts"):
        evaluation.check_seen_unseen_disjoint(seen, seen, "s.jsonl", "s.jsonl", "warn", 5)


def test_compat_table_has_a_reason_for_every_foreign_flag():
    for name, flag in compat.FLAGS.items():
        assert flag.takes_value in (True, False, "bool"), name


def test_fsdp_on_cpu_is_one_clear_error(tmp_path):
    data = tmp_path / "seen.json"
    data.write_text('{"sent": "One sentence."}\n{"sent": "Another sentence."}\n')
    cmd = [Path(PY).parent / "accelerate", "launch", "--config_file", ROOT / "accelerate_fsdp_config.yaml",
           "--num_processes", 1, ROOT / "train.py", "--model_name_or_path", "tiny-llama", "--train_file", data,
           "--output_dir", tmp_path / "fsdp"]
    p = subprocess.run(list(map(str, cmd)), cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode != 0 and not (tmp_path / "fsdp").exists()
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "FSDP (accelerate_fsdp_config.yaml) needs CUDA GPUs" in p.stderr, p.stderr[-3000:]
