"""Pieces of supervised fine-tuning that train.py (and finetune_dpo.py) share: reading and tokenizing
items with loss masks, length-grouped batches, checkpoint schedules, LoRA target resolution and
checkpoint save/restore.

Its length (~570 lines): one module because every piece shares the item/mask format and the checkpoint
layout; splitting data, schedule and checkpoint code would put one format in three places.

Decisions worth knowing:
- One item per sequence, never concatenated across items (a fact must stay one training example).
- Plain text and prompt/completion items get the tokenizer's eos appended, so the model learns to stop.
- Chat items are rendered with the tokenizer's chat template; the assistant span (content plus the
  end-of-turn token) is found by rendering the conversation prefix with `add_generation_prompt=True`
  and mapping character offsets to tokens, so it works for any template whose prefixes render as
  prefixes of the whole conversation (checked, with a clear error otherwise).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from memlab.io import (DataError, ensure_ids, read_records, require_fields, resolve_text_column, validate_messages,
                       write_json_atomic)
from memlab.likelihood import IGNORE_INDEX, labelled_token_logps
# A plain template for tokenizers without one (`--chat_template plain`), as docs/DESIGN.md §3.2 describes;
# defined once in memlab.text, next to the Python renderer scoring uses for template-less tokenizers.
from memlab.text import PLAIN_CHAT_TEMPLATE



# ----------------------------------------------------------------------------------------------- items
def load_items(path, text_column: str | None = None, across: dict | None = None) -> tuple[list[dict], str]:
    """Rows of a training file and its kind: 'chat' (messages), 'prompt_completion' or 'plain'.

    The rules are memlab.io's, shared with make_data.py convert: chat rows by `validate_messages` (an
    assistant turn, every content a non-empty string); prompt, completion and text fields by
    `text_field_error` (a string, not a number; an empty prompt is allowed, an empty completion is not).
    `across`: the ids of the files read before this one (`ensure_ids`), for several --train_file files."""
    rows = read_records(path)
    ensure_ids(rows, path, across=across)
    first = rows[0]
    if "messages" in first:
        kind = "chat"
        for r in rows:
            require_fields([r], ["messages"], path)
            validate_messages(r["messages"], f"{path}:{r['_line']}")
    elif "prompt" in first and "completion" in first:
        kind = "prompt_completion"
        for r in rows:
            prompt = r.get("prompt")
            if not (isinstance(prompt, str) and not prompt.strip()):  # an empty prompt is allowed
                require_fields([r], ["prompt"], path, text=True)
            require_fields([r], ["completion"], path, text=True)
    else:
        kind = "plain"
        col = resolve_text_column(rows, path, text_column)
        require_fields(rows, [col], path, text=True)
        for r in rows:
            r["text"] = r[col]
    return rows, kind


def ensure_chat_template(tokenizer, chat_template: str | None, path) -> None:
    """Set the template from `--chat_template` ('plain', a .jinja file or a literal); fail if none."""
    if chat_template:
        if chat_template == "plain":
            tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
        elif Path(chat_template).is_file():
            tokenizer.chat_template = Path(chat_template).read_text()
        else:
            tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{path}: chat data, but the tokenizer has no chat template; pass "
                        "--chat_template plain (User:/Assistant: lines) or --chat_template FILE.jinja")


def _render(tokenizer, messages, add_generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def tokenize_item(item: dict, kind: str, tokenizer, loss_on: str, block_size: int) -> dict:
    """input_ids and labels (IGNORE_INDEX where no loss) for one item, truncated at `block_size`.

    loss_on='completion': loss on assistant turns (chat) or the completion (prompt/completion).
    loss_on='all': loss on every token.
    """
    if kind == "plain":
        text = item["text"] + tokenizer.eos_token
        spans = [(0, len(text))]
    elif kind == "prompt_completion":
        text = item["prompt"] + item["completion"] + tokenizer.eos_token
        spans = [(len(item["prompt"]), len(text))]
    else:
        msgs = item["messages"]
        text = _render(tokenizer, msgs)
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            head = _render(tokenizer, msgs[:i], add_generation_prompt=True)
            upto = _render(tokenizer, msgs[: i + 1])
            if not text.startswith(head) or not text.startswith(upto):
                raise DataError(f"item {item['id']}: the chat template does not render prefixes of a "
                                "conversation as prefixes; cannot locate assistant tokens")
            spans.append((len(head), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if loss_on == "all":
        labels = list(ids)
    else:
        # a token is learned when it reaches into a span: a prompt's trailing space merges into the
        # completion's first token, which must still carry loss (likelihood.completion_tokens scores alike)
        labels = [t if b > a and any(a < e and b > s for s, e in spans) else IGNORE_INDEX
                  for t, (a, b) in zip(ids, offsets)]
    truncated = len(ids) > block_size
    return {"id": item["id"], "input_ids": ids[:block_size], "labels": labels[:block_size],
            "truncated": truncated}


# --------------------------------------------------------------------------------------------- batching
def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           shuffle: bool = True, mega: int = 50) -> list[list[int]]:
    """Index batches for one epoch: shuffle with (seed, epoch), sort within mega-batches of
    `mega * batch_size` items by length so batches hold similar lengths (little padding), then shuffle
    the batch order. `shuffle=False` keeps file order (no grouping)."""
    idx = list(range(len(lengths)))
    if not shuffle:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = random.Random(seed * 100_003 + epoch)
    rng.shuffle(idx)
    span = batch_size * mega
    batches = []
    for i in range(0, len(idx), span):
        chunk = sorted(idx[i:i + span], key=lambda j: -lengths[j])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[dict], pad_id: int) -> dict:
    """Right-pad a batch; padding gets attention 0 and label IGNORE_INDEX."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def causal_lm_loss(model, batch: dict, sparse_logits: bool = True) -> tuple[torch.Tensor, int]:
    """Mean next-token NLL over labelled tokens, and their count: the same value as HF's `outputs.loss`
    (checked in tests), from `memlab.likelihood.labelled_token_logps` (logits only where a label is)."""
    token_lp, _, _ = labelled_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                          sparse=sparse_logits)
    return -token_lp.mean(), int(token_lp.numel())


