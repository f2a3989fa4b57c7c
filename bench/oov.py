"""How much meaning the OOV strategies put into filled rows, on every dev set.

    python bench/oov.py WORK_DIR [--wordsim FILE ...] [--dictionary FILE] [--json FILE]

The vocabulary is the corpus's plus every word of the word-similarity files
and every Chinese word of the dictionary, so the words the corpus never saw
get filled rows. For each strategy: Spearman rho over the pairs touching a
filled row and over the pairs of projected rows (which no strategy may
change), and lexicon induction (P@1 by cosine) over the dictionary words
whose row is filled. WORK_DIR needs the project stage done. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from xlembed.config import PAD, UNK, Config, Oov
from xlembed.embeddings import Embeddings
from xlembed.evaluate import lexicon_induction, read_dictionary, read_wordsim, word_similarity
from xlembed.io import read_lines
from xlembed.layout import WorkDir
from xlembed.write import write

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--wordsim", type=Path, action="append")
    parser.add_argument("--dictionary", type=Path, default=DATA / "lexicon/muse-zh-en.0-5000.txt")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    wordsims = args.wordsim or [DATA / "wordsim/wordsim-297.txt", DATA / "wordsim/pku-500.txt"]
    work = WorkDir(args.work)
    tmp = Path(tempfile.mkdtemp())
    corpus_words = [line.split("\t")[0] for line in list(read_lines(work.projection_zh_vocab))[1:]]
    sets = {str(path): read_wordsim(path) for path in wordsims}
    dictionary = read_dictionary(args.dictionary)
    extra = [w for pairs in sets.values() for a, b, _ in pairs for w in (a, b)] + list(dictionary)
    vocab = list(dict.fromkeys([PAD, UNK] + corpus_words + extra))
    (tmp / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
    result = dict(work=str(work.root), wordsim=list(sets), dictionary=str(args.dictionary), vocab_size=len(vocab),
                  words_not_in_corpus=len(set(extra) - set(corpus_words)), strategies={})
    for strategy in (s.value for s in Oov):
        manifest = write(Config().set(oov=strategy, vocab=tmp / "vocab.txt").validate(("write",)), work, tmp / strategy)
        matrix = Embeddings.load(tmp / strategy)
        entry = dict(filled_by=manifest["counts"]["filled_by"], wordsim={})
        for path, pairs in sets.items():
            ws = word_similarity(matrix, pairs)
            entry["wordsim"][path] = dict(
                pairs_touching_filled=ws["filled"]["covered"], rho_touching_filled=round(ws["filled"]["rho"], 4),
                pairs_projected=ws["projected"]["covered"], rho_projected=round(ws["projected"]["rho"], 4),
                pairs_all=ws["covered"], rho_all=round(ws["rho"], 4))
        index = matrix.word_index
        filled = {zh: en for zh, en in dictionary.items() if zh in index and not matrix.projected[index[zh]]}
        li = lexicon_induction(matrix, filled, csls_k=0)
        entry["dictionary_filled_words"] = dict(covered=li["covered"], p_at_1=round(li["cosine"]["p_at_1"], 4),
                                               p_at_10=round(li["cosine"]["p_at_10"], 4))
        result["strategies"][strategy] = entry
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
