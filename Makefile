# llmatic — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes for `make test` and `make test-fast` (pytest-xdist, one file per process at
# a time; JOBS=1 runs one process in file order).
JOBS   ?= 2

.PHONY: install run test test-fast lint bench bench-search clean

install: $(STAMP)

# Libraries whose bytecode the install writes: what `llmatic`, its sandbox and its tests import.
WARM := torch torchvision lightning lightning.pytorch torchmetrics transformers \
	transformers.models.gpt2.modeling_gpt2 tokenizers openai hydra omegaconf ribs.archives \
	ribs.schedulers sklearn.datasets mlxtend.data scipy.stats matplotlib.pyplot rich.progress \
	wandb torch.utils.tensorboard nats_bench thop safetensors.torch ray onnx onnxruntime \
	pytest xdist nbclient nbformat llmatic.config llmatic.search llmatic.sandbox.server

# Re-install only when the project metadata changes (idempotent). pip writes no bytecode
# (--no-compile: compiling all of the CUDA build of torch, transformers and ray would take
# more than a minute); importing the libraries above writes the bytecode of what runs.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet --no-compile -e ".[dev]"
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -W ignore -c "exec('import importlib, sys\nfor m \
		in sys.argv[1:]:\n try: importlib.import_module(m)\n except Exception as e: \
		print(\'not byte-compiled ahead:\', m, type(e).__name__, e)')" $(WARM)
	@touch $(STAMP)

run: install
	$(BIN)/llmatic

# Tests write the bytecode of what they import (as Python does by default), so each of
# their processes compiles a module once, not at every start.
test test-fast: export PYTHONDONTWRITEBYTECODE =

# Everything, the tests marked `slow` included.
test: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder --durations=10

# The inner loop (<= 3 minutes on 2 cores): unit tests and one shared small search; the
# tests marked `slow` (CLI processes, many searches, sandbox timeouts) run in `make test`.
test-fast: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder -m "not slow" --durations=5

# Benchmarks (never part of `make test`): ratios measured side by side in one run.
bench: install
	$(BIN)/python benchmarks/bench_llm.py --out benchmarks/results/llm.json
	$(BIN)/python benchmarks/bench.py --out benchmarks/results/bench.json

# Search quality: the full method against its five ablations over 5 seeds (mnist5k, llm=rules,
# default budget), plus NAS-Bench-201 against random search, REA and local search (README
# "Does the search work?"). Over an hour on 2 idle cores: 30 network searches of ~2 min
# each, plus the NAS-Bench-201 part.
bench-search: install
	$(BIN)/python benchmarks/bench_search.py --seeds 5 --out benchmarks/results/search.json

lint: install
	$(BIN)/ruff check llmatic tests

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
