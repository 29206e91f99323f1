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

.PHONY: test reports bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# The main job. Until the notebooks exist it runs the step-cost benchmark (quick sizes)
# and executes whatever notebooks are present.
reports: $(STAMP)
	mkdir -p reports
	$(PY) benchmarks/step_cost.py --quick --threads $(THREADS) | tee reports/step_cost.txt
	for nb in $(wildcard notebooks/*.ipynb); do \
	  $(PY) -m papermill "$$nb" "reports/$$(basename $$nb)" || exit 1; done

bench: $(STAMP)
	$(PY) benchmarks/step_cost.py --threads $(THREADS)

clean:
	rm -rf $(VENV) reports .pytest_cache
