"""A small grammar of short everyday sentences ("Maya found an old lamp in the attic."), in the spirit
of the everyday sentences of Orhan's recognition/recall study. It feeds the shipped corpus and the
synthetic documents; all randomness comes from the `random.Random` passed in.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

from memlab.datagen import wordlists as W
from memlab.io import DataError


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _person(rng: random.Random, cast: Sequence[str] | None) -> str:
    if cast and rng.random() < 0.7:
        return rng.choice(cast)
    if rng.random() < 0.6:
        return rng.choice(W.PEOPLE_NAMES)
    return f"{rng.choice(W.RELATION_DETERMINERS)} {rng.choice(W.RELATIONS)}"


def _two_people(rng: random.Random, cast: Sequence[str] | None) -> tuple[str, str]:
    a = _person(rng, cast)
    b = _person(rng, cast)
    while b == a:
        b = _person(rng, cast)
    return a, b


def _thing(rng: random.Random, with_adjective: float = 0.5) -> str:
    noun = rng.choice(W.THINGS)[0]
    if rng.random() < with_adjective:
        adj = rng.choice(W.ADJECTIVES)
        return f"{article(adj)} {adj} {noun}"
    return f"{article(noun)} {noun}"


def _food(rng: random.Random) -> str:
    food = rng.choice(W.FOODS)[0]
    return f"{article(food)} {food}"


# Each frame turns (rng, cast) into one sentence without its final period.
def _f_found(r, c):
    return f"{_person(r, c)} {r.choice(W.THING_VERBS_PAST)} {_thing(r)} {r.choice(W.PLACES)}"


def _f_time_food(r, c):
    return f"{r.choice(W.TIMES)}, {_person(r, c)} {r.choice(W.FOOD_VERBS_PAST)} {_food(r)}"


def _f_intransitive(r, c):
    return f"{_person(r, c)} {r.choice(W.INTRANSITIVE_PAST)} {r.choice(W.PLACES)} {r.choice(W.TIMES)}"


def _f_asked(r, c):
    a, b = _two_people(r, c)
    return f"{a} asked {b} to {r.choice(W.THING_VERBS_BASE)} the {r.choice(W.THINGS)[0]}"


def _f_animal(r, c):
    return f"the {r.choice(W.ANIMALS)} {r.choice(W.ANIMAL_VERBS)} {r.choice(W.ANIMAL_PLACES)} {r.choice(W.TIMES)}"


def _f_weather(r, c):
    return f"it {r.choice(W.WEATHER)} {r.choice(W.TIMES)}, so {_person(r, c)} stayed {r.choice(W.HOME_PLACES)}"


def _f_gift(r, c):
    a, b = _two_people(r, c)
    return f"{a} gave {b} {_thing(r, 0.8)} for {r.choice(W.OCCASIONS)}"


def _f_missing(r, c):
    return f"{_person(r, c)} could not find the {r.choice(W.THINGS)[0]} {r.choice(W.TIMES)}"


def _f_together(r, c):
    a, b = _two_people(r, c)
    return f"{a} and {b} {r.choice(W.THING_VERBS_PAST)} {_thing(r)} together"


def _f_shop(r, c):
    plural = r.choice(W.THINGS + W.FOODS)[1]
    return f"{_person(r, c)} bought {r.choice(W.NUMBER_WORDS)} {plural} at the {r.choice(W.SHOPS)}"


def _f_after(r, c):
    return f"after {r.choice(W.EVENTS)}, {_person(r, c)} {r.choice(W.INTRANSITIVE_PAST)} {r.choice(W.PLACES)}"


def _f_forgot(r, c):
    return f"{_person(r, c)} left {_thing(r)} {r.choice(W.PLACES)} {r.choice(W.TIMES)}"


def _f_spent(r, c):
    return f"{_person(r, c)} spent {r.choice(W.DURATIONS)} {r.choice(W.GERUNDS)} {r.choice(W.PLACES)}"


def _f_called(r, c):
    a, b = _two_people(r, c)
    return f"{a} called {b} {r.choice(W.TIMES)} to talk about {r.choice(W.TOPICS)}"


def _f_before(r, c):
    return f"{_person(r, c)} {r.choice(W.THING_VERBS_PAST)} the {r.choice(W.THINGS)[0]} before {r.choice(W.EVENTS)}"


FRAMES: tuple[Callable[[random.Random, Sequence[str] | None], str], ...] = (
    _f_found, _f_time_food, _f_intransitive, _f_asked, _f_animal, _f_weather, _f_gift, _f_missing,
    _f_together, _f_shop, _f_after, _f_forgot, _f_spent, _f_called, _f_before,
)


def sentence(rng: random.Random, cast: Sequence[str] | None = None) -> str:
    """One everyday sentence; `cast` (a few names) makes most sentences of a document share people."""
    return capitalize_first(rng.choice(FRAMES)(rng, cast)) + "."


def vocabulary(texts: Sequence[str]) -> list[str]:
    """Sorted distinct lower-cased words of `texts` (punctuation stripped), for random-word foils."""
    words = set()
    for t in texts:
        for w in t.split():
            w = w.strip(".,;:!?\"'()[]").lower()
            if w.isalpha():
                words.add(w)
    return sorted(words)


def make_corpus(n_sentences: int, seed: int) -> list[dict]:
    """`n_sentences` distinct everyday sentences as rows `{"id": "sent-00000", "text"}`."""
    from memlab.datagen.common import sub_rng
    from memlab.text import normalize_text

    rng = sub_rng(seed, "corpus")
    seen: set[str] = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < n_sentences:
        attempts += 1
        if attempts > 50 * n_sentences + 1000:
            raise DataError(f"the grammar ran out of distinct sentences after {len(rows)}")
        s = sentence(rng)
        key = normalize_text(s)
        if key not in seen:
            seen.add(key)
            rows.append({"id": f"sent-{len(rows):05d}", "text": s})
    return rows
