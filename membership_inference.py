"""Membership inference: how well can an attacker tell the texts a fine-tuned model saw (members) from
matched texts it did not (non-members)?

Each target model (or each checkpoint: LoRA ranks, target modules, before/after DPO) and its reference
model score every item ONCE with the shared batched scorer (per-token log-probs, and the mean/variance of
log p under the model's predictive distribution for min-k%++). The attacks (memlab/attacks.py, equations
and papers there; higher score = more member-like) are computed from those arrays: loss, zlib (Carlini et
al. 2021: mean NLL / zlib bytes), zlib_total (memlab's earlier variant: total NLL / zlib bytes),
min_k_{k}, min_k_pp_{k} (k from --min_k), and with a reference model ref_ratio (-target NLL / reference
NLL) and ref_diff (reference NLL - target NLL). Attacks that need more than those arrays:
  recall         ReCaLL: one more pass over the items after a prefix of known non-members
                 (--recall_prefix_file, else --recall_prefix_n non-members held apart and not evaluated);
  dc_pdd         DC-PDD: token probabilities calibrated by corpus token frequencies (--freqs, else a table
                 of the shipped corpus built on first use, cached under $MEMLAB_CACHE/freqs);
  neighbourhood  loss vs --neighbours word-substituted neighbours (--neighbour_model: a local masked LM,
                 else words of the evaluated items);
  gradnorm       one backward pass per item (LoRA parameters of an adapter, else all parameters);
  rmia           RMIA with --reference_models (population: --rmia_population, else the non-members).
--attacks picks a subset; by default every attack the inputs allow. Per checkpoint and attack: ROC AUC,
TPR at 1% and 0.1% FPR with bootstrap 95% CIs, over all items and per canary-copies group (members with c
copies vs all non-members). results.json records each attack's inputs (prefix ids, frequency table path +
sha256 + tokenizer, neighbour_source, reference models).

Reference model (--reference_model; `none` skips the reference attacks). Default, per checkpoint: a LoRA
adapter's base (adapter_config.json base_model_name_or_path); for a full-model checkpoint of a memlab run
the run's initialisation (RUN/config.json args.sft_checkpoint, else args.init_from, else
args.model_name_or_path); else --model_name_or_path when the target is a checkpoint of it; else none.
Its tokenizer must equal the target's. For before/after comparisons pass one explicit reference.

    # a make_data mia set, a model fine-tuned on its train.jsonl, every exposure checkpoint
    python make_data.py mia --output_dir data/mia --canary_copies 1,2,4,8,16,32 --canaries_per_copy 2
    python train.py --train_file data/mia/train.jsonl --output_dir runs/mia_sft --num_exposures 10 \
        --save_exposures 1,5,10 --learning_rate 5e-5
    python membership_inference.py --mia_dir data/mia --checkpoints 'runs/mia_sft/checkpoints/exposure_*' \
        --output_dir runs/mia_sft/mia
    # LoRA ranks in one call (reference: each adapter's base), min-k at 10% and 20%
    python membership_inference.py --mia_dir data/mia --min_k 10,20 \
        --checkpoints runs/lora_r4/checkpoints/exposure_10,runs/lora_r64/checkpoints/exposure_10 \
        --output_dir runs/mia_lora
    # your own files, before/after DPO: one explicit reference (the base) for both, so they compare
    python membership_inference.py --members m.jsonl --nonmembers n.jsonl --reference_model smollm2-135m \
        --checkpoints runs/sft/checkpoints/exposure_10,'runs/dpo/checkpoints/step_*' --output_dir runs/mia_dpo

    # the published attacks only, RMIA with two reference models trained on random halves of the population
    python membership_inference.py --mia_dir data/mia --checkpoints runs/mia_sft/checkpoints/exposure_10 \
        --attacks zlib,recall,dc_pdd,neighbourhood,gradnorm,rmia --reference_models runs/ref_a/final,runs/ref_b/final \
        --freqs runs/freqs --output_dir runs/mia_published

Writes config.json, items.csv (id, split, canary_copies, checkpoint, target_nll, reference_nll, n_tokens,
zlib_bytes, one column per attack), plots/roc_<checkpoint>.png and results.json (written last).
"""
from __future__ import annotations

import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from memlab import attacks, runtime
from memlab.cli import arg, collect_errors, output_dir_arg, overwrite_output_dir_arg, parse_list, run
from memlab.datagen import freqs
from memlab.io import DataError, read_texts, split_paths, whole_number, write_csv_atomic
from memlab.models import is_adapter_dir, model_name_or_path_arg, resolve_model_path
from memlab.rundir import guard_output_dir, prepare_run_dir, write_results
from memlab.runtime import EvalRuntimeArgs
from memlab.likelihood import (EncodedItem, ModelPool, adapter_bases, check_tokenizer_match, checkpoint_position,
                            checkpoints_field, distributed_map, encode_items, load_eval_tokenizer, score_items,
                            targets_and_labels)

# after memlab, whose import sets the Hugging Face offline mode and the noise filters (memlab/__init__.py)
from accelerate import Accelerator
from accelerate.utils import set_seed

ROOT = Path(__file__).resolve().parent
DEFAULT_FREQS_CORPUS = "data/corpus/sentences.jsonl"


