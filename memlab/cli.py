"""Argument parsing shared by every script: typed dataclasses via `transformers.HfArgumentParser`,
`--config file.yaml` with command-line overrides, and one clear error (exit status 2) for bad input."""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from memlab import compat
from memlab.io import DataError, yaml_problem


def arg(default=dataclasses.MISSING, help: str = "", *, default_factory=dataclasses.MISSING, **metadata):
    """A field of an argument dataclass whose `help` is its `-h` text (HfArgumentParser shows
    metadata["help"] and appends the default). Extra `metadata` goes to `add_argument` as well (e.g.
    `action`); a mutable default goes in `default_factory`. Write a literal percent sign as '%%'."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help, **metadata})


# Flags several scripts share are declared once, here and in memlab.models (model_name_or_path_arg,
# trust_remote_code_arg), and placed in each script's dataclass where its -h lists them: a shared base dataclass
# would put its fields before the script's own (reordering every -h) and could not carry each script's own
# account of what it writes. The device flags (dtype or precision, attention, k-bit loading) are a base
# dataclass, memlab.runtime.ModelLoadArgs, as they come first in every -h.
def output_dir_arg(writes: str, kind: str = "output directory"):
    """`--output_dir` of a script that writes a run directory (memlab.rundir): None until given, required by
    the script's validate; `writes` names what is written there."""
    return arg(None, f"{kind} (required): {writes} are written there")


def overwrite_output_dir_arg():
    """`--overwrite_output_dir`, beside `output_dir_arg`: memlab.rundir.guard_output_dir's override."""
    return arg(False, "empty an --output_dir that holds anything else than this script's run with the same "
                      "configuration, then write")


def parse_list(value, typ=int, name: str = "value") -> list:
    """'1,2,3' (or a list from YAML) -> [1, 2, 3]; raises DataError naming the field."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [v for v in str(value).split(",") if v.strip()]
    try:
        return [typ(str(v).strip()) if not isinstance(v, typ) else v for v in items]
    except ValueError:
        raise DataError(f"--{name}: expected a comma-separated list of {typ.__name__}, got '{value}'") from None


def _yaml_loader():
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (safe_load keeps the last silently; OmegaConf,
    which reads the experiment configs, refuses it too)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            first = {}
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first at line {first[key] + 1})", key_node.start_mark)
                if key is not None:
                    first[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)
    return UniqueKeyLoader


def parse_args(dataclass_type, argv: Sequence[str] | None = None, prog: str | None = None):
    """Parse `argv` into one dataclass. `--config x.yaml` supplies defaults that the CLI overrides."""
    import yaml
    from transformers import HfArgumentParser

    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    # allow_abbrev=False: `--model_name` must never be taken silently for `--model_name_or_path`
    parser = HfArgumentParser(dataclass_type, prog=prog, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="YAML file of arguments; command-line flags override it")
    known = set(parser._option_string_actions)  # argparse keeps no public list of its option strings
    argv = compat.rewrite(argv, dataclass_type, known)
    check_unknown_flags(argv, known)
    from_yaml: dict = {}

    def error(message: str):
        """argparse's error as one DataError line (no usage dump), naming the YAML file when the bad value
        came from --config rather than the command line."""
        m = re.match(r"argument (--[\w-]+)(?:/--[\w-]+)*: (.*)", message)
        if m:
            name = m.group(1).lstrip("-").replace("-", "_")
            given = any(a == m.group(1) or a.startswith(m.group(1) + "=") for a in argv)
            if name in from_yaml and not given:
                raise DataError(f"{config_path}: {name}: {m.group(2)} (value {from_yaml[name]!r})")
            raise DataError(f"{m.group(1)}: {m.group(2)}")
        raise DataError(message)

    parser.error = error
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise DataError("--config: expected a YAML file path")
        config_path = argv[i + 1]
    elif any(a.startswith("--config=") for a in argv):
        config_path = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    if config_path:
        p = Path(config_path)
        if not p.exists():
            raise DataError(f"--config: {p}: file not found")
        try:
            values = yaml.load(p.read_text(encoding="utf-8"), Loader=_yaml_loader())
        except yaml.YAMLError as e:
            raise DataError(f"{p}: invalid YAML ({yaml_problem(e)})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
        values = {} if values is None else values
        if not isinstance(values, dict):
            kind = type(values).__name__
            raise DataError(f"{p}: expected a mapping of argument: value (e.g. 'learning_rate: 1e-4'), got "
                            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}")
        if isinstance(values.get("grid"), dict) and isinstance(values.get("settings"), dict):
            raise DataError(f"{p}: is an experiment config (grid and settings of every size), not a file of this "
                            f"script's arguments: run the experiment with `python scripts/run_task.py {p.stem} "
                            "--index N` (or scripts/submit.py, scripts/sweep.py)")
        bad_nested = sorted(k for k, v in values.items() if isinstance(v, dict))
        if bad_nested:
            raise DataError(f"{p}: {bad_nested[0]}: expected a value or a list, got a mapping")
        from_yaml.update(values)
        fields = {f.name for f in dataclasses.fields(dataclass_type)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise DataError(f"{p}: unknown argument(s) {unknown}")
        parser.set_defaults(**{k: (",".join(map(str, v)) if isinstance(v, list) else v)
                               for k, v in values.items()})
    try:
        outputs = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as e:  # HfArgumentParser reports unknown flags as a ValueError
        raise DataError(str(e)) from None
    args = outputs[0]  # outputs[1] is the namespace holding --config
    resolve_run_directories(args)
    return args


def resolve_run_directories(args) -> None:
    """A training run directory given where a model is expected is its model (models.model_in_run), said
    in one line; config.json then records the model directory used."""
    from memlab.models import MODEL_FLAGS, model_in_run

    for name in MODEL_FLAGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            resolved, note = model_in_run(value, name)
            if note:
                print(f"note: {note}", file=sys.stderr)
                setattr(args, name, resolved)


def check_unknown_flags(argv: Sequence[str], known: set[str]) -> None:
    """One error for the first flag the script does not have, with the closest names (memlab's and the Hugging
    Face aliases) as a hint; HfArgumentParser's own message lists them without one."""
    import difflib

    for tok in argv:
        if tok.startswith("--") and len(tok) > 2 and tok.split("=", 1)[0] not in known:
            name = tok.split("=", 1)[0]
            memlab_names = sorted(k for k in known if "-" not in k[2:])  # not HfArgumentParser's dashed twins
            close = (difflib.get_close_matches(name, memlab_names, n=2, cutoff=0.6)
                     or difflib.get_close_matches(name, sorted(f"--{f}" for f in compat.FLAGS), n=2, cutoff=0.6))
            hint = f" (did you mean {' or '.join(close)}?)" if close else " (see -h for the flags)"
            raise DataError(f"{name}: not a flag of this script{hint}")


