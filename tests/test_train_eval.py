"""Evaluation inside training (train.py --eval_*): the same per-item results as generate.py / test.py on a
checkpoint saved at the same exposure, full and LoRA; resume without duplicate rows; DDP; bad input."""
import csv
import json
import os
import subprocess
import sys

import pytest

import make_data
import train
from helpers import ROOT, script

pytestmark = pytest.mark.usefixtures("one_thread")
generate, recognition = script("generate"), script("test")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    make_data.main(["facts", "--output_dir", str(root / "facts"), "--n_names", "0", "--n_objects", "8",
                    "--variants_per_fact", "1", "--seed", "5"])
    make_data.main(["recognition", "--output_dir", str(root / "rec"), "--n_pairs", "8", "--foil_type", "novel",
                    "--seed", "5"])
    return root


def eval_args(data, out, **kw) -> train.TrainArgs:
    base = dict(model_name_or_path="tiny-llama", output_dir=str(out), num_exposures=3, learning_rate=3e-3,
                batch_size=4, train_file=f"{data}/facts/train_active_1.jsonl,{data}/rec/seen.jsonl",
                eval_probes_file=str(data / "facts" / "probes.jsonl"), eval_seen_file=str(data / "rec" / "seen.jsonl"),
                eval_unseen_file=str(data / "rec" / "unseen.jsonl"), eval_max_new_tokens=12,
                eval_temperatures="0,1", eval_repeats=2, eval_bootstrap=50)
    base.update(kw)
    return train.TrainArgs(**base)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("lora", [0, 4])
def test_in_training_eval_equals_scripts_on_checkpoint(data, tmp_path, lora):
    out = tmp_path / "run"
    res = train.main(eval_args(data, out, eval_exposures="0,1,2,3", save_exposures="2", lora_r=lora, lora_alpha=8,
                               eval_prefix_fraction=0.5))
    ev = res["eval"]
    assert ev["points"] == ["exposure_0", "exposure_1", "exposure_2", "exposure_3"]
    assert ev["eval_s"] > 0 and res["train_loop_s"] > 0
    qa = read_csv(out / "eval" / "recall" / "items.csv")
    rec = read_csv(out / "eval" / "recognition" / "items.csv")
    strip = lambda d: {k: v for k, v in d.items() if k != "path"}  # noqa: E731
    ckpt = out / "checkpoints" / "exposure_2"
    g = generate.main(generate.GenerateArgs(mode="qa", input_file=str(data / "facts" / "probes.jsonl"),
                                            output_dir=str(tmp_path / "qa"), model_name_or_path="tiny-llama",
                                            checkpoints=[str(ckpt)], max_new_tokens=12, temperatures="0,1",
                                            repeats=2, bootstrap=50))
    t = recognition.main(recognition.RecognitionArgs(
        seen_file=str(data / "rec" / "seen.jsonl"), unseen_file=str(data / "rec" / "unseen.jsonl"),
        output_dir=str(tmp_path / "rec"), model_name_or_path="tiny-llama", checkpoints=[str(ckpt)], bootstrap=50))
    pre = generate.main(generate.GenerateArgs(mode="prefix", input_file=str(data / "rec" / "seen.jsonl"),
                                              output_dir=str(tmp_path / "pre"), model_name_or_path="tiny-llama",
                                              checkpoints=[str(ckpt)], prefix_fraction=0.5, bootstrap=50))
    qa_ckpt = read_csv(tmp_path / "qa" / "items.csv")
    rec_ckpt = read_csv(tmp_path / "rec" / "items.csv")
    # recall of the studied sentences from their first half: the same rows as generate.py --mode prefix
    sent = read_csv(out / "eval" / "prefix_recall" / "items.csv")
    sent_ckpt = read_csv(tmp_path / "pre" / "items.csv")
    assert list(sent[0]) == list(sent_ckpt[0])
    assert {r["checkpoint"] for r in sent} == {"exposure_0", "exposure_1", "exposure_2", "exposure_3"}
    mine_sent = [r for r in sent if r["checkpoint"] == "exposure_2"]
    assert len(mine_sent) == len(sent_ckpt) == 8
    assert [(r["id"], r["generated"], r["exact_match"]) for r in mine_sent] == \
        [(r["id"], r["generated"], r["exact_match"]) for r in sent_ckpt]
    mine_pre = [strip(x) for x in ev["prefix_recall"]["by_prefix"] if x["checkpoint"] == "exposure_2"]
    assert mine_pre == [strip(x) for x in pre["by_prefix"]]
    # the same columns, in the same order, as the scripts write
    assert list(qa[0]) == list(qa_ckpt[0]) and list(rec[0]) == list(rec_ckpt[0])
    mine = {(r["id"], r["temperature"], r["repeat"]): r for r in qa if r["checkpoint"] == "exposure_2"}
    assert len(mine) == len(qa_ckpt) > 0
    for r in qa_ckpt:  # greedy and seeded sampled answers identical
        m = mine[(r["id"], r["temperature"], r["repeat"])]
        assert m["response"] == r["response"] and m["correct"] == r["correct"]
    losses = {(r["split"], r["id"]): float(r["loss"]) for r in rec if r["checkpoint"] == "exposure_2"}
    assert len(losses) == len(rec_ckpt) == 16
    assert max(abs(losses[(r["split"], r["id"])] - float(r["loss"])) for r in rec_ckpt) < 1e-4
    # the same summary records (identical up to the path of the model)
    mine_rates = [strip(x) for x in ev["recall"]["error_rates"] if x["checkpoint"] == "exposure_2"]
    assert mine_rates == [strip(x) for x in g["error_rates"]]
    mine_rec = [strip(x) for x in ev["recognition"]["checkpoints"] if x["checkpoint"] == "exposure_2"][0]
    for k, v in strip(t["checkpoints"][0]).items():
        assert v == pytest.approx(mine_rec[k], abs=1e-6), k
    # training itself is unaffected by the evaluation (RNG restored, eval mode undone)
    plain = train.main(train.TrainArgs(**{**eval_args(data, tmp_path / "plain", lora_r=lora, lora_alpha=8).__dict__,
                                          "eval_probes_file": None, "eval_seen_file": None, "eval_unseen_file": None}))
    assert plain["loss_per_exposure"] == res["loss_per_exposure"]
    assert plain["param_digests"] == res["param_digests"]