@dataclass
class MiaArgs(EvalRuntimeArgs):
    members: Optional[str] = arg(None, "member texts (plain text rows; optional canary_copies column; rows "
                                 "repeated with a `copies` column are one member with canary_copies = copies); with "
                                 "--nonmembers, instead of --mia_dir")
    nonmembers: Optional[str] = arg(None, "non-member texts from the same distribution; with --members, instead of "
                                    "--mia_dir")
    mia_dir: Optional[str] = arg(None, "an output directory of make_data.py mia (members.jsonl + nonmembers.jsonl), "
                                 "instead of --members and --nonmembers")
    output_dir: Optional[str] = output_dir_arg("config.json, items.csv, plots/ and results.json")
    overwrite_output_dir: bool = overwrite_output_dir_arg()
    model_name_or_path: str = model_name_or_path_arg("target model: a built-in name or a local model directory; "
                                                     "its tokenizer encodes every item, and it is attacked itself "
                                                     "when no --checkpoints are given")
    checkpoints: Optional[list[str]] = checkpoints_field(
        "checkpoint directories to attack, e.g. run/checkpoints/exposure_* (globs, comma-separated lists, several "
        "values and repeated flags all work); when not given: the --model_name_or_path model itself")
    reference_model: Optional[str] = arg(None, "reference model of the ref_ratio and ref_diff attacks (its "
                                         "tokenizer must equal the target's); 'none' skips them; when not given, per "
                                         "checkpoint: a LoRA adapter's base, for a full checkpoint of a memlab run "
                                         "the run's initialisation, else --model_name_or_path when the target is a "
                                         "checkpoint of it, else none")
    min_k: str = arg("20", "percentages k for the min_k and min_k_pp attacks, comma-separated, e.g. 10,20; each in "
                     "(0, 100]")
    text_column: Optional[str] = arg(None, "column holding the text in CSV/JSONL files; when not given: `text`, "
                                     "else the first string column")
    batch_size: str = arg("16", "texts per forward pass (batches are length-sorted), or auto: the largest that fits "
                          "the GPU, found once per model and length and cached (16 on CPU)")
    padding_side: str = arg("left", "left or right: where batches are padded; the scores do not depend on it "
                            "(padding is masked and positions are explicit)")
    bootstrap: int = arg(1000, "bootstrap resamples for the 95%% confidence intervals; 0 = none")
    seed: int = arg(0, "random seed of the bootstrap resampling")
    attacks: Optional[str] = arg(None, "attacks to run, comma-separated (the table in docs/membership_inference.md); when not "
                                 "given: every attack the inputs allow (recall when a non-member prefix set is "
                                 "available, ref_* with a reference model, rmia with --reference_models)")
    recall_prefix_file: Optional[str] = arg(None, "recall: known non-member texts whose concatenation is the prefix "
                                            "P; when not given, --recall_prefix_n non-members are held apart as P and "
                                            "removed from the evaluated set")
    recall_prefix_n: int = arg(5, "recall: non-members held apart as the prefix when no --recall_prefix_file")
    freqs: Optional[str] = arg(None, "dc_pdd: a token frequency table (make_data.py freqs --output_dir DIR) made "
                               "with the target's tokenizer; when not given: built from the shipped corpus "
                               "data/corpus/sentences.jsonl on first use and cached under $MEMLAB_CACHE/freqs")
    dc_pdd_a: float = arg(0.01, "dc_pdd: upper bound a of each token's term (paper default 0.01)")
    neighbours: int = arg(10, "neighbourhood: neighbours per item")
    neighbour_rate: float = arg(0.1, "neighbourhood: fraction of an item's words replaced in each neighbour (at "
                                "least one word)")
    neighbour_model: Optional[str] = arg(None, "neighbourhood: a local masked LM directory (e.g. BERT) proposing the "
                                         "substitutes; when not given: words drawn from the evaluated items' "
                                         "vocabulary (neighbour_source corpus_word_substitution)")
    reference_models: Optional[str] = arg(None, "rmia: reference model directories, comma-separated (models "
                                          "fine-tuned on random halves of the population); their tokenizer must "
                                          "equal the target's")
    rmia_population: Optional[str] = arg(None, "rmia: population samples z (text file; a member's text there is an "
                                         "error); when not given: the evaluated non-members")
    rmia_gamma: float = arg(1.0, "rmia: the likelihood-ratio threshold gamma")


def valid_attacks(ks) -> list[str]:
    return attacks.attack_names(ks, with_reference=True) + list(attacks.EXTRA_ATTACKS)


def validate(args: MiaArgs) -> list[float]:
    """Every argument problem at once; returns the parsed --min_k."""
    ks = parse_list(args.min_k, float, "min_k")
    names = parse_list(args.attacks, str, "attacks")
    valid = valid_attacks([k for k in ks if 0 < k <= 100])
    unknown = [a for a in names if a not in valid]
    files = bool(args.members) or bool(args.nonmembers)
    collect_errors([
        (bool(args.mia_dir) != files, "give either --mia_dir or both --members and --nonmembers"),
        (not files or (bool(args.members) and bool(args.nonmembers)), "--members and --nonmembers go together"),
        (bool(args.output_dir), "--output_dir is required"),
        (bool(ks) and all(0 < k <= 100 for k in ks),
         f"--min_k must be percentages in (0, 100], got '{args.min_k}'"),
        runtime.batch_size_error(args.batch_size),
        (args.bootstrap >= 0, f"--bootstrap must be >= 0, got {args.bootstrap}"),
        (args.padding_side in ("left", "right"), f"--padding_side must be left or right, got {args.padding_side}"),
        (args.attacks is None or (bool(names) and not unknown),
         f"--attacks: unknown attack(s) {', '.join(unknown) or repr(args.attacks)}; valid: {', '.join(valid)}"),
        (args.recall_prefix_n >= 0, f"--recall_prefix_n must be >= 0, got {args.recall_prefix_n}"),
        (args.dc_pdd_a > 0, f"--dc_pdd_a must be > 0, got {args.dc_pdd_a}"),
        (args.neighbours >= 1, f"--neighbours must be >= 1, got {args.neighbours}"),
        (0 < args.neighbour_rate <= 1, f"--neighbour_rate must be in (0, 1], got {args.neighbour_rate}"),
        (args.rmia_gamma > 0, f"--rmia_gamma must be > 0, got {args.rmia_gamma}"),
        ("rmia" not in names or bool(args.reference_models),
         "--attacks rmia needs --reference_models DIR,DIR,... (models fine-tuned on random halves of the population)"),
    ])
    return list(dict.fromkeys(ks))


