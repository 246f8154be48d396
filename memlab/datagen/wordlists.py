"""Word lists for the generators. Plain tuples (ordered), so sampling from them is reproducible.

Synthetic person names pair an ordinary first name with a surname assembled from syllables that is
unlikely to belong to anyone famous, so a base model has no prior about "the phone number of X".
"""
from __future__ import annotations

import random

from memlab.io import DataError

FIRST_NAMES = (
    "Ada", "Alma", "Anika", "Arlo", "Asha", "Bea", "Bram", "Cato", "Celia", "Dara", "Dov", "Edda", "Elio",
    "Emre", "Esme", "Ezra", "Fenna", "Flint", "Gala", "Greta", "Hale", "Hana", "Idris", "Ines", "Ivo",
    "Jana", "Joss", "Juno", "Kai", "Kenji", "Lale", "Lior", "Lotta", "Luca", "Mabel", "Mara", "Milo",
    "Mira", "Nadia", "Nico", "Noor", "Odile", "Omar", "Orla", "Otto", "Pia", "Quinn", "Rafa", "Rhea",
    "Rosa", "Rumi", "Sade", "Sami", "Selma", "Soren", "Tamsin", "Teo", "Thea", "Uma", "Vera", "Wren",
    "Yara", "Yusuf", "Zeno", "Zoya",
)

# Surname = onset + middle + ending, e.g. "Brenvald", "Quillaro". 18 * 14 * 14 = 3528 surnames.
SURNAME_ONSETS = ("Bren", "Cal", "Dov", "Fen", "Gar", "Hol", "Kes", "Lam", "Mor", "Nev", "Orr", "Pel",
                  "Quil", "Ros", "Sel", "Tav", "Vos", "Wyn")
SURNAME_MIDDLES = ("a", "e", "i", "o", "u", "ar", "en", "il", "or", "um", "ad", "es", "iv", "ot")
SURNAME_ENDINGS = ("vald", "ric", "stone", "holm", "ford", "wick", "ley", "dell", "mont", "gard", "ko",
                   "ran", "sby", "thal")

# Common objects for "the catalog number of the stapler is 48213" facts (>= 50 needed for the default set).
OBJECTS = (
    "stapler", "umbrella", "teapot", "flashlight", "backpack", "bicycle", "calculator", "candle", "chair",
    "clock", "compass", "cushion", "desk lamp", "doormat", "drill", "envelope", "eraser", "fan", "frying pan",
    "globe", "guitar", "hammer", "headphones", "helmet", "kettle", "keyboard", "ladder", "lantern",
    "laptop", "magnifying glass", "microwave", "mirror", "mop", "notebook", "padlock", "paintbrush",
    "pencil sharpener", "pillow", "plant pot", "printer", "radio", "raincoat", "rolling pin", "ruler",
    "scissors", "screwdriver", "shovel", "skateboard", "sleeping bag", "spatula", "suitcase", "tape measure",
    "telescope", "thermometer", "toaster", "toolbox", "toothbrush", "towel", "tripod", "vase", "wallet",
    "watering can", "wheelbarrow", "whisk", "wrench", "yoga mat", "alarm clock", "bookshelf", "bucket",
    "camera", "coffee mug", "colander", "dustpan", "fishing rod", "hairbrush", "jigsaw puzzle", "kite",
    "lunchbox", "pocket knife", "sewing machine",
)

# ------------------------------------------------------------------ everyday-sentence grammar vocabulary
PEOPLE_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Irene", "Jack", "Kim", "Leo",
    "Maya", "Nina", "Oscar", "Paula", "Rita", "Sam", "Tara", "Victor", "Wendy", "Yusuf", "Zoe", "Priya",
    "Omar", "Lucy", "Tom", "Sara", "Ivan", "Mei",
)
RELATIONS = ("sister", "brother", "neighbor", "uncle", "aunt", "teacher", "landlord", "coworker",
             "grandmother", "grandfather", "cousin", "friend", "coach", "roommate", "boss", "dentist")
RELATION_DETERMINERS = ("my", "our", "his", "her")

