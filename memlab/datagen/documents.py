"""Synthetic ID documents: "[DOC_48213] <everyday sentences> [DOC_48213]" of about L tokens.

The identifier at both ends lets a recall test ask whether a continuation reaches the closing ID.
Length is counted with the model's tokenizer (any `count_tokens(text) -> int`): sentences are added
while the total stays closest to the target, so a document is within about half a sentence
(~8 tokens) of L.
"""
from __future__ import annotations

from typing import Callable

from memlab.datagen import grammar, wordlists
from memlab.datagen.common import sub_rng


def make_documents(n_docs: int, doc_tokens: int, count_tokens: Callable[[str], int], seed: int,
                   id_digits: int = 5, sentences_per_paragraph: int = 5) -> list[dict]:
    """Rows `{"id", "doc_id", "text", "n_tokens"}`; `doc_id` ("DOC_48213") is unique per document."""
    rng_ids = sub_rng(seed, "doc_ids")
    ids = [f"DOC_{n}" for n in rng_ids.sample(range(10 ** (id_digits - 1), 10 ** id_digits), n_docs)]
    rows = []
    for i, doc_id in enumerate(ids):
        rng = sub_rng(seed, f"doc:{i}")
        cast = rng.sample(wordlists.PEOPLE_NAMES, 3)  # a few recurring people make a document cohere
        head, tail = f"[{doc_id}]\n", f" [{doc_id}]"
        sentences: list[str] = []
        budget = doc_tokens - count_tokens(head + tail)
        used = 0
        while True:
            s = grammar.sentence(rng, cast)
            sep = "\n\n" if sentences and len(sentences) % sentences_per_paragraph == 0 else " "
            cost = count_tokens(sep + s)
            # stop when adding the sentence would overshoot more than stopping undershoots
            if sentences and used + cost - budget > budget - used:
                break
            sentences.append(sep + s)
            used += cost
            if used >= budget:
                break
        text = head + "".join(sentences).lstrip() + tail
        rows.append({"id": f"doc-{i:04d}", "doc_id": doc_id, "text": text, "n_tokens": count_tokens(text)})
    return rows