def load_items(args: MiaArgs) -> list[dict]:
    """Members then non-members as rows with `split` and integer `canary_copies` (default 1 for a member,
    0 for a non-member); DataError when the two sets share a text (the leakage check)."""
    if args.mia_dir:
        d = Path(args.mia_dir)
        if not d.is_dir():
            raise DataError(f"--mia_dir {d}: not a directory")
        paths = {"member": d / "members.jsonl", "nonmember": d / "nonmembers.jsonl"}
    else:
        paths = {"member": Path(args.members), "nonmember": Path(args.nonmembers)}
    sets = {split: read_texts(p, args.text_column) for split, p in paths.items()}
    # rows repeated on purpose (a `copies` column: the LoRA study's canaries, memlab.io.ensure_ids) are one
    # member trained `copies` times: scored once, counted as its canary_copies
    sets["member"] = [dict(r, canary_copies=r.get("canary_copies", r["copies"])) if "copy_of" in r else r
                      for r in sets["member"] if r.get("copy", 1) == 1]
    attacks.check_disjoint(sets["member"], sets["nonmember"], str(paths["member"]), str(paths["nonmember"]))
    rows = []
    for split, items in sets.items():
        for r in items:
            c = whole_number(r.get("canary_copies", 1 if split == "member" else 0), "canary_copies", paths[split],
                             r["_line"])
            if split == "nonmember" and c != 0:
                raise DataError(f"{paths[split]}:{r['_line']}: a non-member has canary_copies {c}; expected 0")
            rows.append(dict(r, split=split, canary_copies=c))
    return rows


def resolve_references(args: MiaArgs, targets: list, tok) -> list[tuple[Optional[str], str]]:
    """(reference, rule) per target; checks each distinct reference exists and tokenizes like the target."""
    if args.reference_model and args.reference_model.lower() == "none":
        return [(None, "--reference_model none")] * len(targets)
    if args.reference_model:
        refs = [(args.reference_model, "--reference_model")] * len(targets)
    else:
        refs = [attacks.default_reference(t, args.model_name_or_path) for t in targets]
    base_dir = resolve_model_path(args.model_name_or_path)
    for ref, rule in dict.fromkeys(refs):
        if ref is not None:
            check_comparable(ref, f"reference model {ref} ({rule})", tok, base_dir)
    return refs


def check_comparable(ref: str, what: str, tok, base_dir) -> None:
    """A reference model exists and tokenizes like the target, so its per-item NLLs compare with the target's;
    one DataError naming `what` otherwise."""
    try:
        ref_dir = resolve_model_path(ref)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
    try:
        check_tokenizer_match(ref_dir, tok, base_dir)
    except DataError as e:
        raise DataError(f"{what}: its tokenizer differs from the target's, so its NLLs are not comparable per "
                        f"item; {e}") from None


def select_attacks(args: MiaArgs, ks: list[float], rows: list[dict]) -> list[str]:
    """The attacks to run, in the fixed order of `valid_attacks`: --attacks, else every attack the inputs
    allow. DataError when a requested attack lacks its inputs (ReCaLL without a non-member prefix set)."""
    valid = valid_attacks(ks)
    n_non = sum(r["split"] == "nonmember" for r in rows)
    prefix_ok = bool(args.recall_prefix_file) or (args.recall_prefix_n >= 1 and n_non - args.recall_prefix_n >= 1)
    if args.attacks is None:
        chosen = [a for a in valid if (a != "recall" or (prefix_ok and (args.recall_prefix_file or n_non >= 2 * max(
            args.recall_prefix_n, 1)))) and (a != "rmia" or bool(args.reference_models))]
    else:
        want = set(parse_list(args.attacks, str, "attacks"))
        chosen = [a for a in valid if a in want]
    if "recall" in chosen and not prefix_ok:
        raise DataError(f"recall needs a prefix of known non-member texts: give --recall_prefix_file, or "
                        f"--recall_prefix_n >= 1 non-members to hold apart while keeping at least one evaluated "
                        f"(there are {n_non} non-members, --recall_prefix_n {args.recall_prefix_n})")
    return chosen


def kbit_gradnorm(args: MiaArgs, rt: dict, chosen: list[str], targets: list) -> list[str]:
    """gradnorm differentiates the weights; a k-bit quantized full model has integer weights (no gradient):
    asked for by --attacks it is one error before anything is written, chosen by default it is skipped with
    one line. LoRA adapters on a quantized base keep float parameters and are differentiated as usual."""
    full = [t for t in targets if not (Path(str(t)).is_dir() and is_adapter_dir(t))]
    if rt["quantization"] == "none" or "gradnorm" not in chosen or not full:
        return chosen
    why = (f"gradnorm needs float weights to differentiate, and --load_in_{rt['quantization']} quantizes the full "
           f"model {full[0]} (adapters on a quantized base work)")
    if args.attacks is not None:
        raise DataError(f"{why}: drop gradnorm from --attacks, or load without --load_in_{rt['quantization']}")
    print(f"note: {why}: gradnorm skipped", file=sys.stderr)
    return [a for a in chosen if a != "gradnorm"]


