# Entry points, all self-contained on a fresh machine (Python 3.10+ with venv):
#   make quickstart   set up .venv and train the offline quickstart (runs/quickstart)
#   make test         set up .venv (with the PyTorch reference), run ruff, then the test suite
#   make lint         set up .venv and run ruff alone (the rules are in pyproject.toml)
# Installs use the exact verified versions of constraints.txt; pyproject.toml only declares
# compatible ranges.
PY ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PYTHON := $(VENV)/bin/python

.PHONY: venv venv-test lint test quickstart clean

$(VENV)/.core:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test: $(VENV)/.core pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.core
venv-test: $(VENV)/.test

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .

test: lint
	$(PYTHON) -m pytest -q -n 2 --dist loadfile tests

quickstart: $(VENV)/.core
	$(PYTHON) train.py --config configs/quickstart.py --workdir runs/quickstart

clean:
	rm -rf $(VENV)
