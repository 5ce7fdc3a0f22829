# research_ext: `make demo` runs the main job, `make test` the whole check; both set up .venv first.
# Pin the torch build with pip's own PIP_CONSTRAINT (defaults to constraints.txt, the CPU build CI
# tests against); e.g. `PIP_CONSTRAINT=my-cuda-pins.txt make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_CONSTRAINT ?= $(CURDIR)/constraints.txt
export PIP_CONSTRAINT
# Two install stamps: the demo needs only the runtime extras; the developer tools (linters, type
# checker, pytest, the docs toolchain) come with the targets that use them.
RUNTIME_EXTRAS ?= hpo,privacy,examples
STAMP_RUN := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck imports pytest docs bench conformance gpu-check venv clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -e ".[$(RUNTIME_EXTRAS)]"
	touch $(STAMP_RUN)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP) $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

# The slow tests (subprocess runs, notebooks, docs blocks, accounting grids) run on both cores too:
# every timing-sensitive one waits on conditions with generous deadlines, never on a sleep.
pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not gpu" -q
	$(BIN)/python -m pytest -n 2 -m "slow and not gpu" -q

# The documentation site, built with warnings as errors (mkdocs.yml; site/ is the output). The
# notebooks are executed at a small size for it, cached in build/docs-notebooks by content.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet

test: lint typecheck imports pytest docs

# Benchmark-only anchors (torch-dct, curvlinops, ...) install with --no-deps so none can pull a
# newer torch or torchvision; each module lists its own in benchmarks/requirements-*.txt.
bench: $(STAMP)
	@set -e; for req in benchmarks/requirements-*.txt; do \
		[ -f "$$req" ] && $(BIN)/python -m pip install -q --no-deps -r "$$req"; done; \
		for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; done

# Conformance against external test suites, outside `make test` (long): one command a line,
# each module adding its own; every line prints its counts and fails on any failure.
conformance: $(STAMP)
	$(BIN)/python -m tests.functional.opinfo_conformance --jobs 2
	$(BIN)/python -m tests.complex.scipy_conformance_run

# Everything that needs a GPU, in one command (under 8 min): the `gpu`-marked tests (the CUDA
# cases of tests/devices and any other), then CUDA vs CPU vs anchor timings. Stops at once,
# before any install, where torch sees no CUDA device (a CPU build of torch: pin a CUDA one).
gpu-check:
	@test -x $(BIN)/python || { echo "gpu-check: no $(VENV) yet (make venv, with a CUDA torch pinned)"; exit 1; }
	@$(BIN)/python -c "import sys, torch; torch.cuda.is_available() or sys.exit('gpu-check: no CUDA device (torch.cuda.is_available() is False)')"
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m pytest -m gpu -q
	$(BIN)/python benchmarks/gpu_check.py --device cuda

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
