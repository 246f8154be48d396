"""Seen/unseen sets for recognition (2AFC and ROC) from a text corpus.

Each seen sentence gets one foil, paired by row order and by `pair_id`:
- `novel`: another corpus sentence with the closest word count (never used twice, never a seen one);
- `shuffled`: the seen sentence's words in a different order;
- `random_words`: as many words as the seen sentence, drawn from the corpus vocabulary;
- `synonym`: the seen sentence with one content word replaced by a synonym from an offline lexicon
  (memlab.datagen.lexicon: the built-in table for the grammar's words, or `--lexicon FILE`); an article
  before it is fixed (a/an); the row records `replaced_word` and `synonym`;
- `paraphrase`: the same content in another surface form. A sentence of memlab's grammar is read back into
  its slots and rendered by another of its frame's templates (memlab.datagen.grammar.paraphrases: passive
  voice, a moved adverbial, a dative shift, ...); any other sentence is paraphrased by a local instruct model
  (`--paraphrase_model`, greedy, `PARAPHRASE_PROMPT`), and without one it is an error. The row records
  `paraphrase_by` (grammar or model);
- `char_scramble`: the letters of each word scrambled and the words reordered (Orhan 2023, experiment 6).
With several foil types, pairs take them in turn (pair i gets type i mod len(types)). Every foil is checked
against every seen sentence as it is made: one equal to a seen sentence after `normalize_text` is rejected
and another drawn (the leakage check of make_data.py then runs on the files as for every generator).
Randomness: novel/shuffled/random_words share the stream "recognition" (as before these types existed, so
older datasets rebuild byte-identically); each newer type draws from its own stream "recognition:TYPE".
"""
from __future__ import annotations

import bisect
import random
from typing import Callable, Mapping, Sequence

from memlab.datagen.common import sub_rng
from memlab.datagen.grammar import article, capitalize_first, paraphrases, vocabulary
from memlab.text import normalize_text
from memlab.io import DataError

FOIL_TYPES = ("novel", "shuffled", "random_words", "synonym", "paraphrase", "char_scramble")
NEW_STREAM_TYPES = ("synonym", "paraphrase", "char_scramble")  # each with its own random stream
_PUNCT = ".,;:!?\"'()[]"
PARAPHRASE_PROMPT = ("Paraphrase the following sentence: keep its meaning, change its wording or word order. "
                     "Reply with the paraphrase only, as one sentence.\n\nSentence: {text}")


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


def synonym_options(text: str, lexicon: Mapping[str, Sequence[str]]) -> list[tuple[int, str]]:
    """(word position, synonym) pairs for `text`: every word found in `lexicon` (lower-cased, punctuation
    stripped) with each of its synonyms. A capitalized word after the first is taken for a name and skipped."""
    options = []
    for i, token in enumerate(_words(text)):
        core = token.strip(_PUNCT)
        if not core or (i > 0 and core[:1].isupper()):
            continue
        options += [(i, syn) for syn in lexicon.get(core.lower(), ())]
    return options


def apply_synonym(text: str, position: int, synonym: str) -> str:
    """`text` with the word at `position` replaced by `synonym` (its punctuation and initial capital kept),
    and a preceding a/an fixed for the new word."""
    words = _words(text)
    token = words[position]
    core = token.strip(_PUNCT)
    lead = token[:len(token) - len(token.lstrip(_PUNCT))]
    trail = token[len(lead) + len(core):]
    new = capitalize_first(synonym) if core[:1].isupper() else synonym
    words[position] = f"{lead}{new}{trail}"
    if position > 0 and words[position - 1].lower() in ("a", "an"):
        art = article(synonym)
        words[position - 1] = capitalize_first(art) if words[position - 1][:1].isupper() else art
    return " ".join(words)


def synonym_foil(text: str, lexicon: Mapping[str, Sequence[str]], rng: random.Random,
                 taken: set[str] = frozenset()) -> tuple[str, str, str] | None:
    """(foil, replaced word, synonym): one word of `text` replaced by a synonym, the choice drawn by `rng`
    among all (word, synonym) options; options whose result normalizes to `text` or into `taken` (the seen
    sentences) are passed over. None when no option is left (no word of `text` is in the lexicon)."""
    options = synonym_options(text, lexicon)
    rng.shuffle(options)
    original = normalize_text(text)
    for position, syn in options:
        candidate = apply_synonym(text, position, syn)
        key = normalize_text(candidate)
        if key != original and key not in taken:
            return candidate, _words(text)[position].strip(_PUNCT), syn
    return None


