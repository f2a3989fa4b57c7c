"""Held-out test pairs and the build corpus without them, for the retrieval
and transplant benchmarks.

    python bench/splits.py data/tatoeba/cmn-eng.tsv /tmp/xl-bench/tatoeba [--test 1000] [--seed 0]
    python bench/splits.py ../shared/data/parallel/mixed.tsv.gz /tmp/xl-bench/mixed

writes DIR/build.tsv (english<TAB>chinese, every pair that shares neither
side with a test pair) and DIR/heldout.tsv (the test pairs, english<TAB>chinese).
Test pairs are drawn with a fixed seed among pairs whose English sentence is
unique in the test set; the same English (or Chinese) sentence can appear in
several pairs of a corpus (Tatoeba has many), so exclusion is by sentence,
not by pair: no test sentence, on either side, is in the build corpus.
"""
from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path
from typing import NamedTuple


class Pair(NamedTuple):
    en: str
    zh: str


def read_pairs(path: Path) -> list[Pair]:
    opener = gzip.open if str(path).endswith(".gz") else open
    pairs = []
    with opener(path, "rt", encoding="utf-8-sig") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 2 and cols[0].strip() and cols[1].strip():
                pairs.append(Pair(cols[0].strip(), cols[1].strip()))
    return pairs


def split(pairs: list[Pair], n_test: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(build pairs, test pairs): test pairs have distinct English and
    Chinese sentences, and no build pair shares a sentence with any of them."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    test: list[Pair] = []
    test_en: set[str] = set()
    test_zh: set[str] = set()
    for i in order:
        if len(test) == n_test:
            break
        p = pairs[i]
        if p.en not in test_en and p.zh not in test_zh:
            test.append(p)
            test_en.add(p.en)
            test_zh.add(p.zh)
    build = [p for p in pairs if p.en not in test_en and p.zh not in test_zh]
    return build, test


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{p.en}\t{p.zh}\n" for p in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = read_pairs(args.corpus)
    build, test = split(pairs, args.test, args.seed)
    write_pairs(args.out / "build.tsv", build)
    write_pairs(args.out / "heldout.tsv", test)
    print(f"{args.corpus}: {len(pairs):,} pairs -> build {len(build):,}, held out {len(test):,} "
          f"({len(pairs) - len(build) - len(test):,} more pairs dropped for sharing a test sentence)")


if __name__ == "__main__":
    main()
