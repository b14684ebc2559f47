# The two commands of the README:  make demo  |  make test
# Each creates the virtual environment on first use and installs posync with its dev extras.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast soak bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/posync demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# the convergence property at soak size: 2,000 examples per conflict strategy (hours, not part of CI)
soak: $(STAMP)
	POSYNC_CONVERGENCE_EXAMPLES=2000 $(BIN)/python -m pytest -q --timeout=0 tests/test_convergence.py

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# ruff, mypy --strict and the layer contracts (.importlinter); CI runs it before the tests
lint: $(STAMP)
	$(BIN)/ruff check posync tests bench
	$(BIN)/mypy posync
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-data
