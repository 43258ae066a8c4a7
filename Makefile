# Two commands on a fresh machine:  `make run` (main experiment)  and  `make test` (the test suite).
# Both create the virtual environment $(VENV) and install jaxlearn from this folder first, with the exact
# versions the suite last passed on (constraints.txt; pyproject.toml keeps compatible ranges for users).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]' -c constraints.txt
	touch $@

.PHONY: install run test bench docs constraints
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) experiments/fashion_mnist.py --out runs/fashion_mnist

# three pytest workers (2 cores are busy with three: the tests also wait on subprocesses and files), a test file
# per worker at a time (its module fixtures are built once); --durations: the slowest, to keep the suite short
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=15

bench: $(VENV)/.installed
	$(PY) benchmarks/fashion_mnist_speed.py

# the API reference (pdoc) in docs/api/ (not committed); tests/test_docs.py builds it too, failing on a warning
docs: $(VENV)/.installed
	$(PY) docs/build_api.py docs/api
	@echo "API reference: docs/api/index.html"

# after an upgrade that passes `make test`: record the versions it passed on
constraints: $(VENV)/.installed
	{ echo "# The exact versions the test suite last passed on (make constraints writes this file; make test and .ci/run"; \
	  echo "# install with it). pyproject.toml keeps the compatible ranges users install."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^jaxlearn'; } > constraints.txt
