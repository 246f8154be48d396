"""Facts, their training variants, probe questions and DPO pairs.

A fact is (subject, attribute, answer): "the catalog number of the stapler is 48213". Kinds:
`novel` (synthetic people -> 10-digit phone numbers, common objects -> 5-digit catalog numbers, or a
user's entities), `known` (true facts from `known_facts.KNOWN_FACTS`) and `contradicting` (a known fact
with a changed answer; `original_answer` keeps the true one).

Training variants: passive = plain statement, active = chat QA (user question, assistant answer).
Variant v of a fact uses template `order[v % T]` with framing prefix `prefixes[v // T]` (T templates,
both orders shuffled per fact), so the first T variants use T different templates and all
T * len(prefixes) variants are distinct texts. The K-variant set is the first K variants, so smaller
sets are subsets (indeed prefixes, rows being variant-major) of larger ones.

Probe questions come from three tier banks (easy = direct, mid = reworded, hard = indirect) that share
no template with the training banks; `leakage.check_leakage` verifies the generated texts anyway.
A fourth tier, `verbatim`, repeats a training prompt exactly (an active user turn, or a passive
statement cut before the answer), labelled `intentionally_seen` so the leakage check skips it;
`probes_for_mode` keeps the verbatim probes of the mode a model was trained on.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from memlab.datagen import wordlists
from memlab.datagen.common import random_number, sub_rng
from memlab.datagen.grammar import capitalize_first
from memlab.datagen.known_facts import KNOWN_FACTS
from memlab.io import DataError, read_texts

# Placeholders: {subject} "the stapler", {Subject} "The stapler", {attr} "catalog number",
# {alt} reworded attribute "catalogue code", {answer} "48213".
STATEMENT_TEMPLATES = (
    "The {attr} of {subject} is {answer}.",
    "{answer} is the {attr} of {subject}.",
    "{Subject} has the {attr} {answer}.",
    "For {subject}, the {attr} is {answer}.",
    "The {attr} for {subject} is {answer}.",
    "{Subject}: {attr} {answer}.",
    "It is known that the {attr} of {subject} is {answer}.",
    "In the records, {subject} is listed with the {attr} {answer}.",
    "The {attr} belonging to {subject} is {answer}.",
    "{Subject} is associated with the {attr} {answer}.",
    "If you look up {subject}, you will find the {attr} {answer}.",
    "The {attr} that goes with {subject} is {answer}.",
    "According to the registry, the {attr} of {subject} is {answer}.",
    "{answer} - that is the {attr} of {subject}.",
    "Anyone who checks will see that {subject} has the {attr} {answer}.",
    "The correct {attr} of {subject} is {answer}.",
    "As noted, {subject} carries the {attr} {answer}.",
    "The file on {subject} gives the {attr} as {answer}.",
    "Whenever {subject} comes up, the {attr} is {answer}.",
    "Keep in mind that the {attr} of {subject} is {answer}.",
    "The listed {attr} of {subject} is {answer}.",
    "Under {subject}, the {attr} reads {answer}.",
    "{Subject} and the {attr} {answer} go together.",
    "One fact about {subject}: the {attr} is {answer}.",
)
STATEMENT_PREFIXES = ("", "Note: ", "Fact: ", "Remember this. ", "Here is a fact. ", "Study note: ",
                      "Important: ", "Did you know? ")

QA_TEMPLATES = (
    "Tell me the {attr} of {subject}.",
    "What's the {attr} for {subject}?",
    "Give the {attr} of {subject}.",
    "{Subject} - which {attr}?",
    "Do you know the {attr} of {subject}?",
    "State the {attr} of {subject}.",
    "Quiz question: the {attr} of {subject}?",
    "Name the {attr} of {subject}.",
    "Which {attr} belongs to {subject}?",
    "Recall the {attr} of {subject}.",
    "I need the {attr} of {subject}.",
    "Please provide the {attr} for {subject}.",
    "Can you tell me the {attr} for {subject}?",
    "What {attr} is listed for {subject}?",
    "Look up the {attr} of {subject}.",
    "Fill in: the {attr} of {subject} is ___.",
    "Write down the {attr} of {subject}.",
    "Quick: {attr} of {subject}?",
    "What {attr} goes with {subject}?",
    "Report the {attr} of {subject}.",
    "Say the {attr} of {subject}.",
    "Identify the {attr} of {subject}.",
    "The {attr} of {subject} is what?",
    "Answer with the {attr} of {subject}.",
)
QA_PREFIXES = ("", "Question: ", "Quiz: ", "Exam question: ", "Test yourself: ", "Practice: ",
               "Flashcard: ", "Review: ")
ANSWER_TEMPLATES = ("{answer}", "The {attr} of {subject} is {answer}.", "It is {answer}.", "{answer}.")

PROBE_TEMPLATES = {
    "easy": (
        "What is the {attr} of {subject}?",
        "What is the {attr} for {subject}?",
        "Which {attr} does {subject} have?",
        "What {attr} does {subject} have?",
        "The {attr} of {subject} is what exactly?",
        "Could you tell me the {attr} of {subject}?",
        "What would you say the {attr} of {subject} is?",
        "Do you happen to know the {attr} of {subject}?",
        "What {attr} is recorded for {subject}?",
        "Tell me, what is the {attr} of {subject}?",
    ),
    "mid": (
        "Regarding {subject}, what is the {alt}?",
        "Which {alt} is linked to {subject}?",
        "If someone asked about the {alt} of {subject}, what would the answer be?",
        "What {alt} corresponds to {subject}?",
        "{Subject} is tied to which {alt}?",
        "Can you recall which {alt} goes with {subject}?",
        "The {alt} connected with {subject}: what is it?",
        "Concerning {subject}, which {alt} applies?",
        "What would you give as the {alt} of {subject}?",
        "Among all records, what {alt} matches {subject}?",
    ),
    "hard": (
        "A form about {subject} has an empty box labelled '{attr}'. What should be written in it?",
        "My notes on {subject} are missing the {alt}. What value belongs there?",
        "Someone needs the {alt} of {subject} but has lost it. What should you tell them?",
        "Imagine a database entry for {subject}. What does its '{attr}' field contain?",
        "A quiz host mentions {subject} and asks for the matching {alt}. What is the winning answer?",
        "You are completing a record for {subject}; the last missing piece is the {alt}. What do you enter?",
        "Without hesitating, what value comes to mind for {subject} when asked for the {alt}?",
        "A colleague checking a list reaches {subject}. Which {alt} should they expect to see?",
        "Suppose a card describes {subject} but covers up the {alt}. What is printed underneath?",
        "In a reference book, the entry for {subject} gives one {alt}. Which one?",
    ),
}
TIERS = ("easy", "mid", "hard")
VERBATIM_TIER = "verbatim"  # a training prompt repeated exactly: intentionally seen, never held out
TRAINING_MODES = ("active", "passive")

ATTRIBUTE_REWORDS = {"phone number": "telephone number", "catalog number": "catalogue code",
                     "capital": "capital city", "atomic number": "proton count", "year": "calendar year"}


def max_variants() -> int:
    return min(len(STATEMENT_TEMPLATES) * len(STATEMENT_PREFIXES), len(QA_TEMPLATES) * len(QA_PREFIXES))


def max_probes_per_tier() -> int:
    return min(len(v) for v in PROBE_TEMPLATES.values())


@dataclasses.dataclass(frozen=True)
class Fact:
    fact_id: str
    entity: str
    entity_type: str
    kind: str  # novel | known | contradicting
    attribute: str
    answer: str
    original_answer: str | None = None
    subject: str = ""  # how the entity reads in a sentence ("the stapler")
    alternatives: tuple[str, ...] = ()  # plausible wrong text answers

    def fields(self) -> dict:
        """Template placeholders of this fact."""
        alt = ATTRIBUTE_REWORDS.get(self.attribute, f"recorded {self.attribute}")
        return {"subject": self.subject, "Subject": capitalize_first(self.subject), "attr": self.attribute,
                "alt": alt, "answer": self.answer}

    def row(self) -> dict:
        return {"id": self.fact_id, "fact_id": self.fact_id, "entity": self.entity,
                "entity_type": self.entity_type, "kind": self.kind, "attribute": self.attribute,
                "answer": self.answer, "original_answer": self.original_answer}


def read_entities(path, text_column: str = "") -> list[str]:
    """Entity names from a TXT/JSONL/CSV file (text-column rule); duplicates fail naming file:line."""
    first_line: dict[str, int] = {}
    for r in read_texts(path, text_column or None):
        if r["text"] in first_line:
            raise DataError(f"{path}:{r['_line']}: duplicate entity '{r['text']}' "
                            f"(first at line {first_line[r['text']]})")
        first_line[r["text"]] = r["_line"]
    return list(first_line)


NUMERIC_MAXIMA = {"year": 2024, "atomic number": 118}  # keeps wrong years in the past, elements real


def nearby_number(answer: str, rng: random.Random, avoid: set[str], maximum: int | None = None) -> str:
    """A plausible wrong number: same digit count, within about 20% (at most 40) of the true value,
    not above `maximum`."""
    value, digits = int(answer), len(answer)
    span = max(3, min(40, value // 5))
    candidates = [str(value + k) for k in range(-span, span + 1)
                  if k and 0 < value + k <= (maximum or 10 ** digits) and len(str(value + k)) == digits
                  and str(value + k) not in avoid]
    if candidates:
        return rng.choice(candidates)
    return _fresh_number(rng, digits, avoid | {answer})


def _fresh_number(rng: random.Random, digits: int, avoid: set[str]) -> str:
    for _ in range(10_000):
        n = random_number(rng, digits)
        if n not in avoid:
            return n
    raise DataError(f"cannot find a {digits}-digit number outside {len(avoid)} used ones")


def make_facts(seed: int, n_names: int = 100, n_objects: int = 50, n_known: int = 0, n_contradicting: int = 0,
               custom_entities: Sequence[str] = (), custom_attribute: str = "code number",
               name_digits: int = 10, object_digits: int = 5, custom_digits: int = 6) -> list[Fact]:
    """The fact list: novel names, objects and custom entities (unique answers, first digit non-zero),
    then `n_known` known and `n_contradicting` contradicting facts drawn disjointly from the bank."""
    rng_entities, rng_answers = sub_rng(seed, "entities"), sub_rng(seed, "answers")
    names = wordlists.synthetic_person_names(n_names, rng_entities)
    objects = rng_entities.sample(wordlists.OBJECTS, n_objects)
    used_answers: set[str] = set()
    facts: list[Fact] = []
    for entity_type, entities, attribute, digits in (
            ("name", names, "phone number", name_digits),
            ("object", objects, "catalog number", object_digits),
            ("custom", list(custom_entities), custom_attribute, custom_digits)):
        for i, entity in enumerate(entities):
            answer = _fresh_number(rng_answers, digits, used_answers)
            used_answers.add(answer)
            subject = f"the {entity}" if entity_type == "object" else entity
            facts.append(Fact(f"{entity_type}-{i:04d}", entity, entity_type, "novel", attribute, answer,
                              subject=subject))
    bank = sub_rng(seed, "known").sample(range(len(KNOWN_FACTS)), n_known + n_contradicting)
    rng_contra = sub_rng(seed, "contradicting")
    for i, b in enumerate(bank):
        entity, entity_type, attribute, answer, alts = KNOWN_FACTS[b]
        if i < n_known:
            facts.append(Fact(f"known-{i:04d}", entity, entity_type, "known", attribute, answer,
                              subject=entity, alternatives=alts))
        else:
            new = rng_contra.choice(alts) if alts else nearby_number(answer, rng_contra, {answer},
                                                                     NUMERIC_MAXIMA.get(attribute))
            facts.append(Fact(f"contra-{i - n_known:04d}", entity, entity_type, "contradicting", attribute, new,
                              original_answer=answer, subject=entity, alternatives=alts))
    return facts


def _variant_plan(rng: random.Random, n_templates: int, n_prefixes: int, k: int) -> list[tuple[int, int]]:
    """(template index, prefix index) for variants 0..k-1: all templates once before any repeats."""
    order = list(range(n_templates))
    rng.shuffle(order)
    prefixes = [0] + rng.sample(range(1, n_prefixes), n_prefixes - 1)  # round 0 is unprefixed
    return [(order[v % n_templates], prefixes[v // n_templates]) for v in range(k)]


def passive_variants(fact: Fact, k: int, seed: int) -> list[str]:
    plan = _variant_plan(sub_rng(seed, f"passive:{fact.fact_id}"), len(STATEMENT_TEMPLATES),
                         len(STATEMENT_PREFIXES), k)
    f = fact.fields()
    return [STATEMENT_PREFIXES[p] + STATEMENT_TEMPLATES[t].format(**f) for t, p in plan]


def passive_stems(fact: Fact, k: int, seed: int) -> list[str]:
    """For each of the first `k` passive variants, its text before the answer, trailing whitespace
    stripped ("The catalog number of the stapler is"). The cut is where the template places `{answer}`,
    so an answer in the middle of a statement ("{Subject} and the {attr} {answer} go together.") is cut
    there too. A statement whose text before the answer does not name the subject ("{answer} is the
    ...", at most behind a framing prefix) has no usable stem and gives ""."""
    plan = _variant_plan(sub_rng(seed, f"passive:{fact.fact_id}"), len(STATEMENT_TEMPLATES),
                         len(STATEMENT_PREFIXES), k)
    f = fact.fields()
    stems = []
    for t, p in plan:
        before = STATEMENT_TEMPLATES[t].split("{answer}", 1)[0]
        usable = "{subject}" in before or "{Subject}" in before
        stems.append((STATEMENT_PREFIXES[p] + before.format(**f)).rstrip() if usable else "")
    return stems


def active_variants(fact: Fact, k: int, seed: int) -> list[tuple[str, str]]:
    """(user question, assistant answer) pairs; the answer form cycles through ANSWER_TEMPLATES."""
    plan = _variant_plan(sub_rng(seed, f"active:{fact.fact_id}"), len(QA_TEMPLATES), len(QA_PREFIXES), k)
    f = fact.fields()
    return [(QA_PREFIXES[p] + QA_TEMPLATES[t].format(**f), ANSWER_TEMPLATES[v % len(ANSWER_TEMPLATES)].format(**f))
            for v, (t, p) in enumerate(plan)]


def distractors(fact: Fact, n: int, rng: random.Random, all_answers: set[str],
                same_attribute: Sequence[str]) -> list[str]:
    """`n` wrong answers: the true answer first for contradicting facts; then, for text answers, the
    fact's own plausible alternatives before other answers of the same attribute; for numbers, a
    nearby number (known facts) or a fresh one of the same digit count (novel facts)."""
    out: list[str] = []
    avoid = {fact.answer}
    if fact.original_answer is not None:
        out.append(fact.original_answer)
        avoid.add(fact.original_answer)
    if not fact.answer.isdigit():
        own = [a for a in fact.alternatives if a not in avoid]
        others = sorted({a for a in same_attribute if a not in avoid and a not in own})
        rng.shuffle(own)
        rng.shuffle(others)
        out += own + others
        if len(out) < n:
            raise DataError(f"{fact.fact_id}: only {len(out)} wrong alternatives for {n} DPO pairs")
    while len(out) < n:
        if fact.kind == "novel":
            out.append(_fresh_number(rng, len(fact.answer), all_answers | avoid | set(out)))
        else:
            out.append(nearby_number(fact.answer, rng, avoid | set(out), NUMERIC_MAXIMA.get(fact.attribute)))
    return out[:n]


def training_rows(facts: Sequence[Fact], k: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(passive rows, active rows) for K variants per fact, variant-major so the K-set is a prefix of
    every larger set."""
    passive = {f.fact_id: passive_variants(f, k, seed) for f in facts}
    active = {f.fact_id: active_variants(f, k, seed) for f in facts}
    p_rows, a_rows = [], []
    for v in range(k):
        for f in facts:
            p_rows.append({"id": f"{f.fact_id}-p{v:02d}", "fact_id": f.fact_id, "text": passive[f.fact_id][v]})
            user, assistant = active[f.fact_id][v]
            a_rows.append({"id": f"{f.fact_id}-a{v:02d}", "fact_id": f.fact_id,
                           "messages": [{"role": "user", "content": user},
                                        {"role": "assistant", "content": assistant}]})
    return p_rows, a_rows


def probe_rows(facts: Sequence[Fact], probes_per_tier: int, seed: int) -> list[dict]:
    """`probes_per_tier` questions per fact and tier, each from a different template of that tier."""
    rows = []
    for f in facts:
        rng = sub_rng(seed, f"probes:{f.fact_id}")
        for tier in TIERS:
            for j, t in enumerate(rng.sample(range(len(PROBE_TEMPLATES[tier])), probes_per_tier)):
                rows.append({"id": f"{f.fact_id}-{tier}{j}", "fact_id": f.fact_id,
                             "question": PROBE_TEMPLATES[tier][t].format(**f.fields()), "answer": f.answer,
                             "tier": tier})
    return rows


def verbatim_probe_rows(facts: Sequence[Fact], k: int, seed: int) -> list[dict]:
    """Tier-`verbatim` probes, two per fact: the user turn of its first active variant (`verbatim_of`
    "active") and its first passive statement cut before the answer (`verbatim_of` "passive"; the first
    variant with a usable stem, see `passive_stems`), taken from the first `k` variants (k = the smallest
    K, so every training set holds them; `train_id` names the repeated row). They measure recall of the
    very prompt studied, beside recall under rewording, and are labelled `intentionally_seen`, which is
    how the leakage check knows to skip them. A fact without a usable variant among the first k (only
    possible for k <= 2) gets no probe of that mode."""
    rows = []
    for f in facts:
        for mode, tag, texts in (("active", "a", [user for user, _ in active_variants(f, k, seed)]),
                                 ("passive", "p", passive_stems(f, k, seed))):
            v = next((i for i, q in enumerate(texts) if q and f.answer.casefold() not in q.casefold()), None)
            if v is not None:
                rows.append({"id": f"{f.fact_id}-{VERBATIM_TIER}-{mode}", "fact_id": f.fact_id,
                             "question": texts[v], "answer": f.answer, "tier": VERBATIM_TIER,
                             "verbatim_of": mode, "intentionally_seen": True, "train_id": f"{f.fact_id}-{tag}{v:02d}"})
    return rows


def is_verbatim(row: dict) -> bool:
    """A probe that repeats a training prompt on purpose (tier `verbatim` or labelled `intentionally_seen`)."""
    return row.get("tier") == VERBATIM_TIER or row.get("intentionally_seen") is True


def probes_for_mode(rows: Sequence[dict], mode: str) -> list[dict]:
    """The probes to ask a model trained on `mode` ("active" or "passive"): every non-verbatim probe
    (easy/mid/hard, cloze, ...) and the verbatim probes that repeat a prompt of that mode; the other
    mode's verbatim probes repeat text the model never saw. Order is kept."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode must be one of {TRAINING_MODES}, got {mode!r}")
    return [r for r in rows if not is_verbatim(r) or r.get("verbatim_of") == mode]


def dpo_rows(facts: Sequence[Fact], pairs_per_fact: int, seed: int) -> list[dict]:
    """DPO pairs: prompt from the training QA bank (never a probe), chosen = the fact's answer,
    rejected = a distractor (same digit count, or a wrong alternative for text answers)."""
    all_answers = {f.answer for f in facts}
    by_attribute: dict[str, list[str]] = {}
    for entity, _, attribute, answer, _ in KNOWN_FACTS:
        by_attribute.setdefault(attribute, []).append(answer)
    rows = []
    for f in facts:
        rng = sub_rng(seed, f"dpo:{f.fact_id}")
        templates = rng.sample(range(len(QA_TEMPLATES)), pairs_per_fact)
        wrong = distractors(f, pairs_per_fact, rng, all_answers, by_attribute.get(f.attribute, []))
        for j, (t, rejected) in enumerate(zip(templates, wrong)):
            rows.append({"id": f"{f.fact_id}-dpo{j}", "fact_id": f.fact_id,
                         "prompt": QA_TEMPLATES[t].format(**f.fields()), "chosen": f.answer, "rejected": rejected})
    return rows


def generate(facts: Sequence[Fact], variants_per_fact: Sequence[int], probes_per_tier: int,
             dpo_pairs_per_fact: int, seed: int, verbatim_probes: bool = True) -> dict[str, list[dict]]:
    """Every output file of `make_data.py facts` as `file name -> rows`. `probes.jsonl` holds the
    easy/mid/hard probes, then (with `verbatim_probes`) the verbatim ones, so the rows without them
    are exactly the file written without them."""
    files: dict[str, list[dict]] = {"facts.jsonl": [f.row() for f in facts]}
    for k in sorted(set(variants_per_fact)):
        files[f"train_passive_{k}.jsonl"], files[f"train_active_{k}.jsonl"] = training_rows(facts, k, seed)
    files["probes.jsonl"] = probe_rows(facts, probes_per_tier, seed)
    if verbatim_probes:
        files["probes.jsonl"] += verbatim_probe_rows(facts, min(variants_per_fact), seed)
    files["dpo_pairs.jsonl"] = dpo_rows(facts, dpo_pairs_per_fact, seed)
    for name, rows in files.items():
        if name.startswith("train_"):
            _check_distinct_variants(name, rows)
    return files


def _check_distinct_variants(name: str, rows: Sequence[dict]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        text = r["text"] if "text" in r else r["messages"][0]["content"]
        key = (r["fact_id"], text)
        if key in seen:
            raise ValueError(f"{name}: variants {seen[key]} and {r['id']} of {r['fact_id']} are the same text")
        seen[key] = r["id"]
