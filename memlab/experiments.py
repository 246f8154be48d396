"""The experiment grids and the pipeline each array task runs, in one place.

A grid is the product of its axes (in the order written). Array index i maps to `grid_cells(...)[i]`;
the sbatch templates, `bash scripts/<template>.sh` without SLURM, and `scripts/sweep.py` (submitit) all
go through `cell()` and `run_task()`, so the mapping lives only here (and is tested).

Grids and settings live in `configs/<expt>.yaml` (loaded with OmegaConf), one preset per size: `full` (the
cluster sweep, the default under SLURM), `small` (a workstation run, the default without SLURM and `make
demo`) and `tiny` (tests: tiny random models, seconds per task). Every entry point takes `key=value`
overrides (`resolve`); `MEMLAB_MODELS=a,b` replaces any grid's model axis (local HF directories or
built-in names).

Each task writes RUNS_ROOT/<expt>/<cell name>/ with one sub-run per stage (data/, train/, recall/, ...),
each a normal run directory. A stage whose results.json exists is skipped, so a requeued or re-run task
continues where it stopped, and a finished task (its own results.json written) does nothing at all.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from memlab.io import DataError, write_json_atomic, write_jsonl_atomic
from memlab.rundir import differences

ROOT = Path(__file__).resolve().parents[1]
EXIT_REQUEUE = 75  # train.py's "checkpointed on a signal, rerun me"

CONFIG_DIR = ROOT / "configs"
SIZES = ("full", "small", "tiny")


def experiments() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("expt*.yaml"))


def load_config(expt: str):
    """configs/<expt>.yaml as an OmegaConf object: `grid.<size>` (axes) and `settings.<size>`."""
    from omegaconf import OmegaConf

    path = CONFIG_DIR / f"{expt}.yaml"
    if not path.exists():
        raise DataError(f"unknown experiment '{expt}'; choose one of {experiments()} (configs/*.yaml)")
    try:
        return OmegaConf.load(path)
    except Exception as e:  # OmegaConf/YAML parse errors have many types
        raise DataError(f"{path}: cannot be read as a config ({e})") from None


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
    from omegaconf import OmegaConf

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
            dupes = sorted({str(v) for v in axes[k] if axes[k].count(v) > 1})
            if dupes:
                raise DataError(f"override {k}={raw}: value(s) {dupes} given twice; two cells would share one "
                                "directory: give each value once")
        else:
            example = settings[k]
            if isinstance(example, list):
                settings[k] = _coerce(k, raw, example[0] if example else 0, as_list=True)
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


def with_added_settings(recorded: dict, current: dict) -> dict:
    """`recorded` with each ADDED_SETTINGS key the current config has and it lacks, at its old value."""
    if not isinstance(recorded, dict):
        return recorded
    return {**{k: v for k, v in ADDED_SETTINGS.items() if k in current and k not in recorded}, **recorded}


def check_runs_root(runs_root, expt: str) -> None:
    """A runs root (and its experiment folder) that exists must be a directory."""
    for d in (Path(runs_root), Path(runs_root) / expt):
        if d.exists() and not d.is_dir():
            raise DataError(f"--runs_root {runs_root}: {d} is a file, not a directory of sweeps")


def guard_root(expt: str, runs_root, size: str, axes: dict, settings: dict, overrides=(), force: bool = False,
               write: bool = True) -> Path:
    """Record the resolved config at the sweep root (RUNS_ROOT/<expt>/config.yaml) or refuse a changed one.

    A sweep root holds cells run with one set of settings (what analyze.py pools); its grid may grow (more
    seeds, another model: cells are keyed by their values, so new cells never touch old ones, and the
    recorded grid is the union). A different `size` or any different setting is refused, naming every key
    that differs, unless `force` (then the new config is recorded and each cell whose own settings.json
    differs is emptied before it runs: `run_task`). `write=False` only checks (submit.py --dry_run)."""
    from omegaconf import OmegaConf

    check_runs_root(runs_root, expt)
    path = Path(runs_root) / expt / "config.yaml"
    grid = {k: list(v) for k, v in axes.items()}
    if path.exists():
        try:
            old = OmegaConf.to_container(OmegaConf.load(path))
            if not isinstance(old, dict):
                raise ValueError("not a mapping")
        except Exception as e:
            raise DataError(f"{path}: unreadable recorded config ({e}); move it away or use a new runs root") from None
        diff = differences({"size": old.get("size"), "settings": with_added_settings(old.get("settings", {}), settings)},
                            {"size": size, "settings": settings})
        if diff and not force:
            raise DataError(f"{path.parent} was run with another config; differing keys: {'; '.join(diff)}. "
                            f"Use a new runs root, or force=true (--force) to record this config and re-run the "
                            f"cells whose settings differ")
        if not diff:  # same settings: the grid grows
            for k, vals in (old.get("grid") or {}).items():
                grid[k] = list(vals) + [v for v in grid.get(k, []) if v not in vals] if k in grid else list(vals)
    if write:
        from memlab.io import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = {"expt": expt, "size": size, "grid": grid, "settings": settings,
               "overrides": [o for o in overrides or ()]}
        text = "# resolved config of this sweep root (memlab/experiments.py guard_root)\n" + OmegaConf.to_yaml(
            OmegaConf.create(cfg))
        if not path.exists() or path.read_text() != text:  # an unchanged re-run touches nothing
            write_text_atomic(path, text)
    return path


def _settings_match(task: Path, settings: dict) -> bool:
    """Whether the cell's recorded settings.json equals `settings` (added settings at their old values)."""
    try:
        old = json.loads((task / "settings.json").read_text())
    except (OSError, ValueError):
        return False
    old.pop("overrides", None)
    return not differences(with_added_settings(old, settings), settings)


