# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: demo test bench env clean

env: $(STAMP)

# torch first, pinned: the CPU build from this machine's disk. A bare `torch`
# requirement with nothing installed would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the Ray executor's extra: the tests start a local Ray; the demo does not need it
$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

demo: $(STAMP)
	$(BIN)/xlembed run --config default --tsv data/tatoeba/cmn-eng.tsv --out runs/demo --work runs/demo.work

test: $(RAY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# the figures in bench/RESULTS.md (about 15 minutes on 2 cores); JSON in bench/results/
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/speed.py --json bench/results/speed.json
	$(BIN)/python bench/scale.py --json bench/results/scale.json
	$(BIN)/python bench/quality.py --json bench/results/quality.json
	$(BIN)/xlembed run --tsv data/tatoeba/cmn-eng.tsv --out runs/demo --work runs/demo.work --quiet
	$(BIN)/python bench/reproducibility.py runs/demo.work --runs 3 > bench/results/reproducibility.json

clean:
	rm -rf runs
