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


# ------------------------------------------------------------------------------------------- paraphrases
# Each frame's sentence read back into its slots (a regular expression over the word lists) and rendered
# again in other surface forms with the same content: a fronted or moved adverbial, the passive voice, a
# dative shift, reordered coordinated names, a clause turned round. `paraphrases(text)` lists them.
PAST_PARTICIPLES = {"hid": "hidden", "forgot": "forgotten", "ate": "eaten"}  # the rest: participle = past


def _participle(verb: str) -> str:
    head, _, rest = verb.partition(" ")
    return " ".join([PAST_PARTICIPLES.get(head, head)] + ([rest] if rest else []))


def _alt(words) -> str:
    import re

    return "(?:" + "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w))) + ")"


def _paraphrase_frames():
    """(regex, renderers) per frame of FRAMES; a renderer maps the match's slots to a sentence (no period)."""
    import re

    person = f"(?:{_alt(W.PEOPLE_NAMES)}|{_alt(W.RELATION_DETERMINERS)} {_alt(W.RELATIONS)})"
    thing = f"(?:an?) (?:{_alt(W.ADJECTIVES)} )?{_alt(t[0] for t in W.THINGS)}"
    food = f"(?:an?) {_alt(f[0] for f in W.FOODS)}"
    slots = {"p": person, "a": person, "b": person, "t": thing, "f": food, "noun": _alt(t[0] for t in W.THINGS),
             "tv": _alt(W.THING_VERBS_PAST), "fv": _alt(W.FOOD_VERBS_PAST), "iv": _alt(W.INTRANSITIVE_PAST),
             "bv": _alt(W.THING_VERBS_BASE), "pl": _alt(W.PLACES), "time": _alt(W.TIMES), "an": _alt(W.ANIMALS),
             "av": _alt(W.ANIMAL_VERBS), "ap": _alt(W.ANIMAL_PLACES), "w": _alt(W.WEATHER), "hp": _alt(W.HOME_PLACES),
             "occ": _alt(W.OCCASIONS), "n": _alt(W.NUMBER_WORDS), "plural": _alt(x[1] for x in W.THINGS + W.FOODS),
             "shop": _alt(W.SHOPS), "ev": _alt(W.EVENTS), "d": _alt(W.DURATIONS), "g": _alt(W.GERUNDS),
             "topic": _alt(W.TOPICS)}

    def rx(pattern: str):
        return re.compile("^" + re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{slots[m.group(1)]})", pattern) + "$")

    pp = _participle
    return (
        (rx("{p} {tv} {t} {pl}"), (lambda s: f"{s['pl']}, {s['p']} {s['tv']} {s['t']}",
                                   lambda s: f"{s['t']} was {pp(s['tv'])} by {s['p']} {s['pl']}")),
        (rx("{time}, {p} {fv} {f}"), (lambda s: f"{s['p']} {s['fv']} {s['f']} {s['time']}",
                                      lambda s: f"{s['f']} was {pp(s['fv'])} by {s['p']} {s['time']}")),
        (rx("{p} {iv} {pl} {time}"), (lambda s: f"{s['time']}, {s['p']} {s['iv']} {s['pl']}",
                                      lambda s: f"{s['p']} {s['iv']} {s['time']} {s['pl']}")),
        (rx("{a} asked {b} to {bv} the {noun}"),
         (lambda s: f"{s['b']} was asked by {s['a']} to {s['bv']} the {s['noun']}",)),
        (rx("the {an} {av} {ap} {time}"), (lambda s: f"{s['time']}, the {s['an']} {s['av']} {s['ap']}",
                                           lambda s: f"the {s['an']} {s['av']} {s['time']} {s['ap']}")),
        (rx("it {w} {time}, so {p} stayed {hp}"), (lambda s: f"{s['p']} stayed {s['hp']} {s['time']} because it {s['w']}",
                                                   lambda s: f"because it {s['w']} {s['time']}, {s['p']} stayed {s['hp']}")),
        (rx("{a} gave {b} {t} for {occ}"), (lambda s: f"{s['a']} gave {s['t']} to {s['b']} for {s['occ']}",
                                            lambda s: f"{s['b']} was given {s['t']} by {s['a']} for {s['occ']}",
                                            lambda s: f"for {s['occ']}, {s['a']} gave {s['b']} {s['t']}")),
        (rx("{p} could not find the {noun} {time}"), (lambda s: f"{s['time']}, {s['p']} could not find the {s['noun']}",
                                                      lambda s: f"{s['p']} was unable to find the {s['noun']} {s['time']}")),
        (rx("{a} and {b} {tv} {t} together"), (lambda s: f"{s['b']} and {s['a']} {s['tv']} {s['t']} together",
                                               lambda s: f"{s['t']} was {pp(s['tv'])} by {s['a']} and {s['b']} together")),
        (rx("{p} bought {n} {plural} at the {shop}"), (lambda s: f"at the {s['shop']}, {s['p']} bought {s['n']} {s['plural']}",
                                                       lambda s: f"{s['n']} {s['plural']} were bought by {s['p']} at the {s['shop']}")),
        (rx("after {ev}, {p} {iv} {pl}"), (lambda s: f"{s['p']} {s['iv']} {s['pl']} after {s['ev']}",
                                           lambda s: f"{s['p']} {s['iv']} after {s['ev']} {s['pl']}")),
        (rx("{p} left {t} {pl} {time}"), (lambda s: f"{s['time']}, {s['p']} left {s['t']} {s['pl']}",
                                          lambda s: f"{s['t']} was left {s['pl']} by {s['p']} {s['time']}")),
        (rx("{p} spent {d} {g} {pl}"), (lambda s: f"{s['pl']}, {s['p']} spent {s['d']} {s['g']}",)),
        (rx("{a} called {b} {time} to talk about {topic}"), (
            lambda s: f"{s['time']}, {s['a']} called {s['b']} to talk about {s['topic']}",
            lambda s: f"{s['b']} got a call from {s['a']} {s['time']} about {s['topic']}")),
        (rx("{p} {tv} the {noun} before {ev}"), (lambda s: f"before {s['ev']}, {s['p']} {s['tv']} the {s['noun']}",
                                                 lambda s: f"the {s['noun']} was {pp(s['tv'])} by {s['p']} before {s['ev']}")),
    )


_PARAPHRASE_FRAMES = None


def paraphrases(text: str) -> list[str]:
    """Other surface forms of a sentence of this grammar (without a cast), same content: the frame's slots
    read back and rendered by each of the frame's other templates, each capitalized with a final period.
    [] when `text` is not a sentence of the grammar (a user's corpus)."""
    global _PARAPHRASE_FRAMES
    if _PARAPHRASE_FRAMES is None:
        _PARAPHRASE_FRAMES = _paraphrase_frames()
    body = text.strip()
    if body.endswith("."):
        body = body[:-1]
    first = body.split(" ", 1)[0].rstrip(",")
    if first not in W.PEOPLE_NAMES:  # the sentence-initial capital is the only one that is not the word's own
        body = body[:1].lower() + body[1:]
    for pattern, renderers in _PARAPHRASE_FRAMES:
        m = pattern.match(body)
        if m:
            return [capitalize_first(r(m.groupdict())) + "." for r in renderers]
    return []
