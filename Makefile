# research_ext: `make demo` runs the main job, `make test` the whole check; both set up .venv first.
# Pin the torch build with pip's own PIP_CONSTRAINT (defaults to constraints.txt, the CPU build CI
# tests against); e.g. `PIP_CONSTRAINT=my-cuda-pins.txt make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_CONSTRAINT ?= $(CURDIR)/constraints.txt
export PIP_CONSTRAINT
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports pytest bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not gpu" -q
	$(BIN)/python -m pytest -m "slow and not gpu" -q

test: lint typecheck imports pytest

# Benchmark-only anchors (torch-dct, curvlinops, ...) install with --no-deps so none can pull a
# newer torch or torchvision; each module lists its own in benchmarks/requirements-*.txt.
bench: $(STAMP)
	@set -e; for req in benchmarks/requirements-*.txt; do \
		[ -f "$$req" ] && $(BIN)/python -m pip install -q --no-deps -r "$$req"; done; \
		for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
