# Scribelink: `make demo` runs the whole system, `make test` runs the tests.
# Both run `make setup` first; setup is idempotent.
PY := .venv/bin/python

.PHONY: setup demo test bench lint clean

setup:
	@bash scripts/setup

demo: setup
	@$(PY) scripts/demo $(ARGS)

# Three test processes (pytest-xdist) on the machine's cores: most tests wait on real
# brokers, relays and browsers. A file's tests stay in one process (module fixtures,
# tests that build on the one before). PYTEST_ARGS="-n 0" runs them one at a time.
PYTEST_ARGS ?= -n 3 --dist loadfile

test: lint
	@SCRIBELINK_CHECK_WORKTREE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench:
	@bash scripts/setup --bench
	@$(PY) scripts/bench $(ARGS)

# the scripts without a .py suffix (ruff finds only *.py files in a folder by itself)
SCRIPTS := $(shell grep -l '^\#!/usr/bin/env python' scripts/* | grep -v '\.py$$')

# ruff (rules in pyproject.toml) over all Python; mypy over the packages (pyproject.toml)
# and over firmware/ against the MicroPython rp2 stubs (scripts/mypy-firmware)
lint: setup
	@.venv/bin/ruff check scribelink edge_agent cloud_relay firmware scripts tests $(SCRIPTS)
	@$(PY) -m mypy
	@$(PY) scripts/mypy-firmware

clean:
	rm -rf .venv .pytest_cache
