"""Quality of the main settings, and a word2vec baseline.

    python bench/quality.py [--tsv data/tatoeba/cmn-eng.tsv] [--wordsim FILE] [--gold DIR] [--json FILE]

- word similarity (wordsim-297, Spearman rho over covered pairs) for every
  layer x symmetrization x strategy, averaged over `--align-runs` eflomal
  runs (eflomal cannot be seeded); within a run the symmetrizations share
  the eflomal output, so they differ by the heuristic alone;
- AER of each symmetrization on the gold pairs (`--aer-runs` eflomal runs);
- the reference a user would otherwise reach for: word2vec skip-gram
  (gensim, `pip install -e '.[bench]'`) trained on the same Chinese side,
  scored the same way.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from xlembed.align import align, symmetrize_and_count
from xlembed.config import Config, Strategy, Symmetrization
from xlembed.encode import encode
from xlembed.evaluate import evaluate, evaluate_alignment, read_wordsim, spearman
from xlembed.layout import WorkDir
from xlembed.project import project
from xlembed.tokenize import tokenize
from xlembed.write import write

REPO = Path(__file__).resolve().parent.parent

LAYERS = ("-1", "-2", "mean-last4")


def word2vec_scores(corpus_zh: Path, wordsim: Path, dim: int, seed: int) -> dict:
    from gensim.models import Word2Vec

    sentences = [line.split(" ") for line in corpus_zh.read_text(encoding="utf-8").splitlines()]
    model = Word2Vec(sentences, vector_size=dim, window=5, min_count=1, sg=1, epochs=10, seed=seed, workers=1)
    pairs = read_wordsim(wordsim)
    covered = [(a, b, s) for a, b, s in pairs if a in model.wv and b in model.wv]
    cosine = [float(model.wv.similarity(a, b)) for a, b, _ in covered]
    return dict(pairs=len(pairs), covered=len(covered), rho=spearman(cosine, [s for _, _, s in covered]),
                vector_size=dim, window=5, epochs=10, min_count=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tsv", type=Path, default=REPO / "data/tatoeba/cmn-eng.tsv")
    parser.add_argument("--wordsim", type=Path, default=REPO.parent / "shared/data/wordsim/wordsim-297.txt")
    parser.add_argument("--gold", type=Path, default=REPO.parent / "shared/data/gold-align")
    parser.add_argument("--aer-runs", type=int, default=3)
    parser.add_argument("--align-runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    base = WorkDir(tmp / "base")
    tokenize(Config().set(tsv=args.tsv).validate(), base)
    layers = {}
    for layer in LAYERS:
        work = WorkDir(tmp / f"layer{layer}")
        shutil.copytree(base.root, work.root)
        encode(Config().set(layer=layer).validate(("encode",)), work)
        layers[layer] = work

    scores: dict[tuple, list[float]] = {}
    for run in range(args.align_runs):
        align(Config(), base, force=True)
        for layer, work in layers.items():
            for name in (base.links_forward.name, base.links_reverse.name, base.record("align").name):
                shutil.copy(base.root / name, work.root / name)
            for symmetrization, strategy in itertools.product(Symmetrization, Strategy):
                symmetrize_and_count(work, symmetrization)
                project(Config().set(strategy=strategy), work, force=True)
                write(Config(), work, tmp / "out")
                ws = evaluate(tmp / "out", [args.wordsim])["wordsim"][str(args.wordsim)]
                scores.setdefault((layer, symmetrization.value, strategy.value), []).append(ws["rho"])
                print(
                    run,
                    layer,
                    symmetrization.value,
                    strategy.value,
                    ws["covered"],
                    round(ws["rho"], 4),
                    file=sys.stderr,
                )
    covered = ws["covered"]
    grid = [
        dict(
            layer=layer,
            symmetrization=symmetrization,
            strategy=strategy,
            covered=covered,
            pairs=ws["pairs"],
            rho_runs=[round(r, 4) for r in rhos],
            rho_mean=round(float(np.mean(rhos)), 4),
            rho_sd=round(float(np.std(rhos)), 4),
        )
        for (layer, symmetrization, strategy), rhos in scores.items()
    ]

    aer = {method: [] for method in (*(s.value for s in Symmetrization), "forward", "reverse")}
    for _ in range(args.aer_runs):
        scores = evaluate_alignment(args.gold, base, Config().align)["scores"]
        for method, s in scores.items():
            aer[method].append(round(s["aer"], 4))
    aer = {method: dict(runs=values, mean=round(float(np.mean(values)), 4)) for method, values in aer.items()}

    result = dict(corpus=str(args.tsv), wordsim=str(args.wordsim), grid=grid, aer=aer,
                  word2vec=word2vec_scores(base.corpus_zh, args.wordsim, 300, seed=0))
    best = max(grid, key=lambda g: g["rho_mean"])
    result["best"] = best
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
