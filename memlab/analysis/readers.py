"""The strict reads: every file the analysis reads goes through `Inputs`. A cell.json, stage results.json,
items.csv or facts.jsonl that is present but truncated, malformed or of the wrong layout raises
`BrokenInput` (analyze.py: one `error:` line, exit 2), or with `skip_broken` is left out and recorded.
Also `cell_status`: which cells are stale (run under other settings) or unfinished."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from memlab.analysis.stages import HELDOUT_KNOWN_FILE, stage_dir
from memlab.io import DataError
from memlab.rundir import differences


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
        d = task / "train" if name == "train" else stage_dir(task, name)
        if d is None or not (d / "results.json").exists():
            return None
        return self.read(d / "results.json", read_stage_results, name, left_out=f"stage {name}")

    def items(self, task: Path, name: str, dtype: dict | None = _ID_COLS) -> pd.DataFrame | None:
        """A finished stage's items.csv (None: stage not finished, or a broken file skipped). A finished
        stage (results.json present) without items.csv is broken: every evaluation writes items.csv first."""
        if self.stage(task, name) is None:
            return None
        return self.read(stage_dir(task, name) / "items.csv", read_items_csv, dtype,
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


def heldout_known(task: Path, inputs: Inputs) -> list[str]:
    """expt7: the fact ids in TASK/data/heldout_known.json (none when the file is absent)."""
    path = task / "data" / HELDOUT_KNOWN_FILE
    if not path.exists():
        return []
    obj = inputs.read(path, read_json_object, ("fact_ids",), left_out="held-out known facts")
    return [str(f) for f in (obj or {}).get("fact_ids", [])]


# items.csv columns of membership_inference.py that are not attack scores
MIA_ITEM_COLUMNS = {"id", "fact_id", "source_id", "canary", "split", "canary_copies", "checkpoint", "target_nll",
                    "reference_nll", "n_tokens", "zlib_bytes", "exposure", "step"}


def cell_status(root: Path) -> tuple[list[Path], list[str], list[str]]:
    """(stale task dirs, lines naming them, lines naming unfinished cells). A cell is stale when its
    settings.json differs from its sweep root's config.yaml (settings added to the configs later count at
    their old values, as for resuming); unfinished when it has no results.json (its finished stages are used)."""
    # imported here: memlab.experiments loads the whole task machinery, and its experiment modules import this
    # package (their tables, plots, summaries), so an import at the top would be circular
    from memlab.experiments import with_added_settings

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
