# The two commands the README starts with: `make demo` and `make test`.
# Each one installs what it needs into .venv (and Debian packages for the tests) first.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test lint bench soak slowloris fuzz clean

demo: $(VENV)/.installed
	$(BIN)/blauweknop up

test: $(VENV)/.installed
	deploy/dev/system-packages.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.federation
	$(BIN)/python -m bench.documents
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.audit_verify

# Soak at half capacity (docs/performance.md): make soak MINUTES=10
MINUTES ?= 10
soak: $(VENV)/.installed
	$(BIN)/python -m bench.soak --minutes $(MINUTES)

# 500 slow-loris connections from a second process while ordinary requests go on
# (docs/performance.md); `.venv/bin/python -m bench.slowloris --quick` for a short run.
slowloris: $(VENV)/.installed
	$(BIN)/python -m bench.slowloris

# A long schemathesis run against the gateway's own OpenAPI description (docs/hostile-input.md).
fuzz: $(VENV)/.installed
	$(BIN)/python -m bench.fuzz_api --examples 1000

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	touch $@

clean:
	rm -rf $(VENV) .blauweknop .mypy_cache .ruff_cache .pytest_cache