# ------------------------------------------------------------------------------------------- schedules
def log_steps(total: int) -> list[int]:
    """1,2,…,10,20,…,100,200,…,1000,… up to `total` (log-spaced checkpoints for retention curves)."""
    out, scale = [], 1
    while scale <= total:
        out += [k * scale for k in range(1, 10) if k * scale <= total]
        scale *= 10
    return sorted(set(out))


# ------------------------------------------------------------------------------------------------ LoRA
def steps_spec_check(spec: str, name: str) -> tuple[bool, str]:
    """validate() entry for a step list flag: positive integers, 'log' or 'every:N'."""
    from memlab.cli import parse_list

    spec = str(spec).strip()
    if spec.startswith("every:"):
        n = spec[len("every:"):]
        return n.isdigit() and int(n) > 0, f"--{name} every:N needs a positive integer N, got {spec!r}"
    return (spec in ("", "log") or all(s > 0 for s in parse_list(spec, int, name)),
            f"--{name} must be positive integers, 'log' or 'every:N'")


def steps_from_spec(spec: str, total: int, name: str) -> set[int]:
    """The optimizer steps named by a `--save_steps` / `--eval_steps` value ('log', 'every:N' or '10,100')
    within a run of `total` steps."""
    from memlab.cli import parse_list

    spec = str(spec).strip()
    if spec.startswith("every:"):
        return set(range(int(spec[len("every:"):]), total + 1, int(spec[len("every:"):])))
    if spec == "log":
        return set(log_steps(total))
    return {s for s in parse_list(spec, int, name) if s <= total}


def linear_module_names(model) -> list[str]:
    """Full names of the matmul layers LoRA can target (nn.Linear and GPT-2's Conv1D), minus lm_head."""
    from transformers.pytorch_utils import Conv1D

    return [n for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, Conv1D)) and not n.endswith("lm_head")]


def resolve_lora_targets(model, spec: str) -> list[str] | str:
    """Module-name suffixes for peft from names (`q_proj,v_proj`), shorthands (`q,k,v,o`) or aliases:
    `attn` (attention projections), `mlp` (feed-forward), `all-linear` (both; never lm_head).
    Aliases work by position in the module tree, so they resolve for Llama (`self_attn.q_proj`, …)
    and GPT-2 (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`) alike."""
    names = linear_module_names(model)
    suffixes = sorted({".".join(n.split(".")[-2:]) for n in names})
    leaves = sorted({n.split(".")[-1] for n in names})
    chosen: list[str] = []
    for token in [t.strip() for t in spec.split(",") if t.strip()]:
        if token in ("attn", "mlp", "all-linear"):
            keys = {"attn": ("attn", "attention"), "mlp": ("mlp", "feed_forward", "ffn"),
                    "all-linear": ("",)}[token]
            hits = [s for s in suffixes if any(k in s.split(".")[0] for k in keys)]
        else:
            leaf = token + "_proj" if token in ("q", "k", "v", "o") and token + "_proj" in leaves else token
            hits = [s for s in suffixes if s == leaf or s.endswith("." + leaf)]
        if not hits:
            raise DataError(f"--lora_target_modules: '{token}' matches no linear layer of this model; "
                            f"its linear layers are {leaves} (aliases: attn, mlp, all-linear)")
        chosen += hits
    return sorted(set(chosen))