def _check_cell_settings(task: Path, settings: dict, force: bool) -> None:
    """A cell run earlier with other settings is refused, or emptied with `force` (never merged)."""
    recorded = task / "settings.json"
    if not recorded.exists():
        return
    try:
        old = json.loads(recorded.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{recorded}: unreadable ({e})") from None
    old.pop("overrides", None)
    diff = differences(with_added_settings(old, settings), settings)
    if not diff:
        return
    if not force:
        raise DataError(f"{task} was run with other settings ({'; '.join(diff)}); use a new runs root or force=true")
    import shutil

    print(f"{task}: settings differ ({'; '.join(diff)}); force=true: emptying the cell", flush=True)
    shutil.rmtree(task)


def coverage(expt: str, size: str, spec: str, overrides=()) -> str:
    """One log line: which cells an array MIN-MAX:STEP (SLURM_ARRAY_TASK_MIN/MAX/STEP) leaves uncovered,
    and which of its indices fall past the grid."""
    cells = grid_cells(expt, size, overrides)
    spec, _, count = spec.partition("#")
    lo_hi, _, step = spec.partition(":")
    lo, _, hi = lo_hi.partition("-")
    try:
        covered = set(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    except ValueError:
        raise DataError(f"--coverage: expected MIN-MAX:STEP[#COUNT], got '{spec}'") from None
    missing = [i for i in range(len(cells)) if i not in covered]
    past = sorted(i for i in covered if i >= len(cells))
    parts = [f"memlab {expt}: array {spec} over the {len(cells)} cells of grid '{size}'"]
    if count and count.isdigit() and int(count) != len(covered):  # e.g. --array=0,3,7: only MIN/MAX known
        parts.append(f"an irregular array of {count} tasks: cells between its indices may be uncovered too")
    if missing:
        parts.append(f"cells no index covers ({len(missing)}): " + ", ".join(f"{i} {cell_name(cells[i])}" for i in missing))
    if past:
        parts.append(f"indices past the grid (they will fail): {past[0]}-{past[-1]}")
    if not missing and not past:
        parts.append("every cell covered")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------- stages
class Preempted(RuntimeError):
    """A stage exited with EXIT_REQUEUE: its state is saved; the task should be requeued."""


def _launcher(script: str) -> list[str]:
    """`python SCRIPT`, or `accelerate launch ...` for training when MEMLAB_NUM_PROCESSES > 1 (a multi-GPU
    node); MEMLAB_LAUNCH overrides the whole prefix."""
    if os.environ.get("MEMLAB_LAUNCH"):
        return shlex.split(os.environ["MEMLAB_LAUNCH"]) + [script]
    n = int(os.environ.get("MEMLAB_NUM_PROCESSES", "1"))
    if n > 1 and script in ("train.py", "finetune_dpo.py"):
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "accelerate_config.yaml"), "--num_processes", str(n), script]
    return [sys.executable, script]


def _recorded_argv_matches(out_dir: Path, argv: list[str]) -> bool:
    """Whether the stage's config.json records this command line (its leading part: extra flags such as
    --resume come after). A config.json from before argv was recorded counts as a match."""
    try:
        recorded = json.loads((out_dir / "config.json").read_text(encoding="utf-8")).get("argv")
    except (OSError, ValueError):
        return False
    return recorded is None or recorded[:len(argv)] == argv


