"""Experiment configs: configs/<expt>.yaml (OmegaConf), key=value overrides, the grid and its cells.

A grid is the product of its axes (in the order written). Array index i maps to `grid_cells(...)[i]`; the
sbatch templates, `bash scripts/<template>.sh` without SLURM, `scripts/submit.py` and `scripts/sweep.py`
(submitit) all go through `cell()`, so the mapping lives only here (and is tested).

Each config holds one preset per size: `full` (the cluster sweep), `small` (a workstation run, `make demo`) and
`tiny` (tests: tiny random models, seconds per task); `choose_size` is the one rule for which applies.
"""
from __future__ import annotations

import itertools
import math
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from memlab.io import DataError, yaml_problem

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
SIZES = ("full", "small", "tiny")


def choose_size(given: str | None = None, cluster: bool = False) -> str:
    """The grid size, by one rule for every entry point: the size given (`--size`; a `size=` override still
    wins over it in `resolve`), else MEMLAB_GRID, else `full` for a cluster (an array task under SLURM,
    submit.py, sweep.py onto SLURM), else `small` (this machine)."""
    if given:
        return given
    if os.environ.get("MEMLAB_GRID"):
        return os.environ["MEMLAB_GRID"]
    return "full" if cluster else "small"


def experiments() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("expt*.yaml"))


def load_config(expt: str):
    """configs/<expt>.yaml as an OmegaConf object: `grid.<size>` (axes) and `settings.<size>`."""
    path = CONFIG_DIR / f"{expt}.yaml"
    if not path.exists():
        raise DataError(f"unknown experiment '{expt}'; choose one of {experiments()} (configs/*.yaml)")
    try:
        return OmegaConf.load(path)
    except Exception as e:  # OmegaConf/YAML parse errors have many types
        raise DataError(f"{path}: cannot be read as a config ({yaml_problem(e)})") from None


# Grid axes whose values the pipelines branch on: any other value would silently run as one of them
# (method=qlora trained full fine-tuning), so it is refused with the override.
AXIS_CHOICES = {"method": ("full", "lora"), "mode": ("passive", "active")}
# Settings that hold a comma list of numbers as a string (`temperatures: 0,0.7`, handed to the scripts as
# written): an override is checked like any number (finite, >= 0) and compared by meaning ('0' == '0.0').
NUMBER_LIST_SETTINGS = ("temperatures",)


def number_list(value) -> tuple[float, ...] | None:
    """The numbers of a NUMBER_LIST_SETTINGS value ('0,0.70' -> (0.0, 0.7)), or None when it is not one."""
    try:
        return tuple(float(x) for x in (value if isinstance(value, list) else str(value).split(",")) if str(x).strip())
    except (TypeError, ValueError):
        return None


def same_meaning(key: str, a, b) -> bool:
    """Whether two values of setting `key` mean the same: equal, or for NUMBER_LIST_SETTINGS the same
    numbers however spelt ('0' == '0.0'; '0,0.7' == '0.0,0.70')."""
    if a == b:
        return True
    return key in NUMBER_LIST_SETTINGS and number_list(a) is not None and number_list(a) == number_list(b)


def _coerce(key: str, raw: str, example, as_list: bool):
    """One override value with the type of the config's own value (`example`); lists split on commas."""
    def one(x: str):
        x = x.strip()
        try:
            if isinstance(example, bool):
                if x.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return x.lower() in ("true", "1")
            if isinstance(example, (int, float)):
                v = int(x) if isinstance(example, int) else float(x)
            else:
                return x
        except ValueError:
            raise DataError(f"override {key}={raw}: '{x}' is not a{'n' if type(example).__name__[0] in 'aeiou' else ''} "
                            f"{type(example).__name__} (the config's value is {example!r})") from None
        if not math.isfinite(v) or v < 0:  # checked before any stage runs: never recorded, never trained
            raise DataError(f"override {key}={raw}: {x} is not a finite number >= 0")
        return v
    if not as_list:
        return one(raw)
    items = [x for x in raw.split(",") if x.strip()]
    if not items:
        raise DataError(f"override {key}={raw}: empty list")
    return [one(x) for x in items]


