# Two commands for a fresh machine with Python 3.11:  make reports  /  make test
# Each creates and fills .venv when it is missing or pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# The pinned CPU build first, so nothing later pulls a multi-GB CUDA torch.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,notebooks,dev
STAMP := $(VENV)/.installed
THREADS ?= 2

.PHONY: test reports bench venv clean strip

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

PROFILE ?= quick
# Tests and CI may read the shared copy of the PTB files; users' runs find or download their own.
SHARED_PTB := $(wildcard ../shared/data/ptb/ptb.char.train.txt)
export KFRTRL_PTB_DIR ?= $(if $(SHARED_PTB),$(abspath ../shared/data/ptb),)

# Unit tests, then every notebook in the quick profile under papermill (into reports/), then
# nbval re-executes them and compares the tagged claim cells: the reports must reproduce.
test: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m kfrtrl_lab.notebook.reports --profile quick --out reports
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax reports/*.ipynb

# The main job: execute every notebook (PROFILE=quick|full) and render offline HTML into reports/.
reports: $(STAMP)
	$(PY) -m kfrtrl_lab.notebook.reports --profile $(PROFILE) --out reports

# Put notebooks/*.ipynb back in their committed form after JupyterLab has opened them.
strip: $(STAMP)
	$(PY) -m kfrtrl_lab.notebook.reports --strip

bench: $(STAMP)
	$(PY) benchmarks/step_cost.py --threads $(THREADS)

clean:
	rm -rf $(VENV) reports .pytest_cache
