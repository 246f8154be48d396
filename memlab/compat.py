"""The flag names of Hugging Face's `run_clm_no_trainer.py` and of the studies memlab replaces
(docs/COMING_FROM.md), read on every script's command line.

Rule (docs/COMING_FROM.md "Flag names"): **memlab's names are primary, the Hugging Face names are aliases**.
An alias is rewritten to memlab's flag before parsing, so `config.json` records one canonical name per
setting and the same run spelled either way is the same configuration. Each of the 34 flags of
`run_clm_no_trainer.py` (and the few the studies added) is one of:

- **renamed**: the same setting under memlab's name (`--per_device_train_batch_size` -> `--batch_size`);
  the value may be translated (`--checkpointing_steps 100` -> `--save_steps every:100`);
- **accepted without effect**, with one `note:` line on stderr saying why (`--overwrite_cache`: memlab
  tokenizes in memory and keeps no cache);
- **refused** with one `error:` line saying what to do instead (`--dataset_name`: memlab runs offline,
  export the set to a file).

A setting given under two spellings (an alias and memlab's name) with different values is an error; one spelling
repeated keeps argparse's rule (the last value wins).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Callable, Optional

from memlab.io import DataError

TRUE, FALSE = ("true", "yes", "1", "y", "t"), ("false", "no", "0", "n", "f")


@dataclass(frozen=True)
class Flag:
    """One foreign flag. `apply(value, script)` returns memlab's [(flag, value or None)] or raises DataError;
    `note` is printed when the flag is accepted without effect."""
    takes_value: bool  # False: a switch (`--overwrite_cache`); "bool": an optional True/False value
    apply: Callable[[Optional[str], "Script"], list]
    when: Callable[["Script"], bool] = lambda s: True  # the scripts it applies to (others: not a flag there)


@dataclass(frozen=True)
class Script:
    """What an alias needs to know about the script whose command line it is in."""
    fields: frozenset
    trains: bool

    @classmethod
    def of(cls, dataclass_type) -> "Script":
        from memlab.runtime import TrainRuntimeArgs

        return cls(frozenset(f.name for f in fields(dataclass_type)), issubclass(dataclass_type, TrainRuntimeArgs))


def _rename(target: str | Callable[[Script], str], convert: Callable[[str], str] = str):
    def apply(value, script):
        name = target(script) if callable(target) else target
        return [(name, convert(value))]
    return apply


def _note(why: str):
    def apply(value, script):
        return [("note", why)]
    return apply


def _refuse(why: str):
    def apply(value, script):
        raise DataError(why)
    return apply


def _scheduler(value: str) -> str:
    mapping = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}
    if value not in mapping:
        raise DataError(f"--lr_scheduler_type {value}: memlab has linear, cosine, constant and constant_with_warmup "
                        "(warm-up is --num_warmup_steps / --warmup_steps in each)")
    return mapping[value]


def _checkpointing_steps(value: str, script: Script) -> list:
    """run_clm_no_trainer: an integer N saves every N steps (step_N/), 'epoch' after every epoch (epoch_i/)."""
    v = str(value).strip()
    if v == "epoch":
        return [("save_exposures", "all")]
    if v.isdigit() and int(v) > 0:
        return [("save_steps", f"every:{int(v)}")]
    if v == "log" or all(p.strip().isdigit() for p in v.split(",")):
        return [("save_steps", v)]  # memlab's own list form, for loops over chosen steps
    raise DataError(f"--checkpointing_steps {value}: expected a number of steps N (a checkpoint every N steps), "
                    "'epoch', a comma list of steps or 'log'")


def _use_pretrained(value: str, script: Script) -> list:
    if str(value).lower() in FALSE:
        return [("from_scratch", None)]
    return []  # pretrained weights are the default


def _resume_from_checkpoint(value, script: Script) -> list:
    return [("resume", None), ("note", "--resume_from_checkpoint: memlab resumes --output_dir's own run from its "
                                      "newest checkpoint (or the state saved on a signal), checked against the "
                                      "run's configuration and data; the path given is not read")]


def _eval_batch(script: Script) -> str:
    return "eval_batch_size" if "eval_batch_size" in script.fields else "batch_size"


def _same_model(flag: str):
    def apply(value, script):
        return [("same_model", f"--{flag}={value}")]
    return apply


def _with_tracking(value, script: Script) -> list:
    return [("report_to", "tensorboard"), ("note", "--with_tracking: the training curves also go to TensorBoard "
                                                  "(run/tb/); metrics.jsonl is written in any case")]


OFFLINE = ("memlab runs offline: export the data set to a JSONL or CSV file on a machine with internet (e.g. "
           "datasets' `load_dataset(...).to_json('train.jsonl')`, or `make_data.py convert`) and pass --train_file")
HUB = "memlab runs offline and never uploads: copy the run directory (its final/ holds the model) yourself"

FLAGS: dict[str, Flag] = {
    # renamed
    "per_device_train_batch_size": Flag(True, _rename("batch_size"), lambda s: s.trains),
    "per_device_eval_batch_size": Flag(True, _rename(_eval_batch),
                                       lambda s: "eval_batch_size" in s.fields or not s.trains),
    "num_train_epochs": Flag(True, _rename(lambda s: "num_exposures" if "num_exposures" in s.fields else "num_epochs"),
                             lambda s: s.trains),
    "lr_scheduler_type": Flag(True, _rename("lr_scheduler", _scheduler), lambda s: "lr_scheduler" in s.fields),
    "num_warmup_steps": Flag(True, _rename("warmup_steps"), lambda s: "warmup_steps" in s.fields),
    "checkpointing_steps": Flag(True, _checkpointing_steps, lambda s: "save_steps" in s.fields),
    "use_pretrained_weights": Flag("bool", _use_pretrained, lambda s: "from_scratch" in s.fields),
    "resume_from_checkpoint": Flag(True, _resume_from_checkpoint, lambda s: "resume" in s.fields),
    "with_tracking": Flag(False, _with_tracking, lambda s: "report_to" in s.fields),
    "max_seq_length": Flag(True, _rename("block_size"), lambda s: "block_size" in s.fields),
    "model_name": Flag(True, _rename("model_name_or_path"), lambda s: "model_name_or_path" in s.fields),
    "model_path": Flag(True, _rename("model_name_or_path"), lambda s: "model_name_or_path" in s.fields),
    # the recognition study's generate.py: recall of the seen sentences from the first half of their tokens
    "seen_file": Flag(True, lambda v, s: [("mode", "prefix"), ("input_file", v), ("prefix_fraction", "0.5")],
                      lambda s: "mode" in s.fields),
    # the same model, named again
    "tokenizer_name": Flag(True, _same_model("tokenizer_name"), lambda s: "model_name_or_path" in s.fields),
    "config_name": Flag(True, _same_model("config_name"), lambda s: "model_name_or_path" in s.fields),
    # accepted without effect
    "overwrite_cache": Flag("bool", _note("--overwrite_cache has no effect here: memlab tokenizes in memory at each "
                                          "run and keeps no cache to overwrite")),
    "preprocessing_num_workers": Flag(True, _note("--preprocessing_num_workers has no effect here: memlab "
                                                  "tokenizes in one process (the studies' files take seconds)")),
    "no_keep_linebreaks": Flag("bool", _note("--no_keep_linebreaks has no effect here: it applies to .txt data "
                                             "sets, whose lines memlab reads as separate items")),
    "use_slow_tokenizer": Flag("bool", _note("--use_slow_tokenizer has no effect here: memlab loads the fast "
                                             "tokenizer saved with the model (same vocabulary and ids)")),
    "low_cpu_mem_usage": Flag("bool", _note("--low_cpu_mem_usage has no effect here: transformers always loads "
                                            "weights without a second copy in memory")),
    "validation_split_percentage": Flag(True, _note(
        "--validation_split_percentage has no effect here: memlab trains on every item of --train_file (the "
        "original holds the first N%% out when no --validation_file is given); give --validation_file for a "
        "held-out loss")),
    # refused, with what to do
    "dataset_name": Flag(True, _refuse(f"--dataset_name: {OFFLINE}")),
    "dataset_config_name": Flag(True, _refuse(f"--dataset_config_name: {OFFLINE}")),
    "push_to_hub": Flag("bool", _refuse(f"--push_to_hub: {HUB}")),
    "hub_model_id": Flag(True, _refuse(f"--hub_model_id: {HUB}")),
    "hub_token": Flag(True, _refuse(f"--hub_token: {HUB}")),
    "max_train_steps": Flag(True, _rename("max_steps"), lambda s: "max_steps" in s.fields),
    "validation_file": Flag(True, _refuse(
        "--validation_file: not supported yet (no held-out loss during training); score held-out texts at each "
        "exposure with --eval_seen_file/--eval_unseen_file (recognition of matched unseen texts), or afterwards "
        "with test.py on the checkpoints")),
    "model_type": Flag(True, _refuse(
        "--model_type: memlab builds a model from a local model directory: give --model_name_or_path DIR (its "
        "config.json sets the architecture) and --use_pretrained_weights False (or --from_scratch) for random "
        "initialisation")),
}


# memlab flags some alias sets: given natively as well, the two values must agree
TARGETS = {"max_steps", "batch_size", "eval_batch_size", "num_exposures", "num_epochs", "lr_scheduler", "warmup_steps",
           "save_steps", "save_exposures", "from_scratch", "resume", "report_to", "block_size", "model_name_or_path",
           "input_file", "mode", "prefix_fraction"}


def rewrite(argv: list[str], dataclass_type, known: set[str]) -> list[str]:
    """`argv` with every foreign flag rewritten to memlab's (see the module docstring); prints the notes.
    `known`: the option strings the script's parser has (a foreign name that is also memlab's own, e.g.
    `--block_size`, is left alone)."""
    script = Script.of(dataclass_type)
    out: list[str] = []
    given: dict[str, dict[str, str]] = {}  # memlab flag -> {how it was spelled: its last value}
    notes: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        name, eq, inline = tok[2:].partition("=") if tok.startswith("--") and len(tok) > 2 else ("", "", "")
        flag = FLAGS.get(name)
        if not name or tok in known or f"--{name}" in known or flag is None or not flag.when(script):
            if name and f"--{name}" in known and name in TARGETS:
                value = inline if eq else (argv[i] if i < len(argv) and not argv[i].startswith("--") else "true")
                _record(given, name, value, f"--{name}")
            out.append(tok)
            continue
        value: Optional[str] = inline if eq else None
        if flag.takes_value is True and value is None:
            if i >= len(argv) or argv[i].startswith("--"):
                raise DataError(f"--{name}: expected a value")
            value, i = argv[i], i + 1
        elif flag.takes_value == "bool" and value is None:
            if i < len(argv) and argv[i].lower() in TRUE + FALSE:
                value, i = argv[i], i + 1
            else:
                value = "true"
        elif flag.takes_value is False and eq:
            raise DataError(f"--{name} takes no value")
        if flag.takes_value == "bool" and value.lower() not in TRUE + FALSE:
            raise DataError(f"--{name}: expected True or False, got {value!r}")
        for target, v in flag.apply(value, script):
            if target == "note":
                notes.append(v)
            elif target == "same_model":
                out.append(v)  # checked by check_same_model once the model flag is known
            else:
                _record(given, target, "true" if v is None else v, f"--{name}")
                out += [f"--{target}"] + ([] if v is None else [v])
    _check_agree(given)
    for note in dict.fromkeys(notes):
        print(f"note: {note.replace('%%', '%')}", file=sys.stderr)
    return check_same_model(out)


def _record(given: dict, target: str, value: str, spelled: str) -> None:
    """The last value of each spelling of a setting (argparse: a repeated flag's last value wins)."""
    given.setdefault(target, {})[spelled] = value


def _check_agree(given: dict) -> None:
    """One setting given under two spellings (an alias and memlab's name) must have one value."""
    for target, spellings in given.items():
        if len(set(spellings.values())) > 1:
            (a, va), (b, vb) = list(spellings.items())[:2]
            raise DataError(f"{a} {va} and {b} {vb} set one setting (--{target}) to two values; give one")


def check_same_model(argv: list[str]) -> list[str]:
    """--tokenizer_name/--config_name: memlab uses the tokenizer and config saved with the model, so either
    one must name the same directory as --model_name_or_path (then it is dropped), else one error."""
    model = None
    for j, tok in enumerate(argv):
        if tok == "--model_name_or_path" and j + 1 < len(argv):
            model = argv[j + 1]
        elif tok.startswith("--model_name_or_path="):
            model = tok.split("=", 1)[1]
    out = []
    for tok in argv:
        if tok.startswith(("--tokenizer_name=", "--config_name=")):
            flag, value = tok[2:].split("=", 1)
            if model is None or _same_path(value, model):
                continue
            raise DataError(f"--{flag} {value}: memlab uses the {flag.split('_')[0]} saved with the model "
                            f"(--model_name_or_path {model}); save a model directory that holds both (e.g. "
                            "save_pretrained of the model and the tokenizer into one directory) and pass it")
        out.append(tok)
    return out


def _same_path(a: str, b: str) -> bool:
    from pathlib import Path

    try:
        return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False