def _end_with_parent() -> None:
    """In a stage's process, before it starts: the kernel sends it SIGTERM when run_task.py dies, however it
    dies (SIGKILL included), so a killed task never leaves a stage running on (it saves its resume state and
    exits 75, as on a pre-emption). Linux's prctl(PR_SET_PDEATHSIG); elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_stage(script: str, args: list, out_dir: Path, log=None) -> Path:
    """Run one script into `out_dir` unless it already finished there with the same arguments (results.json
    exists and config.json records this command line; for make_data, manifest.json exists). A stage run
    earlier with other arguments is re-run with --overwrite_output_dir (emptied, never merged); an
    unfinished training run with the same arguments resumes. SIGTERM/SIGUSR1 reaching this process are
    passed on to the stage; if this process is killed outright, the stage gets SIGTERM (`_end_with_parent`)."""
    argv = [str(a) for a in args] + ["--output_dir", str(out_dir)]
    cmd = _launcher(script) + argv
    if script == "train.py" and os.environ.get("MEMLAB_TRAIN_ARGS"):  # extra train.py flags (tests, tuning)
        cmd += shlex.split(os.environ["MEMLAB_TRAIN_ARGS"])
    if script == "make_data.py":
        if (out_dir / "manifest.json").exists():
            return out_dir
    elif (out_dir / "config.json").exists():  # read once: same arguments finish or resume, others re-run
        if not _recorded_argv_matches(out_dir, argv):
            print(f"{out_dir}: run earlier with other arguments; re-running it from scratch", flush=True)
            cmd.append("--overwrite_output_dir")
        elif (out_dir / "results.json").exists():
            return out_dir
        elif script == "train.py":
            cmd.append("--resume")
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_end_with_parent)
    forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if rc == EXIT_REQUEUE:
        raise Preempted(f"{script} checkpointed on a signal; rerun the task to resume")
    if rc != 0:
        raise RuntimeError(f"{script} failed with exit status {rc}: {' '.join(cmd)}")
    return out_dir


def checkpoint_glob(train_dir: Path, prefix: str = "exposure_") -> str:
    return str(train_dir / "checkpoints" / f"{prefix}*")


# ------------------------------------------------------------------------------------------ pipelines
def _jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def _filtered_jsonl(src: Path, out: Path, keep) -> Path:
    """`out`: the rows of `src` for which `keep(row)` holds (written once; an existing `out` is kept)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out, [r for r in _jsonl_rows(src) if keep(r)])
    return out


def mode_probes(facts: Path, mode: str, out: Path, verbatim: bool = True) -> Path:
    """The facts' probes for a cell trained in `mode` (active|passive): easy/mid/hard plus, with
    `verbatim`, the verbatim probes of that mode only (a passive cell never saw the active prompts)."""
    from memlab.datagen.facts import probes_for_mode

    if not out.exists():
        rows = _jsonl_rows(facts / "probes.jsonl")
        keep = probes_for_mode(rows, mode) if verbatim else [r for r in rows if r.get("tier") != "verbatim"]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out, keep)
    return out


# ------------------------------------------------------------------- generated sets, or your own files
def _user_probes(s: dict, task: Path) -> Path:
    """probes_file as probes.jsonl (`make_data.py convert --to probes`: validated, one probe per tier; fact ids
    from `fact_id_column` when given)."""
    extra = ["--answer_column", s["answer_column"]] if s.get("answer_column") else []
    if s.get("fact_id_column"):
        extra += ["--fact_id_column", s["fact_id_column"]]
    if s.get("tier_columns"):
        extra += ["--tier_columns", s["tier_columns"]]
    out = run_stage("make_data.py", ["convert", "--input", s["probes_file"], "--to", "probes", *extra],
                    task / "data" / "user" / "probes")
    return out / "probes.jsonl"


def facts_sets(c: dict, s: dict, task: Path, mode: str, variants: int, **facts_flags) -> dict:
    """The facts a cell trains on and the probes asked about them: generated (`make_data.py facts`, the
    `mode` training set with `variants` per fact) or facts_file + probes_file. Keys: train, probes (this
    mode's verbatim tier included), reworded (no verbatim tier: knownness), dir (generated only), pairs."""
    if s.get("facts_file"):
        probes = _user_probes(s, task)
        return {"train": Path(facts_file_for(s["facts_file"], variants)), "probes": probes, "dir": None, "pairs": s.get("pairs_file") or None,
                "reworded": _without_verbatim(probes, task / "data" / "probes_knownness.jsonl")}
    flags = [x for k, v in facts_flags.items() for x in (f"--{k}", v)]
    facts = run_stage("make_data.py", ["facts", "--n_names", 0, "--n_objects", s["n_facts"], *flags,
                                       "--variants_per_fact", variants, "--seed", c["seed"]], task / "data" / "facts")
    return {"train": facts / f"train_{mode}_{variants}.jsonl", "dir": facts, "pairs": facts / "dpo_pairs.jsonl",
            "probes": mode_probes(facts, mode, task / "data" / f"probes_{mode}.jsonl"),
            "reworded": mode_probes(facts, "active", task / "data" / "probes_knownness.jsonl", verbatim=False)}


def facts_file_for(path: str, variants) -> str:
    """facts_file for one cell: `{variants}` in the path is the cell's number of examples per fact (the
    examples-per-fact study's one file per K: train_{variants}.jsonl with variants=5,10,25,50)."""
    return str(path).replace("{variants}", str(variants))