def reference_attacks(args: MiaArgs, chosen: list[str], refs: list) -> list[str]:
    """`chosen` without ref_ratio/ref_diff when no checkpoint has a reference model: asked for by --attacks
    that is an error; chosen by default they are dropped (so config.json and results.json list only the
    attacks run) with one note, unless --reference_model none said so."""
    ref_attacks = [a for a in chosen if a in ("ref_ratio", "ref_diff")]
    if not ref_attacks or any(ref is not None for ref, _ in refs):
        return chosen
    if args.attacks is not None:
        raise DataError("--attacks ref_ratio/ref_diff need a reference model (--reference_model); none was given "
                        "or found for any checkpoint")
    if not (args.reference_model and args.reference_model.lower() == "none"):
        print(f"note: {', '.join(ref_attacks)} skipped: no reference model was given (--reference_model) or found "
              f"for any checkpoint (the rules: membership_inference.py -h)", file=sys.stderr)
    return [a for a in chosen if a not in ref_attacks]


def recall_prefix(args: MiaArgs, rows: list[dict]) -> tuple[list[str], dict, list[dict]]:
    """(prefix texts, their record for results.json, the rows left to evaluate). Without
    --recall_prefix_file the first --recall_prefix_n non-members (in file order) are held apart."""
    if args.recall_prefix_file:
        prefix_rows = read_texts(args.recall_prefix_file, args.text_column)
        refuse_evaluated_texts("--recall_prefix_file", args.recall_prefix_file, prefix_rows, rows,
                               "the prefix must be known non-members outside the evaluated set")
        texts = [r["text"] for r in prefix_rows]
        return texts, {"source": "--recall_prefix_file", "path": args.recall_prefix_file, "n": len(texts)}, rows
    held = [r for r in rows if r["split"] == "nonmember"][:args.recall_prefix_n]
    ids = {id(r) for r in held}
    return ([r["text"] for r in held],
            {"source": "non-members held apart (removed from the evaluated set)", "n": len(held),
             "ids": [r["id"] for r in held]}, [r for r in rows if id(r) not in ids])


def refuse_evaluated_texts(flag: str, path, file_rows: list[dict], evaluated: list[dict], why: str) -> None:
    """One DataError when a row of `path` (given by `flag`) holds the text of an item in `evaluated`
    (exact text, as read): names the line, the evaluated item and `why` that cannot be. The one rule of the
    attacks that read known texts besides the evaluated ones (recall's prefix, rmia's population)."""
    by_text = {r["text"]: r for r in evaluated}
    for r in file_rows:
        hit = by_text.get(r["text"])
        if hit is not None:
            shown = r["text"] if len(r["text"]) <= 60 else r["text"][:57] + "..."
            raise DataError(f"{flag} {path}:{r['_line']}: holds the text of the evaluated {hit['split']} "
                            f"'{hit['id']}' ({shown!r}); {why}")


def rmia_population(args: MiaArgs, rows: list[dict]) -> Optional[list[dict]]:
    """rmia's --rmia_population rows (None without it), read before anything is written. A member's text
    there is an error: z is meant to be drawn from texts the target did not train on, and a member in Z
    lowers every member's score (it would count against itself). An evaluated non-member may be in Z; it is
    left out of its own comparison, as in the default population."""
    if not args.rmia_population:
        return None
    pop_rows = read_texts(args.rmia_population, args.text_column)
    refuse_evaluated_texts("--rmia_population", args.rmia_population, pop_rows,
                           [r for r in rows if r["split"] == "member"],
                           "the population must be texts the target was not trained on; leave the members out "
                           "(or omit --rmia_population: the non-members are the population)")
    return pop_rows


def load_freqs(args: MiaArgs, tok) -> tuple[np.ndarray, dict]:
    """Laplace-smoothed token frequencies for dc_pdd and the table's record (path, sha256, tokenizer)."""
    path = args.freqs
    if not path:
        path = freqs.default_table(ROOT / DEFAULT_FREQS_CORPUS, tok, args.model_name_or_path)
    counts, record = freqs.load_table(path, tok)
    return attacks.laplace_frequencies(counts), {**record, "built_by_default": not args.freqs}


def make_neighbours(args: MiaArgs, rows: list[dict]) -> tuple[list[list[str]], dict]:
    """`--neighbours` neighbour texts per row and the neighbourhood record (neighbour_source, rate, ...)."""
    seeds = [[args.seed, zlib.crc32(f"{r['split']}:{r['id']}".encode())] for r in rows]
    if args.neighbour_model:
        nbs = mlm_neighbours(args.neighbour_model, [r["text"] for r in rows], args.neighbours, args.neighbour_rate,
                             seeds)
        return nbs, {"neighbour_source": "masked_lm", "neighbour_model": args.neighbour_model,
                     "n": args.neighbours, "rate": args.neighbour_rate, "top_k": MLM_TOP_K}
    vocab = attacks.word_vocabulary([r["text"] for r in rows])
    nbs = [attacks.substitute_neighbours(r["text"], vocab, args.neighbours, args.neighbour_rate, sd)
           for r, sd in zip(rows, seeds)]
    return nbs, {"neighbour_source": "corpus_word_substitution", "n": args.neighbours, "rate": args.neighbour_rate,
                 "vocabulary_size": len(vocab),
                 "note": "variant of Mattern et al. 2023: substitutes are words of the evaluated items, not a "
                         "masked LM's proposals (pass --neighbour_model for those)"}