# (singular, plural)
THINGS = (
    ("lamp", "lamps"), ("umbrella", "umbrellas"), ("scarf", "scarves"), ("key", "keys"), ("book", "books"),
    ("chair", "chairs"), ("mug", "mugs"), ("clock", "clocks"), ("basket", "baskets"), ("jacket", "jackets"),
    ("kettle", "kettles"), ("letter", "letters"), ("candle", "candles"), ("blanket", "blankets"),
    ("bicycle", "bicycles"), ("radio", "radios"), ("notebook", "notebooks"), ("suitcase", "suitcases"),
    ("mirror", "mirrors"), ("plant", "plants"), ("hat", "hats"), ("box", "boxes"), ("map", "maps"),
    ("bottle", "bottles"), ("towel", "towels"), ("wallet", "wallets"), ("ladder", "ladders"),
    ("painting", "paintings"), ("phone", "phones"), ("pillow", "pillows"),
)
FOODS = (
    ("apple pie", "apple pies"), ("loaf of bread", "loaves of bread"), ("pot of soup", "pots of soup"),
    ("lemon cake", "lemon cakes"), ("sandwich", "sandwiches"), ("pizza", "pizzas"), ("salad", "salads"),
    ("omelette", "omelettes"), ("bowl of rice", "bowls of rice"), ("banana", "bananas"),
    ("cup of tea", "cups of tea"), ("orange", "oranges"), ("muffin", "muffins"), ("pancake", "pancakes"),
    ("tomato", "tomatoes"), ("cookie", "cookies"),
)
ADJECTIVES = ("old", "new", "small", "large", "blue", "red", "green", "yellow", "heavy", "broken", "shiny",
              "wooden", "tiny", "dusty", "cheap", "lovely", "strange", "warm", "soft", "bright")
THING_VERBS_PAST = ("found", "lost", "cleaned", "fixed", "borrowed", "carried", "painted", "dropped",
                    "wrapped", "returned", "sold", "bought", "moved", "washed", "hid", "forgot", "picked up",
                    "put away")
THING_VERBS_BASE = ("fix", "clean", "carry", "move", "find", "wash", "return", "paint", "wrap", "hide")
FOOD_VERBS_PAST = ("ate", "cooked", "bought", "shared", "baked", "tasted", "ordered", "packed", "finished",
                   "made")
INTRANSITIVE_PAST = ("waited", "slept", "sang", "read quietly", "worked late", "sat for a while",
                     "laughed", "danced", "studied", "rested", "played cards", "wrote a letter")
GERUNDS = ("reading", "cleaning", "cooking", "painting", "writing", "gardening", "walking", "knitting",
           "practicing the piano", "sorting old photos")
PLACES = ("in the kitchen", "in the garden", "at the park", "on the bus", "at the station", "in the attic",
          "at the library", "on the balcony", "by the river", "at the market", "in the hallway",
          "at the office", "on the train", "at the beach", "in the basement", "at the cafe",
          "near the bakery", "at school", "in the car", "at the museum")
HOME_PLACES = ("at home", "inside", "in bed", "in the living room", "by the fire", "upstairs")
TIMES = ("this morning", "last night", "on Sunday", "after lunch", "yesterday", "on Monday",
         "before dinner", "at noon", "last week", "this afternoon", "early on Friday", "at dawn",
         "on Saturday evening", "during the storm", "after work", "before breakfast")
EVENTS = ("dinner", "lunch", "the meeting", "the concert", "school", "work", "the game", "the party",
          "breakfast", "the movie", "the trip", "the rain")
ANIMALS = ("cat", "dog", "parrot", "rabbit", "goat", "duck", "horse", "hamster", "pigeon", "puppy")
ANIMAL_VERBS = ("slept", "barked", "hid", "played", "ran around", "waited", "sat quietly", "chewed a shoe",
                "rolled over", "made a mess")
ANIMAL_PLACES = ("on the sofa", "under the table", "in the yard", "by the door", "on the porch",
                 "in the barn", "near the fence", "behind the shed")
WEATHER = ("rained", "snowed", "was windy", "was very hot", "was foggy", "was freezing")
SHOPS = ("market", "bakery", "hardware store", "supermarket", "flea market", "corner shop", "mall")
OCCASIONS = ("a birthday", "the holidays", "the wedding", "no reason at all", "the new year",
             "the housewarming", "graduation")
TOPICS = ("the weather", "the garden", "a new job", "the holidays", "an old friend", "the rent",
          "a movie", "the news", "the children", "a recipe", "the football match", "the trip")
DURATIONS = ("an hour", "two hours", "the whole afternoon", "ten minutes", "most of the day", "all evening")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "a dozen")


def synthetic_person_names(n: int, rng: random.Random) -> list[str]:
    """`n` distinct synthetic "First Surname" names, in a seed-determined order."""
    surnames = [o + m + e for o in SURNAME_ONSETS for m in SURNAME_MIDDLES for e in SURNAME_ENDINGS]
    combos = len(FIRST_NAMES) * len(surnames)
    if n > combos:
        raise DataError(f"at most {combos} synthetic names, asked for {n}")
    picks = rng.sample(range(combos), n)
    return [f"{FIRST_NAMES[i % len(FIRST_NAMES)]} {surnames[i // len(FIRST_NAMES)]}" for i in picks]


def max_person_names() -> int:
    return len(FIRST_NAMES) * len(SURNAME_ONSETS) * len(SURNAME_MIDDLES) * len(SURNAME_ENDINGS)