def _without_verbatim(probes: Path, out: Path) -> Path:
    return _filtered_jsonl(probes, out, lambda r: r.get("tier") != "verbatim")


def sentence_sets(c: dict, s: dict, task: Path) -> tuple[Path, Path]:
    """(seen, unseen) recognition sentences: generated (novel foils) or seen_file + unseen_file."""
    if s.get("seen_file"):
        return Path(s["seen_file"]), Path(s["unseen_file"])
    sents = run_stage("make_data.py", ["recognition", "--n_pairs", s["n_sentences"], "--foil_type", "novel",
                                       "--seed", c["seed"]], task / "data" / "recognition")
    return sents / "seen.jsonl", sents / "unseen.jsonl"


def mia_sets(c: dict, s: dict, task: Path, canary_copies, canaries_per_copy) -> dict:
    """Members, non-members and the training set holding the members: generated (`make_data.py mia` from
    the corpus, canaries repeated) or members_file + nonmembers_file (+ train_file, default the members)."""
    if s.get("members_file"):
        return {"members": Path(s["members_file"]), "nonmembers": Path(s["nonmembers_file"]),
                "train": Path(s.get("train_file") or s["members_file"]), "dir": None}
    mia = run_stage("make_data.py", ["mia", "--source", "corpus", "--n_members", s["n_members"],
                                     "--n_nonmembers", s["n_members"], "--canary_copies", canary_copies,
                                     "--canaries_per_copy", canaries_per_copy, "--seed", c["seed"]], task / "data" / "mia")
    return {"members": mia / "members.jsonl", "nonmembers": mia / "nonmembers.jsonl", "train": mia / "train.jsonl",
            "dir": mia}


def check_leakage_once(s: dict, task: Path, train: list, held_out: list) -> None:
    """With any of your own files in the cell, the leakage check over all of its training files vs all of
    its held-out ones (generated sets were checked when made; mixing them with yours is checked here)."""
    if not any(s.get(k) for k in DATA_FILE_KEYS):
        return
    done = task / "data" / "leakage.json"
    if done.exists():
        return
    from memlab.datagen.leakage import check_files, format_report

    try:
        report = check_files([Path(p) for p in train], [Path(p) for p in held_out])  # DataError listing pairs
        print(format_report(report), flush=True)
    except DataError as e:
        if s.get("leakage", "refuse") != "warn" or "leakage check failed" not in str(e):
            if "leakage check failed" in str(e):
                raise DataError(f"{e}\n  (a design that overlaps on purpose: leakage=warn goes on with the "
                                "overlap reported in the cell's leakage.json)") from None
            raise
        from memlab.datagen.leakage import check_leakage, held_out_rows_for_check, rows_for_check

        report = check_leakage({str(p): rows_for_check(p) for p in train},
                               {str(p): held_out_rows_for_check(p) for p in held_out})
        report["leakage"] = "warn"
        print(f"warning: leakage=warn: {report['n_overlaps']} overlapping pair(s) between training and held-out "
              f"texts, kept and listed in {done}", flush=True)
    done.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done, report)


def model_flags(s: dict, training: bool = False) -> list:
    """Flags for how a stage loads the model, from the settings that have them (expt1): `load_in_4bit`
    (QLoRA: a 4-bit base, LoRA adapters; needs method=lora and a CUDA GPU) and, for training,
    `gradient_checkpointing`."""
    flags = ["--load_in_4bit"] if s.get("load_in_4bit") else []
    if training and s.get("gradient_checkpointing"):
        flags.append("--gradient_checkpointing")
    return flags


def knownness_stage(c: dict, s: dict, probes: Path, task: Path, max_new_tokens: int = 16) -> Path:
    """SliCK knownness (Gekhman et al. 2024) before training: the base model answers every reworded probe
    (`probes`: no verbatim tier) greedily and `knownness_samples` times at temperature 0.5 (8 in the full
    grids; fewer in the small ones, for time); analyze.py turns it into categories."""
    return run_stage("generate.py", ["--mode", "qa", "--input_file", probes, "--model_name_or_path", c["model"],
                                     "--temperatures", "0,0.5", "--repeats", s["knownness_samples"],
                                     "--max_new_tokens", max_new_tokens, "--seed", c["seed"], "--bootstrap", 0,
                                     *model_flags(s)], task / "knownness")


SENTENCE_PREFIX_FRACTION = 0.5  # Orhan (2023) cues recall "by a part of" the studied sentence: here its first half


