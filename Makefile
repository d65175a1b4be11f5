# Scribelink: `make demo` runs the whole system, `make test` runs the tests.
# Both run `make setup` first; setup is idempotent.
PY := .venv/bin/python

.PHONY: setup demo test bench lint clean

setup:
	@bash scripts/setup

demo: setup
	@$(PY) scripts/demo $(ARGS)

test: setup
	@SCRIBELINK_CHECK_WORKTREE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench:
	@bash scripts/setup --bench
	@$(PY) scripts/bench $(ARGS)

lint: setup
	@.venv/bin/ruff check scribelink edge_agent cloud_relay scripts tests

clean:
	rm -rf .venv .pytest_cache
