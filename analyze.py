"""Collect a sweep's results into tidy CSVs and the standard plots.

    python analyze.py runs/expt1            # one experiment's tasks
    python analyze.py runs                  # every experiment below runs/

Reads every task directory (one with cell.json) below RUNS_ROOT and the results.json of its stages.
Reads strictly (`Inputs`): a cell.json, stage results.json, items.csv or facts.jsonl that is present but
truncated, malformed or of the wrong layout (a list where an object belongs, keys analyze.py reads missing)
is one `error:` line naming the file, exit 2, nothing written. `--skip_broken` instead leaves that task (broken
cell.json) or stage out, with a warning per file on stderr and a `skipped ...` line at the top of summary.txt.
A stage without results.json (not run, not finished) is left out as always.
Writes into RUNS_ROOT/ (atomically): `tidy_recall.csv` (one row per task x checkpoint x tier x temperature),
`tidy_recognition.csv` (task x checkpoint), `tidy_recognition_by_foil.csv` (task x checkpoint x foil type: 2AFC
per foil design of make_data.py recognition, from items.csv's `foil_type`; plotted in
`plots/recognition_by_foil_type.png`, 2AFC vs exposures, one line per foil type), `tidy_train.csv` (task x
exposure: training loss), `tidy_sentence_recall.csv` (expt1: task x checkpoint: recall of the studied sentences
from their first half, exact match and token accuracy), `tidy_retention.csv` (expt2: task x measure x steps of
interference; measures QA recall, recognition and sentence recall),
`tidy_error_rates.csv` (expt3: task x tier x temperature), `tidy_prefix.csv` (expt5: task x checkpoint x prefix
length), `tidy_prior.csv` (expt7: task x exposure x fact kind; kind `known (held out)` = the known facts
probed but never trained, TASK/data/heldout_known.json) and `plots/*.png`. Each CSV row carries the task's grid cell (model, seed,
method, mode, ...) so it can be grouped by any axis. Recall is QA accuracy = 1 - error rate, with the
bootstrap 95% CI from generate.py.

Recall and recognition are read from TASK/recall, TASK/recognition, or (evaluation inside training)
TASK/train/eval/recall, TASK/train/eval/recognition, TASK/train/eval/prefix_recall (stage `sentence_recall`)
and TASK/interference/eval/* (`_stage_dir`).

Per-item and per-fact tables (definitions in memlab/learning.py):

- `per_item.csv`: every finished stage's items.csv stacked, one row per task x stage x checkpoint x item
  (x temperature x repeat for QA, x prefix x sample for prefix recall). Columns: the cell axes, task,
  stage (recall, recognition, knownness, variants_recall, retention_recall, retention_recognition,
  dpo_recall, prior_recall_base, prior_recall, prefix_recall, sentence_recall, retention_sentence_recall,
  mia), checkpoint, exposure (from the label
  exposure_k; 0 for the base-model stages knownness and prior_recall_base; empty for step_* labels), step,
  item_id, fact_id, tier (QA tier; `recognition` for recognition pairs; `sentence` for sentence recall),
  temperature, repeat, correct (QA: answer correct 0/1; recognition: 1 when the seen item's loss is below its
  foil's; sentence recall: the exact match), loss / foil_loss
  (recognition: the seen item's and its foil's loss in nats/token; mia: target NLL), loss_delta /
  foil_loss_delta (recognition, when test.py had a reference), split (mia: member|nonmember), canary_copies,
  mia_<attack> (each membership_inference.py score), prefix_tokens, exact_match, token_accuracy,
  id_recalled (prefix recall), knownness (the fact's SliCK category, where TASK/knownness exists) and kind
  (facts.jsonl's fact kind, where present). Recognition rows are one per pair (fact_id = pair_id).
- `learning.csv`: one row per task x stage x fact x tier (QA tiers, `all` = the non-verbatim tiers pooled,
  `verbatim` on its own, `recognition` for recognition pairs, `sentence` for the studied sentences recalled
  exactly from their first half) over the exposures where it was evaluated:
  first_recalled_exposure, exposures_to_criterion (first evaluated exposure from which the fact is recalled
  at every later evaluated one; empty if never), forgetting_events (recalled -> not recalled transitions),
  n_evaluated_exposures, last_exposure, knownness, kind (expt7's held-out known facts, never trained, are
  `known (held out)`: kept here, left out of the learning summary and plots), plus the cell axes. Recalled = greedy answers to
  the tier's probes correct for at least half of them; recognized = seen loss below the foil's.
- `plots/learning_ecdf.png` (fraction of facts at criterion vs exposures, never-learned facts in the
  denominator, reference line at 7 exposures), `plots/learning_by_knownness.png` (the same per SliCK
  category), and in `summary.txt` the median exposures-to-criterion with a bootstrap 95% CI.

Memorization vs duplication (expt4 canaries; Carlini et al. 2022), from TASK/mia/items.csv (members carry
canary_copies: 1 = ordinary member, c > 1 = a canary repeated c times in training) and TASK/extraction/items.csv
(generate.py --mode prefix on the canaries), `canary_table`:

- `tidy_canaries.csv`: one row per task x checkpoint x attack x canary-copies group: n_members, n_nonmembers,
  auc (the group's members vs ALL non-members, higher score = member, as results.json's by_canary_copies) with
  a bootstrap 95% CI, tpr_at_1pct_fpr and tpr_at_10pct_fpr (threshold on the non-members' scores; no CI, read
  them with n), and for the extracted canaries extraction_prefix, extraction_n, extraction_exact_match and
  extraction_token_accuracy (per canary its samples averaged, bootstrap 95% CI over canaries; empty for
  copies 1 and for a task without an extraction stage). No rows for a task whose members carry fewer than two
  canary_copies counts (your own members without that column).
- `plots/canaries_by_copies.png` (each task's final checkpoint, log2 copies on x: AUC per attack, loss
  highlighted with its CI band; extraction exact match and token accuracy; one colour per task when there are
  several), and in `summary.txt` the loss attack's row per task x copies group.
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from memlab import cli
from memlab.io import DataError, write_csv_atomic, write_text_atomic


@dataclass
class AnalyzeArgs:
    runs_root: Optional[str] = cli.arg(None, "a sweep root (runs/expt1) or a root of several experiments (runs/) "
                                       "whose task directories (those with cell.json) are read; required, and may "
                                       "also be given as the first positional argument")
    include_stale: bool = cli.arg(False, "also merge the cells whose settings.json differs from the sweep root's "
                                  "config.yaml (run under another config, e.g. before a --force on other cells); by "
                                  "default they are left out, and listed in summary.txt either way")
    skip_broken: bool = cli.arg(False, "leave out the cells and stages whose cell.json, results.json, items.csv or "
                                "facts.jsonl is present but unreadable (truncated, malformed, wrong layout) instead "
                                "of failing; each is listed on stderr and in summary.txt")


# ------------------------------------------------------------------------------------------ strict reads
class BrokenInput(DataError):
    """A present but unusable input file: `path` and what is wrong with it (`problem`)."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def _kind(obj) -> str:
    """A JSON value's type in JSON words (for 'expected an object, got a list')."""
    if isinstance(obj, list):
        return "an empty list ([])" if not obj else "a list"
    if obj is None:
        return "null"
    return {dict: "an object", str: "a string", bool: "a boolean"}.get(type(obj), "a number")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BrokenInput(path, f"not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise BrokenInput(path, f"unreadable ({e.strerror or e})") from None


def read_json_object(path: Path, required: Sequence[str] = ()) -> dict:
    """A JSON file holding one object with the `required` keys; anything else raises BrokenInput naming
    the file and what is wrong (empty, truncated, malformed, not an object, missing keys)."""
    text = _read_text(path)
    if not text.strip():
        raise BrokenInput(path, "empty file (expected a JSON object)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        raise BrokenInput(path, f"{'truncated' if cut else 'malformed'} JSON ({e.msg.removesuffix(' at')} at line "
                                f"{e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise BrokenInput(path, f"expected a JSON object, got {_kind(obj)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise BrokenInput(path, f"missing key(s) {missing}; keys are {list(obj)}")
    return obj


def _check_records(path: Path, obj: dict, key: str, fields: Sequence[str]) -> None:
    """obj[key] must be a list of objects that each have `fields`."""
    rows = obj[key]
    if not isinstance(rows, list):
        raise BrokenInput(path, f"'{key}': expected a list, got {_kind(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BrokenInput(path, f"{key}[{i}]: expected an object, got {_kind(row)}")
        missing = [f for f in fields if f not in row]
        if missing:
            raise BrokenInput(path, f"{key}[{i}]: missing key(s) {missing}")


_ID_COLS = {c: str for c in ("id", "fact_id", "pair_id", "source_id", "answer", "extracted_answer")}
QA_FIELDS = ("checkpoint", "tier", "temperature", "error_rate", "error_rate_ci_low", "error_rate_ci_high")
SENTENCE_FIELDS = ("checkpoint", "prefix", "exact_match", "exact_match_ci_low", "exact_match_ci_high",
                   "token_accuracy", "token_accuracy_ci_low", "token_accuracy_ci_high")
# stage -> (the list in its results.json that analyze.py reads, the keys each record must have); stages not
# listed only need to be a JSON object (their items.csv is what is read)
RESULT_RECORDS = {"recall": ("error_rates", QA_FIELDS), "variants_recall": ("error_rates", QA_FIELDS),
                  "retention_recall": ("error_rates", QA_FIELDS), "dpo_recall": ("error_rates", QA_FIELDS),
                  "recognition": ("checkpoints", ("checkpoint", "two_afc")),
                  "retention_recognition": ("checkpoints", ("checkpoint", "two_afc", "two_afc_ci_low",
                                                            "two_afc_ci_high")),
                  "prefix_recall": ("by_prefix", ("checkpoint", "prefix")),
                  "sentence_recall": ("by_prefix", SENTENCE_FIELDS),
                  "retention_sentence_recall": ("by_prefix", SENTENCE_FIELDS),
                  "mia": ("checkpoints", ("checkpoint", "attacks"))}


def read_stage_results(path: Path, stage: str) -> dict:
    """A stage's results.json, checked for what analyze.py reads from it."""
    if stage == "train":
        obj = read_json_object(path, ["loss_per_exposure"])
        losses = obj["loss_per_exposure"]
        if not isinstance(losses, dict):
            raise BrokenInput(path, f"'loss_per_exposure': expected an object, got {_kind(losses)}")
        bad = [k for k in losses if not str(k).isdigit()]
        if bad:
            raise BrokenInput(path, f"'loss_per_exposure': keys must be exposure numbers, got {bad[:3]}")
        return obj
    if stage not in RESULT_RECORDS:
        return read_json_object(path)
    key, fields = RESULT_RECORDS[stage]
    obj = read_json_object(path, [key])
    _check_records(path, obj, key, fields)
    if stage == "mia":
        for i, ck in enumerate(obj[key]):
            attacks = ck["attacks"]
            if not isinstance(attacks, dict):
                raise BrokenInput(path, f"checkpoints[{i}].attacks: expected an object, got {_kind(attacks)}")
            for name, res in attacks.items():
                if not isinstance(res, dict) or not isinstance(res.get("all"), dict):
                    raise BrokenInput(path, f"checkpoints[{i}].attacks.{name}: expected an object with 'all'")
    return obj


def read_items_csv(path: Path, dtype: dict | None = None) -> pd.DataFrame:
    """A stage's items.csv (empty frame for a stage without items); a missing, truncated or malformed file,
    or one without the `checkpoint` column, raises BrokenInput."""
    if not path.exists():
        raise BrokenInput(path, "missing (its stage's results.json is there, so the stage finished)")
    text = _read_text(path)
    if not text.strip():
        return pd.DataFrame()  # what a run with no items writes
    if not text.endswith("\n"):  # every writer ends the last row with a line end
        raise BrokenInput(path, f"truncated CSV (line {text.count(chr(10)) + 1} ends without a line end)")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=dtype)
    except (pd.errors.ParserError, ValueError) as e:
        raise BrokenInput(path, f"malformed CSV ({' '.join(str(e).split())})") from None
    if not df.empty and "checkpoint" not in df:
        raise BrokenInput(path, f"no 'checkpoint' column; columns are {list(df.columns)}")
    if "loss" in df and len(df):  # every writer fills it: a NaN/inf loss would count as "not recognised"
        bad = ~np.isfinite(pd.to_numeric(df["loss"], errors="coerce").to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BrokenInput(path, f"line {i + 2}: loss is {df['loss'].iloc[i]}, not a finite number ({int(bad.sum())} "
                                    "row(s)); a diverged model or an edited file: recognition cannot compare the pair")
    return df


def read_facts(path: Path) -> list[dict]:
    """facts.jsonl rows, each an object with fact_id and kind."""
    text = _read_text(path)
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            cut = i == len(lines) and not text.endswith("\n")
            raise BrokenInput(path, f"line {i}: {'truncated' if cut else 'malformed'} JSON "
                                    f"({e.msg.removesuffix(' at')} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise BrokenInput(path, f"line {i}: expected a JSON object, got {_kind(obj)}")
        missing = [k for k in ("fact_id", "kind") if obj.get(k) in (None, "")]
        if missing:
            raise BrokenInput(path, f"line {i}: missing key(s) {missing}")
        rows.append(obj)
    if not rows:
        raise BrokenInput(path, "empty file (no facts)")
    return rows


class Inputs:
    """Every file analyze.py reads goes through here. Strict by default: a present but broken file raises
    BrokenInput (one `error:` line, exit 2). With `skip_broken`, the file is recorded in `skipped` (path ->
    what is wrong and what was left out) and the read returns None, so its cell or stage is left out."""

    def __init__(self, skip_broken: bool = False, excluded: set | None = None):
        self.skip_broken = skip_broken
        self.skipped: dict[Path, str] = {}
        self.excluded = set(excluded or ())  # task directories left out (stale cells)

    def read(self, path: Path, reader, *args, left_out: str):
        if path in self.skipped:
            return None
        try:
            return reader(path, *args)
        except BrokenInput as e:
            if not self.skip_broken:
                raise
            self.skipped[path] = f"{e.problem} ({left_out} left out)"
            return None

    def cell(self, cell_file: Path) -> dict | None:
        """The task's grid cell (None: cell.json broken and skipped, or a stale cell, so the task is left out)."""
        if cell_file.parent in self.excluded:
            return None
        c = self.read(cell_file, read_json_object, left_out="task")
        if c is None:
            return None
        cell = {k: v for k, v in c.items() if k not in ("size", "index")}
        cell["task"] = cell_file.parent.name
        return cell

    def stage(self, task: Path, name: str) -> dict | None:
        """A finished stage's results.json (None: not finished, or broken and skipped)."""
        d = task / "train" if name == "train" else _stage_dir(task, name)
        if d is None or not (d / "results.json").exists():
            return None
        return self.read(d / "results.json", read_stage_results, name, left_out=f"stage {name}")

    def items(self, task: Path, name: str, dtype: dict | None = _ID_COLS) -> pd.DataFrame | None:
        """A finished stage's items.csv (None: stage not finished, or a broken file skipped). A finished
        stage (results.json present) without items.csv is broken: every evaluation writes items.csv first."""
        if self.stage(task, name) is None:
            return None
        return self.read(_stage_dir(task, name) / "items.csv", read_items_csv, dtype,
                         left_out=f"items of stage {name}")

    def facts(self, task: Path) -> list[dict] | None:
        """TASK/data/facts/facts.jsonl (None: none there, or a broken file skipped)."""
        path = task / "data" / "facts" / "facts.jsonl"
        if not path.exists():
            return None
        return self.read(path, read_facts, left_out="fact kinds of the task")

    def report(self, root: Path) -> list[str]:
        """One line per skipped file: path (relative to `root`): what is wrong (what was left out)."""
        def rel(p: Path) -> str:
            try:
                return str(p.relative_to(root))
            except ValueError:
                return str(p)
        return [f"{rel(p)}: {why}" for p, why in sorted(self.skipped.items())]


# stages that may instead be evaluated inside a training run: stage -> (training run, eval kind)
IN_TRAINING = {"recall": ("train", "recall"), "recognition": ("train", "recognition"),
               "retention_recall": ("interference", "recall"),
               "retention_recognition": ("interference", "recognition"),
               "sentence_recall": ("train", "prefix_recall"),
               "retention_sentence_recall": ("interference", "prefix_recall")}


def _stage_dir(task: Path, name: str) -> Path | None:
    """A finished stage's run directory: TASK/name, else the evaluation inside training that replaces it
    (TASK/train/eval/recall, TASK/interference/eval/recognition, ...), whichever has results.json; None
    when neither does."""
    cands = [task / name]
    if name in IN_TRAINING:
        run, kind = IN_TRAINING[name]
        cands.append(task / run / "eval" / kind)
    for d in cands:
        if (d / "results.json").exists():
            return d
    return None


def collect(root: Path, inputs: Inputs | None = None) -> dict[str, pd.DataFrame]:
    """Tidy tables from every task below `root` (finished stages only; unfinished tasks contribute what
    they have). A present but broken input raises BrokenInput, or is left out with `inputs.skip_broken`."""
    inputs = inputs or Inputs()
    recall, recog, train, retention, error_rates, prefix, prior = [], [], [], [], [], [], []
    mia, mia_items, dpo, by_foil, sentence = [], [], [], [], []
    for cell_file in sorted(root.rglob("cell.json")):
        task = cell_file.parent
        cell = inputs.cell(cell_file)
        if cell is None:
            continue
        r = inputs.stage(task, "recall")
        for row in (r or {}).get("error_rates", []):
            recall.append({**cell, **{k: row.get(k) for k in ("checkpoint", "exposure", "step", "tier", "temperature", "n")},
                           "accuracy": 1 - row["error_rate"], "accuracy_ci_low": 1 - row["error_rate_ci_high"],
                           "accuracy_ci_high": 1 - row["error_rate_ci_low"]})
        r = inputs.stage(task, "recognition")
        for row in (r or {}).get("checkpoints", []):
            recog.append({**cell, **{k: v for k, v in row.items() if k != "path"}})
        for row in (inputs.stage(task, "sentence_recall") or {}).get("by_prefix", []):
            sentence.append({**cell, **{k: row.get(k) for k in SENTENCE_FIELDS + ("exposure", "step", "n")}})
        r = inputs.stage(task, "train")
        for k, loss in ((r or {}).get("loss_per_exposure") or {}).items():
            train.append({**cell, "exposure": int(k), "train_loss": loss})
        retention += _retention_rows(task, cell, inputs)
        r = inputs.stage(task, "variants_recall")
        for row in (r or {}).get("error_rates", []):
            error_rates.append({**cell, **{k: v for k, v in row.items() if k not in ("path", "n_rows")}})
        prefix += _prefix_rows(task, cell, inputs)
        prior += _prior_rows(task, cell, inputs)
        mia += _mia_rows(task, cell, inputs)
        mia_items += _mia_item_rows(task, cell, inputs)
        dpo += _dpo_rows(task, cell, inputs)
        by_foil += _foil_type_rows(task, cell, inputs)
    return {"mia": pd.DataFrame(mia), "mia_items": pd.DataFrame(mia_items), "dpo": pd.DataFrame(dpo),
            "recall": pd.DataFrame(recall), "recognition": pd.DataFrame(recog), "train": pd.DataFrame(train),
            "sentence_recall": pd.DataFrame(sentence),
            "recognition_by_foil": pd.DataFrame(by_foil),
            "retention": pd.DataFrame(retention), "error_rates": pd.DataFrame(error_rates),
            "prefix": pd.DataFrame(prefix), "prior": pd.DataFrame(prior)}


def _retention_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt2: recall of the facts (QA accuracy, all tiers, greedy), recognition of the studied sentences (2AFC)
    and their recall from the first half (exact match) per evaluation point; the study's final weights
    (exposure_*: exposure_0 of the interference run) are step 0 of interference."""
    rows = []
    measures = [("retention_recall", "error_rates", "QA recall (accuracy)"),
                ("retention_recognition", "checkpoints", "recognition (2AFC)"),
                ("retention_sentence_recall", "by_prefix", "sentence recall (exact match)")]
    for stage, key, measure in measures:
        for row in (inputs.stage(task, stage) or {}).get(key, []):
            if key == "error_rates":
                if row["tier"] != "all" or row["temperature"] != 0:
                    continue
                value, lo, hi = 1 - row["error_rate"], 1 - row["error_rate_ci_high"], 1 - row["error_rate_ci_low"]
            elif key == "by_prefix":
                value, lo, hi = row["exact_match"], row["exact_match_ci_low"], row["exact_match_ci_high"]
            else:
                value, lo, hi = row["two_afc"], row["two_afc_ci_low"], row["two_afc_ci_high"]
            step = 0 if str(row["checkpoint"]).startswith("exposure_") else row.get("step")
            rows.append({**cell, "measure": measure, "checkpoint": row["checkpoint"], "interference_step": step,
                         "value": value, "ci_low": lo, "ci_high": hi})
    return rows


def _prefix_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt5: generate.py --mode prefix results, one row per checkpoint x prefix length."""
    r = inputs.stage(task, "prefix_recall") or {}
    rows = []
    for row in r.get("by_prefix", []):
        prefix = str(row.get("prefix"))
        if not prefix.isdigit():  # a --prefix_fraction run: not a token count
            continue
        metrics = {k: v for k, v in row.items() if k not in ("path", "prefix")}
        rows.append({**cell, "prefix_tokens": int(prefix), **metrics})
    return rows


HELDOUT_KIND = "known (held out)"  # expt7's known facts that are probed but never trained


def _heldout_known(task: Path, inputs: Inputs) -> list[str]:
    """expt7: the fact ids in TASK/data/heldout_known.json (none when the file is absent)."""
    path = task / "data" / "heldout_known.json"
    if not path.exists():
        return []
    obj = inputs.read(path, read_json_object, ("fact_ids",), left_out="held-out known facts")
    return [str(f) for f in (obj or {}).get("fact_ids", [])]


def _prior_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt7: QA accuracy per exposure (0 = the base model) x fact kind. items.csv rows are joined with
    facts.jsonl on fact_id for the kind; the 95% CI resamples facts (a fact's probes and repeats move
    together). For contradicting facts, `original_rate` is the share of answers that give the original
    (true-world) answer instead of the trained one."""
    from memlab.metrics import bootstrap_ci

    facts = inputs.facts(task)
    if facts is None:
        return []
    kinds = {str(f["fact_id"]): f["kind"] for f in facts}
    for f in _heldout_known(task, inputs):  # probed, never trained
        kinds[f] = HELDOUT_KIND
    original = {str(f["fact_id"]): f.get("original_answer") for f in facts}
    rows = []
    for stage in ("prior_recall_base", "prior_recall"):
        items = inputs.items(task, stage)
        if items is None or items.empty:
            continue
        if stage == "prior_recall_base":
            items["exposure"] = 0
        else:
            items["exposure"] = items.checkpoint.map(lambda c: int(re.search(r"exposure_(\d+)", str(c)).group(1)))
        items = items[items.tier != "verbatim"].copy()  # as generate.py's `all`: reworded probes only
        items["kind"] = items.fact_id.map(kinds)
        items["original"] = [str(e) == str(original.get(f)) for e, f in zip(items.extracted_answer, items.fact_id)]
        for (exposure, temperature, kind), g in items.groupby(["exposure", "temperature", "kind"]):
            per_fact = g.groupby("fact_id").agg(correct=("correct", "mean"), original=("original", "mean"))
            lo, hi = bootstrap_ci(lambda x: float(x.mean()), per_fact.correct.to_numpy(float))
            rows.append({**cell, "exposure": int(exposure), "temperature": temperature, "kind": kind,
                         "n_facts": len(per_fact), "n": len(g), "accuracy": float(per_fact.correct.mean()),
                         "accuracy_ci_low": lo, "accuracy_ci_high": hi,
                         "original_rate": float(per_fact.original.mean()) if kind == "contradicting" else None})
    return rows


def _stage_of(label: str) -> str:
    """expt6: SFT checkpoints are exposure_*, DPO checkpoints epoch_*."""
    return "after DPO" if str(label).startswith("epoch_") else "SFT (before DPO)"


def _mia_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """One row per checkpoint x attack x group ('all' or members with c canary copies vs non-members)."""
    rows = []
    for ck in (inputs.stage(task, "mia") or {}).get("checkpoints", []):
        for attack, res in ck.get("attacks", {}).items():
            groups = [("all", res["all"])] + [(str(c), g) for c, g in res.get("by_canary_copies", {}).items()]
            for group, g in groups:
                rows.append({**cell, "checkpoint": ck["checkpoint"], "stage": _stage_of(ck["checkpoint"]),
                             "attack": attack, "group": group,
                             **{k: v for k, v in g.items() if k.startswith(("auc", "tpr", "n_"))}})
    return rows


def _mia_item_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """Per-item MIA scores (for ROC curves and score vs perplexity) of a finished mia stage."""
    df = inputs.items(task, "mia", dtype=None)
    if df is None or df.empty:
        return []
    for k, v in cell.items():
        df[k] = v
    df["stage"] = df["checkpoint"].map(_stage_of)
    return df.to_dict("records")


def _dpo_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """expt6: QA accuracy per tier for the SFT and the DPO checkpoint."""
    rows = []
    for row in (inputs.stage(task, "dpo_recall") or {}).get("error_rates", []):
        if row.get("temperature", 0) == 0:
            rows.append({**cell, "checkpoint": row["checkpoint"], "stage": _stage_of(row["checkpoint"]),
                         "tier": row["tier"], "accuracy": 1 - row["error_rate"],
                         "accuracy_ci_low": 1 - row["error_rate_ci_high"], "accuracy_ci_high": 1 - row["error_rate_ci_low"]})
    return rows


def foil_type_table(items: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """2AFC accuracy per checkpoint x foil type from recognition items.csv rows carrying `foil_type`
    (make_data.py recognition's foils; test.py and the in-training evaluation pass it through): the share of
    pairs whose seen item has the lower loss, with a bootstrap 95% CI over the pairs of that foil type.
    Columns: checkpoint, exposure, step, foil_type, n_pairs, two_afc, two_afc_ci_low, two_afc_ci_high.
    Empty when no row has a foil type."""
    from memlab.learning import pair_recognition
    from memlab.likelihood import checkpoint_position
    from memlab.metrics import bootstrap_ci

    cols = ["checkpoint", "exposure", "step", "foil_type", "n_pairs", "two_afc", "two_afc_ci_low", "two_afc_ci_high"]
    if items is None or items.empty or "foil_type" not in items or not {"pair_id", "split", "loss"} <= set(items):
        return pd.DataFrame(columns=cols)
    d = items[items.foil_type.notna() & (items.foil_type.astype(str) != "")]
    if d.empty:
        return pd.DataFrame(columns=cols)
    pairs = pair_recognition(d.assign(foil_type=d.foil_type.astype(str)), ["checkpoint", "foil_type"])
    rows = []
    for (ck, foil), g in pairs.groupby(["checkpoint", "foil_type"], sort=True):
        hits = g.recognized.to_numpy(float)
        lo, hi = bootstrap_ci(lambda x: float(x.mean()), hits, n_boot=n_boot, seed=seed)
        pos = checkpoint_position(str(ck))
        rows.append({"checkpoint": ck, "exposure": pos["exposure"], "step": pos["step"], "foil_type": foil,
                     "n_pairs": len(g), "two_afc": float(hits.mean()), "two_afc_ci_low": lo, "two_afc_ci_high": hi})
    return pd.DataFrame(rows, columns=cols)


def foil_summary(tables: dict[str, pd.DataFrame]) -> str:
    """summary.txt block: recognition 2AFC per condition x exposure x foil type (mean over seeds; pairs in
    tidy_recognition_by_foil.csv), only when some recognition pairs carry a foil type."""
    df = tables.get("recognition_by_foil", pd.DataFrame())
    if df.empty:
        return ""
    df = df.dropna(subset=["exposure"])
    if df.empty:
        return ""
    keys = [k for k in ("model", "method", "mode") if k in df and df[k].nunique() > 1]
    t = df.pivot_table(index=keys + ["exposure"], columns="foil_type", values="two_afc", aggfunc="mean")
    t.columns.name = None
    return "Recognition 2AFC by foil type (tidy_recognition_by_foil.csv)\n" + t.round(3).to_string()


def _foil_type_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """tidy_recognition_by_foil.csv rows of one task: `foil_type_table` of its recognition stage, with the cell."""
    t = foil_type_table(inputs.items(task, "recognition"))
    return [{**cell, **r} for r in t.to_dict("records")]


# ---------------------------------------------------------------------- per-item and per-fact tables
QA_STAGES = ("recall", "knownness", "variants_recall", "retention_recall", "dpo_recall", "prior_recall_base",
             "prior_recall")
RECOGNITION_STAGES = ("recognition", "retention_recognition")
SENTENCE_STAGES = ("sentence_recall", "retention_sentence_recall")  # prefix recall of the studied sentences
PREFIX_STAGES = ("prefix_recall",) + SENTENCE_STAGES
SENTENCE_TIER = "sentence"  # their tier in per_item.csv and learning.csv
BASE_STAGES = ("knownness", "prior_recall_base")  # the base model's answers: exposure 0
LEARNING_QA_STAGES = {"recall": ("recall",), "prior_recall": ("prior_recall_base", "prior_recall")}


def _items(task: Path, stage: str, inputs: Inputs) -> pd.DataFrame | None:
    """A finished stage's items.csv (ids as strings) with exposure and step from the checkpoint label
    (exposure 0 for the base-model stages); None when the stage is missing or has no items."""
    from memlab.likelihood import checkpoint_position

    df = inputs.items(task, stage)
    if df is None or df.empty:
        return None
    pos = [checkpoint_position(str(c)) for c in df.checkpoint]
    df["exposure"] = [0 if stage in BASE_STAGES else p["exposure"] for p in pos]
    df["step"] = [p["step"] for p in pos]
    df["exposure"] = df["exposure"].astype("Int64")
    df["step"] = df["step"].astype("Int64")
    return df


def _task_knownness(task: Path, inputs: Inputs) -> dict:
    """fact_id -> SliCK category from TASK/knownness (empty when missing or unusable)."""
    from memlab.learning import knownness

    items = _items(task, "knownness", inputs)
    if items is None:
        return {}
    try:
        return knownness(items).to_dict()
    except (ValueError, KeyError) as e:
        print(f"warning: {task.name}: knownness skipped: {e}", file=sys.stderr)
        return {}


def _task_kinds(task: Path, inputs: Inputs) -> dict:
    """fact_id -> fact kind from TASK/data/facts/facts.jsonl (empty when there is none); expt7's known facts
    held out of training are `known (held out)`."""
    facts = inputs.facts(task)
    kinds = {str(f["fact_id"]): f["kind"] for f in facts or []}
    return {**kinds, **{f: HELDOUT_KIND for f in _heldout_known(task, inputs) if f in kinds}}


def _per_item_rows(task: Path, cell: dict, known: dict, kinds: dict, inputs: Inputs) -> list[pd.DataFrame]:
    """Every finished stage's items of one task in the per_item.csv columns (see the module docstring)."""
    from memlab.learning import RECOGNITION, pair_recognition

    base = ["stage", "checkpoint", "exposure", "step", "item_id", "fact_id"]
    frames = []
    for stage in QA_STAGES:
        df = _items(task, stage, inputs)
        if df is None:
            continue
        cols = [c for c in ("tier", "temperature", "repeat", "correct") if c in df]
        df = df.assign(stage=stage, item_id=df["id"])
        frames.append(df[[c for c in base + cols if c in df]])
    for stage in RECOGNITION_STAGES:
        df = _items(task, stage, inputs)
        if df is None or not {"pair_id", "split", "loss"} <= set(df.columns):
            continue
        p = pair_recognition(df, ["checkpoint", "exposure", "step"])
        p = p.rename(columns={"pair_id": "fact_id"}).assign(stage=stage, tier=RECOGNITION,
                                                              correct=p.recognized.astype(int))
        frames.append(p.drop(columns="recognized"))
    for stage in PREFIX_STAGES:
        df = _items(task, stage, inputs)
        if df is None:
            continue
        metrics = [c for c in ("prefix_tokens", "exact_match", "token_accuracy", "id_recalled") if c in df]
        df = df.assign(stage=stage, item_id=df["id"])
        if "sample" in df:
            df["repeat"] = df["sample"]
        if stage in SENTENCE_STAGES:  # recalled = the rest of the sentence generated exactly
            df = df.assign(tier=SENTENCE_TIER, correct=df["exact_match"].astype(int))
        frames.append(df[[c for c in base + ["tier", "repeat", "correct"] if c in df] + metrics])
    df = _items(task, "mia", inputs)
    if df is not None:
        fixed = {"id", "fact_id", "source_id", "canary", "split", "canary_copies", "checkpoint", "target_nll",
                 "reference_nll", "n_tokens", "zlib_bytes", "exposure", "step"}
        attacks = {c: f"mia_{c}" for c in df.columns if c not in fixed}
        df = df.rename(columns=attacks).assign(stage="mia", item_id=df["id"])
        if "target_nll" in df:
            df["loss"] = df["target_nll"]
        keep = [c for c in base + ["split", "canary_copies", "loss"] if c in df] + list(attacks.values())
        frames.append(df[keep])
    out = []
    for f in frames:
        if f.empty:
            continue
        f = f.copy()
        if "fact_id" in f:
            f["knownness"] = f.fact_id.map(known) if known else None
            f["kind"] = f.fact_id.map(kinds) if kinds else None
        for k, v in reversed(list(cell.items())):
            f.insert(0, k, v)
        out.append(f)
    return out


def _learning_rows(task: Path, cell: dict, known: dict, kinds: dict, inputs: Inputs) -> list[pd.DataFrame]:
    """learning.csv rows of one task: QA learning events per fact x tier (recall, or expt7's prior_recall
    with the base model as exposure 0) and recognition events per pair."""
    from memlab.learning import learning_events, recall_status, recognition_status

    frames = []
    for name, stages in LEARNING_QA_STAGES.items():
        parts = [df for df in (_items(task, s, inputs) for s in stages) if df is not None]
        if not parts:
            continue
        status = recall_status(pd.concat(parts, ignore_index=True))
        frames.append(learning_events(status).assign(stage=name))
    rec = _items(task, "recognition", inputs)
    if rec is not None and {"pair_id", "split", "loss"} <= set(rec.columns):
        frames.append(learning_events(recognition_status(rec)).assign(stage="recognition"))
    sent = _items(task, "sentence_recall", inputs)
    if sent is not None and "exact_match" in sent:  # recalled = the rest generated exactly (greedy)
        status = sent.dropna(subset=["exposure"]).assign(fact_id=lambda d: d["id"], tier=SENTENCE_TIER,
                                                          recalled=lambda d: d["exact_match"] >= 1)
        frames.append(learning_events(status).assign(stage="sentence_recall"))
    out = []
    for f in frames:
        if f.empty:
            continue
        f = f.copy()
        f["knownness"] = f.fact_id.map(known) if known else None
        f["kind"] = f.fact_id.map(kinds) if kinds else None
        f.loc[f.tier.isin(["recognition", SENTENCE_TIER]), ["knownness", "kind"]] = None  # not fact ids
        f.insert(0, "stage", f.pop("stage"))
        for k, v in reversed(list(cell.items())):
            f.insert(0, k, v)
        out.append(f)
    return out


def collect_facts(root: Path, inputs: Inputs | None = None) -> dict[str, pd.DataFrame]:
    """{'per_item': ..., 'learning': ...} from every task below `root` (see the module docstring)."""
    inputs = inputs or Inputs()
    per_item, learning = [], []
    for cell_file in sorted(root.rglob("cell.json")):
        task = cell_file.parent
        cell = inputs.cell(cell_file)
        if cell is None:
            continue
        known, kinds = _task_knownness(task, inputs), _task_kinds(task, inputs)
        per_item += _per_item_rows(task, cell, known, kinds, inputs)
        learning += _learning_rows(task, cell, known, kinds, inputs)
    if per_item:
        per_item = [pd.concat(per_item, ignore_index=True)]
        for c in ("exposure", "step", "repeat", "correct", "canary_copies", "prefix_tokens"):
            if c in per_item[0]:
                try:  # integers stay integers after stacking stages without the column (else 0.0)
                    per_item[0][c] = per_item[0][c].astype("Int64")
                except (TypeError, ValueError):
                    pass
    return {"per_item": per_item[0] if per_item else pd.DataFrame(),
            "learning": pd.concat(learning, ignore_index=True) if learning else pd.DataFrame()}


def _fraction_axis(ax, xlabel: str, ylabel: str, title: str, legend_title: str | None = None) -> None:
    """Labels, a 0..1 y range, grid and legend for a panel whose y value is a fraction."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=legend_title)


def _series_label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all"


def _varying(df: pd.DataFrame, axes: list[str]) -> list[str]:
    return [a for a in axes if a in df and df[a].nunique() > 1]


def plot_exposures(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Recall of the facts (QA accuracy, all tiers, greedy), recognition of the studied sentences (2AFC) and,
    where evaluated, their recall from the first half (exact match) against exposures, one line per
    condition (model/method/mode), mean over seeds with the min-max of per-seed CIs as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rec, rg = tables["recall"], tables["recognition"]
    sent = tables.get("sentence_recall", pd.DataFrame())
    if rec.empty and rg.empty:
        return None
    fig, axes = plt.subplots(1, 3 if not sent.empty else 2, figsize=(18 if not sent.empty else 12, 4.5))
    conds = ["model", "method", "mode"]
    panels = [(axes[0], rec[(rec.tier == "all") & (rec.temperature == 0)] if not rec.empty else rec, "accuracy",
               "accuracy_ci_low", "accuracy_ci_high", "QA recall of the facts (accuracy, all tiers, greedy)"),
              (axes[1], rg, "two_afc", "two_afc_ci_low", "two_afc_ci_high", "recognition of the sentences (2AFC)")]
    if not sent.empty:
        panels.append((axes[2], sent.dropna(subset=["exposure"]), "exact_match", "exact_match_ci_low",
                       "exact_match_ci_high", "recall of the sentences from their first half (exact match)"))
    for ax, df, y, lo, hi, title in panels:
        if df.empty:
            ax.set_title(f"{title}: no data")
            continue
        keys = _varying(df, conds) or [k for k in conds if k in df][:1]
        for _, g in df.groupby(keys, sort=True):
            m = g.groupby("exposure").agg(y=(y, "mean"), lo=(lo, "min"), hi=(hi, "max")).reset_index()
            line, = ax.plot(m.exposure, m.y, marker="o", label=_series_label(g.iloc[0], keys))
            ax.fill_between(m.exposure, m.lo, m.hi, alpha=0.15, color=line.get_color())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # exposures are whole epochs
        _fraction_axis(ax, "exposures (epochs over the study set)",
                       f"{y.replace('_', ' ')} (fraction, 95% CI band)",
                       title)
    if "two_afc" in rg:
        axes[1].axhline(0.5, color="grey", ls="--", lw=1)
    fig.suptitle("Recall and recognition vs exposures (0 = before training)")
    return _save(fig, out / "recall_recognition_vs_exposures.png")


FOIL_ORDER = ("novel", "paraphrase", "synonym", "shuffled", "char_scramble", "random_words")


def plot_recognition_by_foil(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """2AFC accuracy against exposures, one line per foil type (the recognition study's main figure): one
    panel per condition (model/method/mode where they vary), mean over seeds with the per-seed CI band."""
    df = tables.get("recognition_by_foil", pd.DataFrame())
    if df.empty:
        return None
    df = df.dropna(subset=["exposure"])
    if df.empty:
        return None
    plt = _pyplot()
    conds = _varying(df, ["model", "method", "mode"])
    groups = list(df.groupby(conds, sort=True)) if conds else [((), df)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    present = set(df.foil_type)
    order = [f for f in FOIL_ORDER if f in present] + sorted(present - set(FOIL_ORDER))
    for ax, (_, g) in zip(axes.flat, groups):
        for foil in order:
            d = g[g.foil_type == foil]
            if not d.empty:
                _mean_lines(ax, d, "exposure", "two_afc", "two_afc_ci_low", "two_afc_ci_high", [], label_prefix=foil)
        ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance (0.5)")
        _fraction_axis(ax, "exposures (epochs over the study set)", "2AFC accuracy (fraction, 95% CI band)",
                       _series_label(g.iloc[0], conds) if conds else "recognition by foil type", legend_title="foil type")
    fig.suptitle("Recognition (2AFC) by foil type vs exposures")
    return _save(fig, out / "recognition_by_foil_type.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_lines(ax, df: pd.DataFrame, x: str, y: str, lo: str, hi: str, keys: list[str], label_prefix: str = "",
                x_offset: float = 0.0, **plot_kw) -> None:
    """One line per `keys` group: mean of `y` over seeds at each `x`, a band from the lowest CI low to the
    highest CI high among the seeds."""
    groups = df.groupby(keys, sort=True) if keys else [((), df)]
    for _, g in groups:
        m = g.groupby(x).agg(y=(y, "mean"), lo=(lo, "min"), hi=(hi, "max")).reset_index()
        label = label_prefix + (_series_label(g.iloc[0], keys) if keys else "")
        line, = ax.plot(m[x] + x_offset, m.y, label=label.strip(", ") or "all", **{"marker": "o", **plot_kw})
        ax.fill_between(m[x] + x_offset, m.lo, m.hi, alpha=0.15, color=line.get_color())


def plot_retention(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt2: recall and recognition against steps of interference training (symlog x: 0 = end of study,
    then log-spaced steps), one line per condition, mean over seeds with a CI band."""
    df = tables.get("retention", pd.DataFrame())
    if df.empty:
        return None
    plt = _pyplot()
    from matplotlib.ticker import ScalarFormatter

    df = df.dropna(subset=["interference_step"])
    measures = ["QA recall (accuracy)", "recognition (2AFC)"]
    if (df.measure == "sentence recall (exact match)").any():
        measures.append("sentence recall (exact match)")
    fig, axes = plt.subplots(1, len(measures), figsize=(6 * len(measures), 4.5))
    keys = _varying(df, ["model", "study_exposures"]) or [k for k in ("study_exposures",) if k in df]
    for ax, measure in zip(axes, measures):
        d = df[df.measure == measure]
        if d.empty:
            ax.set_title(f"{measure}: no data")
            continue
        _mean_lines(ax, d, "interference_step", "value", "ci_low", "ci_high", keys)
        if measure.startswith("recognition"):
            ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance (0.5)")
        ax.set_xscale("symlog", linthresh=1)
        steps = sorted(d.interference_step.unique())
        ax.set_xticks([s for s in steps if s == 0 or str(int(s))[0] in "125"])  # 0, 1, 2, 5, 10, 20, 50, ...
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlim(left=0)
        _fraction_axis(ax, "steps of interference training (log scale; 0 = end of study)",
                       f"{measure.split(' (')[1].rstrip(')')} (fraction, 95% CI band)",
                       measure)
    fig.suptitle("Retention: recall and recognition of studied items during interference training")
    return _save(fig, out / "retention_curves.png")


def plot_error_rates(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt3: error rate of the final checkpoint against variants per fact, one panel per temperature,
    one line per probe tier; mean over seeds, error bars from the per-seed 95% CIs."""
    df = tables.get("error_rates", pd.DataFrame())
    if df.empty:
        return None
    plt = _pyplot()
    last = df.groupby("task").exposure.transform("max")
    df = df[df.exposure == last]
    temps = sorted(df.temperature.unique())
    fig, axes = plt.subplots(1, len(temps), figsize=(5.5 * len(temps), 4.5), squeeze=False, sharey=True)
    tiers = [t for t in ("easy", "mid", "hard", "all", "verbatim") if t in set(df.tier)]
    models = _varying(df, ["model"])
    variants = sorted(df.variants.unique())
    for ax, temp in zip(axes[0], temps):
        d = df[df.temperature == temp]
        for i, ((tier_keys, g)) in enumerate(d.groupby(["tier"] + models, sort=False)):
            m = g.groupby("variants").agg(y=("error_rate", "mean"), lo=("error_rate_ci_low", "min"),
                                          hi=("error_rate_ci_high", "max")).reindex(variants)
            pos = [variants.index(v) + (i - len(tiers) / 2) * 0.04 for v in m.index]  # small dodge
            label = ", ".join(f"{k}={v}" for k, v in zip(["tier"] + models, g.iloc[0][["tier"] + models]))
            ax.errorbar(pos, m.y, yerr=[m.y - m.lo, m.hi - m.y], marker="o", capsize=3,
                        ls="--" if g.iloc[0].tier == "all" else "-", label=label)
        ax.set_xticks(range(len(variants)), [str(v) for v in variants])
        _fraction_axis(ax, "variants per fact (paraphrased training examples)",
                       "QA error rate (fraction, 95% CI)",
                       f"temperature {temp:g}",
                       legend_title="probe tier")
    fig.suptitle("Error rate by probe tier x temperature x variants per fact (final checkpoint)")
    return _save(fig, out / "error_rate_by_variants.png")


PREFIX_METRICS = [("token_accuracy", "token accuracy"), ("exact_match", "exact match"),
                  ("id_recalled", "document ID recalled")]


def plot_prefix(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt5: continuation recall against prefix length (tokens), one panel per metric, one line per
    document length x checkpoint; mean over seeds with a CI band where generate.py gives one."""
    df = tables.get("prefix", pd.DataFrame())
    if df.empty:
        return None
    plt = _pyplot()
    metrics = [(m, name) for m, name in PREFIX_METRICS if m in df]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.5), squeeze=False)
    keys = [k for k in ("model", "doc_tokens") if k in df and (k == "doc_tokens" or df[k].nunique() > 1)]
    keys += ["exposure"] if "exposure" in df and df.exposure.nunique() > 1 else []
    for ax, (m, name) in zip(axes[0], metrics):
        lo, hi = (f"{m}_ci_low", f"{m}_ci_high") if f"{m}_ci_low" in df else (m, m)
        _mean_lines(ax, df.dropna(subset=[m]), "prefix_tokens", m, lo, hi, keys)
        _fraction_axis(ax, "prefix length (tokens given to the model)", f"{name} (fraction, 95% CI band)", name)
    fig.suptitle("Memorization of ID documents vs prefix length (greedy continuation)")
    return _save(fig, out / "recall_vs_prefix_length.png")


def plot_prior(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt7: QA accuracy (trained answer, greedy) against exposures for known, novel and contradicting
    facts and the known facts held out of training, one panel per mode; dotted: contradicting facts
    answered with their original answer."""
    df = tables.get("prior", pd.DataFrame())
    if df.empty:
        return None
    plt = _pyplot()
    df = df[df.temperature == df.temperature.min()]
    modes = sorted(df["mode"].unique()) if "mode" in df else [None]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False, sharey=True)
    colors = {"known": "tab:green", HELDOUT_KIND: "tab:olive", "novel": "tab:blue", "contradicting": "tab:red"}
    style = {"known": ("s", -0.06), HELDOUT_KIND: ("D", -0.12), "novel": ("o", 0.0),
             "contradicting": ("^", 0.06)}  # marker, x dodge
    for ax, mode in zip(axes[0], modes):
        d = df if mode is None else df[df["mode"] == mode]
        models = _varying(d, ["model"])
        for kind in [k for k in colors if k in set(d.kind)]:
            _mean_lines(ax, d[d.kind == kind], "exposure", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                        models, label_prefix=f"{kind}, ", color=colors[kind], marker=style[kind][0],
                        x_offset=style[kind][1])
        c = d[d.kind == "contradicting"]
        if not c.empty:
            m = c.groupby("exposure").original_rate.mean()
            ax.plot(m.index, m.values, ls=":", marker="x", color=colors["contradicting"],
                    label="contradicting: original answer given")
        ax.set_xticks(sorted(d.exposure.unique()))
        _fraction_axis(ax, "exposures (epochs over the training set; 0 = before training)",
                       "QA accuracy, trained answer (fraction, 95% CI)",
                       f"mode={mode}" if mode else "all",
                       legend_title="fact kind")
    fig.suptitle("Prior knowledge: learning known, novel and contradicting facts")
    return _save(fig, out / "accuracy_by_fact_kind.png")


def plot_mia_rank_module(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt4: AUC of the loss and reference-difference attacks against LoRA rank, one line per target
    module set (mean over seeds; band = lowest CI low to highest CI high)."""
    df = tables["mia"]
    if df.empty or "rank" not in df:
        return None
    df = df[df.group == "all"]
    plt = _pyplot()
    attacks = [a for a in ("loss", "ref_diff", "min_k_20") if a in set(df.attack)]
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 4.5), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        _mean_lines(ax, df[df.attack == attack], "rank", "auc", "auc_ci_low", "auc_ci_high", ["modules"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(df["rank"].unique()), [str(r) for r in sorted(df["rank"].unique())])
        ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
        ax.set_xlabel("LoRA rank r (log scale)")
        ax.set_ylabel("ROC AUC (members positive, 95% CI band)")
        ax.set_ylim(0.3, 1.02)
        ax.set_title(f"attack: {attack}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="target modules")
    fig.suptitle("Membership inference AUC by LoRA rank and target modules")
    return _save(fig, out / "mia_auc_by_rank_module.png")


def plot_mia_roc(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """ROC of the loss attack per condition (all tasks' items pooled per condition), log-scaled FPR."""
    import numpy as np

    from memlab.metrics import roc_auc, roc_curve

    df = tables["mia_items"]
    if df.empty or "loss" not in df:
        return None
    keys = [k for k in ("rank", "modules", "method", "stage") if k in df and df[k].nunique() > 1] or ["checkpoint"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, g in df.groupby(keys, sort=True):
        labels = (g.split == "member").astype(int).to_numpy()
        fpr, tpr = roc_curve(g["loss"].to_numpy(), labels)[:2]
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, name if isinstance(name, tuple) else (name,)))
        ax.plot(np.maximum(fpr, 1e-3), tpr, label=f"{label} (AUC {roc_auc(g['loss'].to_numpy(), labels):.2f})")
    grid = np.logspace(-3, 0, 50)
    ax.plot(grid, grid, color="grey", ls="--", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (non-members flagged, log scale)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title("Membership inference ROC, loss attack")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, out / "mia_roc.png")


def plot_mia_vs_perplexity(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Per item: the fine-tuned model's perplexity (exp of mean NLL) against a calibrated MIA score
    (reference difference when a reference was used, else zlib), members vs non-members."""
    import numpy as np

    df = tables["mia_items"]
    if df.empty or "target_nll" not in df:
        return None
    score = "ref_diff" if "ref_diff" in df and df["ref_diff"].notna().any() else "zlib"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for split, marker in (("nonmember", "x"), ("member", "o")):
        g = df[df.split == split]
        ax.scatter(np.exp(g.target_nll), g[score], s=14, alpha=0.6, marker=marker, label=f"{split}s (n={len(g)})")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity under the fine-tuned model (exp nats/token, log scale)")
    ax.set_ylabel(f"MIA score '{score}' ({'nats/token' if score == 'ref_diff' else 'nats per zlib byte'})")
    ax.set_title("MIA score against per-item perplexity")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out / "mia_score_vs_perplexity.png")


def plot_dpo(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """expt6: QA accuracy by tier and MIA AUC (loss attack), SFT checkpoint vs after DPO, per method."""
    import numpy as np

    qa, mia = tables["dpo"], tables["mia"]
    if qa.empty:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    stages = ["SFT (before DPO)", "after DPO"]
    methods = sorted(qa["method"].unique()) if "method" in qa else ["all"]
    tiers = [t for t in ("easy", "mid", "hard", "all", "verbatim") if t in set(qa.tier)]
    width = 0.8 / (len(stages) * len(methods))
    for j, (method, stage) in enumerate([(m, st) for m in methods for st in stages]):
        g = qa[(qa.stage == stage) & ((qa.method == method) if "method" in qa else True)]
        m = g.groupby("tier").agg(y=("accuracy", "mean"), lo=("accuracy_ci_low", "min"), hi=("accuracy_ci_high", "max"))
        m = m.reindex(tiers)
        x = np.arange(len(tiers)) + (j - (len(stages) * len(methods) - 1) / 2) * width
        axes[0].bar(x, m.y, width, yerr=[(m.y - m.lo).clip(lower=0), (m.hi - m.y).clip(lower=0)], capsize=3,
                    label=f"{method}: {stage}", hatch="//" if stage == "after DPO" else None)
    axes[0].set_xticks(np.arange(len(tiers)), tiers)
    axes[0].set_xlabel("probe tier")
    axes[0].set_ylabel("QA accuracy (fraction, greedy, 95% CI)")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("Fact recall before and after DPO")
    axes[0].legend(fontsize=8)
    if not mia.empty and "stage" in mia:
        g = mia[(mia.group == "all") & (mia.attack.isin(["loss", "ref_diff"]))]
        for k, ((method, attack), h) in enumerate(g.groupby(["method", "attack"] if "method" in g else ["attack"] * 2)):
            m = h.groupby("stage").agg(y=("auc", "mean"), lo=("auc_ci_low", "min"), hi=("auc_ci_high", "max")).reindex(stages)
            axes[1].errorbar(np.arange(len(stages)) + 0.05 * k, m.y, yerr=[(m.y - m.lo).clip(lower=0),
                             (m.hi - m.y).clip(lower=0)], marker="o", capsize=3, label=f"{method}: {attack}")
        axes[1].axhline(0.5, color="grey", ls="--", lw=1, label="chance")
        axes[1].set_xticks(np.arange(len(stages)), stages)
        axes[1].set_ylabel("MIA ROC AUC (95% CI)")
        axes[1].set_ylim(0.3, 1.02)
        axes[1].set_xlabel("checkpoint")
        axes[1].legend(fontsize=8)
    axes[1].set_title("Membership inference before and after DPO")
    fig.suptitle("DPO after SFT")
    return _save(fig, out / "dpo_before_after.png")


TIER_ORDER = ("easy", "mid", "hard", "all", "verbatim", "recognition")


def _tiers(df: pd.DataFrame) -> list[str]:
    present = set(df.tier)
    return [t for t in TIER_ORDER if t in present] + sorted(present - set(TIER_ORDER))


def _ecdf_lines(ax, df: pd.DataFrame, keys: list[str], label_prefix: str = "", **kw) -> None:
    """One step line per `keys` group: fraction of the group's facts at criterion by each exposure."""
    from memlab.learning import learned_fraction

    last = float(df.last_exposure.max()) if df.last_exposure.notna().any() else 0.0
    groups = df.groupby(keys, sort=True) if keys else [((), df)]
    for _, g in groups:
        finite = sorted({float(v) for v in g.exposures_to_criterion.dropna()})
        grid = sorted({0.0, last, *finite})
        n, n_reached = len(g), int(g.exposures_to_criterion.notna().sum())
        label = (label_prefix + (_series_label(g.iloc[0], keys) if keys else "")).strip(", ") or "all"
        ax.step(grid, learned_fraction(g.exposures_to_criterion, grid), where="post",
                label=f"{label} ({n_reached}/{n} learned)", **kw)


def _human_line(ax) -> None:
    from memlab.learning import HUMAN_EXPOSURES

    ax.axvline(HUMAN_EXPOSURES, color="grey", ls=":", lw=1.2,
               label=f"{HUMAN_EXPOSURES} exposures: the human figure the original\nfact-memorization study starts from")


def plot_learning_ecdf(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Fraction of facts learned (ECDF of exposures-to-criterion; facts never at criterion stay in the
    denominator) against exposures: one panel per tier, one line per method (and model/mode where they
    vary), facts of every seed pooled."""
    df = _trained(facts.get("learning", pd.DataFrame()))
    if df.empty:
        return None
    plt = _pyplot()
    tiers = _tiers(df)
    ncol = min(3, len(tiers))
    nrow = -(-len(tiers) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4.3 * nrow), squeeze=False)
    for ax, tier in zip(axes.flat, tiers):
        d = df[df.tier == tier]
        _ecdf_lines(ax, d, [k for k in ("method",) if k in d] + _varying(d, ["model", "mode", "stage"]))
        _human_line(ax)
        _fraction_axis(ax, "exposures (epochs over the training set)",
                       {"recognition": "fraction of pairs at criterion",
                        SENTENCE_TIER: "fraction of sentences at criterion"}.get(tier, "fraction of facts at criterion"),
                       f"tier: {tier}" + {"recognition": " (seen loss < foil loss)",
                                          SENTENCE_TIER: " (recalled exactly from the first half)"}.get(tier, ""))
    for ax in list(axes.flat)[len(tiers):]:
        ax.set_visible(False)
    fig.suptitle("Exposures to criterion (recalled at every later evaluated exposure), per tier")
    return _save(fig, out / "learning_ecdf.png")


def plot_learning_by_knownness(facts: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """The learning ECDF per SliCK knownness category of the facts (base model), one panel per QA tier,
    one line per category (and method where several)."""
    from memlab.learning import CATEGORIES

    df = _trained(facts.get("learning", pd.DataFrame()))
    if df.empty or "knownness" not in df or df.knownness.isna().all():
        return None
    df = df[df.knownness.notna() & (df.tier != "recognition")]
    plt = _pyplot()
    tiers = _tiers(df)
    ncol = min(3, len(tiers))
    nrow = -(-len(tiers) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4.3 * nrow), squeeze=False)
    colors = dict(zip(CATEGORIES, ("tab:green", "tab:blue", "tab:orange", "tab:red")))
    styles = ["-", "--", "-.", ":"]
    for ax, tier in zip(axes.flat, tiers):
        d = df[df.tier == tier]
        keys = _varying(d, ["method", "model", "mode", "stage"])
        for cat in [c for c in CATEGORIES if c in set(d.knownness)]:
            groups = d[d.knownness == cat].groupby(keys, sort=True) if keys else [((), d[d.knownness == cat])]
            for i, (_, g) in enumerate(groups):
                _ecdf_lines(ax, g, [], label_prefix=f"{cat}, " + (_series_label(g.iloc[0], keys) if keys else ""),
                            color=colors[cat], ls=styles[i % len(styles)])
        _human_line(ax)
        _fraction_axis(ax, "exposures (epochs over the training set)", "fraction of facts at criterion",
                       f"tier: {tier}", legend_title="knownness before training (SliCK)")
    for ax in list(axes.flat)[len(tiers):]:
        ax.set_visible(False)
    fig.suptitle("Exposures to criterion by what the base model knew (HighlyKnown ... Unknown)")
    return _save(fig, out / "learning_by_knownness.png")


def _trained(learning: pd.DataFrame) -> pd.DataFrame:
    """learning.csv rows of facts that were trained: expt7's held-out known facts (never trained, so never
    "learned") stay in learning.csv but out of the learning summary and plots."""
    if learning.empty or "kind" not in learning:
        return learning
    return learning[learning["kind"] != HELDOUT_KIND]


def learning_summary(facts: dict[str, pd.DataFrame]) -> str:
    """Median exposures-to-criterion with a bootstrap 95% CI over facts, per method x tier (x model/mode
    where they vary), and per knownness category x tier; `>N` = not reached by the last evaluated exposure."""
    from memlab.learning import median_table

    df = _trained(facts.get("learning", pd.DataFrame()))
    if df.empty:
        return ""
    parts = ["Median exposures to criterion [95% bootstrap CI over facts] (never learned = infinite; "
             ">N: not reached by exposure N)"]
    qa = df[df.tier != "recognition"]  # `stage` only when QA stages differ (recognition has its own tier)
    keys = [k for k in ("method",) if k in df] + _varying(df, ["model", "mode"]) + _varying(qa, ["stage"]) + ["tier"]
    order = {t: i for i, t in enumerate(_tiers(df))}

    def table(t: pd.DataFrame, by: list[str]) -> str:
        t = t.sort_values(by, key=lambda s: s.map(order) if s.name == "tier" else s)
        return t[by + ["n_facts", "n_reached", "text"]].rename(columns={"text": "median [CI]"}).to_string(index=False)

    parts.append(table(median_table(df, keys), keys))
    if "knownness" in df and df.knownness.notna().any():
        from memlab.learning import CATEGORIES

        k = df[df.knownness.notna()]
        kk = ["knownness"] + _varying(k, ["method"]) + ["tier"]
        t = median_table(k, kk)
        t["knownness"] = pd.Categorical(t.knownness, [c for c in CATEGORIES if c in set(t.knownness)])
        parts.append(table(t, kk))
    return "\n\n".join(parts)


# ------------------------------------------------------------- memorization vs duplication (expt4 canaries)
# items.csv columns of membership_inference.py that are not attack scores
MIA_ITEM_COLUMNS = {"id", "fact_id", "source_id", "canary", "split", "canary_copies", "checkpoint", "target_nll",
                    "reference_nll", "n_tokens", "zlib_bytes", "exposure", "step"}
CANARY_FPRS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_10pct_fpr": 0.10}
CANARY_COLUMNS = ["checkpoint", "exposure", "step", "attack", "canary_copies", "n_members", "n_nonmembers", "auc",
                  "auc_ci_low", "auc_ci_high", *CANARY_FPRS, "extraction_prefix", "extraction_n",
                  "extraction_exact_match", "extraction_exact_match_ci_low", "extraction_exact_match_ci_high",
                  "extraction_token_accuracy", "extraction_token_accuracy_ci_low", "extraction_token_accuracy_ci_high"]


def _extraction_by_copies(extraction: pd.DataFrame | None, copies: dict, n_boot: int, seed: int) -> dict:
    """(checkpoint, canary copies) -> extraction columns: exact match rate and mean token accuracy over the
    canaries of that copies group (each canary's samples averaged first), with a bootstrap 95% CI over canaries.
    `copies` maps member id -> canary copies; extraction items of other ids are not counted."""
    from memlab.metrics import bootstrap_ci

    if extraction is None or extraction.empty or not {"id", "exact_match", "token_accuracy"} <= set(extraction):
        return {}
    d = extraction.assign(canary_copies=extraction["id"].astype(str).map(copies)).dropna(subset=["canary_copies"])
    out = {}
    for (ck, c), g in d.groupby(["checkpoint", "canary_copies"], sort=True):
        per = g.groupby("id")[["exact_match", "token_accuracy"]].mean()
        row = {"extraction_prefix": ";".join(sorted({str(p) for p in g["prefix"]})) if "prefix" in g else None,
               "extraction_n": len(per)}
        for m in ("exact_match", "token_accuracy"):
            v = per[m].to_numpy(float)
            lo, hi = bootstrap_ci(lambda x: float(x.mean()), v, n_boot=n_boot, seed=seed)
            row.update({f"extraction_{m}": float(v.mean()), f"extraction_{m}_ci_low": lo,
                        f"extraction_{m}_ci_high": hi})
        out[(str(ck), int(c))] = row
    return out


def canary_table(mia_items: pd.DataFrame | None, extraction: pd.DataFrame | None = None, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Memorization against duplication (Carlini et al. 2022) from one task's mia items.csv and, where there
    is one, its extraction items.csv (generate.py --mode prefix on the canaries): one row per checkpoint x
    attack x canary-copies group of members (1 = ordinary members). Per group: n_members, n_nonmembers, ROC
    AUC of the group's members against ALL non-members (higher score = member, as membership_inference.py's
    results.json `by_canary_copies`; bootstrap 95% CI, members and non-members resampled separately), TPR at
    1% and 10% FPR (threshold on the non-members' scores, no CI: read it with n), and the extraction exact
    match rate and mean token accuracy of the group's canaries (CI over canaries; empty where nothing was
    extracted, e.g. copies 1). Empty when members do not carry more than one canary_copies count (your own
    members without a canary_copies column)."""
    import numpy as np

    from memlab.likelihood import checkpoint_position
    from memlab.metrics import bootstrap_ci, roc_auc, tpr_at_fpr

    def auc(pos, neg):
        return roc_auc(np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)])

    if mia_items is None or mia_items.empty or not {"split", "canary_copies", "checkpoint"} <= set(mia_items):
        return pd.DataFrame(columns=CANARY_COLUMNS)
    members = mia_items[mia_items.split == "member"]
    if members.canary_copies.nunique() < 2:
        return pd.DataFrame(columns=CANARY_COLUMNS)
    copies = dict(zip(members["id"].astype(str), members.canary_copies.astype(int))) if "id" in members else {}
    extracted = _extraction_by_copies(extraction, copies, n_boot, seed)
    attacks = [c for c in mia_items.columns
               if c not in MIA_ITEM_COLUMNS and pd.api.types.is_numeric_dtype(mia_items[c])]
    rows = []
    for ck, g in mia_items.groupby("checkpoint", sort=True):
        neg_rows, pos_rows = g[g.split == "nonmember"], g[g.split == "member"]
        if neg_rows.empty:
            continue
        pos_copies = pos_rows.canary_copies.astype(int).to_numpy()
        for attack in attacks:
            neg, pos_all = neg_rows[attack].to_numpy(float), pos_rows[attack].to_numpy(float)
            if not (np.isfinite(neg).all() and np.isfinite(pos_all).all()):
                continue  # an attack this checkpoint did not run (e.g. no reference model)
            for c in sorted(set(pos_copies)):
                pos = pos_all[pos_copies == c]
                lo, hi = bootstrap_ci(auc, pos, neg, n_boot=n_boot, seed=seed, paired=False)
                scores, labels = np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)]
                rows.append({"checkpoint": ck, **checkpoint_position(str(ck)), "attack": attack,
                             "canary_copies": int(c), "n_members": int(pos.size), "n_nonmembers": int(neg.size),
                             "auc": auc(pos, neg), "auc_ci_low": lo, "auc_ci_high": hi,
                             **{k: tpr_at_fpr(scores, labels, f) for k, f in CANARY_FPRS.items()},
                             **extracted.get((str(ck), int(c)), {})})
    out = pd.DataFrame(rows, columns=CANARY_COLUMNS)
    out["extraction_n"] = out["extraction_n"].astype("Int64")
    return out


def _canary_rows(task: Path, cell: dict, inputs: Inputs) -> list[dict]:
    """tidy_canaries.csv rows of one task: `canary_table` of its mia and extraction stages, with the cell."""
    mia = inputs.items(task, "mia", dtype={"id": str})
    if mia is None or mia.empty:
        return []
    t = canary_table(mia, inputs.items(task, "extraction"))
    return [{**cell, **r} for r in t.to_dict("records")]


def collect_canaries(root: Path, inputs: Inputs | None = None) -> pd.DataFrame:
    """tidy_canaries.csv: `canary_table` of every task below `root` (see the module docstring)."""
    inputs = inputs or Inputs()
    rows = []
    for cell_file in sorted(root.rglob("cell.json")):
        cell = inputs.cell(cell_file)
        if cell is not None:
            rows += _canary_rows(cell_file.parent, cell, inputs)
    return pd.DataFrame(rows)


def _final_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Each task's rows of its last checkpoint (highest exposure, else step, else label)."""
    order = df.assign(_e=df.exposure.fillna(-1), _s=df.step.fillna(-1)).sort_values(["_e", "_s", "checkpoint"])
    last = order.groupby("task").checkpoint.last()
    return df[df.checkpoint == df.task.map(last)]


def _canary_attacks(present: set) -> list[str]:
    """The attacks drawn against copies: loss (highlighted), zlib, min-k% / min-k%++, the reference difference."""
    mink = sorted(a for a in present if re.fullmatch(r"min_k_(pp_)?\d+(\.\d+)?", str(a)))
    return [a for a in ("loss", "zlib") if a in present] + mink + [a for a in ("ref_diff",) if a in present]


def plot_canaries(tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Memorization against canary copies (log2 x), each task's final checkpoint: MIA AUC of the members with c
    copies vs all non-members (loss attack thick with its CI band; zlib, min-k%, ref_diff thin) and the
    extraction exact match (solid, CI bars) and token accuracy (dotted) of the canaries. One colour per task
    (labelled by the cell axes that vary) when there are several, else one colour per attack."""
    df = tables.get("canaries", pd.DataFrame())
    if df.empty:
        return None
    df = _final_checkpoints(df)
    attacks = _canary_attacks(set(df.attack))
    if not attacks:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    axes_keys = _varying(df, [k for k in ("expt", "model", "seed", "method", "rank", "modules", "mode") if k in df])
    tasks = list(df.groupby("task", sort=True))
    several = len(tasks) > 1
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 2))]
    fig, (ax, ex) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (task, g) in enumerate(tasks):
        name = _series_label(g.iloc[0], axes_keys) if axes_keys else task
        for j, attack in enumerate(attacks):
            d = g[g.attack == attack].sort_values("canary_copies")
            if d.empty:
                continue
            color = colors[(i if several else j) % len(colors)]
            is_loss = attack == "loss"
            label = attack if not several else (f"{name}: loss" if is_loss else None)  # styles: proxy legend
            ax.plot(d.canary_copies, d.auc, color=color, marker="o" if is_loss else ".", lw=2.6 if is_loss else 1.1,
                    ls="-" if is_loss else styles[(j - 1) % len(styles)], alpha=1 if is_loss else 0.75,
                    zorder=3 if is_loss else 2, label=label)
            if is_loss:
                ax.fill_between(d.canary_copies, d.auc_ci_low, d.auc_ci_high, color=color, alpha=0.15)
        e = g[g.attack == g.attack.iloc[0]].dropna(subset=["extraction_exact_match"]).sort_values("canary_copies")
        if not e.empty:
            color = colors[i % len(colors)]
            ex.errorbar(e.canary_copies, e.extraction_exact_match,
                        yerr=[(e.extraction_exact_match - e.extraction_exact_match_ci_low).clip(lower=0),
                              (e.extraction_exact_match_ci_high - e.extraction_exact_match).clip(lower=0)],
                        color=color, marker="o", capsize=3, label=f"{name}: exact match" if several else "exact match")
            ex.plot(e.canary_copies, e.extraction_token_accuracy, color=color, ls=":", marker=".",
                    label=f"{name}: token accuracy" if several else "token accuracy")
    if several and len(attacks) > 1:  # the thin attacks' line styles, once
        ax.legend(handles=ax.get_legend_handles_labels()[0] + [
            Line2D([], [], color="grey", ls=styles[(j - 1) % len(styles)], lw=1.1, label=f"(style) {a}")
            for j, a in enumerate(attacks) if a != "loss"], fontsize=7, title="task: attack")
    copies = sorted(df.canary_copies.unique())
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    for a in (ax, ex):
        a.set_xscale("log", base=2)
        a.set_xticks(copies, [str(c) for c in copies])
        a.set_xlabel("copies of the text in training (log2 scale; 1 = ordinary member)")
        a.grid(alpha=0.3)
    if not several or len(attacks) == 1:
        ax.legend(fontsize=8, title="attack")
    ax.set_ylim(max(-0.02, min(0.3, float(df[df.attack.isin(attacks)].auc.min()) - 0.03)), 1.02)
    ax.set_ylabel("ROC AUC: members with c copies vs all non-members")
    ax.set_title("Membership inference by canary copies (band: loss 95% CI)")
    if ex.has_data():
        _fraction_axis(ex, "copies of the text in training (log2 scale)", "fraction of canaries (95% CI)",
                       "Extraction of the canaries (greedy continuation of a prefix)")
    else:
        ex.set_title("Extraction: no extraction stage")
    fig.suptitle("Memorization vs duplication (final checkpoint of each task)")
    return _save(fig, out / "canaries_by_copies.png")


def canary_summary(tables: dict[str, pd.DataFrame]) -> str:
    """summary.txt block: the loss attack per task x canary copies at each task's final checkpoint (AUC with
    its 95% CI, TPR at 1% / 10% FPR, extraction exact match); empty without tidy_canaries rows."""
    df = tables.get("canaries", pd.DataFrame())
    if df.empty or "loss" not in set(df.attack):
        return ""
    d = _final_checkpoints(df[df.attack == "loss"]).copy()
    keys = _varying(d, [k for k in ("expt", "model", "seed", "method", "rank", "modules", "mode") if k in d])
    keys = keys or (["task"] if d.task.nunique() > 1 else [])

    def fmt(v, lo, hi):
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(v) else "-"

    d["auc [CI]"] = [fmt(v, lo, hi) for v, lo, hi in zip(d.auc, d.auc_ci_low, d.auc_ci_high)]
    d["exact match [CI]"] = [fmt(v, lo, hi) for v, lo, hi in zip(
        d.extraction_exact_match, d.extraction_exact_match_ci_low, d.extraction_exact_match_ci_high)]
    d["n_extracted"] = d.extraction_n.map(lambda n: "-" if pd.isna(n) else str(int(n)))
    cols = keys + ["checkpoint", "canary_copies", "n_members", "n_nonmembers", "auc [CI]", "tpr_at_1pct_fpr",
                   "tpr_at_10pct_fpr", "exact match [CI]", "n_extracted"]
    t = d.sort_values(keys + ["canary_copies"])[cols].round(3).to_string(index=False)
    return ("Memorization vs canary copies (loss attack, final checkpoint; members with c copies vs all "
            "non-members; extraction: greedy continuation of the canaries)\n" + t)


def _save(fig, path: Path) -> Path:
    """Lay out and save a figure atomically (a concurrent analyze.py never leaves a torn PNG); returns path."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def summary_table(tables: dict[str, pd.DataFrame]) -> str:
    """Greedy QA recall per tier (`recall_all` pools the reworded tiers; `recall_verbatim` repeats the
    training prompts), recognition 2AFC and sentence recall from the first half (exact match, where
    evaluated), per condition and exposure, as a text table."""
    rec, rg = tables["recall"], tables["recognition"]
    parts = []
    keys = [k for k in ("model", "method", "mode") if k in rec]
    if not rec.empty:
        greedy = rec[rec.temperature == 0]
        for tier in ["all"] + [t for t in ("easy", "mid", "hard", "verbatim") if t in set(greedy.tier)]:
            t = greedy[greedy.tier == tier].groupby(keys + ["exposure"])["accuracy"].mean()
            parts.append(t.rename(f"recall_{tier}"))
    if not rg.empty:
        parts.append(rg.groupby(keys + ["exposure"])["two_afc"].mean().rename("recognition_2afc"))
    sent = tables.get("sentence_recall", pd.DataFrame())
    if not sent.empty and parts:
        parts.append(sent.dropna(subset=["exposure"]).groupby(keys + ["exposure"])["exact_match"].mean()
                     .rename("sentence_recall_exact"))
    if not parts:
        extra = [f"tidy_{k}: {len(df)} rows" for k, df in tables.items() if not df.empty]
        return "\n".join(extra) or "no finished tasks"
    return pd.concat(parts, axis=1).round(3).to_string()


def _write_csv_if_changed(path: Path, df: pd.DataFrame) -> None:
    """Atomic CSV write that leaves an identical file untouched (a re-run of a finished sweep, which ends
    with analyze.py, changes no file outside tidy_*, summary.txt and plots/)."""
    text = df.to_csv(index=False)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_text_atomic(path, text)


def cell_status(root: Path) -> tuple[list[Path], list[str], list[str]]:
    """(stale task dirs, lines naming them, lines naming unfinished cells). A cell is stale when its
    settings.json differs from its sweep root's config.yaml (settings added to the configs later count at
    their old values, as for resuming); unfinished when it has no results.json (its finished stages are used)."""
    from omegaconf import OmegaConf

    from memlab.experiments import with_added_settings
    from memlab.rundir import differences

    stale, stale_lines, unfinished = [], [], []
    configs: dict[Path, dict | None] = {}
    for cell_file in sorted(root.rglob("cell.json")):
        task = cell_file.parent
        name = str(task.relative_to(root)) if task != root else task.name
        if not (task / "results.json").exists():
            unfinished.append(name)
        cfg_path = task.parent / "config.yaml"
        if cfg_path not in configs:
            try:
                configs[cfg_path] = OmegaConf.to_container(OmegaConf.load(cfg_path)).get("settings") \
                    if cfg_path.exists() else None
            except Exception:  # an unreadable config.yaml is run_task.py's error to give; no comparison here
                configs[cfg_path] = None
        recorded = configs[cfg_path]
        if not isinstance(recorded, dict) or not (task / "settings.json").exists():
            continue
        try:
            mine = json.loads((task / "settings.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        mine.pop("overrides", None)
        diff = differences(with_added_settings(mine, recorded), recorded)
        if diff:
            stale.append(task)
            stale_lines.append(f"{name} ({'; '.join(diff)})")
    return stale, stale_lines, unfinished


def write_outputs_atomically(root: Path, build) -> list:
    """Run `build(out)` writing every output into a fresh temporary directory beside them, then move the
    files into `root` (and plots/ as a whole), so a failed or killed analyze leaves the previous outputs, never
    a mix; a full disk or a read-only root is one error. Returns build's result."""
    import shutil
    import tempfile

    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".analyze-"))
    except OSError as e:
        raise DataError(f"{root}: cannot write the analysis there ({e.strerror or e})") from None
    try:
        result = build(tmp)
        for f in sorted(tmp.iterdir()):
            if f.is_file():
                old = root / f.name
                if old.exists() and f.read_bytes() == old.read_bytes():
                    continue  # unchanged: left untouched (a finished sweep's re-run changes nothing)
                os.replace(f, old)
        if (tmp / "plots").is_dir():
            if (root / "plots").exists():
                old_plots = root / f".plots-old-{os.getpid()}"
                os.replace(root / "plots", old_plots)
                os.replace(tmp / "plots", root / "plots")
                shutil.rmtree(old_plots, ignore_errors=True)
            else:
                os.replace(tmp / "plots", root / "plots")
        return result
    except OSError as e:
        raise DataError(f"{root}: cannot write the analysis ({e.strerror or e}); the previous outputs are "
                        "unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_leftovers(root: Path) -> None:
    """Temporary directories of an analyze that was killed (.analyze-*, .plots-old-*) are removed."""
    import shutil

    for p in list(root.glob(".analyze-*")) + list(root.glob(".plots-old-*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def main(args: AnalyzeArgs) -> dict:
    cli.collect_errors([(args.runs_root is not None, "RUNS_ROOT is required: python analyze.py runs/expt1")])
    root = Path(args.runs_root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    from memlab.rundir import lock_dir

    lock_dir(root, wait_s=900)  # one analyze per root at a time; array tasks ending together take turns
    clean_leftovers(root)
    stale, stale_lines, unfinished = cell_status(root)
    inputs = Inputs(skip_broken=args.skip_broken, excluded=() if args.include_stale else stale)
    try:
        tables = collect(root, inputs)
        facts = collect_facts(root, inputs)
        tables["canaries"] = collect_canaries(root, inputs)
    except BrokenInput as e:
        raise DataError(f"{e} (pass --skip_broken to leave it out)") from None
    skipped = inputs.report(root)
    for line in skipped:
        print(f"warning: --skip_broken: skipped {line}", file=sys.stderr)
    if all(df.empty for df in [*tables.values(), *facts.values()]):
        raise DataError(f"{root}: no task results found (no cell.json with finished stages below it"
                        + (f"; {len(skipped)} broken file(s) skipped)" if skipped else ")"))
    notes = []
    if stale_lines:
        notes.append(f"{'included' if args.include_stale else 'left out'} {len(stale_lines)} stale cell(s), run with "
                     f"other settings than config.yaml{'' if args.include_stale else ' (--include_stale merges them)'}: "
                     + "; ".join(stale_lines))
    if unfinished:
        notes.append(f"{len(unfinished)} unfinished cell(s) (no results.json; their finished stages are used): "
                     + ", ".join(unfinished))
    for line in notes:
        print(f"note: {line}", file=sys.stderr)

    def build(out: Path) -> dict:
        written = []
        for name, df in tables.items():
            if not df.empty:
                write_csv_atomic(out / f"tidy_{name}.csv", df)
                written.append(f"tidy_{name}.csv")
        for name, df in facts.items():
            if not df.empty:
                _write_csv_if_changed(out / f"{name}.csv", df)
                written.append(f"{name}.csv")
        plots = [p for p in [plot(tables, out / "plots") for plot in
                             (plot_exposures, plot_recognition_by_foil, plot_retention, plot_error_rates, plot_prefix,
                              plot_prior, plot_mia_rank_module, plot_mia_roc, plot_mia_vs_perplexity, plot_dpo)] if p]
        plots += [p for p in [plot(facts, out / "plots") for plot in (plot_learning_ecdf, plot_learning_by_knownness)]
                  if p]
        plots += [p for p in [plot_canaries(tables, out / "plots")] if p]
        table = summary_table(tables)
        learned = learning_summary(facts)
        if learned:
            table = f"{table}\n\n{learned}"
        canaries = canary_summary(tables)
        if canaries:
            table = f"{table}\n\n{canaries}"
        by_foil = foil_summary(tables)
        if by_foil:
            table = f"{table}\n\n{by_foil}"
        # first, so nobody reads the tables without knowing what is missing from them or what they merge
        header = ([f"skipped {len(skipped)} broken input file(s) (--skip_broken): {'; '.join(skipped)}"] if skipped
                  else []) + notes
        if header:
            table = "\n".join(header) + f"\n\n{table}"
        write_text_atomic(out / "summary.txt", table + "\n")
        return {"csv": written, "plots": [str(root / "plots" / Path(p).name) for p in plots], "summary": table}

    result = write_outputs_atomically(root, build)
    print(result["summary"])
    print(f"wrote {', '.join(result['csv'])} and {len(result['plots'])} plot(s) in {root}")
    return result


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-"):
        argv = ["--runs_root", argv[0]] + argv[1:]
    cli.run(main, AnalyzeArgs, argv)
