"""How much meaning the OOV strategies put into filled rows.

    python bench/oov.py WORK_DIR [--wordsim FILE] [--json FILE]

The vocabulary is the corpus's plus every word of the word-similarity file,
so the pairs with a word the corpus never saw get filled rows. For each
strategy: Spearman rho over the pairs touching a filled row, and over the
pairs of projected rows (which no strategy may change). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from xlembed.config import PAD, UNK, Config, Oov, WorkDir
from xlembed.evaluate import evaluate, read_wordsim
from xlembed.io import read_lines
from xlembed.write import write

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--wordsim", type=Path, default=REPO.parent / "shared/data/wordsim/wordsim-297.txt")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = WorkDir(args.work)
    tmp = Path(tempfile.mkdtemp())
    corpus_words = [line.split("\t")[0] for line in list(read_lines(work.projection_zh_vocab))[1:]]
    extra = [w for a, b, _ in read_wordsim(args.wordsim) for w in (a, b)]
    vocab = list(dict.fromkeys([PAD, UNK] + corpus_words + extra))
    (tmp / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
    result = dict(work=str(work.root), wordsim=str(args.wordsim), vocab_size=len(vocab),
                  words_not_in_corpus=len(set(extra) - set(corpus_words)), strategies={})
    for strategy in (s.value for s in Oov):
        manifest = write(Config().set(oov=strategy, vocab=tmp / "vocab.txt").validate(("write",)), work, tmp / strategy)
        ws = evaluate(tmp / strategy, [args.wordsim])["wordsim"][str(args.wordsim)]
        result["strategies"][strategy] = dict(
            filled_by=manifest["counts"]["filled_by"],
            pairs_touching_filled=ws["filled"]["covered"], rho_touching_filled=round(ws["filled"]["rho"], 4),
            pairs_projected=ws["projected"]["covered"], rho_projected=round(ws["projected"]["rho"], 4),
            pairs_all=ws["covered"], rho_all=round(ws["rho"], 4))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
