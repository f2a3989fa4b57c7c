"""How far the alignment's lexicon bounds MUSE P@1: over the covered
dictionary words of a written matrix, how often the nearest English row
(cosine) is a gold translation, how often the word's most probable
translation in lexicon.tsv (p(en|zh), what the projection rule follows) is
one, and how often the two are the same word.

    python bench/lexicon_ceiling.py OUT_DIR WORK_DIR/lexicon.tsv [--examples 20] \
        [--recount CORPUS_DIR ALIGNMENT_DIR]

--recount: the same share for the most probable translation counted over
other link sets of the same eflomal output (ALIGNMENT_DIR's align.forward
and align.reverse, CORPUS_DIR's corpus.zh and corpus.en): each direction,
their intersection, union and grow-diag-final-and, and over the union by
p(en|zh) x p(zh|en)^0.25.
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import devsuite  # bench/ is on the path: this script's folder

from xlembed.align import parse_links, read_lexicon, symmetrize
from xlembed.config import Symmetrization
from xlembed.embeddings import Embeddings
from xlembed.evaluate import read_dictionary
from xlembed.io import read_lines

LINK_SETS = ("forward", "reverse", "intersect", "union", "grow-diag-final-and")


def link_counts(corpus: Path, alignment: Path, sets: tuple[str, ...] = LINK_SETS,
                wanted: set[str] | None = None) -> tuple[dict[str, dict[str, Counter]], dict[str, Counter]]:
    """For each link set of one eflomal output (`alignment`'s align.forward
    and align.reverse over `corpus`'s corpus.zh and corpus.en): how often
    each Chinese word (of `wanted`, default all) is linked to each English
    word, and how often each English word is linked at all."""
    counts: dict[str, dict[str, Counter]] = {name: defaultdict(Counter) for name in sets}
    en_total: dict[str, Counter] = {name: Counter() for name in sets}
    for zh_line, en_line, fwd, rev in zip(
        read_lines(corpus / "corpus.zh"),
        read_lines(corpus / "corpus.en"),
        read_lines(alignment / "align.forward"),
        read_lines(alignment / "align.reverse"),
    ):
        zh, en = zh_line.split(" "), en_line.split(" ")
        forward, reverse = parse_links(fwd), parse_links(rev)
        for name in sets:
            for i, j in (
                forward
                if name == "forward"
                else reverse
                if name == "reverse"
                else symmetrize(forward, reverse, Symmetrization(name))
            ):
                en_total[name][en[j]] += 1
                if wanted is None or zh[i] in wanted:
                    counts[name][zh[i]][en[j]] += 1
    return counts, en_total


def bidirectional(n: int, zh_total: int, en_total: int, a: float) -> float:
    """p(en|zh) x p(zh|en)^a from link counts: demotes English words linked everywhere."""
    return (n / zh_total) * (n / en_total) ** a


def recount(corpus: Path, alignment: Path, queries: list[tuple[str, set[str]]]) -> dict[str, float]:
    """Share of `queries` whose most probable translation is gold, per link set."""
    counts, en_total = link_counts(corpus, alignment, wanted={zh for zh, _ in queries})

    def share(choose) -> float:
        return round(sum(choose(zh) in gold for zh, gold in queries) / len(queries), 4)

    def best(
        c: dict[str, Counter], zh: str, score=lambda en, n: n
    ) -> str | None:  # ties as lexicon.tsv orders them: by word
        return min(c[zh].items(), key=lambda kv: (-score(*kv), kv[0]))[0] if zh in c else None

    result = {name: share(lambda zh, c=counts[name]: best(c, zh)) for name in LINK_SETS}
    union = counts["union"]
    result["union, p(en|zh) x p(zh|en)^0.25"] = share(
        lambda zh: best(union, zh, lambda en, n: bidirectional(n, sum(union[zh].values()), en_total["union"][en], 0.25))
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("lexicon", type=Path)
    parser.add_argument("--dictionary", type=Path, default=devsuite.MUSE)
    parser.add_argument("--recount", type=Path, nargs=2, metavar=("CORPUS_DIR", "ALIGNMENT_DIR"))
    parser.add_argument(
        "--examples", type=int, default=0, help="print this many misses whose nearest row is the lexicon's best"
    )
    args = parser.parse_args()
    matrix, lexicon = Embeddings.load(args.out), read_lexicon(args.lexicon)
    english = matrix.english_index
    words = {i: w for w, i in english.items()}
    queries = [
        (zh, {e for e in gold if e in english})
        for zh, gold in read_dictionary(args.dictionary).items()
        if zh in matrix.word_index
    ]
    queries = [(zh, gold) for zh, gold in queries if gold]
    rows = matrix.unit_vectors[[matrix.word_index[zh] for zh, _ in queries]]  # [Q, d]
    nearest = [words[i] for i in (rows @ matrix.english_unit_vectors.T).argmax(1).tolist()]  # [Q]
    best = [lexicon[zh][0].en if zh in lexicon else None for zh, _ in queries]
    cases = Counter((n in gold, b in gold, n == b) for n, b, (_, gold) in zip(nearest, best, queries))
    n = len(queries)
    print(json.dumps({
        "covered": n,
        "p_at_1_cosine": round(sum(v for (hit, _, _), v in cases.items() if hit) / n, 4),
        "lexicon_best_is_gold": round(sum(v for (_, good, _), v in cases.items() if good) / n, 4),
        "nearest_is_lexicon_best": round(sum(v for (_, _, same), v in cases.items() if same) / n, 4),
        "cases (nearest gold, best gold, same)": {str(k): v for k, v in sorted(cases.items())},
    } | ({"lexicon_best_is_gold by link set": recount(*args.recount, queries)} if args.recount else {}), indent=2))
    misses = [
        (zh, b, sorted(gold)[:3]) for nn, b, (zh, gold) in zip(nearest, best, queries) if nn == b and b not in gold
    ]
    for zh, b, gold in random.Random(0).sample(misses, min(args.examples, len(misses))):
        print(zh, [(t.en, t.count, round(t.p, 2)) for t in lexicon[zh][:3]], "gold:", gold)


if __name__ == "__main__":
    main()
