"""Cloze QA probes from any corpus (e.g. the user's news articles), fully offline.

Documents are split into sentences; in a sentence a number ("1,200", "2021", "3.5") or a capitalised
entity ("European Central Bank", not the sentence's first word) is replaced by "____" and becomes the
answer. Probes use the probes format with `tier` "easy", a `cloze` field ("number" or "entity") and
`fact_id` = the source document's id, so per-item results join back to the article.
"""
from __future__ import annotations

import re
from typing import Sequence

from memlab.datagen.common import sub_rng

BLANK = "____"
QUESTION_PREFIX = "Fill in the blank: "
CLOZE_TYPES = ("number", "entity")

_ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "Jr.", "Sr.", "Inc.", "Ltd.", "Co.", "vs.",
                  "e.g.", "i.e.", "U.S.", "U.K.", "No.", "Jan.", "Feb.", "Aug.", "Sept.", "Oct.", "Nov.", "Dec.")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\w)|(?<![\w.,])\d+(?:\.\d+)?(?!\w)")
_ENTITY = re.compile(r"\b[A-Z][a-zA-Z'\-]+(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][a-zA-Z'\-]+)*")
_NOT_ENTITIES = {"I", "The", "A", "An", "It", "He", "She", "They", "We", "You", "This", "That", "These",
                 "Those", "But", "And", "Or", "In", "On", "At", "For", "If", "When", "While", "After",
                 "Before", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (paragraph breaks, then ". X" boundaries, not after common abbreviations)."""
    out = []
    for para in re.split(r"\n\s*\n|\r?\n", text):
        para = " ".join(para.split())
        start = 0
        for m in _SENTENCE_END.finditer(para):
            before = para[start:m.start()]
            if any(before.endswith(a) for a in _ABBREVIATIONS):
                continue
            out.append(para[start:m.start()].strip())
            start = m.end()
        if para[start:].strip():
            out.append(para[start:].strip())
    return [s for s in out if s]


def candidates(sentence: str, cloze_types: Sequence[str]) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, answer) spans that could be blanked; entities skip the sentence's first word."""
    spans = []
    if "number" in cloze_types:
        spans += [("number", m.start(), m.end(), m.group()) for m in _NUMBER.finditer(sentence)]
    if "entity" in cloze_types:
        first_word_end = len(sentence.split(" ", 1)[0])
        for m in _ENTITY.finditer(sentence):
            start, answer = m.start(), m.group()
            if start < first_word_end:  # drop the sentence-initial capital, keep the rest of the span
                rest = answer[first_word_end - start:].lstrip()
                if not rest or not rest[:1].isupper():
                    continue
                start, answer = m.end() - len(rest), rest
            if answer in _NOT_ENTITIES or len(answer) < 2:
                continue
            spans.append(("entity", start, start + len(answer), answer))
    return spans


def make_cloze(docs: Sequence[dict], cloze_types: Sequence[str], max_per_doc: int, min_words: int,
               seed: int) -> list[dict]:
    """Probe rows `{"id", "fact_id", "question", "answer", "tier", "cloze", "sentence_index"}`: up to
    `max_per_doc` sentences per document, one blank each, chosen with a seeded generator."""
    rows = []
    for doc in docs:
        rng = sub_rng(seed, f"cloze:{doc['id']}")
        options = []
        for s_idx, sent in enumerate(split_sentences(doc["text"])):
            if len(sent.split()) >= min_words:
                spans = candidates(sent, cloze_types)
                if spans:
                    options.append((s_idx, sent, spans))
        for s_idx, sent, spans in sorted(rng.sample(options, min(max_per_doc, len(options)))):
            kind, start, end, answer = rng.choice(spans)
            question = QUESTION_PREFIX + sent[:start] + BLANK + sent[end:]
            rows.append({"id": f"{doc['id']}-cloze{s_idx:03d}", "fact_id": doc["id"], "question": question,
                         "answer": answer, "tier": "easy", "cloze": kind, "sentence_index": s_idx})
    return rows
