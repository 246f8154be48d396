"""Recall and recognition evaluation, one implementation for the scripts and for training.

Its length (~470 lines): kept as one module because its point is that the scripts and the in-training
evaluation run the same functions; split, the two paths could drift apart again.

`generate.py --mode qa` and `test.py` score saved checkpoints with these functions; `train.py --eval_*`
calls the same functions on the model in memory at chosen exposures or steps (`InTrainingEval`), and
writes the same `items.csv` columns and `results.json` records, so a curve evaluated inside training and
one evaluated from checkpoints are interchangeable (tested: identical greedy answers, losses within 1e-4).

QA recall (rows per probe x temperature x repeat): the probe question is asked through the chat template
(or `User: …\\nAssistant: `), the answer extracted by `answers.answer_correct`. Temperature 0 is greedy and
runs once; other temperatures run `repeats` times with seeds drawn from (seed, probe, temperature, repeat).
Summary: error rate per checkpoint x tier x temperature with a probe-level bootstrap CI, plus tier `all`
= every tier except `verbatim` (probes that repeat a training prompt are reported on their own and never
folded into `all`).

Recognition (rows per seen/unseen text): mean token NLL of the whole text; summary per checkpoint: 2AFC
over aligned pairs, ROC AUC of -loss (seen positive), mean losses, each with a pair-bootstrap CI.

Prefix recall (rows per text x prefix x sample; `generate.py --mode prefix`, and `train.py
--eval_prefix_fraction` on the studied sentences): the text's first p tokens prompt the model, which
generates as many tokens as the true continuation has; scored against it (`metrics.recall_metrics`: exact
match, token accuracy, longest common prefix, ROUGE-L, ID recalled). Summary per checkpoint x prefix with
an item-bootstrap CI.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from memlab import answers, metrics
from memlab.generation import (GenRequest, PrefixTask, generate_requests, prefix_tasks, qa_prompt_ids, read_probes,
                               stop_token_ids)
from memlab.io import DataError, read_texts, write_csv_atomic, write_json_atomic, write_jsonl_atomic
from memlab.likelihood import (EncodedItem, checkpoint_position, completion_tokens, encode_items, has_chat_template,
                               render_chat, score_items)

VERBATIM_TIER = "verbatim"  # probes repeating a training prompt: reported separately, never in `all`
RECALL_METRICS = ("exact_match", "token_accuracy", "lcp_tokens", "rouge_l", "rouge1", "rouge2", "rougeLsum",
                  "id_recalled")


# ------------------------------------------------------------------------------------------- QA recall
def answer_items(tok, probes: Sequence[dict], use_template: bool = True) -> list[EncodedItem]:
    """Each probe's QA prompt (as generation sees it: `qa_prompt_ids`) followed by its true answer, the answer's
    tokens scored: prompt and answer are tokenized as one text (`completion_tokens`, as scoring does
    everywhere), so a token that merges across the boundary counts as an answer token."""
    items = []
    for p in probes:
        prompt = render_chat(tok, [{"role": "user", "content": p["question"]}], add_generation_prompt=True,
                             use_template=use_template)
        ids, start = completion_tokens(tok, prompt, str(p["answer"]), add_special_tokens=False)
        items.append(EncodedItem(str(p["id"]), ids, max(start, 1)))
    return items


def qa_rows(tok, model, probes: Sequence[dict], label: str, temperatures: Sequence[float], repeats: int,
            max_new_tokens: int, batch_size: int, seed: int, accelerator=None, use_template: bool = True
            ) -> list[dict]:
    """Answer every probe at every temperature (greedy once; sampled `repeats` times) under one model. Every
    row also carries the probe's teacher-forced answer likelihood under the same model (one scored pass,
    memlab.likelihood.score_items, the machinery of every other score): `answer_nll` = mean NLL of the true
    answer's tokens after the prompt (nats/token), `answer_nll_sum` = their total, `answer_tokens` = how many;
    how close the fact is to being recalled, also when it is not (Chang et al. 2024 log it at every step)."""
    prompts = {p["id"]: qa_prompt_ids(tok, p["question"], use_template) for p in probes}
    nll = {s.id: s for s in score_items(model, answer_items(tok, probes, use_template), tok.pad_token_id,
                                        batch_size, accelerator=accelerator)}
    rows = []
    for temp in temperatures:
        n_rep = 1 if temp == 0 else repeats
        requests = [GenRequest(f"{p['id']}|{temp}|{r}", prompts[p["id"]], max_new_tokens)
                    for p in probes for r in range(n_rep)]
        out = generate_requests(model, requests, tok.pad_token_id, stop_token_ids(tok, model), batch_size,
                                temp, seed, accelerator)
        for p in probes:
            for r in range(n_rep):
                response = tok.decode(out[f"{p['id']}|{temp}|{r}"], skip_special_tokens=True)
                extracted, correct = answers.answer_correct(response, p["answer"])
                rows.append({"id": p["id"], "fact_id": p["fact_id"], "question": p["question"],
                             "response": response, "extracted_answer": extracted, "answer": p["answer"],
                             "correct": int(correct), "error": 1 - int(correct), "tier": p["tier"],
                             "temperature": temp, "repeat": r, "checkpoint": label,
                             "answer_nll": round(nll[str(p["id"])].loss, 6),
                             "answer_nll_sum": round(nll[str(p["id"])].loss * nll[str(p["id"])].n_tokens, 6),
                             "answer_tokens": nll[str(p["id"])].n_tokens})
    return rows


def qa_summary(rows: Sequence[dict], where: dict[str, dict], n_boot: int, seed: int) -> dict:
    """`error_rates` (per checkpoint x tier x temperature, with `all` = every tier but verbatim) and
    `error_rates_by_repeat`; `where[label]` adds path/exposure/step to each record.

    95% CIs resample clusters: a probe (its repeats averaged) within one tier, a fact (its probes of every
    tier averaged) in `all`, where one fact's easy/mid/hard probes are not independent. Probes without tiers
    already carry tier `all` and are counted once."""
    rows = [dict(r, _cluster=r["id"]) for r in rows]
    all_tiers = [dict(r, tier="all", _cluster=r.get("fact_id") or r["id"]) for r in rows
                 if r["tier"] not in (VERBATIM_TIER, "all")]
    by_tier = metrics.grouped_means(rows + all_tiers, ["checkpoint", "tier", "temperature"], ["error"], "_cluster",
                                    n_boot, seed)
    by_repeat = metrics.grouped_means(rows + all_tiers, ["checkpoint", "tier", "temperature", "repeat"],
                                      ["error"], "_cluster", 0, seed)
    for g in by_tier + by_repeat:
        g["error_rate"] = g.pop("error")
        for k in ("_ci_low", "_ci_high"):
            g[f"error_rate{k}"] = g.pop(f"error{k}")
        g.update(where.get(g["checkpoint"], {}))
    return {"error_rates": by_tier, "error_rates_by_repeat": by_repeat}


# --------------------------------------------------------------------------------------- prefix recall
def prefix_rows(tok, model, items: Sequence[dict], tasks: Sequence[PrefixTask], label: str, batch_size: int,
                temperature: float = 0.0, num_samples: int = 1, seed: int = 0, accelerator=None,
                id_pattern: str = metrics.ID_PATTERN) -> list[dict]:
    """Generate and score every (item, prefix, sample) under one model: the continuation is as long as the
    true one (`tasks` from `generation.prefix_tasks`). Rows hold the prompt text, the generated and the true
    continuation."""
    requests = [GenRequest(f"{t.item_id}|{t.prefix}|{s}", t.prompt_ids, len(t.target_ids))
                for t in tasks for s in range(num_samples)]
    out = generate_requests(model, requests, tok.pad_token_id, stop_token_ids(tok, model), batch_size,
                            temperature, seed, accelerator)
    by_id = {str(it["id"]): it for it in items}
    rows = []
    for t in tasks:
        closing = metrics.closing_identifier(by_id[t.item_id]["text"], id_pattern)
        true_text = tok.decode(t.target_ids, skip_special_tokens=True)
        prompt_text = tok.decode(t.prompt_ids, skip_special_tokens=True)
        for s in range(num_samples):
            gen = out[f"{t.item_id}|{t.prefix}|{s}"]
            gen_text = tok.decode(gen, skip_special_tokens=True)  # the new tokens only
            m = metrics.recall_metrics(gen, t.target_ids, gen_text, true_text,
                                       closing if closing and closing in true_text else None)
            rows.append({"id": t.item_id, "fact_id": by_id[t.item_id].get("fact_id", t.item_id),
                         "checkpoint": label, "prefix": t.prefix, "prefix_tokens": t.prefix_tokens,
                         "sample": s, "target_tokens": len(t.target_ids), "suffix_tokens": t.suffix_tokens,
                         "generated_tokens": len(gen), **m, "prompt": prompt_text, "generated": gen_text,
                         "true_continuation": true_text})
    return rows


def prefix_summary(rows: Sequence[dict], where: dict[str, dict], skipped: dict[str, int], n_boot: int, seed: int,
                   values: Sequence[str] = RECALL_METRICS) -> dict:
    """`by_prefix`: per checkpoint x prefix, the mean of each metric in `values` with an item-bootstrap 95%
    CI, `exact_match_any` (1 for an item when any of its samples matched exactly; = exact_match when greedy),
    n_skipped (items too short for the prefix) and n_id_docs (items with an ID to recall); `where[label]`
    adds path/exposure/step. `rows` gain a helper column `_any`."""
    best: dict = {}
    for r in rows:
        k = (r["checkpoint"], r["prefix"], r["id"])
        best[k] = max(best.get(k, 0.0), r["exact_match"])
    for r in rows:
        r["_any"] = best[(r["checkpoint"], r["prefix"], r["id"])]
    groups = metrics.grouped_means(rows, ["checkpoint", "prefix"], list(values) + ["_any"], "id", n_boot, seed)
    for g in groups:
        for k in ("", "_ci_low", "_ci_high"):
            g[f"exact_match_any{k}"] = g.pop(f"_any{k}")
        g["n_skipped"] = skipped[g["prefix"]]
        g.update(where[g["checkpoint"]])
        g["n_id_docs"] = len({(r["id"]) for r in rows if r["id_recalled"] is not None
                              and (r["checkpoint"], r["prefix"]) == (g["checkpoint"], g["prefix"])})
    return {"by_prefix": groups}


# ----------------------------------------------------------------------------------------- recognition
def load_pairs(seen_file, unseen_file, text_column: str | None = None) -> tuple[list[dict], list[dict], int]:
    """(seen rows, unseen rows, n_pairs): the first n_pairs rows of each list are aligned pair by pair.

    With a `pair_id` on every row, rows pair by it and a pair_id present in only one file is kept
    unpaired (scored, in the AUC and mean losses, not in 2AFC); otherwise rows pair by order and the files
    must have equal lengths."""
    seen = read_texts(seen_file, text_column)
    unseen = read_texts(unseen_file, text_column)
    if not all("pair_id" in r for r in seen + unseen):
        if len(seen) != len(unseen):
            raise DataError(f"pairing by row order needs equal lengths: --seen_file has {len(seen)} rows, "
                            f"--unseen_file has {len(unseen)} (or give every row a pair_id)")
        for i, (s, u) in enumerate(zip(seen, unseen)):
            s["pair_id"] = u["pair_id"] = str(i)
        return seen, unseen, len(seen)
    index = {}
    for name, rows, path in (("seen", seen, seen_file), ("unseen", unseen, unseen_file)):
        index[name] = {}
        for r in rows:
            r["pair_id"] = str(r["pair_id"])
            if r["pair_id"] in index[name]:
                raise DataError(f"{path}:{r['_line']}: pair_id '{r['pair_id']}' appears twice")
            index[name][r["pair_id"]] = r
    paired = [k for k in index["seen"] if k in index["unseen"]]
    if not paired:
        raise DataError("no pair_id is shared by --seen_file and --unseen_file")
    seen = [index["seen"][k] for k in paired] + [r for k, r in index["seen"].items() if k not in index["unseen"]]
    unseen = [index["unseen"][k] for k in paired] + [r for k, r in index["unseen"].items() if k not in index["seen"]]
    return seen, unseen, len(paired)


def recognition_items(tok, seen: Sequence[dict], unseen: Sequence[dict], block_size: int | None = None):
    """(rows, encoded items): seen rows first, then unseen; ids may repeat across the two files, so each
    text is scored under a split-qualified key. `block_size`: only each text's first tokens are scored, as
    training truncated it (test.py --block_size)."""
    import dataclasses

    rows = [dict(r, split="seen") for r in seen] + [dict(r, split="unseen") for r in unseen]
    enc = encode_items(tok, [{"id": f"{r['split']}:{r['id']}", "text": r["text"]} for r in rows])
    if block_size:
        enc = [dataclasses.replace(e, input_ids=e.input_ids[:block_size]) for e in enc]
    return rows, enc


def recognition_rows(rows: Sequence[dict], scores, label: str, reference=None) -> list[dict]:
    """items.csv rows of one checkpoint: id, pair_id, split, loss, n_tokens, checkpoint[, loss_delta][, foil_type].
    `foil_type` (make_data.py recognition's unseen rows) is passed through when some unseen row has one, on the
    seen and the unseen row of its pair alike (empty for a pair without one)."""
    foil = {r["pair_id"]: r["foil_type"] for r in rows if r["split"] == "unseen" and r.get("foil_type")}
    out = []
    for j, (r, s) in enumerate(zip(rows, scores)):
        row = {"id": r["id"], "pair_id": r["pair_id"], "split": r["split"], "loss": s.loss,
               "n_tokens": s.n_tokens, "checkpoint": label}
        if reference is not None:
            row["loss_delta"] = s.loss - reference[j].loss
        if foil:
            row["foil_type"] = foil.get(r["pair_id"], "")
        out.append(row)
    return out


def recognition_summary(loss_seen: np.ndarray, loss_unseen: np.ndarray, n_pairs: int, n_boot: int, seed: int
                        ) -> dict:
    """2AFC over the n_pairs aligned pairs; AUC of -loss (seen positive) and mean losses over all items.
    Bootstrap CIs resample pairs; AUC and means resample seen and unseen separately when some are unpaired."""
    def auc(a, b):
        return metrics.roc_auc(-np.r_[a, b], np.r_[np.ones(len(a)), np.zeros(len(b))])

    paired = len(loss_seen) == len(loss_unseen) == n_pairs
    stats = {"two_afc": (metrics.two_afc_accuracy, loss_seen[:n_pairs], loss_unseen[:n_pairs], True),
             "auc": (auc, loss_seen, loss_unseen, paired),
             "loss_seen": (lambda a, b: float(np.mean(a)), loss_seen, loss_unseen, paired),
             "loss_unseen": (lambda a, b: float(np.mean(b)), loss_seen, loss_unseen, paired)}
    out = {}
    for name, (fn, a, b, pair) in stats.items():
        r = metrics.with_ci(fn, a, b, n_boot=n_boot, seed=seed, paired=pair)
        out.update({name: r["value"], f"{name}_ci_low": r["ci_low"], f"{name}_ci_high": r["ci_high"]})
    return out


def recognition_record(label: str, path, item_rows: Sequence[dict], n_seen: int, n_pairs: int, n_boot: int,
                       seed: int) -> dict:
    """results.json `checkpoints` record of one checkpoint from its items.csv rows (seen rows first)."""
    loss = np.array([r["loss"] for r in item_rows])
    rec = {"checkpoint": label, "path": str(path), **checkpoint_position(label),
           **recognition_summary(loss[:n_seen], loss[n_seen:], n_pairs, n_boot, seed)}
    if item_rows and "loss_delta" in item_rows[0]:
        delta = np.array([r["loss_delta"] for r in item_rows])
        rec.update(loss_delta_seen=float(delta[:n_seen].mean()), loss_delta_unseen=float(delta[n_seen:].mean()))
    return rec


# -------------------------------------------------------------------------------- evaluation in training
def eval_label(exposure: int | None = None, step: int | None = None) -> str:
    """Checkpoint label of an in-training evaluation point, named as train.py names checkpoints."""
    return f"exposure_{exposure}" if exposure is not None else f"step_{step:07d}"


class InTrainingEval:
    """Evaluates the model being trained, in place, at chosen points (train.py --eval_*).

    Each point's rows go to `OUTPUT_DIR/eval/parts/<label>.{recall,recognition,prefix}.jsonl` plus a small
    `<label>.json` (seconds taken), written atomically as soon as the point is done, so a resumed run never
    evaluates a point twice and a killed run loses at most the point in progress. `finalize()` writes the
    ordinary run directories `eval/recall/` (generate.py --mode qa layout), `eval/recognition/` (test.py
    layout) and, with `prefix_fraction`, `eval/prefix_recall/` (generate.py --mode prefix layout: greedy
    completion of each seen text from its first `prefix_fraction` of tokens, Orhan's recall of the studied
    sentences): items.csv + results.json each. Parts made under another configuration are discarded
    (eval/fingerprint.json).

    The model is evaluated unwrapped (no DDP hooks), in eval mode, under no_grad, and the RNG state is
    saved and restored around it, so training with evaluation takes exactly the same steps as without.
    With several processes, items are sharded and gathered once (memlab.likelihood.distributed_map); only the
    main process writes.
    """

    def __init__(self, out: Path, tok, acc, *, probes: list[dict] | None, pairs: tuple | None,
                 temperatures: Sequence[float], repeats: int, max_new_tokens: int, batch_size: int, seed: int,
                 bootstrap: int, fingerprint: dict, fresh: bool, prefix_fraction: float | None = None):
        self.dir = Path(out) / "eval"
        self.parts = self.dir / "parts"
        self.tok, self.acc, self.probes = tok, acc, probes
        self.temperatures, self.repeats, self.max_new_tokens = list(temperatures), repeats, max_new_tokens
        self.batch_size, self.seed, self.bootstrap = batch_size, seed, bootstrap
        self.use_template = has_chat_template(tok)
        self.rec_rows = self.rec_enc = None
        self.n_seen = self.n_pairs = 0
        if pairs is not None:
            seen, unseen, self.n_pairs = pairs
            self.n_seen = len(seen)
            self.rec_rows, self.rec_enc = recognition_items(tok, seen, unseen)
        self.prefix_fraction = prefix_fraction
        self.prefix_items = self.prefix_tasks = None
        if prefix_fraction is not None and pairs is not None:
            self.prefix_items = [{"id": str(r["id"]), "text": r["text"]} for r in pairs[0]]
            self.prefix_tasks, self.prefix_skipped = prefix_tasks(self.prefix_items, tok, (), prefix_fraction, 0,
                                                                  "--eval_seen_file")
        self.eval_s_this_run = 0.0
        if acc.is_main_process:
            fp_file = self.dir / "fingerprint.json"
            stale = fresh or not fp_file.exists() or json.loads(fp_file.read_text()) != fingerprint
            if stale:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.parts.mkdir(parents=True, exist_ok=True)
            write_json_atomic(fp_file, fingerprint)
        acc.wait_for_everyone()

    def done(self, label: str) -> bool:
        return (self.parts / f"{label}.json").exists()

    def __call__(self, model, label: str) -> dict:
        """Evaluate `model` (the training model, possibly DDP-wrapped) at the point `label`; returns a few
        headline numbers for trackers (greedy recall per tier, recognition 2AFC); {} when already done."""
        if self.done(label):
            return {}
        from memlab.training import rng_state, set_rng_state

        t0 = time.time()
        inner = self.acc.unwrap_model(model)
        was_training = inner.training
        rng = rng_state()
        inner.eval()
        try:
            with torch.no_grad():
                recall = [] if self.probes is None else qa_rows(
                    self.tok, inner, self.probes, label, self.temperatures, self.repeats, self.max_new_tokens,
                    self.batch_size, self.seed, self.acc, self.use_template)
                recog = [] if self.rec_enc is None else recognition_rows(
                    self.rec_rows, score_items(inner, self.rec_enc, self.tok.pad_token_id, self.batch_size,
                                               "left", accelerator=self.acc), label)
                prefix = [] if self.prefix_tasks is None else prefix_rows(
                    self.tok, inner, self.prefix_items, self.prefix_tasks, label, self.batch_size, seed=self.seed,
                    accelerator=self.acc)
        finally:
            inner.train(was_training)
            set_rng_state(rng)
        seconds = time.time() - t0
        self.eval_s_this_run += seconds
        if self.acc.is_main_process:
            if self.probes is not None:
                write_jsonl_atomic(self.parts / f"{label}.recall.jsonl", recall)
            if self.rec_enc is not None:
                write_jsonl_atomic(self.parts / f"{label}.recognition.jsonl", recog)
            if self.prefix_tasks is not None:
                write_jsonl_atomic(self.parts / f"{label}.prefix.jsonl", prefix)
            write_json_atomic(self.parts / f"{label}.json", {"label": label, "eval_s": round(seconds, 3)})
        self.acc.wait_for_everyone()
        return point_headlines(recall, recog, prefix)

    def finalize(self, labels: Sequence[str]) -> dict:
        """Write eval/recall/ and eval/recognition/ (main process) and return the summary for results.json."""
        def read(label, kind):
            p = self.parts / f"{label}.{kind}.jsonl"
            return [json.loads(x) for x in p.read_text(encoding="utf-8").split("\n") if x.strip()]

        missing = [lab for lab in labels if not self.done(lab)]
        if missing:
            raise RuntimeError(f"in-training evaluation missing for {missing}")
        eval_s = sum(json.loads((self.parts / f"{lab}.json").read_text())["eval_s"] for lab in labels)
        summary: dict = {"points": list(labels), "eval_s": round(eval_s, 2),
                         "eval_s_this_invocation": round(self.eval_s_this_run, 2)}
        where = {lab: {"path": "in-training", **checkpoint_position(lab)} for lab in labels}
        if self.probes is not None:
            rows = [r for lab in labels for r in read(lab, "recall")]
            res = {"script": "train.py (in-training evaluation)", "mode": "qa",
                   "num_processes": self.acc.num_processes, **qa_summary(rows, where, self.bootstrap, self.seed),
                   "temperature_0_runs_once": True}
            if self.acc.is_main_process:
                write_csv_atomic(self.dir / "recall" / "items.csv", rows)
                write_json_atomic(self.dir / "recall" / "results.json", res)
            summary["recall"] = res
        if self.rec_enc is not None:
            rows = {lab: read(lab, "recognition") for lab in labels}
            per_ckpt = [recognition_record(lab, "in-training", rows[lab], self.n_seen, self.n_pairs,
                                           self.bootstrap, self.seed) for lab in labels]
            res = {"script": "train.py (in-training evaluation)", "num_processes": self.acc.num_processes,
                   "n_pairs": self.n_pairs, "n_seen": self.n_seen, "n_unseen": len(self.rec_rows) - self.n_seen,
                   "reference_model": None, "checkpoints": per_ckpt}
            if self.acc.is_main_process:
                write_csv_atomic(self.dir / "recognition" / "items.csv", [r for lab in labels for r in rows[lab]])
                write_json_atomic(self.dir / "recognition" / "results.json", res)
            summary["recognition"] = res
        if self.prefix_tasks is not None:
            rows = [r for lab in labels for r in read(lab, "prefix")]
            res = {"script": "train.py (in-training evaluation)", "mode": "prefix",
                   "num_processes": self.acc.num_processes, "texts": "--eval_seen_file",
                   "prefix_fraction": self.prefix_fraction, "temperature": 0.0,
                   **prefix_summary(rows, where, self.prefix_skipped, self.bootstrap, self.seed)}
            if self.acc.is_main_process:
                write_csv_atomic(self.dir / "prefix_recall" / "items.csv", rows)
                write_json_atomic(self.dir / "prefix_recall" / "results.json", res)
            summary["prefix_recall"] = res
        return summary


def point_headlines(recall: Sequence[dict], recog: Sequence[dict], prefix: Sequence[dict] = ()) -> dict:
    """Greedy recall per tier (`all` = every tier but verbatim), recognition 2AFC and prefix recall (exact
    match) of the studied sentences at one eval point."""
    out = {}
    if prefix:
        out["sentence_recall_exact"] = float(np.mean([r["exact_match"] for r in prefix]))
    greedy = [r for r in recall if r["temperature"] == 0]
    for tier in sorted({r["tier"] for r in greedy} | {"all"}):
        xs = [r["correct"] for r in greedy if (r["tier"] == tier if tier != "all" else r["tier"] != VERBATIM_TIER)]
        if xs:
            out[f"recall_{tier}"] = float(np.mean(xs))
    seen = {r["pair_id"]: r["loss"] for r in recog if r["split"] == "seen"}
    unseen = {r["pair_id"]: r["loss"] for r in recog if r["split"] == "unseen"}
    pairs = [k for k in seen if k in unseen]
    if pairs:
        out["recognition_2afc"] = float(np.mean([seen[k] < unseen[k] for k in pairs]))
    return out


LEAKAGE_MODES = ("refuse", "warn")  # test.py / train.py --leakage
LEAKAGE_HINT = ("pass --leakage warn (leakage=warn in an experiment) to go on with the overlap reported in "
                "leakage.json")


def check_seen_unseen_disjoint(seen, unseen, seen_file, unseen_file, leakage: str = "refuse",
                               n_pairs: int | None = None) -> tuple[list, list, int, dict]:
    """The leakage check (exact and normalized text match, as membership_inference.py runs on members vs
    non-members) between seen and unseen texts: a text in both has no true label. Returns (seen, unseen,
    n_pairs, report). `leakage="refuse"` (the default): any overlap is an error listing the pairs, naming the
    setting that goes on. `"warn"`: the pairs with an overlapping text (or overlapping unpaired rows) are
    dropped, counted in the report (`n_pairs_dropped`, `dropped_pair_ids`) and said in one line; when every
    pair overlaps (seen == unseen) it is still an error."""
    from memlab.datagen.leakage import check_leakage, format_report

    n_pairs = min(len(seen), len(unseen)) if n_pairs is None else n_pairs
    report = check_leakage({str(seen_file): [{"id": r["id"], "text": r["text"]} for r in seen]},
                           {str(unseen_file): [{"id": r["id"], "text": r["text"]} for r in unseen]})
    if report["passed"]:
        return list(seen), list(unseen), n_pairs, report
    bad_seen, bad_unseen = set(report["overlapping_ids"]["train"]), set(report["overlapping_ids"]["held_out"])
    keep = [i for i in range(n_pairs) if str(seen[i]["id"]) not in bad_seen and str(unseen[i]["id"]) not in bad_unseen]
    dropped = [str(seen[i].get("pair_id", i)) for i in range(n_pairs) if i not in set(keep)]
    total = "every pair" if n_pairs and not keep else f"{len(dropped)} of {n_pairs} pair(s)"
    if leakage != "warn" or (n_pairs and not keep):
        hint = ("seen and unseen are the same texts: recognition cannot be measured" if n_pairs and not keep
                else LEAKAGE_HINT + " and the overlapping pairs dropped")
        raise DataError(f"--seen_file and --unseen_file share texts in {total} (a text in both has no true label; "
                        f"{hint}); " + format_report(report))
    new_seen = [seen[i] for i in keep] + [r for r in seen[n_pairs:] if str(r["id"]) not in bad_seen]
    new_unseen = [unseen[i] for i in keep] + [r for r in unseen[n_pairs:] if str(r["id"]) not in bad_unseen]
    report.update({"leakage": "warn", "n_pairs": n_pairs, "n_pairs_dropped": len(dropped),
                   "dropped_pair_ids": dropped,
                   "n_unpaired_dropped": (len(seen) + len(unseen) - 2 * n_pairs)
                   - (len(new_seen) + len(new_unseen) - 2 * len(keep))})
    print(f"warning: --seen_file and --unseen_file share texts in {len(dropped)} of {n_pairs} pair(s): those "
          f"pairs are dropped (--leakage warn; ids in leakage.json)", file=sys.stderr)
    return new_seen, new_unseen, len(keep), report


def read_eval_inputs(probes_file: str | None, seen_file: str | None, unseen_file: str | None,
                     text_column: str | None = None, leakage: str = "refuse") -> tuple[list[dict] | None, tuple | None]:
    """Probes and recognition pairs for in-training evaluation, read (and checked) before training starts.
    Duplicate ids within a file, probes without a matchable answer and unpaired files are errors."""
    probes = read_probes(probes_file, flags_hint="to make_data.py convert --to probes and give --eval_probes_file "
                         "the probes.jsonl it writes") if probes_file else None
    pairs = load_pairs(seen_file, unseen_file, text_column) if seen_file else None
    if pairs:
        pairs = check_seen_unseen_disjoint(pairs[0], pairs[1], seen_file, unseen_file, leakage, pairs[2])[:3]
    return probes, pairs