def char_scramble_foil(text: str, rng: random.Random, taken: set[str] = frozenset(), attempts: int = 50) -> str | None:
    """The letters of each word of `text` scrambled (lower-cased; a word with two or more distinct letters
    always changes) and the words put in a random order, first letter capitalized, one final period.
    None when every draw normalizes to `text` or into `taken`."""
    words = [w.strip(_PUNCT).lower() for w in _words(text)]
    words = [w for w in words if w]
    original = normalize_text(text)
    for _ in range(attempts):
        scrambled = []
        for w in words:
            letters = list(w)
            for _ in range(20):
                rng.shuffle(letters)
                if "".join(letters) != w or len(set(w)) < 2:
                    break
            scrambled.append("".join(letters))
        rng.shuffle(scrambled)
        candidate = capitalize_first(" ".join(scrambled)) + "."
        key = normalize_text(candidate)
        if key != original and key not in taken:
            return candidate
    return None


def grammar_paraphrase_foil(text: str, rng: random.Random, taken: set[str] = frozenset()) -> str | None:
    """Another surface form of a grammar sentence (memlab.datagen.grammar.paraphrases), drawn by `rng` among
    those that normalize neither to `text` nor into `taken`; None for a sentence the grammar cannot read."""
    original = normalize_text(text)
    options = [p for p in paraphrases(text) if normalize_text(p) != original and normalize_text(p) not in taken]
    return rng.choice(options) if options else None