MLM_TOP_K = 10


def mlm_neighbours(model_dir: str, texts: list[str], n: int, rate: float, seeds) -> list[list[str]]:
    """Neighbours proposed by a local masked LM (Mattern et al. 2023 use BERT): in each neighbour the chosen
    words (attacks.replaced_positions) are replaced one after another, each by a word drawn uniformly from
    the MLM's MLM_TOP_K most likely whole-word, alphabetic predictions for a [MASK] in its place (other
    than the original word). Deterministic in the seeds (eval mode, no dropout)."""
    # only with --neighbour_model: transformers' model classes add ~0.5 s to every start (-h, a bad input)
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise DataError(f"--neighbour_model {model_dir}: not a model directory (no config.json)")
    try:
        mtok = AutoTokenizer.from_pretrained(str(d))
        mlm = AutoModelForMaskedLM.from_pretrained(str(d)).eval()
    except (OSError, ValueError) as e:
        raise DataError(f"--neighbour_model {model_dir}: cannot load a masked LM ({e})") from None
    if mtok.mask_token is None:
        raise DataError(f"--neighbour_model {model_dir}: its tokenizer has no mask token; need a masked LM")
    words = [(i, w) for w, i in mtok.get_vocab().items() if w.isalpha() and len(w) >= 2]
    if len(words) < 2:
        raise DataError(f"--neighbour_model {model_dir}: its vocabulary has fewer than 2 whole alphabetic words")
    ok_ids = torch.tensor(sorted(i for i, _ in words), dtype=torch.long)
    id_word = dict(words)
    out = []
    for text, seed in zip(texts, seeds):
        rng = np.random.default_rng(seed)
        nbs = []
        for _ in range(n):
            cur = text
            spans = [m.span() for m in attacks._WORD.finditer(cur)]
            if not spans:
                nbs.append(cur)
                continue
            for i in attacks.replaced_positions(len(spans), rate, rng)[::-1]:  # right to left: spans stay valid
                a, b = spans[i]
                orig = cur[a:b]
                masked = cur[:a] + mtok.mask_token + cur[b:]
                enc = mtok(masked, return_tensors="pt", truncation=True)
                pos = (enc.input_ids[0] == mtok.mask_token_id).nonzero()
                if pos.numel() == 0:  # truncated away
                    continue
                with torch.no_grad():
                    logits = mlm(**enc).logits[0, int(pos[0, 0])]
                cand_ids = ok_ids[logits[ok_ids].argsort(descending=True)]
                cands = [id_word[int(t)] for t in cand_ids[:MLM_TOP_K + 1] if id_word[int(t)].lower() != orig.lower()]
                new = cands[int(rng.integers(min(MLM_TOP_K, len(cands))))]
                if orig[0].isupper():
                    new = new[0].upper() + new[1:]
                cur = cur[:a] + new + cur[b:]
            nbs.append(cur)
        out.append(nbs)
    return out


def trainable_parameters(model, target) -> tuple[list, str]:
    """(parameters, kind) gradnorm differentiates: the active LoRA adapter's parameters for an adapter
    checkpoint, else every parameter of the model but LoRA ones."""
    named = list(model.named_parameters())
    p = Path(str(target))
    if p.is_dir() and is_adapter_dir(p):
        active = model.active_adapter
        active = active[0] if isinstance(active, (list, tuple)) else active
        params = [t for n, t in named if "lora_" in n and f".{active}." in n]
        if not params:
            raise DataError(f"checkpoint {target}: adapter has no LoRA parameters to take the gradient of")
        return params, "lora"
    return [t for n, t in named if "lora_" not in n], "all"


def gradient_norms(model, target, enc, accelerator=None) -> tuple[list[float], dict]:
    """Per item, ||grad_theta NLL(x)||_2 (NLL = the mean over the item's scored tokens), one backward pass
    per item (attacks.gradnorm_score)."""
    params, kind = trainable_parameters(model, target)
    flags = [t.requires_grad for t in params]
    device = next(model.parameters()).device

    def run(shard):
        out = []
        for it in shard:
            ids = torch.tensor([it.input_ids], device=device)
            with torch.enable_grad():
                logits = model(input_ids=ids, use_cache=False).logits[0, it.score_start - 1:-1].float()
                targets = ids[0, it.score_start:]
                nll = -torch.log_softmax(logits, -1).gather(-1, targets[:, None]).mean()
                grads = torch.autograd.grad(nll, params, allow_unused=True)
            sq = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
            out.append((it.id, sq ** 0.5))
        return out

    try:
        for t in params:
            t.requires_grad_(True)
        model.eval()
        res = distributed_map(run, list(enc), key=lambda it: it.id, result_key=lambda r: r[0],
                              weight=lambda it: len(it.input_ids), accelerator=accelerator)
    finally:
        for t, f in zip(params, flags):
            t.requires_grad_(f)
    return [v for _, v in res], {"parameters": kind, "n_parameters": int(sum(t.numel() for t in params))}


def resolve_reference_models(args: MiaArgs, tok) -> list[str]:
    """--reference_models as a list; DataError when one is missing or tokenizes unlike the target."""
    refs = split_paths(args.reference_models, "reference_models") if args.reference_models else []
    base_dir = resolve_model_path(args.model_name_or_path)
    for ref in refs:
        check_comparable(ref, f"--reference_models {ref} (rmia)", tok, base_dir)
    return refs


