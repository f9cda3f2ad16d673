# Two commands on a fresh machine: `make run` (embedded service with demo data) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast services lint bench-quick clean

# Two pytest processes by default (this machine has two cores); PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n 2

$(BIN)/unlearnd: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Exactly this torch: its CPU wheel is on local disk; any other spec pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/unlearnd

run: install
	$(BIN)/unlearnd run

# PostgreSQL and Redis on 127.0.0.1 are started when they are not already running;
# Debian's Chromium (for the dashboard's browser tests) is installed when missing.
services:
	@scripts/ensure-services.sh
	@scripts/ensure-browser.sh

test: install services
	$(BIN)/pytest $(PYTEST_ARGS)

# The edit loop: everything but the tests marked slow (real worker processes, long trainings).
test-fast: install services
	$(BIN)/pytest $(PYTEST_ARGS) -m "not slow"

# ruff for style; lint-imports for the house plan (the import contracts in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench-quick: install services
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