def parse_args_with_overrides(parser, argv=None):
    """argparse for the experiment scripts: `key=value` overrides may stand anywhere after the experiment
    name (also between flags); anything else unknown is an error. Argument errors are one `error:` line and
    exit status 2, as in every other script (no usage dump)."""
    def one_line_error(message: str):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = one_line_error
    parser.add_argument("overrides", nargs="*", help="key=value overrides of configs/<expt>.yaml (seed=0,1,2 sweeps)")
    args, extra = parser.parse_known_args(argv)
    args.overrides += [x for x in extra if "=" in x and not x.startswith("-")]
    unknown = [x for x in extra if x not in args.overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def split_force(overrides) -> tuple[list[str], bool]:
    """(the overrides without `force=...`, whether force=true was given): `force` is not a config key but
    the permission to replace a sweep's recorded config (see `guard_root`)."""
    rest, force = [], False
    for o in overrides or ():
        if o.split("=", 1)[0].strip() == "force":
            force = _coerce("force", o.split("=", 1)[1] if "=" in o else "", True, as_list=False)
        else:
            rest.append(o)
    return rest, force


def parse_overrides(overrides) -> dict[str, str]:
    """['a=1', 'b=x,y'] -> {'a': '1', 'b': 'x,y'} (one clear error for anything else)."""
    out = {}
    for o in overrides or ():
        if "=" not in o or o.startswith("="):
            raise DataError(f"override '{o}': expected key=value (e.g. seed=0,1,2 or lr_full=1e-5)")
        k, v = o.split("=", 1)
        out[k.strip()] = v
    return out


def resolve(expt: str, size: str, overrides=()) -> tuple[str, dict[str, list], dict]:
    """(size, grid axes, settings) of one experiment after `key=value` overrides.

    `size=tiny` picks the preset. A key naming a grid axis replaces it (a comma list sweeps it; for an axis
    whose values hold commas themselves, such as LoRA target modules, `+` joins names inside one value:
    `modules=q_proj,q_proj+k_proj`); a key naming a setting replaces it, typed like the config's value (a
    list setting takes a comma list; a string keeps its commas, e.g. `temperatures=0,0.7`). MEMLAB_MODELS=a,b
    replaces the model axis before overrides apply. Unknown keys and mistyped values are one error listing
    the valid keys."""
    cfg = load_config(expt)
    ov = parse_overrides(split_force(overrides)[0])  # force=true is a permission, not a key (run_task)
    size = ov.pop("size", size)

    if size not in cfg.grid:
        raise DataError(f"{expt}: unknown grid size '{size}'; choose one of {sorted(cfg.grid)}")
    axes = OmegaConf.to_container(cfg.grid[size])
    settings = OmegaConf.to_container(cfg.settings[size])
    settings.update(OmegaConf.to_container(cfg.get("data") or {}))  # your own files: the same for every size
    if os.environ.get("MEMLAB_MODELS") and "model" in axes:
        axes["model"] = [m for m in os.environ["MEMLAB_MODELS"].split(",") if m]
    renamed = {}
    for k in list(ov):
        new = new_setting_name(k, settings) if k not in axes else k
        if new != k:
            if new in ov:
                raise DataError(f"{expt}: {k} and {new} are one setting ({k} is its old name): give it once")
            renamed[new] = ov.pop(k)
    ov.update(renamed)
    unknown = sorted(set(ov) - set(axes) - set(settings))
    if unknown:
        raise DataError(f"{expt}: unknown key(s) {unknown}; valid keys: size, grid axes {list(axes)}, "
                        f"settings {list(settings)}; and force=true")
    for k, raw in ov.items():
        if k in axes:
            example = axes[k][0]
            joined = isinstance(example, str) and any("," in str(v) for v in axes[k])
            axes[k] = _coerce(k, raw, example, as_list=True)
            if joined:
                axes[k] = [v.replace("+", ",") for v in axes[k]]
            bad = [v for v in axes[k] if k in AXIS_CHOICES and v not in AXIS_CHOICES[k]]
            if bad:
                raise DataError(f"override {k}={raw}: {bad[0]!r} is not one of {', '.join(AXIS_CHOICES[k])}")
            dupes = sorted({str(v) for v in axes[k] if axes[k].count(v) > 1})
            if dupes:
                raise DataError(f"override {k}={raw}: value(s) {dupes} given twice; two cells would share one "
                                "directory: give each value once")
        else:
            example = settings[k]
            if isinstance(example, list):
                settings[k] = _coerce(k, raw, example[0] if example else 0, as_list=True)
            elif k in NUMBER_LIST_SETTINGS:
                numbers = number_list(raw)  # each a finite number >= 0, checked before any stage runs
                if not numbers or not all(math.isfinite(x) and x >= 0 for x in numbers):
                    raise DataError(f"override {k}={raw}: expected a comma list of finite numbers >= 0 (the "
                                    f"config's value is {example!r})")
                # the config's own spelling when the meaning is the same: the stages' command lines stay as
                # they were (a stage is re-run when its arguments change)
                settings[k] = example if same_meaning(k, example, raw.strip()) else raw.strip()
            else:
                settings[k] = _coerce(k, raw, example, as_list=False)
    for k in DATA_FILE_KEYS:  # a relative path is taken from where the command ran (the templates cd away)
        if settings.get(k) and not Path(settings[k]).expanduser().is_absolute():
            settings[k] = str(Path(os.environ.get("MEMLAB_CALLER_DIR") or os.getcwd()) / settings[k])
    return size, axes, settings


DATA_FILE_KEYS = ("facts_file", "probes_file", "pairs_file", "seen_file", "unseen_file", "corpus_file",
                  "members_file", "nonmembers_file", "train_file", "documents_file")


def absolute_data_overrides(overrides) -> list[str]:
    """The overrides with relative data-file paths made absolute from the current directory, for entry
    points that hand them to jobs starting elsewhere (submit.py: sbatch runs from the repository;
    sweep.py: submitit jobs chdir there)."""
    out = []
    for o in overrides or ():
        k, eq, v = o.partition("=")
        if eq and k.strip() in DATA_FILE_KEYS and v and not Path(v).expanduser().is_absolute():
            o = f"{k}={Path.cwd() / v}"
        out.append(o)
    return out


def check_data_files(expt: str, settings: dict, variants: list | None = None) -> None:
    """Every given data file exists, and files that only make sense together come together: one error
    listing every problem (run before any stage, and by submit.py before submitting)."""
    problems = [f"{k}={settings[k]}: no such file" for k in DATA_FILE_KEYS
                if settings.get(k) and "{variants}" not in str(settings[k])
                and not Path(settings[k]).expanduser().is_file()]
    if "{variants}" in str(settings.get("facts_file") or ""):
        ks = variants if variants is not None else []
        problems += [f"facts_file={settings['facts_file']}: no such file for variants={k} "
                     f"({facts_file_for(settings['facts_file'], k)})" for k in ks
                     if not Path(facts_file_for(settings["facts_file"], k)).expanduser().is_file()]
        if variants is None:
            problems.append("facts_file={variants}: only expt3 has a variants axis to fill it from")
    given = {k for k in DATA_FILE_KEYS if settings.get(k)}
    for a, b, why in (("facts_file", "probes_file", "the questions asked about the facts"),
                      ("probes_file", "facts_file", "the facts the probes ask about are trained from it"),
                      ("seen_file", "unseen_file", "recognition pairs studied sentences with foils"),
                      ("unseen_file", "seen_file", "recognition pairs studied sentences with foils"),
                      ("members_file", "nonmembers_file", "membership inference compares the two"),
                      ("nonmembers_file", "members_file", "membership inference compares the two"),
                      ("train_file", "members_file", "the members are what is scored"),
                      ("facts_file", "pairs_file", "DPO needs preference pairs about your facts")):
        if a in given and b in settings and b not in given:
            problems.append(f"{a} needs {b} ({why})")
    if settings.get("leakage", "refuse") not in ("refuse", "warn"):
        problems.append(f"leakage={settings['leakage']}: expected refuse or warn")
    if (settings.get("answer_column") or settings.get("tier_columns")) and "probes_file" not in given:
        problems.append("answer_column/tier_columns describe probes_file, which is not given")
    if problems:
        raise DataError(f"{expt}: " + "; ".join(problems))


def facts_file_for(path: str, variants) -> str:
    """facts_file for one cell: `{variants}` in the path is the cell's number of examples per fact (the
    examples-per-fact study's one file per K: train_{variants}.jsonl with variants=5,10,25,50)."""
    return str(path).replace("{variants}", str(variants))


def grid_axes(expt: str, size: str, overrides=()) -> dict[str, list]:
    return resolve(expt, size, overrides)[1]


def grid_cells(expt: str, size: str, overrides=()) -> list[dict]:
    axes = grid_axes(expt, size, overrides)
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def cell(expt: str, size: str, index: int, overrides=()) -> dict:
    cells = grid_cells(expt, size, overrides)
    if not 0 <= index < len(cells):
        raise DataError(f"{expt}/{size}: array index {index} outside the grid of {len(cells)} cells (0-{len(cells) - 1}); "
                        f"`python scripts/submit.py {expt} key=value ...` sizes the array from the grid")
    return cells[index]


def cell_name(c: dict) -> str:
    """Directory name of a cell: `model=smollm2-135m_seed=0_method=full_mode=active` (paths shortened)."""
    return "_".join(f"{k}={Path(str(v)).name.replace(',', '+')}" for k, v in c.items())


# ------------------------------------------------------------------------------ the recorded config
# Settings added to the configs after sweeps were recorded, with the value that reproduces what those sweeps
# ran: a recorded config (or a cell's settings.json) without the key is read with this value, so an old sweep
# root still resumes and is not "another config".
ADDED_SETTINGS = {"leakage": "refuse", "fact_id_column": "", "lora_alpha": 0, "lora_dropout": 0.0,
                  "warmup_steps": 0, "gradient_accumulation_steps": 1}


# Settings renamed so that one idea has one name in every config: the learning rate is named by the kind of
# fine-tuning it drives (lr_full, lr_lora, dpo_lr_full, dpo_lr_lora; expt2/3/5/7 said `lr` for full fine-tuning,
# expt4 `lr` for LoRA, expt6 `dpo_lr` for full DPO). An old name is read as the one new name among its
# candidates that the experiment's config has: in an override (lr=1e-4 still works where it did) and in a
# recorded config or settings.json (an old sweep still resumes).
RENAMED_SETTINGS = {"lr": ("lr_full", "lr_lora"), "dpo_lr": ("dpo_lr_full",)}


def new_setting_name(key: str, current) -> str:
    """`key`, or its new name when it is an old one and exactly one of its new names is in `current`."""
    if key in current or key not in RENAMED_SETTINGS:
        return key
    present = [k for k in RENAMED_SETTINGS[key] if k in current]
    return present[0] if len(present) == 1 else key


def with_added_settings(recorded: dict, current: dict) -> dict:
    """`recorded` read as today's config would write it: old setting names renamed (RENAMED_SETTINGS) and each
    ADDED_SETTINGS key the current config has and it lacks at its old value."""
    if not isinstance(recorded, dict):
        return recorded
    recorded = {new_setting_name(k, current): v for k, v in recorded.items()}
    return {**{k: v for k, v in ADDED_SETTINGS.items() if k in current and k not in recorded}, **recorded}