def clean_model_paraphrase(output: str) -> str:
    """The first non-empty line of a model's reply, without a leading `Paraphrase:` label or wrapping quotes."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if text.lower().startswith("paraphrase:"):
        text = text[len("paraphrase:"):].strip()
    return text.strip("\"'“”").strip()


def model_paraphraser(model_dir: str, dtype: str = "float32", batch_size: int = 8,
                      max_new_tokens: int = 96) -> Callable[[Sequence[str]], list[str]]:
    """texts -> paraphrases by a local instruct model (memlab.models: a local dir or a built-in name; offline),
    greedy, one `PARAPHRASE_PROMPT` user turn each (the tokenizer's chat template when it has one)."""
    import torch

    from memlab.generation import GenRequest, generate_requests, qa_prompt_ids, stop_token_ids
    from memlab.models import load_model, load_tokenizer

    tok = load_tokenizer(model_dir)
    model, _ = load_model(model_dir, dtype)
    model.to("cuda" if torch.cuda.is_available() else "cpu")

    def paraphrase(texts: Sequence[str]) -> list[str]:
        requests = [GenRequest(str(i), qa_prompt_ids(tok, PARAPHRASE_PROMPT.format(text=t)), max_new_tokens)
                    for i, t in enumerate(texts)]
        out = generate_requests(model, requests, tok.pad_token_id, stop_token_ids(tok, model), batch_size)
        return [clean_model_paraphrase(tok.decode(out[str(i)], skip_special_tokens=True)) for i in range(len(texts))]

    return paraphrase


def make_recognition(corpus: Sequence[dict], n_pairs: int, foil_types: Sequence[str], seed: int,
                     min_words: int = 3, lexicon: Mapping[str, Sequence[str]] | None = None,
                     paraphraser: Callable[[Sequence[str]], list[str]] | None = None,
                     corpus_name: str = "--corpus", lexicon_name: str = "built-in synonym table"
                     ) -> tuple[list[dict], list[dict]]:
    """(seen rows, unseen rows). `corpus` rows have `id` and `text` and are already de-duplicated.

    Seen sentences are drawn from rows with at least `min_words` words (so a shuffle can differ);
    novel foils come from the rest of the corpus, matched on word count. `lexicon` (word -> synonyms) serves
    the synonym foils (default: the built-in table); `paraphraser` (texts -> paraphrases) the paraphrase foils
    of sentences that are not the grammar's (without it they are a DataError).
    """
    rng = sub_rng(seed, "recognition")
    streams = {t: sub_rng(seed, f"recognition:{t}") for t in NEW_STREAM_TYPES}
    eligible = [r for r in corpus if len(_words(r["text"])) >= min_words and len(set(
        normalize_text(r["text"]).split())) >= 2]
    if len(eligible) < n_pairs:
        raise DataError(f"the corpus has {len(eligible)} usable sentences (>= {min_words} words), "
                        f"fewer than --n_pairs {n_pairs}")
    seen_rows = rng.sample(eligible, n_pairs)
    seen_ids = {r["id"] for r in seen_rows}
    taken = {normalize_text(r["text"]) for r in seen_rows}  # no foil may equal a seen sentence
    pool = sorted((len(_words(r["text"])), i, r) for i, r in enumerate(corpus) if r["id"] not in seen_ids)
    pool_lengths = [p[0] for p in pool]
    n_novel = sum(1 for i in range(n_pairs) if foil_types[i % len(foil_types)] == "novel")
    if n_novel > len(pool):
        raise DataError(f"novel foils need {n_novel} unused corpus sentences, the corpus has {len(pool)} left")
    vocab = vocabulary([r["text"] for r in corpus])
    if "random_words" in foil_types and not vocab:
        raise DataError("random_words foils need words, but the corpus has no alphabetic words")
    common = lowercase_words([r["text"] for r in corpus]) if "shuffled" in foil_types else set()
    from memlab.datagen.lexicon import BUILTIN_SYNONYMS

    lexicon = BUILTIN_SYNONYMS if lexicon is None else lexicon
    used = [False] * len(pool)
    seen, unseen, for_model, no_synonym = [], [], [], []
    for i, row in enumerate(seen_rows):
        foil_type = foil_types[i % len(foil_types)]
        n_words = len(_words(row["text"]))
        source_id = row["id"]
        extra = {}
        if foil_type == "novel":
            j = _closest_unused(pool_lengths, used, n_words, rng)
            used[j] = True
            text, source_id = pool[j][2]["text"], pool[j][2]["id"]
        elif foil_type == "shuffled":
            text = _redraw(lambda: shuffled_foil(row["text"], rng, common), taken)
            if text is None:  # unreachable in practice: eligible rows have >= 2 distinct words
                raise DataError(f"{corpus_name} id={row['id']}: cannot shuffle {row['text']!r} into a sentence "
                                "that differs from every seen one")
        elif foil_type == "random_words":
            text = _redraw(lambda: random_words_foil(n_words, vocab, rng), taken)
            if text is None:
                raise DataError(f"{corpus_name} id={row['id']}: every random-word draw equals a seen sentence")
        elif foil_type == "synonym":
            found = synonym_foil(row["text"], lexicon, streams["synonym"], taken)
            if found is None:
                no_synonym.append(row)
                text = ""
            else:
                text, word, syn = found
                extra = {"replaced_word": word, "synonym": syn}
        elif foil_type == "paraphrase":
            text = grammar_paraphrase_foil(row["text"], streams["paraphrase"], taken)
            extra = {"paraphrase_by": "grammar" if text is not None else "model"}
            if text is None:
                for_model.append(i)
                text = ""
        else:
            text = char_scramble_foil(row["text"], streams["char_scramble"], taken)
            if text is None:
                raise DataError(f"{corpus_name} id={row['id']}: cannot scramble {row['text']!r} into a text that "
                                "differs from every seen sentence")
        pair_id = f"pair-{i:04d}"
        seen.append({"id": f"seen-{i:04d}", "pair_id": pair_id, "source_id": row["id"], "text": row["text"]})
        unseen.append({"id": f"unseen-{i:04d}", "pair_id": pair_id, "source_id": source_id,
                       "foil_type": foil_type, "text": text, **extra})
    if no_synonym:
        r = no_synonym[0]
        if synonym_options(r["text"], lexicon):
            raise DataError(f"{corpus_name} id={r['id']}: every synonym substitution of {r['text']!r} from the "
                            f"{lexicon_name} gives a seen sentence (or the sentence itself); add other synonyms "
                            "for its words, or draw fewer pairs")
        hint = ("the built-in table covers memlab's grammar: for another corpus give --lexicon FILE (JSON word -> "
                "synonyms)" if lexicon is BUILTIN_SYNONYMS else "add entries for its words")
        raise DataError(f"{corpus_name} id={r['id']}: no word of {r['text']!r} is in the {lexicon_name} "
                        f"({len(no_synonym)} seen sentence(s) for synonym foils have none); {hint}")
    if for_model:
        _model_paraphrases(for_model, seen, unseen, taken, paraphraser, corpus_name)
    return seen, unseen


def _redraw(draw: Callable[[], str | None], taken: set[str], attempts: int = 50) -> str | None:
    """`draw()` until its result does not normalize into `taken` (a seen sentence); None after `attempts`."""
    for _ in range(attempts):
        text = draw()
        if text is None or normalize_text(text) not in taken:
            return text
    return None


def _model_paraphrases(indices: Sequence[int], seen: list[dict], unseen: list[dict], taken: set[str],
                       paraphraser, corpus_name: str) -> None:
    """Fill the paraphrase foils the grammar could not make with the model's paraphrases; a missing model or
    an unusable reply (empty, or equal to a seen sentence after normalization) is a DataError."""
    first = seen[indices[0]]
    if paraphraser is None:
        raise DataError(f"{corpus_name} id={first['source_id']}: {first['text']!r} is not a sentence of memlab's "
                        f"grammar ({len(indices)} seen sentence(s) for paraphrase foils are not), so it cannot be "
                        "paraphrased by the grammar: give --paraphrase_model DIR (a local instruct model)")
    outputs = paraphraser([seen[i]["text"] for i in indices])
    bad = []
    for i, out in zip(indices, outputs):
        if not out.strip() or normalize_text(out) in taken or not normalize_text(out):
            bad.append((seen[i], out))
        unseen[i]["text"] = out
    if bad:
        (s, out), n = bad[0], len(bad)
        raise DataError(f"{corpus_name} id={s['source_id']}: the paraphrase model's reply {out!r} to {s['text']!r} is "
                        f"empty or equals a seen sentence after normalization ({n} such repl{'y' if n == 1 else 'ies'}); "
                        "use another --paraphrase_model, or foil types that need no model")


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
