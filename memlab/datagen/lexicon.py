"""The offline synonym lexicon of the `synonym` recognition foils (one content word replaced by a synonym).

Source and licence. The built-in table (`BUILTIN_SYNONYMS`) was written by hand for memlab, for the content
words of memlab's own sentence grammar (memlab/datagen/grammar.py, memlab/datagen/wordlists.py), and is part
of memlab under memlab's licence. It is not WordNet: no package on PyPI ships the WordNet database itself
(`nltk` and `wn` download it at run time, which memlab never does; the packages that claim to bundle it hold
no data), so memlab ships its own table instead. It covers every sentence of the shipped corpus
(data/corpus/) and any other sentence the grammar makes.

For another corpus give `--lexicon FILE`: a JSON object `{"word": ["synonym", ...], ...}` (lower-case keys;
for instance exported from WordNet synsets, under WordNet's own licence), used instead of the built-in
table. A seen sentence with no word in the lexicon is one clear error naming it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from memlab.io import DataError

SOURCE_BUILTIN = "memlab built-in synonym table for the grammar's vocabulary (memlab/datagen/lexicon.py, memlab licence)"

# word -> synonyms (single words, or a phrase that reads the same in place). Lower case.
_BASE: dict[str, tuple[str, ...]] = {
    # adjectives
    "old": ("aged", "worn"), "new": ("brand-new", "fresh"), "small": ("little",), "large": ("big", "huge"),
    "heavy": ("weighty", "hefty"), "broken": ("damaged", "cracked"), "shiny": ("gleaming", "glossy"),
    "wooden": ("timber",), "tiny": ("minute", "teeny"), "dusty": ("grimy", "dirty"), "cheap": ("inexpensive",),
    "lovely": ("beautiful", "pretty"), "strange": ("odd", "peculiar"), "warm": ("cozy",), "soft": ("fluffy",),
    "bright": ("vivid", "colorful"),
    # things (singular; plurals are derived below)
    "lamp": ("light",), "umbrella": ("brolly",), "scarf": ("muffler",), "book": ("volume",), "chair": ("seat",),
    "mug": ("cup",), "clock": ("timepiece",), "basket": ("hamper",), "jacket": ("coat",), "letter": ("note",),
    "candle": ("taper",), "blanket": ("throw", "quilt"), "bicycle": ("bike",), "radio": ("wireless",),
    "notebook": ("notepad",), "suitcase": ("case",), "mirror": ("looking-glass",), "plant": ("houseplant",),
    "hat": ("cap",), "box": ("carton",), "map": ("chart",), "bottle": ("flask",), "towel": ("cloth",),
    "wallet": ("billfold",), "ladder": ("stepladder",), "painting": ("picture",), "phone": ("telephone",),
    "pillow": ("cushion",),
    # food
    "sandwich": ("sub",), "omelette": ("omelet",), "cookie": ("biscuit",), "muffin": ("cupcake",),
    "pancake": ("flapjack",), "soup": ("broth",), "cake": ("sponge",), "pie": ("tart",),
    # verbs, past tense
    "found": ("discovered", "located"), "lost": ("misplaced",), "cleaned": ("scrubbed", "tidied"),
    "fixed": ("repaired", "mended"), "borrowed": ("took",), "carried": ("hauled", "lugged"),
    "painted": ("decorated",), "dropped": ("dumped",), "wrapped": ("covered",), "returned": ("gave back",),
    "sold": ("traded",), "bought": ("purchased",), "moved": ("shifted",), "washed": ("rinsed",),
    "hid": ("concealed", "stashed"), "forgot": ("overlooked",), "ate": ("devoured",), "cooked": ("prepared",),
    "shared": ("split",), "baked": ("made",), "tasted": ("sampled",), "ordered": ("requested",),
    "packed": ("boxed",), "finished": ("completed",), "made": ("prepared",), "waited": ("lingered",),
    "slept": ("dozed", "napped"), "sang": ("hummed",), "laughed": ("chuckled", "giggled"),
    "danced": ("twirled",), "studied": ("revised",), "rested": ("relaxed",), "played": ("romped",),
    "wrote": ("penned",), "worked": ("toiled",), "sat": ("stayed",), "barked": ("howled",),
    "ran": ("raced",), "chewed": ("gnawed",), "rolled": ("turned",), "asked": ("begged",),
    "gave": ("handed",), "called": ("phoned", "rang"), "stayed": ("remained",), "spent": ("passed",),
    "left": ("abandoned",),
    # verbs, base form
    "fix": ("repair", "mend"), "clean": ("scrub", "tidy"), "carry": ("haul",), "move": ("shift",),
    "find": ("locate",), "wash": ("rinse",), "return": ("give back",), "paint": ("decorate",),
    "wrap": ("cover",), "hide": ("conceal",), "talk": ("chat",),
    # gerunds and adverbs
    "reading": ("browsing",), "cleaning": ("tidying",), "cooking": ("baking",), "writing": ("journaling",),
    "walking": ("strolling", "wandering"), "quietly": ("silently", "calmly"), "late": ("overtime",),
    "together": ("jointly",), "very": ("really",),
    # people
    "teacher": ("instructor",), "coworker": ("colleague",), "grandmother": ("grandma",),
    "grandfather": ("grandpa",), "friend": ("pal", "buddy"), "coach": ("trainer",), "boss": ("manager",),
    "neighbor": ("neighbour",), "landlord": ("landowner",), "children": ("kids",),
    # animals
    "cat": ("kitty",), "dog": ("hound",), "rabbit": ("bunny",), "puppy": ("pup",),
    # places
    "garden": ("backyard",), "park": ("green",), "bus": ("coach",),
    "station": ("depot",), "attic": ("loft",), "balcony": ("terrace",), "river": ("stream",),
    "market": ("bazaar",), "hallway": ("corridor",), "office": ("workplace",), "beach": ("shore", "seaside"),
    "basement": ("cellar",), "cafe": ("coffeehouse",), "bakery": ("bakehouse",), "car": ("automobile",),
    "sofa": ("couch",), "yard": ("lawn",), "porch": ("veranda",), "shed": ("hut",), "fence": ("railing",),
    "store": ("shop",), "shop": ("store",), "supermarket": ("grocery",), "mall": ("plaza",),
    "inside": ("indoors",), "fire": ("fireplace",),
    # times and events
    "yesterday": ("the day before",), "dinner": ("supper",), "lunch": ("luncheon",), "noon": ("midday",),
    "dawn": ("daybreak", "sunrise"), "storm": ("tempest",), "meeting": ("gathering",),
    "concert": ("recital",), "party": ("celebration",), "movie": ("film",), "trip": ("journey",),
    "rain": ("downpour",), "game": ("match",), "holidays": ("vacation",),
    "wedding": ("marriage ceremony",), "job": ("position",), "news": ("headlines",),
    "photos": ("photographs", "pictures"), "shoe": ("sneaker",), "mess": ("muddle",),
    # weather
    "rained": ("poured",), "foggy": ("misty",), "windy": ("blustery",), "freezing": ("icy",),
}


def _plural(word: str) -> str:
    if " " in word:
        head, _, rest = word.partition(" ")
        return f"{_plural(head)} {rest}" if head in ("cup", "pot", "bowl", "loaf") else f"{word}s"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def _with_plurals() -> dict[str, tuple[str, ...]]:
    """The base table plus the plural of every noun of the grammar's (singular, plural) lists."""
    from memlab.datagen import wordlists as W

    table = dict(_BASE)
    for singular, plural in W.THINGS + W.FOODS:
        if singular in _BASE and plural not in table:
            table[plural] = tuple(_plural(s) for s in _BASE[singular])
    return table


BUILTIN_SYNONYMS: Mapping[str, tuple[str, ...]] = _with_plurals()


def read_lexicon(path) -> dict[str, tuple[str, ...]]:
    """A `--lexicon` file: a JSON object word -> list of synonyms (non-empty strings); keys are lower-cased.
    Anything else is a DataError naming the file and the entry."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"--lexicon {p}: is a directory, expected a JSON file")
    if not p.is_file():
        raise DataError(f"--lexicon {p}: file not found")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"--lexicon {p}: not a JSON object of word -> synonyms ({e})") from None
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"--lexicon {p}: expected a non-empty JSON object {{\"word\": [\"synonym\", ...]}}")
    table = {}
    for word, syns in obj.items():
        if not isinstance(syns, list) or not syns or not all(isinstance(s, str) and s.strip() for s in syns):
            raise DataError(f"--lexicon {p}: entry {word!r}: expected a non-empty list of synonym strings")
        others = tuple(s.strip() for s in syns if s.strip().lower() != word.strip().lower())
        if not others:
            raise DataError(f"--lexicon {p}: entry {word!r}: every synonym is the word itself")
        table[word.strip().lower()] = others
    return table