# ------------------------------------------------------------------------------------------ checkpoints
TRAINING_KEYS_EXEMPT = {"resume", "output_dir", "logging_steps", "debug_signal_at_step", "config", "report_to",
                        "run_name"}


def config_fingerprint(args_dict: dict) -> dict:
    """The arguments that must match for `--resume` to continue the same run."""
    return {k: v for k, v in args_dict.items() if k not in TRAINING_KEYS_EXEMPT}


def rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def newest_checkpoint(run_dir) -> Path | None:
    """The checkpoint with the highest step among checkpoints/* and resume/ (signal saves)."""
    run_dir = Path(run_dir)
    cands = [p for p in list((run_dir / "checkpoints").glob("*")) + [run_dir / "resume"]
             if (p / "trainer_state" / "state.json").exists()]
    if not cands:
        return None

    def key(p):
        st = json.loads((p / "trainer_state" / "state.json").read_text())
        return st["step"], st.get("has_optimizer", False)
    return max(cands, key=key)


def param_digest(model) -> str:
    """sha256 over (name, values) pairs in name order, for checking that DDP ranks hold identical weights
    (train.py) and that DPO's frozen reference never changes (memlab.dpo.Reference).

    `model` is a module (all its `named_parameters()`) or an iterable of (name, tensor) pairs."""
    named = model.named_parameters() if hasattr(model, "named_parameters") else model
    h = hashlib.sha256()
    for name, p in sorted(named, key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written directory into place (a killed save leaves the previous one intact)."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class TrainState:
    step: int = 0            # optimizer steps taken
    epoch: int = 0           # exposures completed
    batch_in_epoch: int = 0  # global batches of the current epoch already consumed
    tokens_seen: int = 0     # real (non-padding) tokens, all processes

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def _tensor_bytes(tensors) -> int:
    """Bytes of distinct tensors (tied weights, which share storage, count once)."""
    seen, total = set(), 0
    for t in tensors:
        if torch.is_tensor(t) and t.device.type != "meta":
            key = (str(t.device), t.data_ptr(), t.numel(), t.dtype) if t.numel() else id(t)
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def checkpoint_bytes(model, state_dict: dict | None = None, optimizer=None, merge: bool = False,
                     with_optimizer: bool = False) -> tuple[int, int]:
    """(weights, optimizer state) bytes a checkpoint of `model` writes, from the tensors in memory.

    Weights: the state dict (a LoRA model: its trainable parameters, the adapter, plus the base once more
    with `merge`). Optimizer state (`with_optimizer`): the tensors `optimizer.state` holds (AdamW: 2 x the
    trainable parameters), or, before its first step or with no optimizer passed (DeepSpeed keeps its
    state partitioned), that 2 x fp32 estimate.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if _is_peft(model):
        weights = _tensor_bytes(trainable)
        if merge:
            weights += _tensor_bytes(p for p in model.parameters() if not p.requires_grad)
    else:
        weights = _tensor_bytes(state_dict.values() if state_dict else model.parameters())
    if not with_optimizer:
        return weights, 0
    state = getattr(optimizer, "state", None) if optimizer is not None else None
    held = _tensor_bytes(t for st in state.values() for t in st.values()) if isinstance(state, dict) else 0
    return weights, held or 2 * 4 * sum(p.numel() for p in trainable)


_OUT_OF_SPACE = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}
_OUT_OF_SPACE_TEXT = {"No space left on device": errno.ENOSPC, "os error 28": errno.ENOSPC,
                      "Disk quota exceeded": errno.EDQUOT, "os error 122": errno.EDQUOT}


def _out_of_space(exc: BaseException, free_bytes: int) -> str | None:
    """'disk full' / 'disk quota exceeded' when `exc` (or an exception it chains) says so: OSError's errno,
    safetensors' "No space left on device (os error 28)". torch.save only says "file write failed" or
    "unexpected pos", so any failure with under 1 MB left on the file system counts as disk full too."""
    e = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in _OUT_OF_SPACE:
            return _OUT_OF_SPACE[e.errno]
        for text, code in _OUT_OF_SPACE_TEXT.items():
            if text in str(e):
                return _OUT_OF_SPACE[code]
        e = e.__cause__ or e.__context__
    return "disk full" if 0 <= free_bytes < 2 ** 20 else None


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n < 10e6 else f"{n / 1e6:.0f}"


@contextlib.contextmanager
def checkpoint_write_guard(tmp: Path, path: Path, weights_bytes: int, optimizer_bytes: int = 0):
    """Around writing checkpoint `path` through the temporary directory `tmp`: on any failure `tmp` is
    removed (no half-written checkpoint is left); running out of disk space becomes one DataError
    naming the checkpoint, the size being written and the space left, instead of a serializer traceback.
    """
    try:
        yield
    except Exception as e:
        free_before = _free_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        kind = _out_of_space(e, free_before)
        if kind is None:
            raise
        what = "the size of the weights being written" if not optimizer_bytes else \
            f"the weights ({_mb(weights_bytes)} MB) and optimizer state ({_mb(optimizer_bytes)} MB) being written"
        raise DataError(f"{kind} while saving checkpoint {path} (needed about "
                        f"{_mb(weights_bytes + optimizer_bytes)} MB: {what}; {_mb(max(_free_bytes(tmp), 0))} MB "
                        f"free on {_mount_point(tmp.parent)})") from e


def save_checkpoint(acc, model, tokenizer, optimizer, scheduler, state: TrainState, fingerprint: dict,
                    path: Path, with_optimizer: bool, merge: bool, keep_optimizer_state: str,
                    run_dir: Path) -> None:
    """Write model (or LoRA adapter only) + tokenizer + trainer_state/ (optimizer, scheduler, per-rank
    RNG, counters, config) into a temp dir, then swap it into `path`. Collective: call on all ranks.
    Running out of disk space removes the temp dir and raises DataError (`checkpoint_write_guard`).

    With keep_optimizer_state='last', older checkpoints of the run lose their optimizer state (for full
    fine-tuning it is twice the model's size); resuming only ever needs the newest.
    """
    import copy

    deepspeed = acc.state.deepspeed_plugin is not None
    acc.wait_for_everyone()
    state_dict = acc.get_state_dict(model)  # collective under ZeRO-3
    tmp = path.with_name(f".{path.name}.tmp")
    unwrapped = acc.unwrap_model(model)
    weights_bytes, optimizer_bytes = checkpoint_bytes(unwrapped, state_dict, None if deepspeed else optimizer,
                                                      merge and _is_peft(unwrapped), with_optimizer)
    with checkpoint_write_guard(tmp, path, weights_bytes, optimizer_bytes):
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "trainer_state").mkdir(parents=True)
            unwrapped.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            if merge and _is_peft(unwrapped):
                merged = copy.deepcopy(unwrapped).merge_and_unload()
                merged.save_pretrained(tmp / "merged")
                tokenizer.save_pretrained(tmp / "merged")
            if with_optimizer and not deepspeed:
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                           tmp / "trainer_state" / "optimizer.pt")
            if with_optimizer and deepspeed:
                torch.save(scheduler.state_dict(), tmp / "trainer_state" / "scheduler.pt")
        acc.wait_for_everyone()
        if with_optimizer and deepspeed:
            acc.save_state(str(tmp / "trainer_state" / "deepspeed"))
        torch.save(rng_state(), tmp / "trainer_state" / f"rng_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_json_atomic(tmp / "trainer_state" / "state.json",
                              {**state.to_json(), "config": fingerprint, "has_optimizer": with_optimizer})
            replace_dir(tmp, path)
    if acc.is_main_process:
        if with_optimizer and keep_optimizer_state == "last":
            for other in list((run_dir / "checkpoints").glob("*")) + [run_dir / "resume"]:
                st_path = other / "trainer_state" / "state.json"
                if other == path or not st_path.exists():
                    continue
                (other / "trainer_state" / "optimizer.pt").unlink(missing_ok=True)
                shutil.rmtree(other / "trainer_state" / "deepspeed", ignore_errors=True)
                st = json.loads(st_path.read_text())
                write_json_atomic(st_path, {**st, "has_optimizer": False})
    acc.wait_for_everyone()


def load_checkpoint_weights(model, ckpt: Path) -> None:
    """Load a checkpoint's weights into a freshly built model of the same kind (full or LoRA)."""
    from safetensors.torch import load_file

    from memlab.models import check_model_dir

    check_model_dir(ckpt, "checkpoint", weights_required=True)  # a damaged one: a clear error, not a traceback

    if _is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))
        return
    sd = {}
    for f in sorted(ckpt.glob("model*.safetensors")):
        sd.update(load_file(f))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if unexpected or set(missing) - tied:
        raise DataError(f"{ckpt}: checkpoint does not fit the model (missing {sorted(set(missing) - tied)[:5]}, "
                        f"unexpected {unexpected[:5]})")
    model.tie_weights()


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions in right-padded batches (0 = no waste)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / padded if padded else 0.0


