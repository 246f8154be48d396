"""The experiments: one module per experiment, and the machinery they share.

    memlab/experiments/
      exptN_<name>.py   one experiment each: NAME, STAGES, run(cell, settings, task), and what it adds to the
                        analysis (TABLES, PLOTS, SUMMARIES); found by file name (registry.py)
      config.py         configs/<expt>.yaml, key=value overrides, the grid and its cells, the grid-size rule
      guard.py          the sweep-root guard (one config per sweep root) and array coverage
      stages.py         the stage runner (run_stage, EXIT_REQUEUE, Preempted)
      datasets.py       data-set preparation (generated sets or your own files), the leakage check
      membership.py     membership-inference stages shared by expt4 and expt6
      task.py           one array task (run_task) and submitit's callable (SubmititTask)
      registry.py       the experiment modules

Adding an experiment: docs/adding_an_experiment.md. What follows is the API the scripts use.
"""
from memlab.experiments.config import (ADDED_SETTINGS, CONFIG_DIR, DATA_FILE_KEYS, ROOT, SIZES,
                                       absolute_data_overrides, cell, cell_name, check_data_files, choose_size,
                                       experiments, grid_axes, grid_cells, load_config, parse_args_with_overrides,
                                       parse_overrides, resolve, split_force, with_added_settings)
from memlab.experiments.guard import check_runs_root, coverage, guard_root
from memlab.experiments.registry import module, modules
from memlab.experiments.stages import EXIT_REQUEUE, Preempted, run_stage
from memlab.experiments.task import SubmititTask, run_task

__all__ = ["ADDED_SETTINGS", "CONFIG_DIR", "DATA_FILE_KEYS", "EXIT_REQUEUE", "Preempted", "ROOT", "SIZES",
           "SubmititTask", "absolute_data_overrides", "cell", "cell_name", "check_data_files", "check_runs_root",
           "choose_size", "coverage", "experiments", "grid_axes", "grid_cells", "guard_root", "load_config", "module",
           "modules", "parse_args_with_overrides", "parse_overrides", "resolve", "run_stage", "run_task",
           "split_force", "with_added_settings"]