def expt1(c: dict, s: dict, task: Path) -> dict:
    """Facts (passive statements or active QA) plus Orhan-style sentences, evaluated inside training before
    it (exposure 0) and after every exposure: QA recall of the facts by tier (verbatim and reworded;
    train/eval/recall), recognition (2AFC, AUC) of the studied sentences (train/eval/recognition) and their
    recall cued by the first half (greedy, exact match and token accuracy of the rest;
    train/eval/prefix_recall, stage `sentence_recall`); knownness of each fact before training."""
    seed = c["seed"]
    kind = "passive" if c["mode"] == "passive" else "active"
    facts = facts_sets(c, s, task, kind, s["variants"])
    seen, unseen = sentence_sets(c, s, task)
    check_leakage_once(s, task, [facts["train"], seen], [facts["probes"], unseen])
    known = knownness_stage(c, s, facts["reworded"], task, max_new_tokens=10)  # as the recall evaluation
    train_files = f"{facts['train']},{seen}"
    lora = ["--lora_r", s["lora_r"], "--lora_alpha", 2 * s["lora_r"]] if c["method"] == "lora" else []
    lr = s["lr_lora"] if c["method"] == "lora" else s["lr_full"]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", train_files,
                                   "--num_exposures", s["num_exposures"], "--learning_rate", lr,
                                   "--batch_size", s["batch_size"], "--seed", seed, *lora,
                                   "--eval_probes_file", facts["probes"], "--eval_seen_file", seen,
                                   "--eval_unseen_file", unseen, "--eval_prefix_fraction", SENTENCE_PREFIX_FRACTION,
                                   "--eval_exposures", ",".join(str(k) for k in range(s["num_exposures"] + 1)),
                                   "--eval_temperatures", s["temperatures"], "--eval_repeats", s["repeats"],
                                   "--eval_max_new_tokens", 10, *model_flags(s, training=True)], task / "train")
    return summarize_stages({"recall": train / "eval" / "recall", "recognition": train / "eval" / "recognition",
                             "sentence_recall": train / "eval" / "prefix_recall", "knownness": known, "train": train})


def summarize_stages(stages: dict[str, Path]) -> dict:
    """The task's results.json: each stage's results.json, keyed by stage name."""
    return {name: json.loads((path / "results.json").read_text()) for name, path in stages.items()}


def expt2(c: dict, s: dict, task: Path) -> dict:
    """Retention: study facts (active QA) + sentences for `study_exposures` epochs, then one epoch of an
    interference corpus from the study's final weights. QA recall of the facts, recognition of the studied
    sentences and their recall cued by the first half (stage `retention_sentence_recall`) are evaluated
    inside the interference run, at its start (the end of study, step 0) and at log-spaced steps (1..10,
    20..100, ...)."""
    seed, n = c["seed"], c["study_exposures"]
    facts = facts_sets(c, s, task, "active", s["variants"])
    seen, unseen = sentence_sets(c, s, task)
    corpus = Path(s["corpus_file"]) if s.get("corpus_file") else run_stage(
        "make_data.py", ["corpus", "--n_sentences", s["n_corpus"], "--seed", seed + 1000],
        task / "data" / "corpus") / "sentences.jsonl"
    check_leakage_once(s, task, [facts["train"], seen, corpus], [facts["probes"], unseen])
    study = run_stage("train.py", ["--model_name_or_path", c["model"], "--num_exposures", n, "--save_exposures", n,
                                   "--train_file", f"{facts['train']},{seen}",
                                   "--learning_rate", s["lr"], "--batch_size", s["batch_size"], "--seed", seed],
                      task / "study")
    studied = study / "checkpoints" / f"exposure_{n}"
    # interference with evaluation inside training: before it (exposure_0 = the end of study) and at
    # log-spaced steps; no step checkpoint is written (at 8B, each would be 16 GB)
    interf = run_stage("train.py", ["--model_name_or_path", c["model"], "--init_from", studied,
                                    "--train_file", corpus, "--num_exposures", 1,
                                    "--learning_rate", s["lr"], "--batch_size", s["batch_size"], "--seed", seed,
                                    "--eval_probes_file", facts["probes"],
                                    "--eval_seen_file", seen, "--eval_unseen_file", unseen,
                                    "--eval_prefix_fraction", SENTENCE_PREFIX_FRACTION,
                                    "--eval_exposures", 0, "--eval_steps", "log",
                                    "--eval_temperatures", s["temperatures"], "--eval_repeats", s["repeats"],
                                    "--eval_max_new_tokens", 16], task / "interference")
    return summarize_stages({"retention_recall": interf / "eval" / "recall",
                             "retention_recognition": interf / "eval" / "recognition",
                             "retention_sentence_recall": interf / "eval" / "prefix_recall", "study": study,
                             "interference": interf})


