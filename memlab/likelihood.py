"""Exact, batched, per-item scoring of texts under causal LMs, for many checkpoints in one call.

Its length (~620 lines): one module because the batching, masking and per-checkpoint loading are one
exactness argument (equal to batch size 1 within 1e-4); split, the invariant would have no single owner.

Per item: mean token NLL over the scored tokens (nats/token), their count, and on request each scored
token's log-prob and the mean/variance of log p under the model's predictive distribution at that position
(for min-k%++). Equal to scoring the item alone (batch size 1) within 1e-4: batches are length-sorted,
padding is masked, and position ids are explicit, so the result does not depend on the padding side.

Items (dicts with an "id"):
- plain text `{"text"}`: every token but the first is scored (the first has no context; no BOS is
  prepended, matching HF `outputs.loss` with labels = input_ids);
- prompt/completion `{"prompt", "completion"}`: only completion tokens are scored; the two parts are
  tokenized separately and concatenated, so no prompt token is ever scored;
- chat `{"messages"}` (or prompt/completion with chat=True): rendered with the tokenizer's chat template
  (plain `User: …\\nAssistant: …` when it has none); the last assistant turn as rendered (content plus
  end-of-turn) is scored.

Multi-process (accelerate, e.g. torchrun): items are sharded across processes, scored, gathered as
objects and de-duplicated by id, so uneven shards never produce duplicates.

Checkpoints: `expand_checkpoints` turns globs/lists into directories; `ModelPool` loads each base model
once and swaps LoRA adapters on it (peft load_adapter / set_adapter / delete_adapter).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import hashlib
import inspect
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from memlab.io import DataError
from memlab.models import (adapter_base_dir, is_adapter_dir, is_quantized, load_model, load_tokenizer, model_in_run,
                           resolve_model_path)
from memlab.text import render_plain_chat


# ----------------------------------------------------------------------------------------------- items
@dataclass
class EncodedItem:
    """Token ids of one item; targets input_ids[score_start:] are scored (score_start >= 1)."""
    id: str
    input_ids: list[int]
    score_start: int

    @property
    def n_scored(self) -> int:
        return len(self.input_ids) - self.score_start


@dataclass
class ItemScore:
    """Scores of one item. loss: mean NLL over the n_tokens scored tokens (nats/token).
    token_logprobs[j] = log p(x_t | x_<t) for the j-th scored token; token_mu[j] = sum_v p_v log p_v and
    token_var[j] = sum_v p_v (log p_v)^2 - mu^2 at the same position (None unless requested)."""
    id: str
    loss: float
    n_tokens: int
    token_logprobs: list[float] | None = None
    token_mu: list[float] | None = None
    token_var: list[float] | None = None


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False,
                use_template: bool = True) -> str:
    """A conversation as text: the tokenizer's chat template, or `User: …\\nAssistant: …` without one
    (or with use_template=False)."""
    if use_template and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return render_plain_chat(messages, tokenizer.eos_token, add_generation_prompt)


def _chat_split(tokenizer, messages: Sequence[dict], item_id: str, use_template: bool) -> tuple[str, str]:
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError(f"item '{item_id}': chat messages must end with an assistant turn to score")
    prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True, use_template=use_template)
    full = render_chat(tokenizer, messages, use_template=use_template)
    if not full.startswith(prompt):
        raise DataError(f"item '{item_id}': the chat template does not render the conversation prefix as a "
                        "prefix of the whole conversation; cannot isolate the assistant turn")
    return prompt, full[len(prompt):]


def encode_item(tokenizer, item: dict, chat: bool = False, use_template: bool = True) -> EncodedItem:
    """Tokenize one item (see module docstring for the three kinds). chat=True renders a
    prompt/completion item as a user/assistant exchange."""
    item_id = str(item["id"])
    if item.get("messages") is not None:
        prompt, completion = _chat_split(tokenizer, item["messages"], item_id, use_template)
        special = False  # rendered chat text carries its own special tokens
    elif item.get("prompt") is not None or item.get("completion") is not None:
        if not item.get("completion"):
            raise DataError(f"item '{item_id}': empty completion, nothing to score")
        if chat:
            msgs = [{"role": "user", "content": item.get("prompt") or ""},
                    {"role": "assistant", "content": item["completion"]}]
            prompt, completion = _chat_split(tokenizer, msgs, item_id, use_template)
            special = False
        else:
            prompt, completion, special = item.get("prompt") or "", item["completion"], True
    else:
        ids = tokenizer(item["text"]).input_ids
        if len(ids) < 2:
            raise DataError(f"item '{item_id}': text has {len(ids)} token(s); need at least 2 to score "
                            "(the first token has no context)")
        return EncodedItem(item_id, ids, 1)
    ids, start = completion_tokens(tokenizer, prompt, completion, special)
    if start >= len(ids):
        raise DataError(f"item '{item_id}': completion tokenizes to nothing")
    if start == 0:  # nothing to condition the first completion token on: it stays unscored
        if len(ids) < 2:
            raise DataError(f"item '{item_id}': completion too short to score without a prompt")
        start = 1
    return EncodedItem(item_id, ids, start)


def completion_tokens(tokenizer, prompt: str, completion: str, add_special_tokens: bool) -> tuple[list[int], int]:
    """(token ids of prompt + completion tokenized as one text, index of the first completion token).

    The text is tokenized whole, as training tokenizes it (memlab.training.tokenize_item) and as the model
    reads it, so a prompt ending in a space ("Q: ... ") scores the same tokens training learned: the
    space merges into the completion's first token, which counts as a completion token because it reaches
    into the completion (its end offset lies past the prompt)."""
    enc = tokenizer(prompt + completion, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start = next((i for i, (a, b) in enumerate(offsets) if b > len(prompt) and b > a), len(ids))
    return list(ids), start


def encode_items(tokenizer, items: Sequence[dict], chat: bool = False, use_template: bool = True
                 ) -> list[EncodedItem]:
    return [encode_item(tokenizer, it, chat=chat, use_template=use_template) for it in items]


# --------------------------------------------------------------------------------------------- batching
def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (an out-of-memory shows at once)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, padding_side: str = "left", device=None):
    """(input_ids, attention_mask, position_ids, offsets): each [B, T]; offsets[i] is where row i's
    first real token sits. position_ids count real tokens only, so left and right padding agree."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    T = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), T), dtype=torch.long)
    offsets = []
    for i, s in enumerate(seqs):
        off = T - len(s) if padding_side == "left" else 0
        input_ids[i, off:off + len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, off:off + len(s)] = 1
        offsets.append(off)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    if device is not None:
        input_ids, attention_mask, position_ids = (t.to(device) for t in (input_ids, attention_mask, position_ids))
    return input_ids, attention_mask, position_ids, offsets


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` at all (an int or 1-D indices)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


IGNORE_INDEX = -100  # label of a token that carries no loss (the Hugging Face convention)
_KEEP_MASK_OK: dict[str, bool] = {}  # model class -> whether its forward takes a 2-D boolean logits_to_keep


def labelled_logits(model, input_ids, attention_mask, labels, position_ids=None, sparse: bool = True):
    """The logits that predict each labelled token: (logits (n, V), targets (n,), rows (n,)).

    The one place where memlab turns a batch with labels into next-token logits; training's loss
    (`memlab.training.causal_lm_loss`), DPO's sequence log-probs (`memlab.dpo.sequence_logps`) and per-item
    scoring (`score_batch`) all call it. Position t predicts token t+1; a token labelled IGNORE_INDEX is not
    scored. The n labelled tokens come in row-major order and `rows` gives each one's batch row.

    With `sparse`, only the positions that predict a labelled token go through the LM head (transformers'
    2-D boolean `logits_to_keep`): the vocabulary projection dominates a small model's cost (49k-way for
    SmolLM2), so prompt and padding positions cost nothing there. Capability is detected once per model
    class: a model without `logits_to_keep`, or a transformers release that takes only an int or 1-D
    indices (5.17 raised "too many indices for tensor of dimension 3"), gets full logits instead; the values
    are the same either way (tests compare both).
    """
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][keep[:, :-1]]
    rows = keep.nonzero()[:, 0]
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    kind = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__
    if sparse and _KEEP_MASK_OK.get(kind, True) and accepts_logits_to_keep(model):
        try:
            logits = model(**inputs, logits_to_keep=keep).logits
            logits = logits.reshape(-1, logits.shape[-1])
            if logits.shape[0] != targets.numel():
                raise IndexError(f"logits_to_keep gave {logits.shape[0]} rows for {targets.numel()} labelled tokens")
            _KEEP_MASK_OK[kind] = True
            return logits, targets, rows
        except torch.OutOfMemoryError:
            raise
        except (IndexError, TypeError, RuntimeError):
            if _KEEP_MASK_OK.get(kind):
                raise  # the boolean form worked before for this class: a real error
            _KEEP_MASK_OK[kind] = False
    logits = model(**inputs).logits[keep]
    return logits, targets, rows


def labelled_token_logps(model, input_ids, attention_mask, labels, position_ids=None, sparse: bool = True,
                         full: bool = False):
    """log p(token | prefix) of each labelled token, (n,), with `rows` (n,) and, with `full`, the (n, V)
    log-softmax rows the values were gathered from (for the predictive mean/variance of min-k%++)."""
    logits, targets, rows = labelled_logits(model, input_ids, attention_mask, labels, position_ids, sparse)
    lp = torch.log_softmax(logits.float(), dim=-1)
    token_lp = lp.gather(-1, targets[:, None])[:, 0]
    return token_lp, rows, (lp if full else None)


@torch.no_grad()
def score_batch(model, batch: Sequence[EncodedItem], pad_id: int, padding_side: str = "left",
                token_logprobs: bool = False, distribution_stats: bool = False) -> list[ItemScore]:
    """Score one padded batch in one forward pass (`labelled_token_logps`: only the positions that predict
    a scored token go through the LM head, so padding and prompt positions cost no vocabulary projection)."""
    device = next(model.parameters()).device
    ids, mask, pos, offsets = pad_batch([it.input_ids for it in batch], pad_id, padding_side, device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, (off, it) in enumerate(zip(offsets, batch)):
        labels[i, off + it.score_start:off + len(it.input_ids)] = ids[i, off + it.score_start:off + len(it.input_ids)]
    tok_lp, _, lp = labelled_token_logps(model, ids, mask, labels, position_ids=pos, full=distribution_stats)
    out, start = [], 0
    for it in batch:  # row-major: item i's scored tokens are contiguous
        n = len(it.input_ids) - it.score_start
        item_lp = tok_lp[start:start + n]
        score = ItemScore(it.id, float(-item_lp.mean()), it.n_scored)
        if token_logprobs:
            score.token_logprobs = item_lp.tolist()
        if distribution_stats:
            rows_lp = lp[start:start + n]
            p = rows_lp.exp()
            plp = torch.where(p > 0, p * rows_lp, torch.zeros_like(rows_lp))  # 0 * log 0 = 0
            mu = plp.sum(-1)
            second = torch.where(p > 0, plp * rows_lp, torch.zeros_like(rows_lp)).sum(-1)
            score.token_mu = mu.tolist()
            score.token_var = (second - mu * mu).clamp(min=0).tolist()
        out.append(score)
        start += n
    return out


def max_positions(model) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def score_items(model, items: Sequence[EncodedItem], pad_id: int, batch_size: int = 16,
                padding_side: str = "left", token_logprobs: bool = False, distribution_stats: bool = False,
                accelerator=None, progress: Callable[[int], None] | None = None) -> list[ItemScore]:
    """Scores of `items` in input order; with a multi-process `accelerator`, sharded and gathered."""
    limit = max_positions(model)
    too_long = [it.id for it in items if limit and len(it.input_ids) > limit]
    if too_long:
        raise DataError(f"{len(too_long)} item(s) are longer than the model's {limit} positions, e.g. "
                        f"'{too_long[0]}'")
    model.eval()

    def run(shard: list[EncodedItem]) -> list[ItemScore]:
        scores = []
        for idx in length_sorted_batches([len(it.input_ids) for it in shard], batch_size):
            scores += score_batch(model, [shard[i] for i in idx], pad_id, padding_side, token_logprobs,
                                  distribution_stats)
            if progress:
                progress(len(idx))
        return scores

    return distributed_map(run, list(items), key=lambda it: it.id, result_key=lambda s: s.id,
                           weight=lambda it: len(it.input_ids), accelerator=accelerator)


# ----------------------------------------------------------------------------------------- multi-process
def distributed_map(fn: Callable[[list], list], items: list, key: Callable, result_key: Callable,
                    weight: Callable | None = None, accelerator=None) -> list:
    """fn(items) -> results, run on this process's shard and gathered from all processes.

    Items are dealt round-robin in order of decreasing `weight`, so shards get similar work. Results
    are gathered as Python objects (not tensors, so no padding duplicates from uneven shards), de-duplicated
    by `result_key`, and returned in the order of `items`; every process gets the full list.
    """
    counts = Counter(key(it) for it in items)
    if len(counts) != len(items):
        dup, n = counts.most_common(1)[0]
        raise DataError(f"item ids must be unique; '{dup}' appears {n} times")
    if accelerator is None or accelerator.num_processes <= 1:
        results = fn(items)
    else:
        from accelerate.utils import gather_object

        order = sorted(range(len(items)), key=lambda i: -(weight(items[i]) if weight else 0))
        shard = [items[i] for i in order[accelerator.process_index::accelerator.num_processes]]
        results = gather_object(fn(shard))
    by_key = {}
    for r in results:
        by_key.setdefault(result_key(r), r)
    missing = [key(it) for it in items if key(it) not in by_key]
    if missing:
        raise RuntimeError(f"{len(missing)} item(s) came back from no process, e.g. {missing[:3]}")
    return [by_key[key(it)] for it in items]


# ------------------------------------------------------------------------------------------ checkpoints
def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


class ExtendAction(argparse.Action):
    """argparse action for list flags: values accumulate over repeated flags (`--checkpoints a b
    --checkpoints c`) and replace, rather than extend, a default from `--config`."""

    def __call__(self, parser, namespace, values, option_string=None):
        marker = f"_{self.dest}_given"
        current = list(getattr(namespace, self.dest) or []) if getattr(namespace, marker, False) else []
        setattr(namespace, self.dest, current + list(values))
        setattr(namespace, marker, True)


def checkpoints_field(help_text: str = ""):
    """Dataclass field for `--checkpoints`: globs, comma-separated lists, several values, repeated flags."""
    return field(default=None, metadata={"help": help_text or (
        "checkpoint directories to score, e.g. run/checkpoints/exposure_* (globs, comma-separated lists, "
        "several values and repeated flags all work); when not given: the --model_name_or_path model itself"),
        "action": ExtendAction})


def expand_checkpoints(specs: str | Sequence[str] | None) -> list[Path]:
    """Directories named by `specs`: comma-separated and/or several entries, each a path or a glob
    (globs expand in natural order, so exposure_2 precedes exposure_10; dot-directories are skipped).
    Duplicates are dropped; each must hold a model or an adapter."""
    if not specs:
        return []
    if isinstance(specs, (str, Path)):
        specs = [str(specs)]
    out: list[Path] = []
    for spec in specs:
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            if glob.has_magic(part):
                matches = sorted((Path(m) for m in glob.glob(part) if Path(m).is_dir()), key=_natural_key)
                if not matches:
                    raise DataError(f"--checkpoints: '{part}' matches no directory")
                out += matches
            else:
                part, note = model_in_run(part, "checkpoints")
                if note:
                    print(f"note: {note}", file=sys.stderr)
                p = Path(part).expanduser()
                if not p.exists():
                    raise DataError(f"--checkpoints: {p}: no such directory")
                out.append(p)
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    for p in unique:
        check_checkpoint_dir(p)
    return unique


def check_checkpoint_dir(path: Path) -> str:
    """'adapter' or 'model'; DataError when the directory holds neither."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"checkpoint {path}: not a directory")
    from memlab.models import check_model_dir

    check_model_dir(path, "checkpoint")  # damaged config/weights: one error before anything loads
    if (path / "adapter_config.json").exists():
        if not any(path.glob("adapter_model.*")):
            raise DataError(f"checkpoint {path}: adapter_config.json but no adapter_model.safetensors/.bin")
        return "adapter"
    if (path / "config.json").exists():
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise DataError(f"checkpoint {path}: config.json but no weights (*.safetensors or *.bin)")
        return "model"
    raise DataError(f"checkpoint {path}: holds neither a model (config.json + weights) nor a LoRA adapter "
                    "(adapter_config.json + adapter_model.safetensors)")


def checkpoint_labels(paths: Sequence[Path | str]) -> list[str]:
    """Short names for output rows: the directory name (exposure_3), or the full path when names clash."""
    names = [Path(p).name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def checkpoint_position(label: str) -> dict:
    """{"exposure": k, "step": n} parsed from names like exposure_3 / step_0000120 (None when absent)."""
    e = re.search(r"exposure_(\d+)", label)
    s = re.search(r"step_(\d+)", label)
    return {"exposure": int(e.group(1)) if e else None, "step": int(s.group(1)) if s else None}


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "tokenizer.model", "special_tokens_map.json")


def _tokenizer_digest(path: Path) -> str | None:
    files = [path / f for f in _TOKENIZER_FILES if (path / f).exists()]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _special_tokens(tok) -> dict:
    specials = {k: getattr(tok, k, None) for k in ("bos_token", "eos_token", "unk_token")}
    specials["all"] = sorted(set(tok.all_special_tokens) - {tok.pad_token})
    return specials


def check_tokenizer_match(checkpoint: Path, reference_tokenizer, reference_dir: Path | None = None) -> None:
    """DataError when the tokenizer saved in `checkpoint` differs from `reference_tokenizer` in vocabulary
    or special tokens (a checkpoint without tokenizer files is not checked). Identical files skip loading."""
    checkpoint = Path(checkpoint)
    digest = _tokenizer_digest(checkpoint)
    if digest is None or (reference_dir is not None and digest == _tokenizer_digest(Path(reference_dir))):
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    vocab, ref_vocab = tok.get_vocab(), reference_tokenizer.get_vocab()
    if vocab != ref_vocab:
        differ = sorted(set(vocab.items()) ^ set(ref_vocab.items()), key=str)
        raise DataError(f"checkpoint {checkpoint}: its tokenizer differs from the base model's "
                        f"(vocab sizes {len(vocab)} vs {len(ref_vocab)}, {len(differ)} differing entries, "
                        f"e.g. {differ[:3]}); items would be tokenized wrongly")
    a, b = _special_tokens(tok), _special_tokens(reference_tokenizer)
    if a != b:
        diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        raise DataError(f"checkpoint {checkpoint}: its tokenizer's special tokens differ from the base "
                        f"model's: {diff}")


def adapter_base_path(adapter_dir: Path, fallback: str | None = None) -> Path:
    """The base model directory an adapter was trained on (`base_model_name_or_path`, models.adapter_base_dir);
    `fallback` when that is not available here (run dir moved between machines)."""
    try:
        return adapter_base_dir(adapter_dir)
    except DataError:
        if fallback is None:
            raise
        return resolve_model_path(fallback)


def adapter_bases(model_name_or_path: str, targets: Sequence[Path | str], labels: Sequence[str]) -> dict[str, str]:
    """{label: the base model directory} of every adapter among `targets` (what `ModelPool` loads it onto:
    adapter_base_path with --model_name_or_path as the fallback), for config.json; empty when none is an
    adapter. One note line when some adapter is evaluated on a model other than --model_name_or_path: an
    adapter applies to the model it was trained on, so its own base is used and --model_name_or_path only
    supplies the tokenizer (load_eval_tokenizer checks the adapters' tokenizers match it); or when an
    adapter's base is not here and --model_name_or_path stands in for it."""
    given = resolve_model_path(model_name_or_path).resolve()
    out, other, missing = {}, [], []
    for t, label in zip(targets, labels):
        p = Path(str(t))
        if not (p.is_dir() and is_adapter_dir(p)):
            continue
        try:
            base = adapter_base_dir(p)
        except DataError:
            base = None
            missing.append(label)
        used = base if base is not None else given
        out[label] = str(used.resolve())
        if base is not None and base.resolve() != given:
            other.append(label)
    if other:
        bases = sorted({out[label] for label in other})
        print(f"note: {', '.join(other)}: LoRA adapter(s) of {', '.join(bases)} (adapter_config.json "
              f"base_model_name_or_path), not of --model_name_or_path {model_name_or_path}: evaluated on that base "
              "(config.json adapter_bases); --model_name_or_path supplies the tokenizer only", file=sys.stderr)
    if missing:
        print(f"note: {', '.join(missing)}: the adapter's base (adapter_config.json base_model_name_or_path) is not "
              f"here; evaluated on --model_name_or_path {model_name_or_path} instead", file=sys.stderr)
    return out


@dataclass
class ModelPool:
    """Loads each base model once and swaps adapters on it.

    `use(target)` yields a ready eval-mode model for a model name/dir or an adapter dir. Adapters are
    loaded onto the cached base (the first wraps it in a PeftModel, later ones `load_adapter` +
    `set_adapter`, then the previous adapter is deleted), so the base is never reloaded. A full model
    is loaded for its `use` only, unless keep=True (bases and reference models). A cached base that has
    been wrapped is yielded inside `disable_adapter()`.
    """
    dtype: str = "float32"
    device: object = None
    fallback_base: str | None = None
    attn_implementation: str | None = None
    quantization: str = "none"      # 4bit / 8bit: bases load quantized onto `device` (memlab.models.load_model)
    _models: dict = field(default_factory=dict)
    _active: dict = field(default_factory=dict)
    _n: int = 0

    def _prepare(self, model):
        if self.device is not None and not is_quantized(model):  # a k-bit model was loaded onto its device
            model.to(self.device)
        return model.eval()

    def _load(self, path) -> torch.nn.Module:
        return load_model(str(path), dtype=self.dtype, attn_implementation=self.attn_implementation,
                          quantization=self.quantization, device=self.device)[0]

    def _base(self, path: Path):
        key = str(Path(path).resolve())
        if key not in self._models:
            self._models[key] = self._prepare(self._load(path))
        return key, self._models[key]

    @contextlib.contextmanager
    def use(self, target: str | Path, keep: bool = False) -> Iterator[torch.nn.Module]:
        path = resolve_model_path(str(target))
        if is_adapter_dir(path):
            key, base = self._base(adapter_base_path(path, self.fallback_base))
            self._n += 1
            name = f"ckpt{self._n}"
            if hasattr(base, "peft_config"):
                base.load_adapter(str(path), adapter_name=name)
                base.set_adapter(name)
                previous = self._active.get(key)
                if previous:
                    base.delete_adapter(previous)
            else:
                from peft import PeftModel

                base = self._models[key] = PeftModel.from_pretrained(base, str(path), adapter_name=name)
            self._active[key] = name
            yield self._prepare(base)
            return
        key = str(path.resolve())
        if key in self._models:
            model = self._models[key]
            if hasattr(model, "peft_config"):
                with model.disable_adapter():
                    yield model
            else:
                yield model
            return
        model = self._prepare(self._load(path))
        if keep:
            self._models[key] = model
        try:
            yield model
        finally:
            if not keep:
                del model
                gc.collect()


def targets_and_labels(model_name_or_path: str, checkpoints) -> tuple[list[Path | str], list[str]]:
    """What to evaluate: the expanded checkpoints, or the model itself when none are given."""
    paths = expand_checkpoints(checkpoints)
    if not paths:
        return [model_name_or_path], [Path(str(model_name_or_path)).name]
    return paths, checkpoint_labels(paths)


def load_eval_tokenizer(model_name_or_path: str, targets: Sequence[Path | str]):
    """The base tokenizer that encodes every item, after checking each checkpoint's tokenizer matches it."""
    tok = load_tokenizer(model_name_or_path)
    ref_dir = resolve_model_path(model_name_or_path)
    for t in targets:
        if Path(str(t)).is_dir() and Path(str(t)).resolve() != ref_dir.resolve():
            check_tokenizer_match(Path(str(t)), tok, ref_dir)
    return tok


def score_checkpoints(model_name_or_path: str, items: Sequence[dict], checkpoints=None, batch_size: int = 16,
                      padding_side: str = "left", chat: bool = False, token_logprobs: bool = False,
                      distribution_stats: bool = False, accelerator=None, dtype: str = "float32",
                      pool: ModelPool | None = None) -> list[tuple[str, list[ItemScore]]]:
    """[(checkpoint label, scores of `items` in order)] for each checkpoint (or the model itself).

    The one-call API for other modules and tests: items are dicts as in `encode_item`, encoded with the
    base tokenizer (each checkpoint's tokenizer must match it); adapters are swapped on one base model.
    """
    targets, labels = targets_and_labels(model_name_or_path, checkpoints)
    tok = load_eval_tokenizer(model_name_or_path, targets)
    enc = encode_items(tok, items, chat=chat)
    device = accelerator.device if accelerator is not None else None
    pool = pool or ModelPool(dtype=dtype, device=device, fallback_base=model_name_or_path)
    out = []
    for target, label in zip(targets, labels):
        with pool.use(target) as model:
            out.append((label, score_items(model, enc, tok.pad_token_id, batch_size, padding_side, token_logprobs,
                                           distribution_stats, accelerator)))
    return out


# ----------------------------------------------------------------------------------------- FLOP counting
def matmul_params(model) -> int:
    """Parameters that take part in matmuls (Linear / GPT-2 Conv1D weights, the LM head included even when
    tied to the embeddings); embedding lookups are not counted. A forward pass costs 2 * this per token."""
    seen, n = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            if id(module.weight) not in seen:  # a tied LM head counts once, as a matmul
                seen.add(id(module.weight))
                n += module.weight.numel()
    return n


def matmul_peak_flops(n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """Measured FLOP/s of an n x n @ n x n matmul on this machine (best of `repeats`): the peak that
    benchmarks report model FLOP/s against."""
    import time

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best
