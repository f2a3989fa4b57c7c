"""How far project's float32 sums move the rows from float64 sums.

Re-accumulates a work directory's vectors with project's code in float32 and
compares each word's mean (sum / count, as write averages) with the mean from
the work directory's own projection.safetensors written with float64 sums:

    python bench/sum_precision.py --work WORK

Prints the largest and the median relative difference |a - b| / |b| over the
Chinese and the English rows. The work directory is only read.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from xlembed import project as p
from xlembed.config import Config
from xlembed.encode import VectorStore
from xlembed.io import SilentTask
from xlembed.layout import WorkDir


def relative(sums: torch.Tensor, counts: torch.Tensor, reference: torch.Tensor) -> dict:
    keep = counts > 0
    ours = sums[keep].double() / counts[keep].unsqueeze(1)  # [n, d]
    theirs = reference[keep].double() / counts[keep].unsqueeze(1)
    diff = (ours - theirs).norm(dim=1) / theirs.norm(dim=1).clamp(min=1e-30)  # [n]
    return dict(rows=int(keep.sum()), max=float(diff.max()), median=float(diff.median()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    work = WorkDir(Path(args.work))
    reference = load_file(str(work.projection))
    assert reference["zh_sum"].dtype == torch.float64, "needs a projection written with float64 sums"
    opts = Config().set(**json.loads(work.record("project").read_text())["options"]).validate(("project",)).project
    store, plan = VectorStore(work), p.link_plan(work, opts)
    rows = p.link_rows(plan.links, store.word_rows)
    sides = [p.WordRows(rows.zh_ids, rows.zh_rows, len(plan.vocab.zh_vocab)),
             p.WordRows(rows.en_ids, rows.en_rows, len(plan.vocab.en_vocab))]
    (zh_sum, zh_count), (en_sum, en_count) = p.accumulate(store, sides, reference["zh_sum"].shape[1], SilentTask())
    assert zh_sum.dtype == torch.float32 and torch.equal(zh_count, reference["zh_count"])
    print(json.dumps(dict(zh=relative(zh_sum, zh_count, reference["zh_sum"]),
                          en=relative(en_sum, en_count, reference["en_sum"])), indent=1))


if __name__ == "__main__":
    main()