@dataclass
class Mia:
    """What the steps after `setup` share: the evaluated items, the attacks, the targets and their references,
    the model pool."""
    args: MiaArgs
    ks: list[float]                  # --min_k, parsed
    rt: dict                         # dtype, attention, quantization, device as resolved (memlab.runtime)
    acc: object
    tok: object
    rows: list[dict]                 # members then non-members (ReCaLL's held-apart prefix removed)
    keys: list[str]                  # per row, its split-qualified id: ids may repeat across the two files
    enc: list[EncodedItem]           # the rows encoded under those keys
    chosen: list[str]                # the attacks, in the order of valid_attacks
    targets: list
    labels: list[str]
    refs: list[tuple[Optional[str], str]]  # (reference model or None, the rule that chose it) per target
    records: dict                    # per-attack records for results.json (recall, dc_pdd, neighbourhood, rmia)
    prefix_texts: Optional[list[str]]  # recall: the non-member prefix P
    freq_table: Optional[np.ndarray]   # dc_pdd: the token frequencies
    rmia_refs: list[str]
    pool: ModelPool
    pop_rows: Optional[list[dict]] = None  # rmia: the --rmia_population rows (None: the non-members)
    ref_scores: dict = field(default_factory=dict)  # reference model -> its scores, kept across checkpoints

    def batch_size(self, model, items) -> int:
        """--batch_size for scoring `items` with `model` (`auto`: the largest that fits, memlab.runtime)."""
        return runtime.resolve_batch_size(self.args.batch_size, model, "score", max(len(e.input_ids) for e in items))

    def score_on(self, model, items=None, stats=False) -> list:
        """One scoring pass of `model` over `items` (default: the evaluated items); `stats`: the per-token arrays
        the per-token attacks need as well."""
        items = self.enc if items is None else items
        return score_items(model, items, self.tok.pad_token_id, self.batch_size(model, items), self.args.padding_side,
                           token_logprobs=stats, distribution_stats=stats, accelerator=self.acc)


@dataclass
class AttackInputs:
    """What the attacks beyond the per-token ones score besides the evaluated items: built once, scored under
    every checkpoint."""
    enc_cond: Optional[list[EncodedItem]] = None  # recall: each item after the prefix P
    enc_nb: Optional[list[EncodedItem]] = None    # neighbourhood: every item's neighbours
    nb_index: list[list[int]] = field(default_factory=list)  # per item, its neighbours' positions in enc_nb
    pop_enc: Optional[list[EncodedItem]] = None   # rmia: the population z
    same: Optional[list[int]] = None              # rmia: per item, its position in the population (-1: none)
    non_idx: list[int] = field(default_factory=list)  # rmia without --rmia_population: the non-members' rows
    rmia_ref_nll: list[list[float]] = field(default_factory=list)  # per reference model, per item
    rmia_ref_pop: list[list[float]] = field(default_factory=list)  # per reference model, per population sample


def main(args: MiaArgs) -> dict:
    """validate -> setup -> attack inputs -> each checkpoint scored and attacked -> items.csv, results.json."""
    mia = setup(args, validate(args))
    inputs = attack_inputs(mia)
    items, per_ckpt = [], []
    for target, label, (ref, rule) in zip(mia.targets, mia.labels, mia.refs):
        ckpt_rows, block = attack_checkpoint(mia, inputs, target, label, ref, rule)
        items += ckpt_rows
        per_ckpt.append(block)
    return write_outputs(mia, items, per_ckpt)


def setup(args: MiaArgs, ks: list[float]) -> Mia:
    """Every check before anything is written (runtime, output directory, items, attacks, checkpoints,
    references, frequency table), then config.json, the encoded items and the model pool."""
    rt = runtime.resolve_eval(args)  # precision, attention, k-bit loading: checked before any model loads
    guard_output_dir(args.output_dir, "membership_inference.py", args, args.overwrite_output_dir)  # before any model loads
    rows = load_items(args)
    chosen = select_attacks(args, ks, rows)
    records = {}
    prefix_texts = None
    if "recall" in chosen:
        prefix_texts, records["recall"], rows = recall_prefix(args, rows)
    pop_rows = rmia_population(args, rows) if "rmia" in chosen else None
    targets, labels = targets_and_labels(args.model_name_or_path, args.checkpoints)
    bases = adapter_bases(args.model_name_or_path, targets, labels)
    chosen = kbit_gradnorm(args, rt, chosen, targets)
    acc = Accelerator()
    set_seed(args.seed)
    tok = load_eval_tokenizer(args.model_name_or_path, targets)
    refs = resolve_references(args, targets, tok)
    chosen = reference_attacks(args, chosen, refs)
    freq_table = None
    if "dc_pdd" in chosen:
        freq_table, rec = load_freqs(args, tok)
        records["dc_pdd"] = {"a": args.dc_pdd_a, "freqs": rec}
    rmia_refs = resolve_reference_models(args, tok) if "rmia" in chosen else []
    if acc.is_main_process:
        prepare_run_dir(args.output_dir, args, "membership_inference.py",
                        extra={"num_processes": acc.num_processes, "min_k": ks, "attacks": chosen,
                               "runtime": rt, **({"adapter_bases": bases} if bases else {})})
    keys = [f"{r['split']}:{r['id']}" for r in rows]  # ids may repeat across the two files: score under these
    enc = encode_items(tok, [{"id": k, "text": r["text"]} for k, r in zip(keys, rows)])
    pool = ModelPool(device=acc.device, fallback_base=args.model_name_or_path, **runtime.pool_kwargs(rt))
    return Mia(args, ks, rt, acc, tok, rows, keys, enc, chosen, targets, labels, refs, records, prefix_texts,
               freq_table, rmia_refs, pool, pop_rows)