def expt3(c: dict, s: dict, task: Path) -> dict:
    """Examples per fact: the same facts with `variants` paraphrased QA examples each, trained for the
    same number of epochs; error rate of the final model by probe tier x temperature (x repeats)."""
    seed, v = c["seed"], c["variants"]
    facts = facts_sets(c, s, task, "active", v, probes_per_tier=s["probes_per_tier"])
    check_leakage_once(s, task, [facts["train"]], [facts["probes"]])
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file",
                                   facts["train"], "--num_exposures", s["exposures"],
                                   "--save_exposures", s["exposures"],
                                   "--learning_rate", s["lr"], "--batch_size", s["batch_size"], "--seed", seed],
                      task / "train")
    qa = run_stage("generate.py", ["--mode", "qa", "--input_file", facts["probes"],
                                   "--model_name_or_path", c["model"], "--checkpoints", checkpoint_glob(train),
                                   "--temperatures", s["temperatures"], "--repeats", s["repeats"],
                                   "--max_new_tokens", 16, "--seed", seed], task / "variants_recall")
    return summarize_stages({"variants_recall": qa, "train": train})


def expt5(c: dict, s: dict, task: Path) -> dict:
    """Context length: documents of `doc_tokens` tokens that open with an ID ([DOC_n]); after training,
    greedy completion from the first p tokens, scored on the continuation (token accuracy, exact match,
    whether the ID comes back), for each prefix length p and saved exposure."""
    seed = c["seed"]
    docs = Path(s["documents_file"]) if s.get("documents_file") else run_stage(
        "make_data.py", ["documents", "--n_docs", s["n_docs"], "--doc_tokens", c["doc_tokens"], "--tokenizer",
                         c["model"], "--seed", seed], task / "data" / "documents") / "documents.jsonl"
    exposures = s["exposures"]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", docs,
                                   "--num_exposures", max(exposures), "--save_exposures", ",".join(map(str, exposures)),
                                   "--block_size", 2 * c["doc_tokens"], "--learning_rate", s["lr"],
                                   "--batch_size", s["batch_size"], "--seed", seed], task / "train")
    prefix = run_stage("generate.py", ["--mode", "prefix", "--input_file", docs,
                                       "--model_name_or_path", c["model"], "--checkpoints", checkpoint_glob(train),
                                       "--prefix_tokens", s["prefix_tokens"], "--seed", seed], task / "prefix_recall")
    return summarize_stages({"prefix_recall": prefix, "train": train})


HELDOUT_KNOWN_FILE = "heldout_known.json"  # expt7: the known facts left out of training (TASK/data/)


def expt7(c: dict, s: dict, task: Path) -> dict:
    """Prior knowledge: known (true), novel and contradicting (changed answer) facts trained together;
    QA recall of the trained answer before training (exposure 0) and at every saved exposure, split by
    kind in analyze.py (items.csv fact_id -> facts.jsonl kind). `n_heldout_known` more known facts are
    generated, probed and never trained (TASK/data/heldout_known.json; kind `known (held out)` in
    analyze.py): Gekhman et al.'s test of whether fitting unknown facts costs the model what it knew."""
    seed, k = c["seed"], s["n_per_kind"]
    h = int(s.get("n_heldout_known") or 0) if not s.get("facts_file") else 0
    s = {**s, "n_facts": k}  # as many novel facts as known and contradicting ones
    facts = facts_sets(c, s, task, c["mode"], s["variants"], n_known=k + h, n_contradicting=k)
    if h:  # make_facts numbers the known facts known-0000.. in order: the last h are held out
        heldout = [f"known-{i:04d}" for i in range(k, k + h)]
        kinds = {r["fact_id"]: r["kind"] for r in _jsonl_rows(facts["dir"] / "facts.jsonl")}
        if any(kinds.get(f) != "known" for f in heldout):
            raise RuntimeError(f"expected known facts {heldout[0]}..{heldout[-1]} in {facts['dir']}/facts.jsonl")
        if not (task / "data" / HELDOUT_KNOWN_FILE).exists():
            write_json_atomic(task / "data" / HELDOUT_KNOWN_FILE, {"fact_ids": heldout})
        facts["train"] = _filtered_jsonl(facts["train"], task / "data" / f"{facts['train'].stem}_without_heldout.jsonl",
                                         lambda r, held=frozenset(heldout): r.get("fact_id") not in held)
    check_leakage_once(s, task, [facts["train"]], [facts["probes"]])
    exposures = s["exposures"]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--num_exposures", max(exposures),
                                   "--train_file", facts["train"],
                                   "--save_exposures", ",".join(map(str, exposures)), "--learning_rate", s["lr"],
                                   "--batch_size", s["batch_size"], "--seed", seed], task / "train")
    qa = ["--mode", "qa", "--input_file", facts["probes"], "--model_name_or_path", c["model"],
          "--temperatures", s["temperatures"], "--repeats", s["repeats"], "--max_new_tokens", 16, "--seed", seed]
    known = knownness_stage(c, s, facts["reworded"], task)
    base = run_stage("generate.py", qa, task / "prior_recall_base")
    recall = run_stage("generate.py", qa + ["--checkpoints", checkpoint_glob(train)], task / "prior_recall")
    return summarize_stages({"prior_recall_base": base, "prior_recall": recall, "knownness": known, "train": train})


