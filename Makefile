# llmatic — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# Re-install only when the project metadata changes (idempotent).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet -e ".[dev]"
	@touch $(STAMP)

run: install
	$(BIN)/llmatic

test: install
	$(BIN)/python -m pytest -q

# Benchmarks (never part of `make test`): ratios measured side by side in one run.
bench: install
	$(BIN)/python benchmarks/bench_llm.py --out benchmarks/results/llm.json
	$(BIN)/python benchmarks/bench.py --out benchmarks/results/bench.json

lint: install
	$(BIN)/ruff check llmatic tests

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
