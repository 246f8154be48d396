"""Membership inference: attack scores on hand-made log-prob arrays (exact values), the metrics on
constructed score distributions, and membership_inference.py end to end on tiny-llama fine-tuned by
train.py on a make_data mia set with canaries; bad input by message."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from memlab import attacks
from memlab.cli import parse_args, run
from memlab.io import DataError

from helpers import script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")




def run_mia(argv):
    mod = script("membership_inference")
    return mod.main(parse_args(mod.MiaArgs, [str(a) for a in argv]))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------ attack scores
LP = [-1.0, -2.0, -3.0, -4.0, -10.0]  # n = 5 scored tokens, sum -20, mean -4


def test_loss_zlib_min_k_exact():
    assert attacks.loss_score(LP) == -4.0
    # zlib of b"abc": 2-byte header + fixed-Huffman block (3 + 3*8 + 7 bits = 5 bytes) + 4-byte adler32
    assert attacks.zlib_bytes("abc") == 11
    # zlib (Carlini et al. 2021) divides the mean token log-prob; zlib_total (memlab's earlier zlib) the sum
    assert attacks.zlib_score(LP, "abc") == pytest.approx(-4 / 11, abs=1e-12)
    assert attacks.zlib_total_score(LP, "abc") == pytest.approx(-20 / 11, abs=1e-12)
    # m = max(1, floor(k * 5 / 100)): k=10 -> 1, k=20 -> 1, k=40 -> 2, k=100 -> 5
    assert attacks.min_k_score(LP, 10) == -10.0
    assert attacks.min_k_score(LP, 20) == -10.0
    assert attacks.min_k_score(LP, 40) == -7.0
    assert attacks.min_k_score(LP, 100) == -4.0
    assert [attacks.min_k_count(n, 20) for n in (1, 4, 5, 9, 10, 30)] == [1, 1, 1, 1, 2, 6]


def test_min_k_plus_plus_exact():
    mu = [-2.0] * 5
    var = [1.0, 4.0, 1.0, 0.25, 16.0]  # sigma 1, 2, 1, 0.5, 4
    # z = (lp - mu) / sigma = 1, 0, -1, -4, -2 -> sorted -4, -2, -1, 0, 1
    assert attacks.min_k_plus_plus_score(LP, mu, var, 20) == -4.0
    assert attacks.min_k_plus_plus_score(LP, mu, var, 40) == -3.0
    assert attacks.min_k_plus_plus_score(LP, mu, var, 60) == pytest.approx(-7 / 3, abs=1e-12)
    assert attacks.min_k_plus_plus_score(LP, mu, var, 100) == pytest.approx(-6 / 5, abs=1e-12)
    # zero variance (uniform on its support) and the token in it: z = 0, not 0/0
    assert attacks.min_k_plus_plus_score([-3.0, -1.0], [-3.0, -2.0], [0.0, 1.0], 50) == 0.0


def test_reference_attacks_and_all_scores():
    assert attacks.reference_ratio_score(2.0, 8.0) == -0.25
    assert attacks.reference_difference_score(2.0, 8.0) == 6.0
    mu, var = [-2.0] * 5, [1.0, 4.0, 1.0, 0.25, 16.0]
    got = attacks.attack_scores(LP, "abc", mu, var, min_k=[20, 40], reference_nll=8.0)
    assert got == pytest.approx({"loss": -4.0, "zlib": -4 / 11, "zlib_total": -20 / 11, "min_k_20": -10.0, "min_k_40": -7.0,
                                 "min_k_pp_20": -4.0, "min_k_pp_40": -3.0, "ref_ratio": -0.5, "ref_diff": 4.0})
    assert list(got) == attacks.attack_names([20, 40])
    assert attacks.attack_names([12.5], with_reference=False) == ["loss", "zlib", "zlib_total", "min_k_12p5",
                                                                  "min_k_pp_12p5"]
    with pytest.raises(ValueError, match="non-empty"):
        attacks.loss_score([])


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_separable_scores():
    res = attacks.attack_metrics(np.arange(50) + 100.0, np.arange(50.0), n_boot=100)
    assert res["auc"] == 1.0 and res["auc_ci_low"] == 1.0 and res["auc_ci_high"] == 1.0
    assert res["tpr_at_1pct_fpr"] == 1.0 and res["tpr_at_0_1pct_fpr"] == 1.0


def test_metrics_identical_distributions():
    rng = np.random.default_rng(0)
    res = attacks.attack_metrics(rng.normal(size=500), rng.normal(size=500), n_boot=200)
    assert abs(res["auc"] - 0.5) < 0.05
    assert res["auc_ci_low"] < 0.5 < res["auc_ci_high"]
    assert res["tpr_at_1pct_fpr"] < 0.1


def test_metrics_constructed_roc():
    # 200 non-members score 0..199; FPR <= 1% allows the two highest (198, 199) above the threshold.
    non = np.arange(200.0)
    # 30 members above everything, 20 at 198.5 (only 199 is above them: FPR 0.5%), 10 at 196.5 (3 non-members
    # above: FPR 1.5%), 40 at -5 (below everything)
    members = np.r_[np.full(30, 1000.0), np.full(20, 198.5), np.full(10, 196.5), np.full(40, -5.0)]
    res = attacks.attack_metrics(members, non, n_boot=0)
    assert res["tpr_at_1pct_fpr"] == 0.5
    assert res["tpr_at_0_1pct_fpr"] == 0.3  # no false positive allowed: only the 30 at 1000
    assert res["auc"] == pytest.approx((30 * 200 + 20 * 199 + 10 * 197) / (100 * 200))
    assert res["auc_ci_low"] is None  # n_boot=0: no interval, valid JSON


def test_evaluate_attacks_groups_by_copies():
    rows = ([{"split": "member", "canary_copies": c, "s": 10.0 * c} for c in (1, 1, 4, 4)]
            + [{"split": "nonmember", "canary_copies": 0, "s": v} for v in (5.0, 15.0, 35.0)])
    out = attacks.evaluate_attacks(rows, ["s"], n_boot=0)["s"]
    assert out["all"]["auc"] == pytest.approx((1 + 1 + 3 + 3) / 12)
    assert out["by_canary_copies"]["1"]["auc"] == pytest.approx(1 / 3)
    assert out["by_canary_copies"]["4"]["auc"] == 1.0
    assert out["by_canary_copies"]["4"]["n_members"] == 2
    assert attacks.mean_score_by_copies(rows, "s") == {0: pytest.approx(55 / 3), 1: 10.0, 4: 40.0}


def test_default_reference_rules(tmp_path):
    adapter = tmp_path / "lora" / "checkpoints" / "exposure_3"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/models/base", "r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}))
    assert attacks.default_reference(adapter, "tiny-llama")[0] == "/models/base"
    assert attacks.adapter_settings(adapter) == {"lora_r": 8, "lora_alpha": 16, "lora_target_modules": "q_proj,v_proj"}
    full = tmp_path / "sft" / "checkpoints" / "exposure_3"
    full.mkdir(parents=True)
    (full / "config.json").write_text(json.dumps({"model_type": "llama"}))  # the model's own config
    run_cfg = {"script": "train.py", "args": {"model_name_or_path": "smollm2-135m", "init_from": None}}
    (tmp_path / "sft" / "config.json").write_text(json.dumps(run_cfg))
    ref, rule = attacks.default_reference(full, "tiny-llama")
    assert ref == "smollm2-135m" and "args.model_name_or_path" in rule
    run_cfg["args"]["init_from"] = "runs/sft/checkpoints/exposure_10"  # DPO / continued training
    (tmp_path / "sft" / "config.json").write_text(json.dumps(run_cfg))
    assert attacks.default_reference(full, "tiny-llama")[0] == "runs/sft/checkpoints/exposure_10"
    dpo = tmp_path / "dpo" / "checkpoints" / "epoch_2"  # finetune_dpo.py: the SFT checkpoint it started from
    dpo.mkdir(parents=True)
    (tmp_path / "dpo" / "config.json").write_text(json.dumps({"script": "finetune_dpo.py",
                                                              "args": {"sft_checkpoint": str(full)}}))
    assert attacks.default_reference(dpo, "tiny-llama")[0] == str(full)
    run_cfg["args"].update(init_from=None, from_scratch=True)
    (tmp_path / "sft" / "config.json").write_text(json.dumps(run_cfg))
    assert attacks.default_reference(full, "tiny-llama")[0] is None
    loose = tmp_path / "loose"
    loose.mkdir()
    ref, rule = attacks.default_reference(loose, "tiny-llama")
    assert ref == "tiny-llama" and rule.startswith("--model_name_or_path")
    assert attacks.default_reference("tiny-llama", "tiny-llama")[0] is None


# ----------------------------------------------------------------------------- end to end, tiny-llama
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tiny-llama fully fine-tuned by train.py (lr 1e-3, 2 exposures) on 40 members, of which 4 appear 4 times
    and 4 appear 16 times in train.jsonl (112 rows); 40 non-members held out."""
    make_data, train = script("make_data"), script("train")
    root = tmp_path_factory.mktemp("mia")
    make_data.main(["mia", "--output_dir", str(root / "data"), "--n_members", "40", "--n_nonmembers", "40",
                    "--canary_copies", "1,4,16", "--canaries_per_copy", "4"])
    train.main(train.TrainArgs(model_name_or_path="tiny-llama", train_file=str(root / "data" / "train.jsonl"),
                               output_dir=str(root / "run"), num_exposures=2, save_exposures="1,2",
                               learning_rate=1e-3, batch_size=8))
    return root


