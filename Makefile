# Two commands on a fresh machine:  `make run` (main experiment)  and  `make test` (the test suite).
# Both create the virtual environment $(VENV) and install jaxlearn from this folder first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

.PHONY: install run test bench
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) experiments/fashion_mnist.py --out runs/fashion_mnist

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/fashion_mnist_speed.py
