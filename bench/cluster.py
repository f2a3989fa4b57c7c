"""Local vs Ray: encode+project of one corpus, both ways, on this machine.

    python bench/cluster.py WORK [--fraction 1] [--json FILE]

WORK is a work directory where tokenize and align have run (e.g. the one
`bench/scale.py --keep DIR` leaves). Each way runs in a fresh work
directory of its own holding only the tokenized corpus and the alignment
(hard links): the local executor (`encode` then `project`, torch on every
core) and the Ray executor (a local Ray with this machine's CPUs, one
single-threaded encoder per CPU). Reported: wall seconds of each (the Ray
figure includes starting Ray and its workers), their ratio, and how close
the two projections are (cosine of each Chinese and English mean row).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from xlembed.cluster import RayExecutor, encode_and_project
from xlembed.config import Config
from xlembed.encode import encode
from xlembed.layout import WorkDir
from xlembed.project import load_projection, project

INPUTS = ("corpus.en", "corpus.zh", "tokenize.json", "align.links", "lexicon.tsv", "align.json")


def fresh(source: Path, to: Path, fraction: float) -> WorkDir:
    """A work directory with `source`'s corpus and alignment (the first `fraction` of the pairs)."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    n = sum(1 for _ in open(source / "corpus.en", encoding="utf-8"))
    keep = n if fraction >= 1 else int(n * fraction)
    for name in INPUTS:
        if keep == n or not name.startswith(("corpus", "align.links")):
            os.link(source / name, to / name)
        else:
            with open(source / name, encoding="utf-8") as f, open(to / name, "w", encoding="utf-8") as out:
                for _, line in zip(range(keep), f):
                    out.write(line)
    return WorkDir(to)


def mean_rows(work: WorkDir) -> tuple[torch.Tensor, torch.Tensor]:
    t = load_projection(work).tensors
    return (
        t["zh_sum"] / t["zh_count"].clamp(min=1).unsqueeze(1),
        t["en_sum"] / t["en_count"].clamp(min=1).unsqueeze(1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--fraction", type=float, default=1.0, help="the first part of the corpus only")
    parser.add_argument("--root", type=Path, default=Path("/tmp/xlembed-bench-cluster"))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--local-from",
        type=Path,
        help="take the local seconds from this earlier --json run, and the local "
        "rows from WORK's own projection, instead of running local again",
    )
    args = parser.parse_args()

    result = dict(corpus=str(args.work), fraction=args.fraction, cpus=os.cpu_count())
    config = Config()
    if args.local_from:
        earlier = json.loads(args.local_from.read_text())
        result.update(
            {k: earlier[k] for k in ("local_seconds", "local_stage_seconds", "sentences")},
            local_measured_in=str(args.local_from),
        )
        local = WorkDir(args.work)  # its projection, computed by the local executor
    else:
        local = fresh(args.work, args.root / "local", args.fraction)
        start = time.perf_counter()
        encoded = encode(config, local)
        projected = project(config, local)
        result["local_seconds"] = round(time.perf_counter() - start, 1)
        result["local_stage_seconds"] = dict(encode=encoded["seconds"], project=projected["seconds"])
        result["sentences"] = encoded["counts"]["sentences"]
    print(f"local: {result['local_seconds']} s", file=sys.stderr)

    config.executor.executor = "ray"
    on_ray = fresh(args.work, args.root / "ray", args.fraction)
    start = time.perf_counter()
    with RayExecutor(config) as executor:
        encoded, _ = encode_and_project(config, on_ray, executor)
    result["ray_seconds"] = round(time.perf_counter() - start, 1)
    result["ray_executor"] = encoded["executor"]
    result["ray_over_local"] = round(result["ray_seconds"] / result["local_seconds"], 3)
    print(f"ray: {result['ray_seconds']} s ({result['ray_over_local']}x local)", file=sys.stderr)

    for side, a, b in zip(("zh", "en"), mean_rows(local), mean_rows(on_ray)):
        used = a.norm(dim=1) > 0
        result[f"{side}_rows_min_cosine"] = round(
            float(torch.nn.functional.cosine_similarity(a[used], b[used], dim=1).min()), 6
        )
    shutil.rmtree(args.root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
