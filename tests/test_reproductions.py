"""scripts/reproduce.sh (docs/REPRODUCTIONS.md): the names, the error for an unknown one, and that every
reproduction's command resolves to a valid grid. Nothing is trained here: the tiny pipelines of every
experiment run in tests/test_experiments*.py."""
import os
import subprocess

from tests.test_experiments import ROOT
from helpers import error_line

NAMES = ["recognition_before_recall", "retention", "examples_per_fact", "paraphrase_augmentation", "unknown_facts",
         "lora_rank_modules", "duplication", "context_length", "dpo_after_sft"]
SCRIPT = str(ROOT / "scripts" / "reproduce.sh")
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MEMLAB_"))}


def sh(*args):
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)


def test_list_names_every_reproduction_with_its_command():
    p = sh("--list")
    assert p.returncode == 0, p.stderr
    rows = [line.split(None, 1) for line in p.stdout.splitlines()]
    assert [r[0] for r in rows] == NAMES
    for name, command in rows:
        assert f"MEMLAB_RUNS_ROOT=runs/reproduce/{name} bash scripts/expt" in command
        assert (ROOT / command.split("bash ", 1)[1].split()[0]).is_file()


def test_unknown_name_is_one_error_line_exit_2():
    for args in (["no_such_finding"], ["--show", "no_such_finding"], ["--bogus"]):
        p = sh(*args)
        assert p.returncode == 2, args
        assert p.stdout == "" and error_line(p.stderr), p.stderr
    assert not (ROOT / "runs" / "reproduce" / "no_such_finding").exists()


def listed():
    """name -> (expt, size, overrides) as --list prints the command (the template names its EXPT)."""
    out = {}
    for line in sh("--list").stdout.splitlines():
        name, command = line.split(None, 1)
        words = command.split()
        size = next(w.split("=", 1)[1] for w in words if w.startswith("MEMLAB_GRID="))
        i = words.index("bash")
        template = (ROOT / words[i + 1]).read_text()
        expt = next(x.split("=", 1)[1] for x in template.splitlines() if x.startswith("EXPT="))
        out[name] = (expt, size, words[i + 2:])
    return out


def test_every_reproduction_resolves_to_a_valid_grid():
    """Each listed command's experiment, size and overrides resolve (every key in the config, every value
    well typed) to the cells it is meant to sweep; `--show NAME` prints the same cells through
    `run_task.py EXPT --show` without running anything."""
    from memlab import experiments as E

    expected_cells = {"recognition_before_recall": 2, "retention": 1, "examples_per_fact": 3,
                      "paraphrase_augmentation": 2, "unknown_facts": 1, "lora_rank_modules": 4, "duplication": 1,
                      "context_length": 2, "dpo_after_sft": 2}
    grids = listed()
    assert sorted(grids) == sorted(NAMES)
    for name, (expt, size, overrides) in grids.items():
        cells = E.grid_cells(expt, size, overrides)
        assert len(cells) == expected_cells[name], (name, cells)
        E.check_data_files(expt, E.resolve(expt, size, overrides)[2])
    # the paraphrase and LoRA reproductions sweep what their findings are about
    assert [c["variants"] for c in E.grid_cells("expt3", "small", grids["paraphrase_augmentation"][2])] == [1, 5]
    assert {c["modules"] for c in E.grid_cells("expt4", "small", grids["lora_rank_modules"][2])} == {
        "q_proj,k_proj", "v_proj,o_proj"}
    p = sh("--show", "lora_rank_modules", "seed=0,1")  # extra overrides pass through to run_task.py --show
    expt, size, overrides = grids["lora_rank_modules"]
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"{i} {E.cell_name(c)}"
                                     for i, c in enumerate(E.grid_cells(expt, size, overrides + ["seed=0,1"]))]
    p = sh("--show", "unknown_facts", "lr_ful=1")  # and are checked like the reproduction's own
    assert p.returncode == 2 and error_line(p.stderr).startswith("error: expt7: unknown key(s) ['lr_ful']")