@pytest.fixture(scope="module")
def mia_run(trained):
    """The script on both checkpoints; records each scorer pass (whether it asked for token log-probs)."""
    mod, out, passes = script("membership_inference"), trained / "mia", []
    original = mod.score_items
    mod.score_items = lambda *a, **k: (passes.append(k["token_logprobs"]), original(*a, **k))[1]
    try:
        res = run_mia(["--mia_dir", trained / "data", "--model_name_or_path", "tiny-llama", "--checkpoints",
                       f"{trained}/run/checkpoints/exposure_*", "--output_dir", out, "--min_k", "10,20",
                       "--bootstrap", 100, "--batch_size", 8])
    finally:
        mod.score_items = original
    return out, res, passes


ALL_DEFAULT = attacks.attack_names([10, 20]) + ["recall", "dc_pdd", "neighbourhood", "gradnorm"]


def test_mia_end_to_end(mia_run):
    out, res, passes = mia_run
    # one scorer pass per model for every per-token attack: the reference (NLL only), then per checkpoint the
    # target (token log-probs), the items after the ReCaLL prefix, and the neighbours (NLL only)
    assert passes == [False] + [True, True, False] * 2
    assert res["attacks"] == ALL_DEFAULT  # every attack the inputs allow (rmia needs --reference_models)
    assert res["n_nonmembers"] == 35 and res["recall"]["n"] == 5  # 5 non-members held apart as ReCaLL's prefix
    assert (out / "config.json").exists() and (out / "results.json").exists()
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    assert [c["checkpoint"] for c in res["checkpoints"]] == ["exposure_1", "exposure_2"]
    with open(out / "items.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 75
    need = {"id", "source_id", "split", "canary_copies", "checkpoint", "target_nll", "reference_nll"}
    assert need | set(ALL_DEFAULT) <= set(rows[0])
    last = res["checkpoints"][-1]
    # the default reference of a train.py full-model checkpoint is the run's initialisation
    assert last["reference_model"] == "tiny-llama" and "run initialisation" in last["reference_rule"]
    by_attack = last["attacks"]
    assert set(by_attack) == set(ALL_DEFAULT)
    print({a: round(v["all"]["auc"], 3) for a, v in by_attack.items()})
    assert set(by_attack["loss"]["by_canary_copies"]) == {"1", "4", "16"}
    for a in by_attack.values():
        for key in ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"):
            assert a["all"][f"{key}_ci_low"] <= a["all"][key] <= a["all"][f"{key}_ci_high"]
    assert by_attack["loss"]["all"]["auc"] > 0.8, by_attack["loss"]["all"]
    png = out / "plots" / "roc_exposure_2.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_published_attacks_beat_chance(mia_run):
    """After 2 exposures (observed AUCs: recall 0.79, dc_pdd 0.93, neighbourhood 0.85, zlib 0.56, gradnorm
    0.61): the ones with a clear signal on this fixture must stay above chance."""
    _, res, _ = mia_run
    a = res["checkpoints"][-1]["attacks"]
    aucs = {k: round(a[k]["all"]["auc"], 3) for k in ("recall", "dc_pdd", "neighbourhood", "zlib", "gradnorm")}
    print(aucs)
    # margins of 0.17-0.23 below what was observed: above chance (0.5) by >= 2 standard errors at 40 vs 35 items
    assert aucs["recall"] > 0.62 and aucs["neighbourhood"] > 0.65 and aucs["dc_pdd"] > 0.7, aucs


def test_more_canary_copies_more_member_like(mia_run):
    out, _, _ = mia_run
    with open(out / "items.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["checkpoint"] == "exposure_2"]
    for attack in ("loss", "min_k_20", "ref_diff"):
        means = attacks.mean_score_by_copies(rows, attack)  # 0 = non-members, then 1, 4, 16 copies
        assert list(means) == [0, 1, 4, 16]
        assert all(a < b for a, b in zip(list(means.values()), list(means.values())[1:])), (attack, means)


def test_reference_attack_vs_loss(mia_run):
    """Reference = the untrained tiny-llama (random init). Its NLL is about log|V| = 10.8 nats on every item
    (item-to-item sd ~0.05 vs ~0.23 for the fine-tuned model), so it carries almost no per-item calibration
    and ref_diff / ref_ratio track the loss attack: observed AUC 0.965 / 0.963 vs 0.946 for loss after 2
    exposures (the gap is inside the bootstrap CIs). We assert only that they stay close, not which wins."""
    _, res, _ = mia_run
    a = res["checkpoints"][-1]["attacks"]
    loss, diff, ratio = (a[k]["all"]["auc"] for k in ("loss", "ref_diff", "ref_ratio"))
    msg = f"AUC loss {loss:.3f}, ref_diff {diff:.3f}, ref_ratio {ratio:.3f}"
    print(msg)
    assert diff > 0.8 and ratio > 0.8, msg
    assert abs(diff - loss) < 0.1 and abs(ratio - loss) < 0.1, msg


# ------------------------------------------------------------------------------------------ bad input
TEXTS = ["the cat sat on the mat", "a dog ran to the river", "seven blue apples", "green bread is odd"]


def test_overlapping_members_and_nonmembers(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"text": t} for t in TEXTS[:3]])
    n = write_jsonl(tmp_path / "n.jsonl", [{"text": "Seven blue apples!"}, {"text": TEXTS[3]}])  # normalized match
    with pytest.raises(DataError, match=r"(?s)members and non-members overlap.*seven blue apples"):
        run_mia(["--members", m, "--nonmembers", n, "--model_name_or_path", "tiny-llama",
                 "--output_dir", tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_empty_file(tmp_path, capsys):
    m = write_jsonl(tmp_path / "m.jsonl", [{"text": t} for t in TEXTS[:2]])
    (tmp_path / "n.jsonl").write_text("\n")
    mod = script("membership_inference")
    with pytest.raises(SystemExit) as e:
        run(mod.main, mod.MiaArgs, ["--members", str(m), "--nonmembers", str(tmp_path / "n.jsonl"),
                                    "--model_name_or_path", "tiny-llama", "--output_dir", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "n.jsonl: file is empty" in capsys.readouterr().err


def test_tokenizer_mismatch(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    ref = tmp_path / "ref"
    ref.mkdir()
    for f in tiny_llama.glob("*.safetensors"):
        (ref / f.name).symlink_to(f)
    shutil.copy(tiny_llama / "config.json", ref / "config.json")
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.add_tokens(["<canary_1>", "<canary_2>"])
    tok.save_pretrained(ref)
    m = write_jsonl(tmp_path / "m.jsonl", [{"text": t} for t in TEXTS[:2]])
    n = write_jsonl(tmp_path / "n.jsonl", [{"text": t} for t in TEXTS[2:]])
    with pytest.raises(DataError, match=r"reference model .*tokenizer differs from the target's"):
        run_mia(["--members", m, "--nonmembers", n, "--model_name_or_path", "tiny-llama",
                 "--reference_model", ref, "--output_dir", tmp_path / "out"])


def test_argument_errors_collected(tmp_path):
    with pytest.raises(DataError) as e:
        run_mia(["--mia_dir", tmp_path, "--members", "m.jsonl", "--min_k", "0,150", "--bootstrap", "-1"])
    msg = str(e.value)
    for part in ("either --mia_dir or both", "--output_dir is required", "--min_k must be", "--bootstrap"):
        assert part in msg, msg
