# Two entry points, both self-contained on a fresh machine (Python 3.10+ with venv):
#   make quickstart   set up .venv and train the offline quickstart (runs/quickstart)
#   make test         set up .venv (with the PyTorch reference) and run the test suite
PY ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PYTHON := $(VENV)/bin/python

.PHONY: venv venv-test test quickstart clean

$(VENV)/.core:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.core pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.core
venv-test: $(VENV)/.test

test: $(VENV)/.test
	$(PYTHON) -m pytest -q -n 2 --dist loadfile tests

quickstart: $(VENV)/.core
	$(PYTHON) train.py --config configs/quickstart.py --workdir runs/quickstart

clean:
	rm -rf $(VENV)
