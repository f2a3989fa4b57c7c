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
# The editable install is setuptools' `strict` mode: a link tree under build/ put on sys.path by a
# .pth file, so a folder named `xlembed` in the current directory cannot hide the package (the
# default mode's finder comes after the path scan). The link tree holds the files present at install
# time: the stamp depends on the source folders, whose times change when a file is added or removed.
SOURCES := pyproject.toml pipeline cli configs
EDITABLE := --config-settings editable_mode=strict

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet $(EDITABLE) -e '.[dev]'
	touch $(STAMP)

# the Ray executor's extra: the tests start a local Ray; the demo does not need it
$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(EDITABLE) -e '.[dev,ray]'
	touch $(RAY_STAMP)

demo: $(STAMP)
	$(BIN)/xlembed run --config default --tsv data/tatoeba/cmn-eng.tsv --out runs/demo --work runs/demo.work

test: $(RAY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# the figures in bench/RESULTS.md (about 15 minutes on 2 cores); JSON in bench/results/
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet $(EDITABLE) -e '.[dev,bench]'
	$(BIN)/python bench/speed.py --json bench/results/speed.json
	$(BIN)/python bench/scale.py --json bench/results/scale.json
	$(BIN)/python bench/quality.py --json bench/results/quality.json
	$(BIN)/xlembed run --tsv data/tatoeba/cmn-eng.tsv --out runs/demo --work runs/demo.work --quiet
	$(BIN)/python bench/reproducibility.py runs/demo.work --runs 3 > bench/results/reproducibility.json

clean:
	rm -rf runs