def attack_inputs(mia: Mia) -> AttackInputs:
    """The prefixed items of recall, the neighbours of neighbourhood, the population of rmia and its
    reference models' scores; each attack's record goes to `mia.records`."""
    inputs = AttackInputs()
    if "recall" in mia.chosen:
        inputs.enc_cond = recall_items(mia)
    if "neighbourhood" in mia.chosen:
        inputs.enc_nb, inputs.nb_index = neighbour_items(mia)
    if "rmia" in mia.chosen:
        rmia_inputs(mia, inputs)
    return inputs


def recall_items(mia: Mia) -> list[EncodedItem]:
    """recall: every item tokenized after the prefix P, scored on x's tokens only."""
    p_ids = mia.tok(" ".join(mia.prefix_texts)).input_ids
    # all of x's own tokens after the prefix, none of the prefix's (as in the ReCaLL authors' code)
    enc_cond = [EncodedItem(f"recall|{e.id}", p_ids + e.input_ids, len(p_ids)) for e in mia.enc]
    mia.records["recall"].update(n_prefix_tokens=len(p_ids), separator="' ' between prefix texts; x tokenized alone",
                                 sign="LL(x|P) / LL(x) as published: higher = member")
    return enc_cond


def neighbour_items(mia: Mia) -> tuple[list[EncodedItem], list[list[int]]]:
    """neighbourhood: every item's --neighbours neighbours encoded in one list, and per item their positions
    in it."""
    nbs, mia.records["neighbourhood"] = make_neighbours(mia.args, mia.rows)
    nb_items, nb_index = [], []
    for k, texts in zip(mia.keys, nbs):
        nb_index.append(list(range(len(nb_items), len(nb_items) + len(texts))))
        nb_items += [{"id": f"nb{j}|{k}", "text": t} for j, t in enumerate(texts)]
    return encode_items(mia.tok, nb_items), nb_index


def rmia_inputs(mia: Mia, inputs: AttackInputs) -> None:
    """rmia: the population (--rmia_population, else the evaluated non-members, each left out of its own
    comparison) and every reference model's NLLs of the items and the population."""
    args, tok, rows, enc = mia.args, mia.tok, mia.rows, mia.enc
    if args.rmia_population:
        pop_rows = mia.pop_rows
        inputs.pop_enc = encode_items(tok, [{"id": f"population:{r['id']}", "text": r["text"]} for r in pop_rows])
        at = {}
        for j, r in enumerate(pop_rows):
            at.setdefault(r["text"], j)
        inputs.same = [at.get(r["text"], -1) for r in rows]  # members are never there (rmia_population)
        n_in = sum(j >= 0 for j in inputs.same)
        pop_source = args.rmia_population + (f" ({n_in} evaluated non-member(s) in it, each left out of its own "
                                             "comparison)" if n_in else "")
    else:
        inputs.non_idx = [i for i, r in enumerate(rows) if r["split"] == "nonmember"]
        inputs.pop_enc = [enc[i] for i in inputs.non_idx]
        where = {i: j for j, i in enumerate(inputs.non_idx)}
        inputs.same = [where.get(i, -1) for i in range(len(rows))]
        pop_source = "the evaluated non-members (each left out of its own comparison)"
    if not inputs.pop_enc:
        raise DataError("rmia: the population is empty (no non-members and no --rmia_population)")
    for ref in mia.rmia_refs:
        with mia.pool.use(ref) as model:
            inputs.rmia_ref_nll.append([s.loss for s in mia.score_on(model)])
            inputs.rmia_ref_pop.append([s.loss for s in mia.score_on(model, inputs.pop_enc)]
                                       if args.rmia_population else [inputs.rmia_ref_nll[-1][i] for i in inputs.non_idx])
    mia.records["rmia"] = {"reference_models": mia.rmia_refs, "gamma": args.rmia_gamma, "population": pop_source,
                           "n_population": len(inputs.pop_enc),
                           "p_x_given_theta": "exp(-mean token NLL) (geometric-mean token probability, as Privacy "
                                              "Meter's LLM signal); p(x) = mean over the reference models"}


def attack_checkpoint(mia: Mia, inputs: AttackInputs, target, label: str, ref, rule: str) -> tuple[list[dict], dict]:
    """One checkpoint: its reference's scores (one pass per reference, kept for the next checkpoints), its own
    passes, every attack per item; returns its items.csv rows and its block of results.json, and draws its
    ROC curves."""
    key = str(resolve_model_path(ref).resolve()) if ref is not None else None  # name or path: one pass
    if key is not None and key not in mia.ref_scores:
        with mia.pool.use(ref, keep=True) as model:  # kept: often the base that later adapters load onto
            mia.ref_scores[key] = mia.score_on(model)
    ref_scores = mia.ref_scores.get(key)
    names = [a for a in mia.chosen if a in attacks.attack_names(mia.ks, with_reference=ref is not None)
             or a in attacks.EXTRA_ATTACKS]
    target_scores, more, ckpt_extra = checkpoint_scores(mia, inputs, target)
    ckpt_rows = item_rows(mia, label, names, target_scores, ref_scores, more)
    block = summarize(ckpt_rows, names, target, label, ref, rule, mia.args)
    block.update(ckpt_extra)
    if mia.acc.is_main_process:
        ref_note = f"reference {Path(str(ref)).name}" if ref else "no reference"
        attacks.plot_roc({a: ([r[a] for r in ckpt_rows], [int(r["split"] == "member") for r in ckpt_rows])
                          for a in names}, Path(mia.args.output_dir) / "plots" / f"roc_{safe_name(label)}.png",
                         f"MIA ROC: {label} ({ref_note})\n{sum(r['split'] == 'member' for r in ckpt_rows)} "
                         f"members vs {sum(r['split'] == 'nonmember' for r in ckpt_rows)} non-members")
    return ckpt_rows, block


