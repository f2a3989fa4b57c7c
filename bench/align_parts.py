"""Alignment in parts (--align-shards) against the whole corpus at once: AER
on the gold pairs (../shared/data/gold-align), aligned together with a
corpus, as `xlembed evaluate-alignment` does.

    python bench/align_parts.py WORK [WORK ...] --parts 4 --samples 200000,20000 [--runs 3] [--json FILE]

WORK: a work directory where tokenize has run (its corpus.*). Variants:
the whole corpus in one eflomal run; N parts from priors estimated on each
sample size; N parts without priors. eflomal cannot be seeded, so each
variant runs --runs times: median AER (and min-max) of the union and
grow-diag-final-and links.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import xlembed.align
from xlembed.config import AlignConfig
from xlembed.evaluate import evaluate_alignment
from xlembed.layout import WorkDir

GOLD = Path(__file__).resolve().parent.parent.parent / "shared/data/gold-align"
METHODS = ("union", "grow-diag-final-and")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("works", type=Path, nargs="+")
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--samples", default="200000,20000", help="prior sample sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    variants = [("whole corpus", AlignConfig(), False)]
    variants += [
        (
            f"{args.parts} parts, priors from {int(n):,} pairs",
            AlignConfig(align_shards=args.parts, prior_sample=int(n)),
            False,
        )
        for n in args.samples.split(",")
    ]
    variants += [(f"{args.parts} parts, no priors", AlignConfig(align_shards=args.parts), True)]
    results = []
    for work in args.works:
        for name, opts, no_priors in variants:
            scores, seconds = [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                # no priors: an empty priors file, as if eflomal were given none
                with (
                    mock.patch.object(xlembed.align, "estimate_priors", lambda *a: "")
                    if no_priors
                    else contextlib.nullcontext()
                ):
                    r = evaluate_alignment(args.gold, WorkDir(work), opts)
                seconds.append(time.perf_counter() - start)
                scores.append(r["scores"])
            row = dict(
                corpus=str(work),
                corpus_pairs=r["corpus_pairs"],
                variant=name,
                options=dataclasses.asdict(opts),
                runs=args.runs,
                median_seconds=round(statistics.median(seconds), 1),
            )
            for method in METHODS:
                aers = sorted(s[method]["aer"] for s in scores)
                row[method] = dict(
                    aer_median=round(statistics.median(aers), 4), aer_min=round(aers[0], 4), aer_max=round(aers[-1], 4)
                )
            print(f"{work.name} {name}: " + ", ".join(f"{m} AER {row[m]['aer_median']:.4f}" for m in METHODS)
                  + f" ({row['median_seconds']} s)", file=sys.stderr)
            results.append(row)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