def test_resume_does_not_repeat_points(data, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "train.py", "--model_name_or_path", "tiny-llama", "--output_dir", str(out),
           "--num_exposures", "3", "--learning_rate", "3e-3", "--batch_size", "4",
           "--train_file", f"{data}/facts/train_active_1.jsonl,{data}/rec/seen.jsonl",
           "--eval_probes_file", str(data / "facts" / "probes.jsonl"), "--eval_exposures", "all", "--eval_steps", "3",
           "--eval_max_new_tokens", "8", "--eval_bootstrap", "20", "--save_exposures", "1"]
    # signalled at step 5 (inside exposure 2: 4 steps per exposure): exposure 1 and step 3 are evaluated
    p = subprocess.run(cmd + ["--debug_signal_at_step", "5"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 75, p.stderr[-2000:]
    parts = sorted(x.name for x in (out / "eval" / "parts").glob("*.json"))
    assert parts == ["exposure_1.json", "step_0000003.json"]
    before = (out / "eval" / "parts" / "exposure_1.recall.jsonl").read_bytes()
    p = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (out / "eval" / "parts" / "exposure_1.recall.jsonl").read_bytes() == before  # not evaluated again
    res = json.loads((out / "results.json").read_text())
    assert res["eval"]["points"] == ["step_0000003", "exposure_1", "exposure_2", "exposure_3"]
    rows = read_csv(out / "eval" / "recall" / "items.csv")
    keys = [(r["checkpoint"], r["id"], r["temperature"], r["repeat"]) for r in rows]
    n_probes = len((data / "facts" / "probes.jsonl").read_text().splitlines())
    assert len(keys) == len(set(keys)) == 4 * n_probes  # 4 points x every probe, greedy only
    # an uninterrupted run gives the same answers at every point
    q = subprocess.run(cmd[:cmd.index("--output_dir") + 1] + [str(tmp_path / "u")] + cmd[cmd.index("--output_dir") + 2:],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert q.returncode == 0, q.stderr[-2000:]
    clean = {(r["checkpoint"], r["id"]): r["response"] for r in read_csv(tmp_path / "u" / "eval" / "recall" / "items.csv")}
    assert {(r["checkpoint"], r["id"]): r["response"] for r in rows} == clean


def test_two_process_ddp_shards_and_gathers_once(data, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
           "--model_name_or_path", "tiny-llama", "--output_dir", str(out), "--num_exposures", "2",
           "--learning_rate", "3e-3", "--batch_size", "2",
           "--train_file", f"{data}/facts/train_active_1.jsonl,{data}/rec/seen.jsonl",
           "--eval_probes_file", str(data / "facts" / "probes.jsonl"), "--eval_seen_file", str(data / "rec" / "seen.jsonl"),
           "--eval_unseen_file", str(data / "rec" / "unseen.jsonl"), "--eval_max_new_tokens", "8",
           "--eval_bootstrap", "20"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["num_processes"] == 2 and res["eval"]["points"] == ["exposure_1", "exposure_2"]
    qa = read_csv(out / "eval" / "recall" / "items.csv")
    rec = read_csv(out / "eval" / "recognition" / "items.csv")
    n_probes = len((data / "facts" / "probes.jsonl").read_text().splitlines())
    assert len(qa) == len({(r["checkpoint"], r["id"]) for r in qa}) == 2 * n_probes
    assert len(rec) == len({(r["checkpoint"], r["split"], r["id"]) for r in rec}) == 2 * 16


@pytest.mark.parametrize("kw, message", [
    ({"eval_exposures": "1,5"}, "goes beyond --num_exposures"),
    ({"eval_unseen_file": None}, "--eval_seen_file and --eval_unseen_file go together"),
    ({"eval_seen_file": None, "eval_unseen_file": None, "eval_prefix_fraction": 0.5}, "needs --eval_seen_file"),
    ({"eval_prefix_fraction": 1.5}, r"--eval_prefix_fraction must be in \(0, 1\)"),
    ({"eval_probes_file": None, "eval_seen_file": None, "eval_unseen_file": None, "eval_exposures": "1"},
     "need an eval file"),
])
def test_bad_eval_arguments(data, tmp_path, kw, message):
    with pytest.raises(train.DataError, match=message):
        train.main(eval_args(data, tmp_path / "bad", **kw))
    assert not (tmp_path / "bad").exists()


def test_bad_eval_files_fail_before_training(data, tmp_path):
    probes = [json.loads(x) for x in (data / "facts" / "probes.jsonl").read_text().splitlines()]
    dup = tmp_path / "dup.jsonl"
    dup.write_text("".join(json.dumps(p) + "\n" for p in probes[:3] + probes[:1]))
    noans = tmp_path / "noans.jsonl"
    noans.write_text("".join(json.dumps({k: v for k, v in p.items() if k != "answer"}) + "\n" for p in probes[:2]))
    for bad, message in ((dup, "duplicate id"), (noans, "answer")):
        with pytest.raises(train.DataError, match=message):
            train.main(eval_args(data, tmp_path / "bad", eval_probes_file=str(bad)))
        assert not (tmp_path / "bad").exists()  # nothing written: the error comes before training


def test_report_to_tensorboard_logs_every_step_and_eval(data, tmp_path):
    pytest.importorskip("tensorboard")  # pinned in requirements.txt: present in CI
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    res = train.main(eval_args(data, out, num_exposures=2, eval_temperatures="0", eval_seen_file=None,
                               eval_unseen_file=None, report_to="tensorboard", run_name="cell-0"))
    logdirs = {p.parent for p in (out / "trackers").rglob("events.out.tfevents.*")}
    assert logdirs
    scalars = {}
    for d in logdirs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = {e.step: e.value for e in acc.Scalars(tag)}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == res["steps"] == 8
    assert scalars["train/loss"] == {r["step"]: pytest.approx(r["loss"], rel=1e-6) for r in rows}
    # in-training evaluation: greedy recall per exposure, logged at the step that ends the exposure
    assert sorted(scalars["eval/recall_all"]) == [4, 8]
    assert set(scalars["eval/recall_easy"].values()) <= {i / 8 for i in range(9)}


def test_sigterm_during_evaluation_exits_75_within_seconds_and_resumes_to_the_same_run(data, tmp_path):
    """A SLURM pre-emption warning (SIGTERM, 120 s before the kill) that arrives while a point is being
    evaluated is acted on at once: the point is abandoned (evaluated again on resume), the resume state saved,
    exit 75; the resumed run equals an uninterrupted one (parameters and every eval item)."""
    import signal
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1")
    many = tmp_path / "probes.jsonl"  # a long evaluation: every probe asked 4 times over
    rows = [json.loads(x) for x in (data / "facts" / "probes.jsonl").read_text().splitlines()]
    many.write_text("".join(json.dumps({**r, "id": f"{r['id']}-{k}"}) + "\n" for k in range(4) for r in rows))

    def cmd(out):
        return [sys.executable, "train.py", "--model_name_or_path", "tiny-llama", "--output_dir", str(out),
                "--num_exposures", "2", "--learning_rate", "3e-3", "--batch_size", "4",
                "--train_file", f"{data}/facts/train_active_1.jsonl", "--eval_probes_file", str(many),
                "--eval_exposures", "0,1,2", "--eval_max_new_tokens", "48", "--eval_bootstrap", "0"]
    out = tmp_path / "cut"
    p = subprocess.Popen(cmd(out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "eval" / "fingerprint.json").exists():
        time.sleep(0.1)  # the evaluator exists: exposure 0 is being evaluated now
    time.sleep(1.0)
    sent = time.time()
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    latency = time.time() - sent
    assert p.returncode == 75, stderr[-3000:]
    assert latency < 10, f"exit {latency:.1f} s after SIGTERM"
    assert "evaluation of exposure_0 abandoned" in stdout + stderr
    assert not (out / "eval" / "parts" / "exposure_0.json").exists()
    resumed = subprocess.run(cmd(out) + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    clean = subprocess.run(cmd(tmp_path / "clean"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "clean"))
    assert a["param_digests"] == b["param_digests"]
    items = [(out if k == 0 else tmp_path / "clean") / "eval" / "recall" / "items.csv" for k in (0, 1)]
    answers = [{(r["checkpoint"], r["id"]): r["response"] for r in read_csv(f)} for f in items]
    assert answers[0] == answers[1] and len(answers[0]) == 3 * 4 * len(rows)
