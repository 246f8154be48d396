"""Token frequency tables for the DC-PDD attack (Zhang et al. 2024): how often each token id of a model's
tokenizer occurs in a reference corpus, built offline from a local corpus file.

A table is a directory holding `freqs.json`:
    {"format": "memlab-token-freqs/1", "tokenizer": NAME_OR_PATH, "tokenizer_fingerprint": SHA256,
     "vocab_size": V, "corpus": PATH, "corpus_sha256": SHA256, "n_texts": N, "n_tokens": T,
     "counts": [c_0, ..., c_{V-1}]}
`counts[i]` = occurrences of token id i over the corpus texts, each tokenized as `tokenizer(text).input_ids`
(special tokens as the tokenizer adds them), the first MAX_TOKENS ids of each text, as in the reference
implementation. The tokenizer fingerprint is the SHA-256 of its vocabulary (token -> id, sorted) and its
special tokens: a table is only usable with a tokenizer of the same fingerprint (`load_table` checks).

Built by `make_data.py freqs --corpus FILE --model_name_or_path M --output_dir D`, or by
membership_inference.py on first use (`default_table`: from the shipped corpus, cached under
$MEMLAB_CACHE/freqs/<corpus sha>-<tokenizer fingerprint>/).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from memlab.io import DataError, loads_strict, read_texts, write_json_atomic
from memlab.rundir import file_digest

FORMAT = "memlab-token-freqs/1"
FILE = "freqs.json"
MAX_TOKENS = 1024


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of the tokenizer's vocabulary (sorted token -> id pairs) and its special tokens."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    h.update(json.dumps(sorted(map(str, tokenizer.all_special_tokens))).encode("utf-8"))
    return h.hexdigest()


def vocab_size(tokenizer) -> int:
    """Number of token ids the table covers: len(tokenizer) (added tokens included)."""
    return len(tokenizer)


def count_tokens(texts, tokenizer, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """counts[i] = occurrences of id i in the first `max_tokens` ids of each text (int64, length V)."""
    counts = np.zeros(vocab_size(tokenizer), dtype=np.int64)
    for text in texts:
        ids = tokenizer(text).input_ids[:max_tokens]
        np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
    return counts


def build_table(corpus, tokenizer, tokenizer_name: str, text_column: str | None = None) -> dict:
    """The table (as written to freqs.json) of the texts in `corpus` (JSONL/TXT/CSV, memlab.io.read_texts)."""
    corpus = Path(corpus)
    rows = read_texts(corpus, text_column)
    counts = count_tokens([r["text"] for r in rows], tokenizer)
    return {"format": FORMAT, "tokenizer": str(tokenizer_name), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
            "vocab_size": int(counts.size), "corpus": str(corpus), "corpus_sha256": file_digest(corpus),
            "n_texts": len(rows), "n_tokens": int(counts.sum()), "max_tokens_per_text": MAX_TOKENS,
            "counts": counts.tolist()}


def write_table(out_dir, table: dict) -> Path:
    out = Path(out_dir)
    write_json_atomic(out / FILE, table)
    return out / FILE


def load_table(path, tokenizer) -> tuple[np.ndarray, dict]:
    """(counts, record) of the table at `path` (a directory holding freqs.json, or the file itself);
    record = {path, sha256, tokenizer, tokenizer_fingerprint, corpus, corpus_sha256, n_texts, n_tokens}.
    DataError when it is missing, damaged, or made with another tokenizer than `tokenizer`."""
    p = Path(path)
    f = p / FILE if p.is_dir() else p
    if not f.is_file():
        raise DataError(f"--freqs {path}: no token frequency table ({FILE}) there; build one with "
                        f"`make_data.py freqs --corpus FILE --model_name_or_path MODEL --output_dir {path}`")
    try:
        table = loads_strict(f.read_text(encoding="utf-8"))  # NaN/Infinity counts: an error, not a crash later
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"--freqs {f}: not a readable JSON token frequency table ({e})") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT or not isinstance(table.get("counts"), list):
        raise DataError(f"--freqs {f}: not a memlab token frequency table (field `format` must be {FORMAT!r}, "
                        "field `counts` a list)")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in table["counts"]):
        bad = next(c for c in table["counts"] if not (isinstance(c, int) and not isinstance(c, bool)))
        raise DataError(f"--freqs {f}: field `counts` must hold integers, found {bad!r}")
    counts = np.asarray(table["counts"], dtype=np.int64)
    want_fp, want_v = tokenizer_fingerprint(tokenizer), vocab_size(tokenizer)
    if table.get("tokenizer_fingerprint") != want_fp or counts.size != want_v:
        raise DataError(f"--freqs {f}: made with another tokenizer (tokenizer {table.get('tokenizer')!r}, "
                        f"{counts.size} ids, fingerprint {str(table.get('tokenizer_fingerprint'))[:12]}) than the "
                        f"target's ({want_v} ids, fingerprint {want_fp[:12]}); token ids would not correspond")
    if (counts < 0).any():
        raise DataError(f"--freqs {f}: field `counts` has negative entries")
    record = {"path": str(f), "sha256": file_digest(f),
              **{k: table.get(k) for k in ("tokenizer", "tokenizer_fingerprint", "corpus", "corpus_sha256",
                                           "n_texts", "n_tokens")}}
    return counts, record


def default_table(corpus, tokenizer, tokenizer_name: str, cache_root=None) -> Path:
    """The table of `corpus` for `tokenizer`, built once and cached under cache_root (default
    $MEMLAB_CACHE/freqs) in a directory named by the corpus' SHA-256 and the tokenizer fingerprint."""
    if cache_root is None:
        from memlab.models import cache_dir

        cache_root = cache_dir() / "freqs"
    corpus = Path(corpus)
    if not corpus.is_file():
        raise DataError(f"token frequency corpus {corpus}: no such file; pass --freqs DIR (make_data.py freqs)")
    d = Path(cache_root) / f"{file_digest(corpus)[:16]}-{tokenizer_fingerprint(tokenizer)[:16]}"
    if not (d / FILE).is_file():
        write_table(d, build_table(corpus, tokenizer, tokenizer_name))
    return d
