# Two entry points: `make report` (the main job) and `make test`. Both create .venv if missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: install report test lint clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e '.[dev]'
	mkdir -p $(VENV)/share/jupyter/lab/settings  # the project's lab settings: no news pop-up
	cp trm_lib/reports/lab_settings/overrides.json $(VENV)/share/jupyter/lab/settings/
	touch $@

install: $(VENV)/.installed

report: install
	$(PY) -m trm_lib report $(ARGS)

test: install
	$(PY) -m ruff check trm_lib tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check trm_lib tests

clean:
	rm -rf reports/*.ipynb reports/figures reports/tables reports/README.md reports/html