def _canaries_file(mia_dir: Path, out: Path) -> Path:
    """Members repeated more than once in train.jsonl (the canaries), for prefix extraction."""
    return _filtered_jsonl(mia_dir / "members.jsonl", out, lambda r: int(r.get("canary_copies", 1)) > 1)


def _mia_inputs(mia: dict) -> list:
    """membership_inference.py's inputs: the generated directory, or your members/non-members files."""
    return ["--mia_dir", mia["dir"]] if mia["dir"] else ["--members", mia["members"], "--nonmembers", mia["nonmembers"]]


def reference_models(c: dict, s: dict, task: Path, mia: dict, train_flags: list, exposures) -> list[Path]:
    """RMIA's K reference models (Zarifzadeh et al. 2024; `reference_models: K`, 0 = none): each trained
    exactly like the target (`train_flags`) on a random half of the population (the members and non-members,
    each text once), half k drawn with seed (seed, k) and written as train.jsonl in the cell's data directory
    (reference_k). Each
    text is IN about half of the reference models and OUT of the rest, the "online" setting of the paper.
    They train inside the cell, one after another (a cell's references depend on its data and settings, and
    each is a resumable stage like the target); returns their final checkpoints."""
    k_total = int(s.get("reference_models") or 0)
    if k_total <= 0:
        return []
    import random

    from memlab.io import read_records

    population = [{"id": f"{split}:{r['id']}", "text": r["text"]}
                  for split in ("members", "nonmembers") for r in read_records(mia[split])]
    refs = []
    for k in range(k_total):
        half_file = task / "data" / f"reference_{k}" / "train.jsonl"
        if not half_file.exists():
            rng = random.Random(f"{c['seed']}:reference:{k}")
            write_jsonl_atomic(half_file, rng.sample(population, len(population) // 2))
        ref = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", half_file, *train_flags,
                                     "--seed", c["seed"]], task / f"reference_{k}")
        refs.append(ref / "checkpoints" / f"exposure_{exposures}")
    return refs


def _rmia_flags(refs: list[Path]) -> list:
    return ["--reference_models", ",".join(str(r) for r in refs)] if refs else []


def _attack_flags(s: dict) -> list:
    """`attacks` (membership_inference.py --attacks, a comma list): empty = every attack the inputs allow."""
    a = s.get("attacks") or ""
    a = ",".join(str(x) for x in a) if isinstance(a, (list, tuple)) else str(a)
    return ["--attacks", a] if a else []


def expt4(c: dict, s: dict, task: Path) -> dict:
    """LoRA rank x target modules: fine-tune on members with canaries (1..32 copies), then membership
    inference (every attack; reference = the adapter's base; RMIA with `reference_models: K` reference
    models trained like the target on random halves of the population) and prefix extraction of the canaries."""
    seed = c["seed"]
    mia = mia_sets(c, s, task, s["canary_copies"], s["canaries_per_copy"])
    check_leakage_once(s, task, [mia["train"]], [mia["nonmembers"]])
    flags = ["--num_exposures", s["exposures"], "--save_exposures", s["exposures"], "--learning_rate", s["lr"],
             "--batch_size", s["batch_size"], "--lora_r", c["rank"],
             "--lora_alpha", s.get("lora_alpha") or 2 * c["rank"], "--lora_dropout", s.get("lora_dropout", 0.0),
             "--warmup_steps", s.get("warmup_steps", 0),
             "--gradient_accumulation_steps", s.get("gradient_accumulation_steps", 1),
             "--lora_target_modules", c["modules"]]
    train = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file", mia["train"], *flags,
                                   "--seed", seed], task / "train")
    refs = reference_models(c, s, task, mia, flags, s["exposures"])
    ckpts = checkpoint_glob(train)
    attack = run_stage("membership_inference.py", [*_mia_inputs(mia), "--model_name_or_path", c["model"],
                                                   "--checkpoints", ckpts, "--seed", seed,
                                                   "--bootstrap", s["bootstrap"], *_rmia_flags(refs),
                                                   *_attack_flags(s)], task / "mia")
    # extraction: the canaries (members repeated in training); with your own members, every member
    canaries = _canaries_file(mia["dir"], task / "data" / "canaries.jsonl") if mia["dir"] else mia["members"]
    extract = run_stage("generate.py", ["--mode", "prefix", "--input_file", canaries, "--model_name_or_path",
                                        c["model"], "--checkpoints", ckpts, "--prefix_fraction", 0.5,
                                        "--seed", seed, "--bootstrap", s["bootstrap"]], task / "extraction")
    return summarize_stages({"mia": attack, "extraction": extract, "train": train})


