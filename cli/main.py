"""The `xlembed` command. Commands live in one module per group (as in
spaCy's spacy/cli/): stages.py (tokenize … write, run), matrix.py (info,
neighbors, export, extend, verify, plot), evaluate.py, work.py (work list/clean); shared plumbing in
_util.py."""
import sys

from . import evaluate, matrix, stages, work  # noqa: F401, I001  (they register their commands, in this order)
from ._util import app


def entry() -> None:
    app()


if __name__ == "__main__":
    sys.exit(app())
