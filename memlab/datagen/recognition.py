"""Seen/unseen sets for recognition (2AFC and ROC) from a text corpus.

Each seen sentence gets one foil, paired by row order and by `pair_id`:
- `novel`: another corpus sentence with the closest word count (never used twice, never a seen one);
- `shuffled`: the seen sentence's words in a different order;
- `random_words`: as many words as the seen sentence, drawn from the corpus vocabulary.
With several foil types, pairs take them in turn (pair i gets type i mod len(types)).
"""
from __future__ import annotations

import bisect
import random
from typing import Sequence

from memlab.datagen.common import sub_rng
from memlab.datagen.grammar import capitalize_first, vocabulary
from memlab.text import normalize_text
from memlab.io import DataError

FOIL_TYPES = ("novel", "shuffled", "random_words")


def _words(text: str) -> list[str]:
    return text.split()


def shuffled_foil(text: str, rng: random.Random, common_words: set[str] = frozenset(),
                  attempts: int = 50) -> str | None:
    """The words of `text` in another order (punctuation dropped, one final period); None when every
    order normalizes to the original (e.g. "Go go go."). The original first word is lower-cased when
    it occurs lower-case elsewhere in the corpus (`common_words`), so "The" does not end up mid-sentence
    while names keep their capital."""
    words = [w.strip(".,;:!?") for w in _words(text)]
    words = [w for w in words if w]
    if words and words[0].lower() in common_words:
        words[0] = words[0].lower()
    original = normalize_text(text)
    for _ in range(attempts):
        order = words[:]
        rng.shuffle(order)
        candidate = capitalize_first(" ".join(order)) + "."
        if normalize_text(candidate) != original:
            return candidate
    return None


def lowercase_words(texts: Sequence[str]) -> set[str]:
    """Words that occur in lower case somewhere in `texts` (i.e. not only as names)."""
    return {w.strip(".,;:!?") for t in texts for w in _words(t)[1:] if w[:1].islower()}


def random_words_foil(n_words: int, vocab: Sequence[str], rng: random.Random) -> str:
    return capitalize_first(" ".join(rng.choice(vocab) for _ in range(n_words))) + "."


def make_recognition(corpus: Sequence[dict], n_pairs: int, foil_types: Sequence[str], seed: int,
                     min_words: int = 3) -> tuple[list[dict], list[dict]]:
    """(seen rows, unseen rows). `corpus` rows have `id` and `text` and are already de-duplicated.

    Seen sentences are drawn from rows with at least `min_words` words (so a shuffle can differ);
    novel foils come from the rest of the corpus, matched on word count.
    """
    rng = sub_rng(seed, "recognition")
    eligible = [r for r in corpus if len(_words(r["text"])) >= min_words and len(set(
        normalize_text(r["text"]).split())) >= 2]
    if len(eligible) < n_pairs:
        raise DataError(f"the corpus has {len(eligible)} usable sentences (>= {min_words} words), "
                        f"fewer than --n_pairs {n_pairs}")
    seen_rows = rng.sample(eligible, n_pairs)
    seen_ids = {r["id"] for r in seen_rows}
    pool = sorted((len(_words(r["text"])), i, r) for i, r in enumerate(corpus) if r["id"] not in seen_ids)
    pool_lengths = [p[0] for p in pool]
    n_novel = sum(1 for i in range(n_pairs) if foil_types[i % len(foil_types)] == "novel")
    if n_novel > len(pool):
        raise DataError(f"novel foils need {n_novel} unused corpus sentences, the corpus has {len(pool)} left")
    vocab = vocabulary([r["text"] for r in corpus])
    if "random_words" in foil_types and not vocab:
        raise DataError("random_words foils need words, but the corpus has no alphabetic words")
    common = lowercase_words([r["text"] for r in corpus]) if "shuffled" in foil_types else set()
    used = [False] * len(pool)
    seen, unseen = [], []
    for i, row in enumerate(seen_rows):
        foil_type = foil_types[i % len(foil_types)]
        n_words = len(_words(row["text"]))
        source_id = row["id"]
        if foil_type == "novel":
            j = _closest_unused(pool_lengths, used, n_words, rng)
            used[j] = True
            text, source_id = pool[j][2]["text"], pool[j][2]["id"]
        elif foil_type == "shuffled":
            text = shuffled_foil(row["text"], rng, common)
            if text is None:  # unreachable: eligible rows have >= 2 distinct words
                raise ValueError(f"{row['id']}: cannot shuffle {row['text']!r} into a different order")
        else:
            text = random_words_foil(n_words, vocab, rng)
        pair_id = f"pair-{i:04d}"
        seen.append({"id": f"seen-{i:04d}", "pair_id": pair_id, "source_id": row["id"], "text": row["text"]})
        unseen.append({"id": f"unseen-{i:04d}", "pair_id": pair_id, "source_id": source_id,
                       "foil_type": foil_type, "text": text})
    return seen, unseen


def _closest_unused(lengths: list[int], used: list[bool], n_words: int, rng: random.Random) -> int:
    """Index of a random unused pool sentence with the word count closest to `n_words`."""
    for gap in range(0, max(lengths) + n_words + 1):
        candidates = []
        for target in {n_words - gap, n_words + gap}:
            lo, hi = bisect.bisect_left(lengths, target), bisect.bisect_right(lengths, target)
            candidates += [j for j in range(lo, hi) if not used[j]]
        if candidates:
            return rng.choice(sorted(candidates))
    raise ValueError("no unused corpus sentence left for a novel foil")