def expt6(c: dict, s: dict, task: Path) -> dict:
    """SFT, then DPO on the facts' preference pairs (chosen = true answer, rejected = a distractor). QA
    recall and membership inference (members: sentences trained in SFT) before and after DPO; RMIA with
    `reference_models: K` reference models trained like the SFT stage on random halves of the population
    (its members and non-members only, without the facts)."""
    seed = c["seed"]
    facts = facts_sets(c, s, task, "active", s["variants"])
    mia = mia_sets(c, s, task, "1", 1)
    check_leakage_once(s, task, [facts["train"], facts["pairs"], mia["train"]], [facts["probes"], mia["nonmembers"]])
    lora = ["--lora_r", s["lora_r"], "--lora_alpha", 2 * s["lora_r"]] if c["method"] == "lora" else []
    flags = ["--num_exposures", s["exposures"], "--save_exposures", s["exposures"],
             "--learning_rate", s["lr_lora" if lora else "lr_full"], "--batch_size", s["batch_size"], *lora]
    sft = run_stage("train.py", ["--model_name_or_path", c["model"], "--train_file",
                                 f"{facts['train']},{mia['train']}", *flags, "--seed", seed], task / "sft")
    sft_ckpt = sft / "checkpoints" / f"exposure_{s['exposures']}"
    dpo = run_stage("finetune_dpo.py", ["--sft_checkpoint", sft_ckpt, "--pairs_file", facts["pairs"],
                                        "--beta", s["beta"], "--learning_rate", s["dpo_lr_lora" if lora else "dpo_lr"],
                                        "--num_epochs", s["dpo_epochs"], "--batch_size", s["batch_size"],
                                        "--seed", seed], task / "dpo")
    dpo_ckpt = dpo / "checkpoints" / f"epoch_{s['dpo_epochs']}"
    both = f"{sft_ckpt},{dpo_ckpt}"
    qa = run_stage("generate.py", ["--mode", "qa", "--input_file", facts["probes"],
                                   "--model_name_or_path", c["model"], "--checkpoints", both, "--max_new_tokens", 10, "--seed", seed],
                   task / "dpo_recall")
    attack = run_stage("membership_inference.py", [*_mia_inputs(mia), "--model_name_or_path", c["model"],
                                                   "--checkpoints", both, "--reference_model", c["model"],
                                                   "--seed", seed, "--bootstrap", s["bootstrap"],
                                                   *_rmia_flags(reference_models(c, s, task, mia, flags,
                                                                                 s["exposures"])),
                                                   *_attack_flags(s)], task / "mia")
    return summarize_stages({"dpo_recall": qa, "mia": attack, "dpo": dpo, "sft": sft})


PIPELINES = {"expt1": expt1, "expt2": expt2, "expt3": expt3, "expt4": expt4, "expt5": expt5, "expt6": expt6,
             "expt7": expt7}


def run_task(expt: str, index: int, runs_root: str | os.PathLike, size: str, overrides=(), force: bool = False) -> Path:
    """Run (or resume, or skip) one array task; returns its directory. The resolved config is recorded at the
    sweep root (config.yaml; a changed one is refused unless `force`, see `guard_root`) and the cell's own
    in its cell.json and settings.json."""
    overrides, forced = split_force(overrides)
    force = force or forced
    size, axes, settings = resolve(expt, size, overrides)
    c = cell(expt, size, index, overrides)
    check_data_files(expt, settings, axes.get("variants"))
    guard_root(expt, runs_root, size, axes, settings, overrides, force)
    task = Path(runs_root) / expt / cell_name(c)
    if (task / "results.json").exists() and not force and _settings_match(task, settings):
        print(f"{task}: results.json exists, nothing to do", flush=True)  # a finished cell is never written again
        return task
    from memlab.rundir import lock_dir

    lock_dir(task)  # one writer per cell: a second run_task.py on the same cell is refused, naming the first
    _check_cell_settings(task, settings, force)
    if (task / "results.json").exists():
        print(f"{task}: results.json exists, nothing to do", flush=True)
        return task
    task.mkdir(parents=True, exist_ok=True)
    write_json_atomic(task / "cell.json", {"expt": expt, "size": size, "index": index, **c})
    write_json_atomic(task / "settings.json", {"overrides": list(overrides or ()), **settings})
    results = PIPELINES[expt](c, settings, task)
    write_json_atomic(task / "results.json", {"expt": expt, "size": size, "index": index, "cell": c, **results})
    return task


class SubmititTask:
    """Picklable callable for submitit: runs one cell; on preemption submitit calls `checkpoint`, which
    requeues the same call (training state is already on disk, so the rerun resumes)."""

    def __init__(self, expt: str, runs_root: str, size: str, overrides=()):
        self.expt, self.runs_root, self.size, self.overrides = expt, runs_root, size, list(overrides or ())

    def __call__(self, index: int) -> str:
        os.chdir(ROOT)
        while True:
            try:
                return str(run_task(self.expt, index, self.runs_root, self.size, self.overrides))
            except Preempted:
                if "SLURM_JOB_ID" in os.environ:
                    raise  # submitit's checkpoint() requeues the job
                continue  # local: resume straight away

    def checkpoint(self, index: int):
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)
