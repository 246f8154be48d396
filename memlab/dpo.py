"""Direct preference optimisation: the loss, sequence log-probs, preference pairs and the frozen reference.

Why our own DPO and not TRL's `DPOTrainer`: TRL 1.16.0 installs beside our pins (`pip install --dry-run`
adds only trl) and imports offline on CPU, but fitting it to memlab would cost more than the code below:
- the reference must be the frozen SFT model. TRL reloads `ref_model=None` from the config path, and with
  PEFT takes "adapters off" (the pre-SFT base) unless it detects an existing adapter; we want that choice
  explicit, recorded in config.json and tested (`Reference`);
- the log-probs must be those SFT trained: the same chat rendering and assistant-token masks as train.py
  (`memlab.training.tokenize_item`), not TRL's own prompt/completion processing;
- the run directory (metrics.jsonl fields, checkpoints/epoch_{k}/, results.json) is memlab's, not
  `Trainer`'s, and `requirements.txt` stays free of a new pinned dependency.

Decisions worth knowing:
- A pair (x, y_w, y_l) becomes two chat items [user: x, assistant: y]; log π(y|x) is the sum of the log-probs
  of the assistant tokens (content plus the end-of-turn token), the tokens train.py's SFT loss covers.
- Chosen and rejected sequences of a batch go through the model in one forward pass (2B rows, chosen first).
- IPO uses the same summed log-ratios as DPO (as in the DPO authors' code), not TRL's length-normalised ones;
  our completions are short answers of similar length.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from memlab import training
from memlab.io import DataError, ensure_ids, read_records, text_field_error
from memlab.likelihood import labelled_token_logps
from memlab.text import normalize_text

LOSS_TYPES = ("sigmoid", "ipo")
PAIR_FIELDS = ("prompt", "chosen", "rejected")


# ------------------------------------------------------------------------------------------------- loss
def preference_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
                    loss_type: str = "sigmoid") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO (sigmoid) or IPO loss and the implicit rewards.

    All inputs are (B,) sequence log-probs log π(y|x) (sums over completion tokens). With
        h = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))
    sigmoid (DPO, Rafailov et al. 2023):  L = −log σ(β·h)
    ipo     (Azar et al. 2023):           L = (h − 1/(2β))²
    Returns (losses, chosen_rewards, rejected_rewards), each (B,), with rewards r = β·(log π − log π_ref)
    detached (they are for logging: reward margin r_w − r_l = β·h, reward accuracy 1[r_w > r_l]).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps        # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def reward_stats(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """Batch means: reward margin β·h, reward accuracy (share of pairs with r_w > r_l), the rewards."""
    return {"reward_margin": float((chosen_rewards - rejected_rewards).mean()),
            "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
            "chosen_reward": float(chosen_rewards.mean()), "rejected_reward": float(rejected_rewards.mean())}


def pair_summary(logps: torch.Tensor) -> dict[str, float]:
    """logps (N, 2) = [log π(y_w|x), log π(y_l|x)] per pair -> their means, the mean log-prob margin
    log π(y_w|x) − log π(y_l|x), and pair accuracy (share of pairs with a positive margin)."""
    diff = logps[:, 0] - logps[:, 1]
    return {"chosen_logp": round(float(logps[:, 0].mean()), 4), "rejected_logp": round(float(logps[:, 1].mean()), 4),
            "logp_margin": round(float(diff.mean()), 4), "pair_accuracy": round(float((diff > 0).float().mean()), 4)}


# -------------------------------------------------------------------------------------------- log-probs
def sequence_logps(model, batch: dict, sparse_logits: bool = True) -> torch.Tensor:
    """(N,) sum over labelled tokens of log p(token | prefix), for a right-padded batch from `collate`
    (`memlab.likelihood.labelled_token_logps`: logits only where a label is)."""
    token_lp, rows, _ = labelled_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                             sparse=sparse_logits)
    return torch.zeros(batch["labels"].shape[0], device=token_lp.device).index_add(0, rows, token_lp)


# ------------------------------------------------------------------------------------------------ pairs
def check_pairs(rows: list[dict], path) -> list[dict]:
    """Validate pairs {id, fact_id, prompt, chosen, rejected}: every problem named by file:line, one error."""
    problems = []
    for r in rows:
        where = f"{path}:{r.get('_line', '?')}"
        # absent, null or blank: missing; a number, list or object: text_field_error's "must be a string"
        missing = [f for f in PAIR_FIELDS if r.get(f) is None or (isinstance(r[f], str) and not r[f].strip())]
        not_text = [f for f in PAIR_FIELDS if r.get(f) is not None and not isinstance(r[f], str)]
        if missing:
            problems.append(f"{where}: missing field(s) {', '.join(repr(f) for f in missing)} "
                            "(pairs need non-empty string prompt, chosen, rejected)")
        problems += [str(text_field_error(r, f, path)) for f in not_text]
        if not missing and not not_text and r["chosen"].strip() == r["rejected"].strip():
            problems.append(f"{where}: chosen equals rejected ({r['chosen']!r}); the pair teaches nothing")
    if problems:
        more = f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{len(problems)} bad DPO pair(s):\n  " + "\n  ".join(problems[:10]) + more)
    ensure_ids(rows, path)
    for r in rows:
        r["fact_id"] = str(r.get("fact_id") or r["id"])
    return rows


def load_pairs(path) -> list[dict]:
    """DPO pairs from JSONL (docs/DESIGN.md §3.7, TRL's field names); a missing fact_id defaults to the id."""
    return check_pairs(read_records(path), path)


def pairs_from_generate(items_csv, facts_path=None, checkpoint: str | None = None,
                        rejected_field: str = "response") -> tuple[list[dict], dict]:
    """On-policy pairs from a `generate.py --mode qa` items.csv: each wrong answer becomes `rejected`
    (its `response`, or `extracted_answer` with rejected_field), the true answer `chosen`, the probe
    question `prompt`. Correct rows, empty answers and repeats of the same wrong answer are skipped.

    The true answer comes from `facts_path` (facts.jsonl or probes, joined on fact_id) when given, else
    from the csv's `answer` column. Returns (pairs, counts of what was kept and skipped).
    """
    rows = read_records(items_csv)
    need = ["id", "fact_id", "question", "correct", rejected_field] + ([] if facts_path else ["answer"])
    lacking = [c for c in need if c not in rows[0]]
    if lacking:
        raise DataError(f"{items_csv}: not a generate.py --mode qa items.csv: lacks column(s) {lacking}; "
                        f"columns are {[k for k in rows[0] if not k.startswith('_')]}")
    labels = sorted({str(r.get("checkpoint", "")) for r in rows})
    if checkpoint is None and len(labels) > 1:
        raise DataError(f"{items_csv}: holds answers of several checkpoints {labels}; pick one with "
                        "--generate_checkpoint")
    if checkpoint is not None:
        rows = [r for r in rows if str(r.get("checkpoint", "")) == checkpoint]
        if not rows:
            raise DataError(f"{items_csv}: no rows of checkpoint '{checkpoint}'; it holds {labels}")
    truth: dict[str, str] = {}
    if facts_path:
        for f in read_records(facts_path):
            fid, ans = str(f.get("fact_id") or f.get("id") or ""), str(f.get("answer") or "").strip()
            if not fid or not ans:
                raise DataError(f"{facts_path}:{f['_line']}: missing field 'fact_id' or 'answer'")
            truth.setdefault(fid, ans)
    counts = {"rows": len(rows), "correct": 0, "empty_answer": 0, "duplicate": 0, "equals_truth": 0}
    pairs, seen, per_probe = [], set(), {}
    for r in rows:
        where = f"{items_csv}:{r['_line']}"
        fid = str(r["fact_id"])
        if facts_path and fid not in truth:
            raise DataError(f"{where}: fact_id '{fid}' is not in {facts_path}")
        answer = truth[fid] if facts_path else str(r["answer"]).strip()
        if facts_path and str(r.get("answer") or "").strip() not in ("", answer):
            raise DataError(f"{where}: answer {r['answer']!r} differs from {facts_path}'s {answer!r} for "
                            f"fact '{fid}'; wrong facts file?")
        try:
            correct = int(float(r["correct"]))
        except ValueError:
            raise DataError(f"{where}: column 'correct' must be 0 or 1, got {r['correct']!r}") from None
        rejected = str(r[rejected_field] or "").strip()
        key = (str(r["id"]), normalize_text(rejected))
        skip = ("correct" if correct else "empty_answer" if not rejected else
                "equals_truth" if normalize_text(rejected) == normalize_text(answer) else
                "duplicate" if key in seen else None)
        if skip:
            counts[skip] += 1
            continue
        seen.add(key)
        per_probe[key[0]] = per_probe.get(key[0], -1) + 1
        pairs.append({"id": f"{r['id']}-onpolicy{per_probe[key[0]]}", "fact_id": fid,
                      "prompt": str(r["question"]), "chosen": answer, "rejected": rejected, "_line": r["_line"]})
    if not pairs:
        raise DataError(f"{items_csv}: no wrong answers to learn from ({counts})")
    counts["pairs"] = len(pairs)
    return check_pairs(pairs, items_csv), counts


def tokenize_pair(pair: dict, tokenizer, block_size: int) -> dict:
    """Chosen and rejected as chat items [user: prompt, assistant: answer], labels on the assistant turn."""
    out = {"id": pair["id"]}
    for side in ("chosen", "rejected"):
        item = {"id": pair["id"], "messages": [{"role": "user", "content": pair["prompt"]},
                                               {"role": "assistant", "content": pair[side]}]}
        ex = training.tokenize_item(item, "chat", tokenizer, "completion", block_size)
        if all(l == training.IGNORE_INDEX for l in ex["labels"]):
            raise DataError(f"pair '{pair['id']}': the {side} answer lies beyond --block_size {block_size} tokens")
        out[side] = ex
    return out


def collate_pairs(examples: Sequence[dict], pad_id: int) -> dict:
    """One right-padded batch of 2B sequences: rows 0..B-1 chosen, rows B..2B-1 rejected."""
    return training.collate([e["chosen"] for e in examples] + [e["rejected"] for e in examples], pad_id)


# -------------------------------------------------------------------------------------------- reference


@dataclass
class Reference:
    """The frozen SFT model π_ref, however it is held:

    - `separate_copy`: full SFT checkpoint, full DPO: a second copy loaded from the checkpoint, frozen.
    - `policy_before_update`: the same with --precompute_reference: the policy itself, before its first
      update, holds the SFT weights, so no second copy is loaded.
    - `adapters_disabled`: full SFT checkpoint + a new LoRA: the policy with its adapter switched off is
      exactly the SFT model (its base weights are frozen).
    - `frozen_adapter_copy`: LoRA SFT checkpoint: the policy continues the adapter 'default'; the same SFT
      adapter is loaded a second time as 'reference' (frozen) and switched in for reference passes. Adapters
      off would give the pre-SFT base, which is not the reference.
    """
    mechanism: str
    model: object  # the reference model (separate_copy) or the policy's unwrapped PeftModel
    path: str
    base_path: str | None = None
    info: dict = field(default_factory=dict)

    def named_parameters(self):
        """The parameters that define π_ref (for checking they never change)."""
        named = list(self.model.named_parameters())
        if self.mechanism in ("separate_copy", "policy_before_update"):
            return named
        if self.mechanism == "adapters_disabled":
            return [(n, p) for n, p in named if "lora_" not in n]
        return [(n, p) for n, p in named if "lora_" not in n or ".reference." in n]

    def digest(self) -> str:
        return training.param_digest(self.named_parameters())

    @contextlib.contextmanager
    def active(self):
        """Yield a module that computes π_ref (eval mode; the policy's mode and adapter are restored)."""
        m = self.model
        was_training = m.training
        m.eval()
        try:
            if self.mechanism in ("separate_copy", "policy_before_update"):
                yield m
            elif self.mechanism == "adapters_disabled":
                with m.disable_adapter():
                    yield m
            else:
                m.set_adapter("reference", inference_mode=True)
                try:
                    yield m
                finally:
                    m.set_adapter("default")  # trainable again; 'reference' stays frozen
        finally:
            m.train(was_training)

    @torch.no_grad()
    def logps(self, batch: dict, sparse_logits: bool = True) -> torch.Tensor:
        with self.active() as m:
            return sequence_logps(m, batch, sparse_logits)

    def free(self) -> None:
        """Drop what only the reference needs (after precomputing its log-probs)."""
        if self.mechanism == "frozen_adapter_copy" and "reference" in self.model.peft_config:
            self.model.delete_adapter("reference")
        self.model = None

    def describe(self) -> dict:
        return {"kind": "frozen_sft", "path": self.path, "mechanism": self.mechanism,
                **({"base_path": self.base_path} if self.base_path else {}), **self.info}


def build_policy_and_reference(sft_checkpoint: str, lora: dict | None, trust_remote_code: bool = False,
                               load_reference_copy: bool = True, load: dict | None = None, rt: dict | None = None):
    """(policy, Reference) from an SFT checkpoint (full model dir or LoRA adapter dir).

    lora: None for full fine-tuning of a full checkpoint, else {r, alpha, dropout, target_modules} for a new
    LoRA on it; an adapter checkpoint is always continued (lora ignored). `load_reference_copy=False`
    (reference log-probs precomputed from the policy before any update) skips loading a second full copy.
    `load`: load_model settings (attention kernel, k-bit quantization; memlab.runtime.load_kwargs); a
    quantized base gets peft's k-bit preparation (`rt`) before a new LoRA wraps it.
    """
    from memlab import runtime

    load = load or {}
    from memlab.models import is_adapter_dir, load_model, resolve_model_path

    path = Path(sft_checkpoint)
    if not path.is_dir():
        raise DataError(f"--sft_checkpoint {sft_checkpoint}: checkpoint not found (expected a model dir or "
                        "a LoRA adapter dir, e.g. runs/sft/checkpoints/exposure_10)")
    path = resolve_model_path(str(path)).resolve()
    if is_adapter_dir(path):
        from peft import PeftConfig

        policy, _ = load_model(str(path), trust_remote_code=trust_remote_code, is_trainable=True, **load)
        policy.load_adapter(str(path), adapter_name="reference", is_trainable=False)
        policy.set_adapter("default")
        return policy, Reference("frozen_adapter_copy", policy, str(path),
                                 PeftConfig.from_pretrained(str(path)).base_model_name_or_path)
    policy, _ = load_model(str(path), trust_remote_code=trust_remote_code, **load)
    if lora:
        if rt is not None:
            policy = runtime.prepare_kbit(policy, rt, gradient_checkpointing=False)
        from peft import LoraConfig, get_peft_model

        targets = training.resolve_lora_targets(policy, lora["target_modules"])
        policy = get_peft_model(policy, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=targets,
                                                   lora_dropout=lora["dropout"], task_type="CAUSAL_LM"))
        policy.peft_config["default"].base_model_name_or_path = str(path)  # the SFT model is the base
        return policy, Reference("adapters_disabled", policy, str(path))
    if not load_reference_copy:
        return policy, Reference("policy_before_update", policy, str(path))
    ref, _ = load_model(str(path), trust_remote_code=trust_remote_code, **load)
    ref.requires_grad_(False)
    return policy, Reference("separate_copy", ref.eval(), str(path))
