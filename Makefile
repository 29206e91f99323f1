# Two commands for a fresh machine with Python 3.11:  make reports  /  make test
# Each creates and fills .venv when it is missing or pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# The pinned CPU build first, so nothing later pulls a multi-GB CUDA torch.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,notebooks,dev,cluster
STAMP := $(VENV)/.installed
THREADS ?= 2

.PHONY: test reports bench venv clean chromium browser-check ui-check strip student slurm-check

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

# Unit tests, then the sweep on a one-node Slurm (slurm-check, ~30 s; skipped with a message where
# Slurm cannot be installed), then every notebook in the quick profile under papermill (into reports/, and the
# course site built from them into reports/site/), then nbval re-executes them and compares the
# tagged claim cells: the reports must reproduce; the student versions run and stop only at their
# exercises. Then the pages and the site are opened in headless Chromium as a reader would
# (browser-check), and notebook 3 is run and its slider moved in JupyterLab as a user would (ui-check).
test: $(STAMP) chromium
	$(PY) -m pytest -q
	$(PY) -m kfrtrl_lab.slurm_check --optional
	$(PY) -m kfrtrl_lab.notebook.reports --profile quick --out reports
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax reports/*.ipynb
	$(PY) -m kfrtrl_lab.notebook.student --out student --execute
	$(PY) -m kfrtrl_lab.notebook.browser reports
	$(PY) -m kfrtrl_lab.notebook.ui_check

# The main job: execute every notebook (PROFILE=quick|full), render offline HTML into reports/ and
# build the course site from the executed notebooks into reports/site/ (open reports/site/index.html).
reports: $(STAMP)
	$(PY) -m kfrtrl_lab.notebook.reports --profile $(PROFILE) --out reports

# Debian's Chromium for the browser checks, installed when missing (as root; KFRTRL_CHROMIUM
# names another binary instead).
chromium:
	@test -n "$$KFRTRL_CHROMIUM" || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "The browser checks need Chromium (as root: apt-get install -y chromium); without it they are skipped" >&2; fi

# Every reports/*.html and every page of reports/site/ in headless Chromium with the network off
# (the site's sliders dragged, its links followed, its search tried); screenshots to reports/*.png
# and reports/site-screenshots/.
browser-check: $(STAMP) chromium
	$(PY) -m kfrtrl_lab.notebook.browser reports

# JupyterLab on 127.0.0.1 (a temporary copy of notebooks/): run notebook 3, move its n slider.
ui-check: $(STAMP) chromium
	$(PY) -m kfrtrl_lab.notebook.ui_check

# The student versions (solutions removed) in student/, for handing out.
student: $(STAMP)
	$(PY) -m kfrtrl_lab.notebook.student --out student

# Put notebooks/*.ipynb back in their committed form after JupyterLab has opened them.
strip: $(STAMP)
	$(PY) -m kfrtrl_lab.notebook.reports --strip

# sweeps/smoke.toml on a one-node Slurm started here (slurm-wlm and munge from apt when missing, as
# root) with one job requeued mid-run; the daemons it started are stopped after. Output as in
# results/slurm_check.txt (RECORD=results/slurm_check.txt writes it).
slurm-check: $(STAMP)
	$(PY) -m kfrtrl_lab.slurm_check $(if $(RECORD),--record $(RECORD),)

bench: $(STAMP)
	$(PY) benchmarks/step_cost.py --threads $(THREADS)

clean:
	rm -rf $(VENV) reports student .pytest_cache
