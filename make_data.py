"""Make the datasets of memlab, deterministically by --seed; each subcommand writes one directory of
JSONL files plus manifest.json (generator, arguments, seed, counts, package version, leakage check).

    # facts: novel (names -> 10-digit, objects -> 5-digit numbers), known and contradicting facts;
    # nested train_passive_K / train_active_K sets, probes.jsonl (easy/mid/hard, plus verbatim repeats of a
    # training prompt, labelled intentionally seen; --no_verbatim_probes leaves them out), dpo_pairs.jsonl
    python make_data.py facts --output_dir runs/data/facts --n_names 100 --n_objects 50 --variants_per_fact 5,10,25,50
    python make_data.py facts --output_dir runs/data/known --n_names 0 --n_objects 0 --n_known 50 --n_contradicting 50
    python make_data.py facts --output_dir runs/data/mine --n_names 0 --n_objects 0 --entities_file my_entities.txt
    # ID documents of about --doc_tokens tokens (model tokenizer): "[DOC_48213] ... [DOC_48213]"
    python make_data.py documents --output_dir data/documents --n_docs 50 --doc_tokens 256
    # the shipped everyday-sentence corpus
    python make_data.py corpus --output_dir data/corpus --n_sentences 5000
    # recognition: seen.jsonl / unseen.jsonl paired by row order and pair_id; foils novel|shuffled|random_words|
    # synonym|paraphrase|char_scramble (paraphrases of a non-grammar corpus need --paraphrase_model DIR)
    python make_data.py recognition --output_dir data/recognition --n_pairs 300 --foil_type novel,shuffled,random_words
    # membership inference: members / nonmembers / train.jsonl with canaries repeated 1..32 times
    python make_data.py mia --output_dir data/mia --source corpus --canary_copies 1,2,4,8,16,32 --canaries_per_copy 2
    # cloze probes from your own articles (JSONL/TXT/CSV): blank a number or a capitalised entity
    python make_data.py cloze --input news.jsonl --text_column body --output_dir runs/data/news
    # external formats -> ours (text.jsonl, chat.jsonl or probes.jsonl)
    python make_data.py convert --input sents.csv --to text --text_column sentence --output_dir runs/data/sents
    python make_data.py convert --input chats.jsonl --to chat --output_dir runs/data/chats
    python make_data.py convert --input qa.csv --to probes --answer_column answer \
        --tier_columns easy=q_easy,mid=q_mid,hard=q_hard --output_dir runs/data/qa
    # the leakage check on a directory (probes/unseen/nonmembers vs every other *.jsonl) or on files
    python make_data.py check --data_dir data/facts
    python make_data.py check --train train.jsonl --held_out probes.jsonl
    # a held-out CSV with one question column per tier: the same flags as convert --to probes
    python make_data.py check --train train.jsonl --held_out probes.csv --answer_column Answer \
        --tier_columns "easy=Question 1,mid=Question 2,hard=Question 3"
    # token frequency table for the dc_pdd attack (membership_inference.py --freqs DIR), model's tokenizer
    python make_data.py freqs --corpus data/corpus/sentences.jsonl --model_name_or_path smollm2-135m --output_dir runs/freqs

Every subcommand also takes --config args.yaml (command-line flags override it). Bad input prints one
`error: ...` line naming file:line or the field and exits with status 2, leaving no output directory.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from memlab.cli import arg, collect_errors, parse_args, parse_list
from memlab.datagen import (cloze, convert, documents, facts, grammar, leakage, lexicon, membership, recognition,
                            wordlists)
from memlab.datagen.common import build_manifest, dedupe_by_normalized_text, write_dataset
from memlab.rundir import check_inputs_outside, lock_dir, release_locks
from memlab.datagen.known_facts import KNOWN_FACTS
from memlab.io import DataError, check_writable_dir, parse_tier_columns, read_texts
from memlab.models import BUILTIN_MODELS, DEFAULT_MODEL, load_tokenizer, model_name_or_path_arg
from memlab.text import normalize_text

ROOT = Path(__file__).resolve().parent
DEFAULT_CORPUS = "data/corpus/sentences.jsonl"


@dataclass
class FactsArgs:
    output_dir: str = arg("", "directory to write (required)")
    seed: int = arg(0, "random seed; same seed -> byte-identical files")
    n_names: int = arg(100, "novel facts about synthetic people (phone numbers)")
    n_objects: int = arg(50, f"novel facts about common objects (catalog numbers), at most {len(wordlists.OBJECTS)}")
    n_known: int = arg(0, f"true facts from the bank of {len(KNOWN_FACTS)} (capitals, atomic numbers, years)")
    n_contradicting: int = arg(0, "bank facts with a changed answer (disjoint from --n_known)")
    entities_file: str = arg("", "your own entities (TXT/JSONL/CSV, one per row) as extra novel facts")
    text_column: str = arg("", "column of --entities_file holding the entity (default: text, else first string)")
    custom_attribute: str = arg("code number", "attribute of --entities_file facts")
    name_digits: int = arg(10, "digits of the names' answers")
    object_digits: int = arg(5, "digits of the objects' answers")
    custom_digits: int = arg(6, "digits of the --entities_file answers")
    variants_per_fact: str = arg("5,10,25,50", "nested training-set sizes K (variants per fact)")
    probes_per_tier: int = arg(1, "probe questions per fact and tier (easy, mid, hard)")
    verbatim_probes: bool = arg(True, "also write tier-verbatim probes repeating a training prompt exactly (per "
                                      "fact: the first active user turn, the first passive statement cut before "
                                      "the answer), labelled intentionally_seen; --no_verbatim_probes leaves them out")
    dpo_pairs_per_fact: int = arg(1, "DPO pairs per fact in dpo_pairs.jsonl (chosen = the true answer, rejected = "
                                     "a distractor), 0..5")


@dataclass
class DocumentsArgs:
    output_dir: str = arg("", "directory to write (required)")
    seed: int = arg(0, "random seed; the same seed gives byte-identical files")
    n_docs: int = arg(50, "number of ID documents to write, at most 9*10^(id_digits-1)")
    doc_tokens: int = arg(256, "target length of each document in tokens of --tokenizer (approximate; at least 32)")
    tokenizer: str = arg(DEFAULT_MODEL, "tokenizer used to count tokens (built-in name or local dir)")
    id_digits: int = arg(5, "digits of the [DOC_n] identifiers, 3..9")


@dataclass
class CorpusArgs:
    output_dir: str = arg("", "directory to write (required)")
    seed: int = arg(0, "random seed; the same seed gives byte-identical files")
    n_sentences: int = arg(5000, "number of distinct everyday sentences")


@dataclass
class RecognitionArgs:
    output_dir: str = arg("", "directory to write (required)")
    seed: int = arg(0, "random seed; the same seed gives byte-identical files")
    corpus: str = arg(DEFAULT_CORPUS, "text corpus (JSONL/TXT/CSV) the seen sentences and novel foils are drawn from")
    text_column: str = arg("", "text column of --corpus (default: text, else the first string column)")
    n_pairs: int = arg(200, "number of seen/unseen pairs (seen.jsonl and unseen.jsonl, paired by row and pair_id)")
    foil_type: str = arg("novel", "novel, shuffled, random_words, synonym, paraphrase, char_scramble, or a comma "
                                  "list taken in turn")
    min_words: int = arg(3, "seen sentences have at least this many words")
    lexicon: str = arg("", "synonym foils: a JSON file word -> [synonyms] used instead of the built-in table (which "
                           "covers the words of memlab's grammar, i.e. the shipped corpus)")
    paraphrase_model: str = arg("", "paraphrase foils of sentences that are not memlab grammar sentences: a local "
                                    "instruct model dir (greedy, offline); without it such sentences are an error")


@dataclass
class MiaArgs:
    output_dir: str = arg("", "directory to write (required)")
    seed: int = arg(0, "random seed; the same seed gives byte-identical files")
    source: str = arg("corpus", "corpus (sentences of --corpus) or facts (generated fact statements)")
    corpus: str = arg(DEFAULT_CORPUS, "text corpus for --source corpus (JSONL/TXT/CSV)")
    text_column: str = arg("", "text column of --corpus (default: text, else the first string column)")
    n_members: int = arg(200, "members (in train.jsonl)")
    n_nonmembers: int = arg(200, "non-members (held out)")
    canary_copies: str = arg("", "copy counts for canaries, e.g. 1,2,4,8,16,32 (empty: no canaries)")
    canaries_per_copy: int = arg(1, "canaries per copy count of --canary_copies (chosen among the members)")


@dataclass
class ClozeArgs:
    input: str = arg("", "your corpus (JSONL/TXT/CSV), one document per row (required)")
    output_dir: str = arg("", "directory to write (required)")
    seed: int = arg(0, "random seed; the same seed gives byte-identical files")
    text_column: str = arg("", "text column of --input (default: text, else the first string column)")
    cloze_types: str = arg("number,entity", "what may be blanked: number, entity")
    max_per_doc: int = arg(5, "at most this many probes per document")
    min_words: int = arg(6, "sentences shorter than this are skipped")


@dataclass
class ConvertArgs:
    input: str = arg("", "file to convert (required)")
    to: str = arg("text", "text ({id,text}), chat ({id,messages}) or probes")
    output_dir: str = arg("", "directory to write (required)")
    text_column: str = arg("", "for --to text: the text column (default: text, else the first string column)")
    answer_column: str = arg("answer", "for --to probes: the answer column")
    tier_columns: str = arg("", "for --to probes: tier=column pairs, e.g. easy=q_easy,mid=q_mid,hard=q_hard")
    fact_id_column: str = arg("", "for --to probes: fact id column (default: fact_id, else id, else line)")


@dataclass
class CheckArgs:
    data_dir: str = arg("", "a make_data output dir: probes/unseen/nonmembers vs every other *.jsonl")
    train: str = arg("", "comma list of training files (instead of --data_dir)")
    held_out: str = arg("", "comma list of held-out files: probes, foils, non-members")
    answer_column: str = arg("answer", "for a held-out CSV/JSONL with one question column per tier: the answer "
                                       "column (as in convert --to probes)")
    tier_columns: str = arg("", "for such a held-out file: tier=column pairs, e.g. easy=q_easy,mid=q_mid,hard=q_hard; "
                                "its question columns are checked (a held-out file with no question/text/prompt "
                                "field and no --tier_columns is an error)")



@dataclass
class FreqsArgs:
    output_dir: str = arg("", "directory to write freqs.json to (required)")
    corpus: str = arg(DEFAULT_CORPUS, "reference corpus (JSONL/TXT/CSV) whose token frequencies are counted")
    text_column: str = arg("", "text column of --corpus (default: text, else the first string column)")
    model_name_or_path: str = model_name_or_path_arg("model (built-in name or local dir) whose tokenizer counts "
                                                     "tokens")


def _writable(output_dir: str) -> tuple[bool, str]:
    try:
        check_writable_dir(output_dir)
        return True, ""
    except DataError as e:
        return False, str(e)


def _common_checks(args) -> list[tuple[bool, str]]:
    """Output dir given and writable (checked before any work), seed non-negative."""
    return [(bool(args.output_dir), "--output_dir is required"), _writable(args.output_dir or "."),
            (args.seed >= 0, f"--seed must be >= 0, got {args.seed}")]


def _finish(name: str, args, files: dict, train: list[str], held_out: list[str], extra: dict | None = None) -> Path:
    """Run the leakage check (DataError listing the pairs, nothing written) and write the directory."""
    check_inputs_outside(args.output_dir, args)  # never replace a directory holding this command's own input
    report = leakage.assert_no_leakage({n: files[n] for n in train}, {n: files[n] for n in held_out})
    manifest = build_manifest(f"make_data.py {name}", args, getattr(args, "seed", None), files, report, extra)
    lock_dir(args.output_dir)  # one writer per directory, while it is written
    try:
        return write_dataset(args.output_dir, files, manifest)
    finally:
        release_locks()


def _corpus_path(path: str) -> Path:
    p = Path(path)
    return p if p.exists() or p.is_absolute() or not (ROOT / p).exists() else ROOT / p


def run_facts(args: FactsArgs) -> Path:
    ks = parse_list(args.variants_per_fact, int, "variants_per_fact")
    counts = (args.n_names, args.n_objects, args.n_known, args.n_contradicting)
    collect_errors(_common_checks(args) + [
        (min(counts) >= 0, "--n_names, --n_objects, --n_known, --n_contradicting must be >= 0"),
        (args.n_names <= wordlists.max_person_names(), f"--n_names at most {wordlists.max_person_names()}"),
        (args.n_objects <= len(wordlists.OBJECTS), f"--n_objects at most {len(wordlists.OBJECTS)}"),
        (args.n_known + args.n_contradicting <= len(KNOWN_FACTS),
         f"--n_known + --n_contradicting at most {len(KNOWN_FACTS)} (the size of the bank)"),
        (sum(counts) > 0 or bool(args.entities_file), "no facts requested (all counts are 0, no --entities_file)"),
        (all(2 <= d <= 18 for d in (args.name_digits, args.object_digits, args.custom_digits)), "digits must be in 2..18"),
        (bool(ks) and all(1 <= k <= facts.max_variants() for k in ks),
         f"--variants_per_fact: each K must be in 1..{facts.max_variants()}, got '{args.variants_per_fact}'"),
        (1 <= args.probes_per_tier <= facts.max_probes_per_tier(),
         f"--probes_per_tier must be in 1..{facts.max_probes_per_tier()}"),
        (0 <= args.dpo_pairs_per_fact <= 5, "--dpo_pairs_per_fact must be in 0..5")])
    custom = facts.read_entities(args.entities_file, args.text_column) if args.entities_file else []
    fact_list = facts.make_facts(args.seed, args.n_names, args.n_objects, args.n_known, args.n_contradicting, custom,
                                 args.custom_attribute, args.name_digits, args.object_digits, args.custom_digits)
    files = facts.generate(fact_list, ks, args.probes_per_tier, args.dpo_pairs_per_fact, args.seed, args.verbatim_probes)
    kinds = {k: sum(f.kind == k for f in fact_list) for k in ("novel", "known", "contradicting")}
    probes = files["probes.jsonl"]
    by_tier = {t: sum(p["tier"] == t for p in probes) for t in (*facts.TIERS, facts.VERBATIM_TIER)}
    by_mode = {m: sum(p.get("verbatim_of") == m for p in probes) for m in facts.TRAINING_MODES}
    train = [n for n in files if n.startswith("train_")] + ["dpo_pairs.jsonl"]
    return _finish("facts", args, files, train, ["probes.jsonl"],
                   {"facts_by_kind": kinds, "probes_by_tier": by_tier, "verbatim_probes_by_mode": by_mode})


def run_documents(args: DocumentsArgs) -> Path:
    collect_errors(_common_checks(args) + [
        (1 <= args.n_docs <= 9 * 10 ** (args.id_digits - 1), "--n_docs must be in 1..9*10^(id_digits-1)"),
        (3 <= args.id_digits <= 9, "--id_digits must be in 3..9"),
        (args.doc_tokens >= 32, "--doc_tokens must be >= 32")])
    tok = load_tokenizer(args.tokenizer)

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    rows = documents.make_documents(args.n_docs, args.doc_tokens, n_tokens, args.seed, args.id_digits)
    return _finish("documents", args, {"documents.jsonl": rows}, ["documents.jsonl"], [])


def run_corpus(args: CorpusArgs) -> Path:
    collect_errors(_common_checks(args) + [(args.n_sentences >= 1, "--n_sentences must be >= 1")])
    rows = grammar.make_corpus(args.n_sentences, args.seed)
    return _finish("corpus", args, {"sentences.jsonl": rows}, ["sentences.jsonl"], [])


def _read_corpus(path: str, text_column: str) -> tuple[list[dict], dict]:
    """(rows de-duplicated by normalized text, what the manifest says was left out). A row without a word (only
    emoji, symbols or punctuation: it normalizes to nothing) can be no sentence: it is left out, and said in one
    note naming its line (and counted in the manifest), never silently nor as a duplicate."""
    rows = read_texts(_corpus_path(path), text_column or None)
    wordless = [r for r in rows if not normalize_text(r["text"])]
    kept, dropped = dedupe_by_normalized_text([{"id": r["id"], "text": r["text"]} for r in rows
                                               if normalize_text(r["text"])])
    left_out = {"corpus_duplicates_dropped": dropped}
    if wordless:
        lines = ", ".join(str(r["_line"]) for r in wordless[:5]) + (", ..." if len(wordless) > 5 else "")
        print(f"note: --corpus {path}: left out {len(wordless)} row(s) without a word (only emoji, symbols or "
              f"punctuation), line(s) {lines}", file=sys.stderr)
        left_out["corpus_rows_without_words"] = len(wordless)
    return kept, left_out


def run_recognition(args: RecognitionArgs) -> Path:
    types = parse_list(args.foil_type, str, "foil_type")
    collect_errors(_common_checks(args) + [
        (bool(types) and all(t in recognition.FOIL_TYPES for t in types),
         f"--foil_type must be among {', '.join(recognition.FOIL_TYPES)}, got '{args.foil_type}'"
         + "".join(f" (unknown: {t})" for t in types if t not in recognition.FOIL_TYPES)),
        (args.n_pairs >= 1, "--n_pairs must be >= 1"), (args.min_words >= 2, "--min_words must be >= 2")])
    if args.paraphrase_model:  # checked up front (nothing loads): a typo shows even when no foil needs the model
        if not (Path(args.paraphrase_model).is_dir() or args.paraphrase_model in BUILTIN_MODELS):
            raise DataError(f"--paraphrase_model {args.paraphrase_model}: not a local model directory nor a "
                            f"built-in model name {list(BUILTIN_MODELS)}")
    corpus, left_out = _read_corpus(args.corpus, args.text_column)
    table = lexicon.read_lexicon(args.lexicon) if args.lexicon else lexicon.BUILTIN_SYNONYMS
    loaded = []

    def paraphraser(texts):  # the model loads only when a paraphrase foil needs it
        if not loaded:
            loaded.append(recognition.model_paraphraser(args.paraphrase_model))
        return loaded[0](texts)

    seen, unseen = recognition.make_recognition(
        corpus, args.n_pairs, types, args.seed, args.min_words, table, paraphraser if args.paraphrase_model else None,
        f"--corpus {args.corpus}", f"lexicon {args.lexicon}" if args.lexicon else "built-in synonym table")
    files = {"seen.jsonl": seen, "unseen.jsonl": unseen}
    extra = dict(left_out)
    if "synonym" in types:
        extra["synonym_lexicon"] = f"--lexicon {args.lexicon}" if args.lexicon else lexicon.SOURCE_BUILTIN
    if loaded:
        extra["paraphrase_prompt"] = recognition.PARAPHRASE_PROMPT
    return _finish("recognition", args, files, ["seen.jsonl"], ["unseen.jsonl"], extra)


def run_mia(args: MiaArgs) -> Path:
    copies = parse_list(args.canary_copies, int, "canary_copies")
    collect_errors(_common_checks(args) + [
        (args.source in ("corpus", "facts"), f"--source must be corpus or facts, got '{args.source}'"),
        (args.n_members >= 1 and args.n_nonmembers >= 1, "--n_members and --n_nonmembers must be >= 1"),
        (all(c >= 1 for c in copies), "--canary_copies must be >= 1 each"),
        (args.canaries_per_copy >= 1, "--canaries_per_copy must be >= 1"),
        (len(copies) * args.canaries_per_copy <= args.n_members, "more canaries than --n_members")])
    left_out = {"corpus_duplicates_dropped": 0}
    if args.source == "corpus":
        pool, left_out = _read_corpus(args.corpus, args.text_column)
    else:
        pool = membership.fact_statements(args.n_members + args.n_nonmembers, args.seed)
    id_field = "source_id" if args.source == "corpus" else "fact_id"
    files = membership.make_mia(pool, args.n_members, args.n_nonmembers, copies, args.canaries_per_copy, args.seed, id_field)
    return _finish("mia", args, files, ["train.jsonl", "members.jsonl"], ["nonmembers.jsonl"],
                   left_out)


def run_cloze(args: ClozeArgs) -> Path:
    types = parse_list(args.cloze_types, str, "cloze_types")
    collect_errors(_common_checks(args) + [
        (bool(args.input), "--input is required"),
        (bool(types) and all(t in cloze.CLOZE_TYPES for t in types), "--cloze_types must be among number, entity"),
        (args.max_per_doc >= 1, "--max_per_doc must be >= 1"), (args.min_words >= 1, "--min_words must be >= 1")])
    docs = [{"id": r["id"], "text": r["text"]} for r in read_texts(args.input, args.text_column or None)]
    probes = cloze.make_cloze(docs, types, args.max_per_doc, args.min_words, args.seed)
    if not probes:
        raise DataError(f"{args.input}: no sentence with a number or capitalised entity to blank")
    return _finish("cloze", args, {"train.jsonl": docs, "probes.jsonl": probes}, ["train.jsonl"], ["probes.jsonl"])


def run_convert(args: ConvertArgs) -> Path:
    collect_errors([(bool(args.output_dir), "--output_dir is required"), _writable(args.output_dir or "."),
                    (bool(args.input), "--input is required"),
                    (args.to in ("text", "chat", "probes"), f"--to must be text, chat or probes, got '{args.to}'")])
    if args.to == "text":
        rows = convert.convert_text(args.input, args.text_column)
    elif args.to == "chat":
        rows = convert.convert_chat(args.input)
    else:
        rows = convert.convert_probes(args.input, args.answer_column, parse_tier_columns(args.tier_columns),
                                      args.fact_id_column or None)
    name = f"{args.to}.jsonl"
    train, held = ([], [name]) if args.to == "probes" else ([name], [])
    return _finish("convert", args, {name: rows}, train, held)


def run_check(args: CheckArgs) -> Path | None:
    if args.data_dir:
        train, held = leakage.split_data_dir(args.data_dir)
    else:
        train, held = parse_list(args.train, str, "train"), parse_list(args.held_out, str, "held_out")
    collect_errors([(bool(train), "no training files (--train, or *.jsonl in --data_dir)"),
                    (bool(held), "no held-out files (--held_out, or probes/unseen/nonmembers*.jsonl in --data_dir)")])
    tiers = parse_tier_columns(args.tier_columns)
    print(leakage.format_report(leakage.check_files(train, held, args.answer_column, tiers)))
    return Path(args.data_dir) if args.data_dir else None



def run_freqs(args: FreqsArgs) -> Path:
    """Token counts of --corpus under the model's tokenizer (memlab/datagen/freqs.py), for dc_pdd."""
    from memlab.datagen import freqs  # numpy: ~0.2 s on every make_data.py command; only freqs needs it

    collect_errors([(bool(args.output_dir), "--output_dir is required"), _writable(args.output_dir or "."),
                    (bool(args.corpus), "--corpus is required")])
    tok = load_tokenizer(args.model_name_or_path)
    table = freqs.build_table(_corpus_path(args.corpus), tok, args.model_name_or_path, args.text_column or None)
    freqs.write_table(args.output_dir, table)
    print(f"wrote {Path(args.output_dir) / freqs.FILE}: {table['n_tokens']} tokens of {table['n_texts']} texts")
    return Path(args.output_dir)


COMMANDS = {"facts": (FactsArgs, run_facts), "documents": (DocumentsArgs, run_documents),
            "corpus": (CorpusArgs, run_corpus), "recognition": (RecognitionArgs, run_recognition),
            "mia": (MiaArgs, run_mia), "cloze": (ClozeArgs, run_cloze), "convert": (ConvertArgs, run_convert),
            "check": (CheckArgs, run_check), "freqs": (FreqsArgs, run_freqs)}


def main(argv: list[str] | None = None) -> Path | None:
    """`make_data.py SUBCOMMAND [--flags]`: parse, validate, generate, check, write; returns the output dir."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    if argv[0] not in COMMANDS:
        raise DataError(f"unknown subcommand '{argv[0]}'; choose one of {', '.join(COMMANDS)}")
    dataclass_type, run = COMMANDS[argv[0]]
    args = parse_args(dataclass_type, argv[1:], prog=f"make_data.py {argv[0]}")  # unknown flags -> DataError
    return run(args)


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
