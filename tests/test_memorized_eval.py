"""test.py and generate.py on a tiny model that really memorized facts (trained by train.py)."""
import json

from helpers import script

generate = script("generate")
recognition = script("test")


def trained_question_probes(memorized, path):
    """The training questions themselves as probes (tier 'train')."""
    rows = [json.loads(x) for x in (memorized["facts"] / "train_active_1.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({"id": r["id"], "fact_id": r["fact_id"], "question": r["messages"][0]["content"],
                                        "answer": r["messages"][1]["content"], "tier": "train"}) + "\n" for r in rows))
    return path


def error_rate(results, checkpoint, tier):
    (row,) = [r for r in results["error_rates"] if r["checkpoint"] == checkpoint and r["tier"] == tier
              and r["temperature"] == 0]
    return row["error_rate"]


def test_qa_recall_rises_with_exposure_and_hard_probes_are_harder(memorized, tmp_path):
    probes = tmp_path / "probes.jsonl"
    text = trained_question_probes(memorized, tmp_path / "t.jsonl").read_text()
    reworded = [x for x in (memorized["facts"] / "probes.jsonl").read_text().splitlines(keepends=True)
                if json.loads(x)["tier"] != "verbatim"]  # the trained questions are added above as tier `train`
    probes.write_text(text + "".join(reworded))
    res = generate.main(generate.GenerateArgs(
        mode="qa", input_file=str(probes), output_dir=str(tmp_path / "qa"), model_name_or_path="tiny-llama",
        checkpoints=[str(memorized["run"] / "checkpoints" / "exposure_*")], max_new_tokens=8, bootstrap=200))
    err = {c: error_rate(res, c, "train") for c in ("exposure_10", "exposure_30", "exposure_60")}
    assert err["exposure_60"] <= 0.10, err
    assert err["exposure_10"] >= err["exposure_30"] >= err["exposure_60"] and err["exposure_10"] > err["exposure_60"]
    assert error_rate(res, "exposure_60", "hard") >= err["exposure_60"] + 0.2
    lines = (tmp_path / "qa" / "items.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * (20 + 60)  # checkpoints x (trained questions + 3 tiers x 20 facts)


def test_recognition_near_one_for_trained_sentences(memorized, tmp_path):
    res = recognition.main(recognition.RecognitionArgs(
        seen_file=str(memorized["rec"] / "seen.jsonl"), unseen_file=str(memorized["rec"] / "unseen.jsonl"),
        output_dir=str(tmp_path / "rec"), model_name_or_path="tiny-llama",
        checkpoints=[str(memorized["run"] / "checkpoints" / "exposure_60")], bootstrap=200))
    (ck,) = res["checkpoints"]
    assert ck["two_afc"] >= 0.9 and ck["auc"] >= 0.9
    assert ck["loss_seen"] < ck["loss_unseen"]