def summarize_run(out: Path, examples, lengths, a, world: int, steps_per_epoch: int, wall_s: float,
                  state: TrainState, final: Path, digests: list[str]) -> dict:
    """results.json of a training run: mean training loss per exposure (from metrics.jsonl), tokens,
    truncation and padding figures, checkpoints written and a per-rank parameter digest."""
    from memlab.rundir import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    loss_per_exposure = {}
    for k in range(1, a.num_exposures + 1):
        ls = [r["loss"] for r in rows if r.get("epoch") == k]
        if ls:
            loss_per_exposure[str(k)] = round(sum(ls) / len(ls), 6)
    batches = length_grouped_batches(lengths, a.batch_size, a.seed, 0, shuffle=not a.no_shuffle)
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*") if p.is_dir() and not p.name.startswith("."))
    return {
        "loss_per_exposure": loss_per_exposure,
        "final_loss": loss_per_exposure.get(str(a.num_exposures)),
        "num_exposures": a.num_exposures,
        "steps": state.step,
        "steps_per_exposure": steps_per_epoch,
        "tokens_seen": state.tokens_seen,
        "wall_time_s": round(wall_s, 2),
        "n_items": len(examples),
        "n_truncated": sum(e["truncated"] for e in examples),
        "padding_fraction": round(padding_fraction(lengths, batches), 4),
        "num_processes": world,
        "checkpoints": ckpts,
        "final_checkpoint": str(final),
        "param_digests": digests,
        "ranks_identical": len(set(digests)) == 1,
    }