def checkpoint_scores(mia: Mia, inputs: AttackInputs, target) -> tuple[list, dict[str, list[float]], dict]:
    """(the target's per-item scores, the scores of the attacks beyond the per-token ones, their per-checkpoint
    records): one load of the target serves every pass."""
    args, chosen = mia.args, mia.chosen
    ckpt_extra = {}
    with mia.pool.use(target) as model:
        target_scores = mia.score_on(model, stats=True)
        cond = mia.score_on(model, inputs.enc_cond, stats=True) if inputs.enc_cond is not None else None
        nb_scores = mia.score_on(model, inputs.enc_nb) if inputs.enc_nb is not None else None
        pop_scores = mia.score_on(model, inputs.pop_enc) if "rmia" in chosen and args.rmia_population else None
        if "gradnorm" in chosen:
            norms, ckpt_extra["gradnorm"] = gradient_norms(model, target, mia.enc, mia.acc)
    more: dict[str, list[float]] = {}
    if cond is not None:
        more["recall"] = [attacks.recall_score(c.token_logprobs, s.token_logprobs)
                          for c, s in zip(cond, target_scores)]
    if mia.freq_table is not None:
        more["dc_pdd"] = [attacks.dc_pdd_score(e.input_ids[e.score_start:], s.token_logprobs, mia.freq_table,
                                               args.dc_pdd_a) for e, s in zip(mia.enc, target_scores)]
    if nb_scores is not None:
        more["neighbourhood"] = [attacks.neighbourhood_score(s.loss, [nb_scores[j].loss for j in idx])
                                 for s, idx in zip(target_scores, inputs.nb_index)]
    if "gradnorm" in chosen:
        more["gradnorm"] = [attacks.gradnorm_score(v) for v in norms]
    if "rmia" in chosen:
        pop_t = ([target_scores[i].loss for i in inputs.non_idx] if not args.rmia_population
                 else [s.loss for s in pop_scores])
        more["rmia"] = attacks.rmia_scores([s.loss for s in target_scores], inputs.rmia_ref_nll, pop_t,
                                           inputs.rmia_ref_pop, args.rmia_gamma, inputs.same).tolist()
    return target_scores, more, ckpt_extra


def item_rows(mia: Mia, label: str, names: list[str], target_scores, ref_scores, more: dict) -> list[dict]:
    """One checkpoint's items.csv rows: the item, its NLLs and sizes, and one column per attack in `names`."""
    extra_cols = [c for c in ("fact_id", "source_id", "canary") if any(c in r for r in mia.rows)]
    out = []
    for j, (r, s) in enumerate(zip(mia.rows, target_scores)):
        ref_nll = ref_scores[j].loss if ref_scores else None
        row = {"id": r["id"], **{c: r.get(c) for c in extra_cols}, "split": r["split"],
               "canary_copies": r["canary_copies"], "checkpoint": label, "target_nll": s.loss,
               "reference_nll": ref_nll, "n_tokens": s.n_tokens, "zlib_bytes": attacks.zlib_bytes(r["text"])}
        per_token = attacks.attack_scores(s.token_logprobs, r["text"], s.token_mu, s.token_var, mia.ks,
                                          target_nll=s.loss, reference_nll=ref_nll)
        row.update({a: v for a, v in per_token.items() if a in names})
        row.update({a: v[j] for a, v in more.items()})
        out.append(row)
    return out


def write_outputs(mia: Mia, items: list[dict], per_ckpt: list[dict]) -> dict:
    """items.csv, then results.json (written last: its presence means the run finished); returns the results."""
    rows = mia.rows
    results = {"script": "membership_inference.py", "num_processes": mia.acc.num_processes, "runtime": mia.rt,
               "n_members": sum(r["split"] == "member" for r in rows),
               "n_nonmembers": sum(r["split"] == "nonmember" for r in rows), "min_k": mia.ks,
               "sign": "higher score = more member-like; members are the positive class",
               "attacks": mia.chosen, **mia.records, "checkpoints": per_ckpt}
    if mia.acc.is_main_process:
        write_csv_atomic(Path(mia.args.output_dir) / "items.csv", items)
        write_results(mia.args.output_dir, results)
    mia.acc.wait_for_everyone()
    return results


def summarize(rows: list[dict], names: list[str], target, label: str, ref, rule: str, args: MiaArgs) -> dict:
    """One checkpoint's block of results.json: what was attacked with which reference, mean NLLs by
    split, and per attack the metrics over all items and per canary-copies group."""
    def mean(col, split):
        v = [r[col] for r in rows if r["split"] == split and r[col] is not None]
        return float(np.mean(v)) if v else None

    return {"checkpoint": label, "path": str(target), **checkpoint_position(label), **attacks.adapter_settings(target),
            "reference_model": ref, "reference_rule": rule,
            "target_nll_member": mean("target_nll", "member"),
            "target_nll_nonmember": mean("target_nll", "nonmember"),
            "reference_nll_member": mean("reference_nll", "member"),
            "reference_nll_nonmember": mean("reference_nll", "nonmember"),
            "attacks": attacks.evaluate_attacks(rows, names, args.bootstrap, args.seed)}


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


if __name__ == "__main__":
    run(main, MiaArgs, sys.argv[1:])
