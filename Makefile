# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test env clean

env: $(STAMP)

# torch first, pinned: the CPU build from this machine's disk. A bare `torch`
# requirement with nothing installed would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xlembed run --config configs/default.toml --tsv data/tatoeba/cmn-eng.tsv --out runs/demo --work runs/demo.work

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs
