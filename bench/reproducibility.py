"""How much two runs on the same input differ.

    python bench/reproducibility.py WORK_DIR [--runs 3]

WORK_DIR is a finished work directory (e.g. runs/demo.work). eflomal takes
no seed, so each alignment differs: this re-aligns the corpus `--runs`
times in copies of WORK_DIR (everything else unchanged), writes each
matrix, and compares every pair of runs: links, the argmax translation of
each Chinese word, the rows (cosine), and each row's nearest English word.
It also re-encodes once to check that encode is byte-reproducible.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from xlembed.align import align, parse_links, read_lexicon
from xlembed.config import Config
from xlembed.encode import encode
from xlembed.io import read_json, read_lines
from xlembed.layout import WorkDir
from xlembed.project import project
from xlembed.write import write


def quantiles(x: torch.Tensor) -> dict:
    q = torch.quantile(x.double(), torch.tensor([0.01, 0.05, 0.5], dtype=torch.float64))
    return dict(mean=round(x.mean().item(), 4), p1=round(q[0].item(), 4), p5=round(q[1].item(), 4),
                median=round(q[2].item(), 4), min=round(x.min().item(), 4))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = WorkDir(args.work)
    recorded = {stage: read_json(base.record(stage))["options"] for stage in ("encode", "align", "project")}
    tmp = Path(tempfile.mkdtemp())
    runs = []
    for r in range(args.runs):
        work = WorkDir(tmp / f"work{r}")
        shutil.copytree(base.root, work.root)
        config = Config().set(**recorded["align"], **recorded["project"]).validate(("align", "project"))
        align(config, work, force=True)
        project(config, work, force=True)
        write(Config(), work, tmp / f"out{r}")
        out = tmp / f"out{r}"
        runs.append(
            dict(
                links=[parse_links(line) for line in read_lines(work.links)],
                best={zh: entries[0].en for zh, entries in read_lexicon(work.lexicon).items()},
                vocab=(out / "vocab.txt").read_text("utf-8").split("\n")[:-1],
                tensors=load_file(str(out / "embeddings.safetensors")),
                english=load_file(str(out / "english.safetensors"))["embeddings"],
                freq={
                    line.split("\t")[0]: int(line.split("\t")[1])
                    for line in list(read_lines(work.projection_zh_vocab))[1:]
                },
            )
        )

    pairs = []
    for a, b in itertools.combinations(runs, 2):
        same_links = sum(len(x & y) for x, y in zip(a["links"], b["links"]))
        all_links = sum(len(x | y) for x, y in zip(a["links"], b["links"]))
        same_best = sum(a["best"][w] == b["best"].get(w) for w in a["best"])
        assert a["vocab"] == b["vocab"]
        both = (a["tensors"]["projected"] == 1) & (b["tensors"]["projected"] == 1)
        ea, eb = a["tensors"]["embeddings"][both], b["tensors"]["embeddings"][both]
        cos = torch.nn.functional.cosine_similarity(ea, eb)
        english = torch.nn.functional.normalize(a["english"], dim=1)
        top_a = (torch.nn.functional.normalize(ea, dim=1) @ english.T).argmax(1)
        top_b = (torch.nn.functional.normalize(eb, dim=1) @ english.T).argmax(1)
        pairs.append(
            dict(
                links_identical_share=round(same_links / all_links, 4),
                argmax_translation_same_share=round(same_best / len(a["best"]), 4),
                projected_in_both=int(both.sum()),
                projected_flags_same_share=round(
                    (a["tensors"]["projected"] == b["tensors"]["projected"]).double().mean().item(), 4
                ),
                row_cosine=quantiles(cos),
                rows_identical_share=round((cos > 0.99999).double().mean().item(), 4),
                nearest_english_word_same_share=round((top_a == top_b).double().mean().item(), 4),
                by_frequency={
                    band: dict(
                        words=int(mask.sum()),
                        rows_identical_share=round((cos[mask] > 0.99999).double().mean().item(), 4),
                        row_cosine_mean=round(cos[mask].mean().item(), 4),
                    )
                    for band, (lo, hi) in {"1-2": (1, 2), "3-9": (3, 9), "10+": (10, 10**9)}.items()
                    for mask in [
                        torch.tensor([lo <= a["freq"].get(w, 0) <= hi for w, keep in zip(a["vocab"], both) if keep])
                    ]
                },
            )
        )

    # encode twice: byte-identical shards?
    again = WorkDir(tmp / "encode-again")
    again.root.mkdir()
    shutil.copy(base.corpus_en, again.corpus_en)
    encode(Config().set(**{k: v for k, v in recorded["encode"].items() if k != "device"}).validate(("encode",)), again)
    shards = sorted(p.name for p in base.vectors_dir.glob("shard-*.safetensors"))
    identical = all((base.vectors_dir / s).read_bytes() == (again.vectors_dir / s).read_bytes() for s in shards)
    print(json.dumps(dict(work=str(base.root), alignment_runs=args.runs, pairs=pairs,
                          encode_shards=len(shards), encode_byte_identical=identical), indent=2))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