def numeric_checks(a, positive=(), non_negative=(), fraction=()) -> list[tuple[bool, str]]:
    """Range checks of numeric flags (NaN and infinity fail every one): `positive` > 0, `non_negative`
    >= 0, `fraction` in [0, 1). One (ok, message) per flag, for `collect_errors`."""
    import math

    out = []
    for names, ok, rule in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0"),
                            (fraction, lambda v: 0 <= v < 1, "in [0, 1)")):
        for n in names:
            v = getattr(a, n)
            out.append((v is not None and math.isfinite(v) and ok(v), f"--{n} must be a finite number {rule}, got {v}"))
    return out


def collect_errors(checks: Sequence[tuple[bool, str]]) -> None:
    """Raise one DataError listing every failed check (litgpt's validate_args style)."""
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise DataError("invalid arguments:\n  - " + "\n  - ".join(problems))


# a full disk, a quota, a read-only file system, no permission: the user's to fix, so one error line, not a
# traceback (any other OSError is a bug and shows whole)
DISK_ERRNOS = (28, 122, 30, 13, 1)  # ENOSPC, EDQUOT, EROFS, EACCES, EPERM


def run(main: Callable, dataclass_type, argv: Sequence[str] | None = None):
    """Entry point wrapper: parse, call `main(args)`, turn DataError into one line on stderr + exit 2."""
    from memlab.rundir import forget_new_output

    forget_new_output()
    args = None
    try:
        args = parse_args(dataclass_type, argv)
        return main(args)
    except (DataError, OSError) as e:
        import errno
        import os

        if isinstance(e, OSError) and not isinstance(e, DataError) and e.errno not in DISK_ERRNOS:
            raise  # another OS error is a bug to see whole
        from memlab.rundir import discard_new_output

        discard_new_output()  # nothing half-written: a run directory this invocation created goes away
        if isinstance(e, OSError) and not isinstance(e, DataError):
            target = e.filename or getattr(args, "output_dir", None)
            where = f"{target}: " if target else ""
            e = DataError(f"{where}cannot write ({e.strerror or errno.errorcode.get(e.errno, e)}); nothing of this run "
                          "was kept")
        if os.environ.get("RANK", "0") == "0":  # several processes (accelerate launch): the error once
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        from memlab.rundir import release_locks

        release_locks()