# --------------------------------------------------------------------------------------------- trainer setup
# shared by train.py and finetune_dpo.py, so the two scripts differ only in what really differs
def make_accelerator(precision: str, report_to: str, output_dir, grad_accum: int = 1):
    """The Accelerator of a training script: mixed precision from --precision (fp32 -> "no", bf16/fp16 as
    given), `grad_accum` micro-batches per optimizer step, accelerate's trackers per --report_to (see
    memlab.tracking), and the gloo backend when a distributed run has no GPU (DeepSpeed otherwise miscounts
    the world when each process sees no CUDA device)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from memlab import tracking

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if distributed and not torch.cuda.is_available() else []
    return Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision), kwargs_handlers=handlers,
                       gradient_accumulation_steps=grad_accum, **tracking.accelerator_kwargs(report_to, output_dir))


def adamw_with_groups(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model`: `weight_decay` on those with 2 or more dimensions
    (weight matrices, embeddings), none on biases and norm weights; groups in that order."""
    trainable = [p for _, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}], lr=lr)


def make_scheduler(name: str, optimizer, warmup: int, total: int):
    """Learning-rate schedule --lr_scheduler `name` (constant, linear or cosine) after `warmup` steps of linear
    warm-up, over `total` optimizer steps ("constant" is transformers' constant_with_warmup). The caller steps
    it by hand once per optimizer step (accelerate's prepared wrapper would step it world-size times)."""
    from transformers import get_scheduler

    return get_scheduler({"constant": "constant_with_warmup"}.get(name, name), optimizer,
                         num_warmup_steps=warmup, num_training_steps=total)


def padded_epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, window: int,
                         shuffle: bool = True) -> list[list[int]]:
    """The micro-batches of one epoch (length_grouped_batches), padded to a whole number of windows of
    `window` micro-batches (processes x gradient-accumulation steps, i.e. one optimizer step) by recycling
    the epoch's first batches; so every optimizer step gets a full window on every process."""
    b = length_grouped_batches(lengths, batch_size, seed, epoch, shuffle=shuffle)
    return b + b[: (-len(b)) % window]
