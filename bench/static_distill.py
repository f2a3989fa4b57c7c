"""Distillation for the static matrix (wired as `xlembed write --distill`, opt-in): the matrix's
Chinese rows trained so that the mean row of each build-corpus Chinese
sentence (xlembed's own tokenizer) lands on the English model's own
sentence embedding of its translation, optionally anchored to the original
rows (loss = MSE + anchor * mean squared change of the rows in the batch).
Settings are chosen on validation pairs taken from the build corpus (the
first 1,000 of a seeded shuffle, never trained on); held-out pairs
(bench/splits.py) are scored once, at the end.

    python bench/static_distill.py --out TATOEBA_OUT --build BUILD.tsv --heldout HELDOUT.tsv \
        [--epochs 3] [--lr 1e-2] [--anchor 1] [--loss mse|nce|mse+nce] [--cache FILE] [--save DIR]
    xlembed evaluate DIR --wordsim ... --dictionary ...     # the intrinsic dev suite on the saved copy

--loss nce trains with `xlembed write --distill`'s own code (xlembed.distill.distill_matrix);
--save writes a copy of OUT with the trained rows (manifest unchanged), for `xlembed evaluate`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_probe import cached, loss_of
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout

from xlembed.distill import MatrixDistillOptions, PackedIds, bag_of_rows, distill_matrix
from xlembed.embeddings import Embeddings
from xlembed.models import default_model_dir


@torch.no_grad()
def scored(rows: torch.Tensor, id_lists: list[list[int]], english: torch.Tensor) -> dict:
    vectors = torch.zeros(len(id_lists), rows.shape[1])  # a sentence with no known word stays 0
    known = [i for i, ids in enumerate(id_lists) if ids]
    vectors[known] = bag_of_rows(rows, *PackedIds.of(id_lists).batch(known))
    return precision_at_1(vectors, english)._asdict()


def train(rows0: torch.Tensor, ids: list[list[int]], targets: torch.Tensor, args) -> torch.Tensor:
    if args.loss == "nce":  # the training of `xlembed write --distill` (xlembed.distill.distill_matrix)
        rows = rows0.clone()
        options = MatrixDistillOptions(epochs=args.epochs, anchor=args.anchor, lr=args.lr, batch_size=args.batch_size,
                                       tau=args.tau)
        print(distill_matrix(rows, PackedIds.of(ids), targets, options), flush=True)
        return rows
    rows, packed = torch.nn.Parameter(rows0.clone()), PackedIds.of(ids)
    optimizer = torch.optim.Adam([rows], lr=args.lr)
    for epoch in range(args.epochs):
        order = torch.randperm(len(ids)).tolist()
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            predicted = bag_of_rows(rows, *packed.batch(batch))  # [b, d]
            loss = loss_of(predicted, targets[batch], args.loss, args.nce_weight, args.tau)
            if args.anchor:
                used = torch.tensor(sorted({j for i in batch for j in ids[i]}))
                loss = loss + args.anchor * ((rows[used] - rows0[used]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}", flush=True)
    return rows.detach()


def save_copy(out: Path, dest: Path, rows: torch.Tensor) -> None:
    shutil.copytree(out, dest, dirs_exist_ok=True)
    with safe_open(str(out / "embeddings.safetensors"), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(out / "embeddings.safetensors"))
    tensors["embeddings"] = rows.to(tensors["embeddings"].dtype).contiguous()
    save_file(tensors, str(dest / "embeddings.safetensors"), metadata=metadata)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--build", type=Path, required=True, help="the build corpus (english<TAB>chinese)")
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--anchor", type=float, default=0.0)
    parser.add_argument(
        "--loss",
        default="mse",
        choices=["mse", "nce", "mse+nce"],
        help="as bench/distill_probe.py's (nce: InfoNCE over the batch, both directions)",
    )
    parser.add_argument("--nce-weight", type=float, default=0.1)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--cache", type=Path, help="a file for the build pairs' English embeddings")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model_dir = default_model_dir()
    pairs = read_heldout(args.build)
    random.Random(0).shuffle(pairs)
    teacher = cached(args.cache, lambda: english_sentence_vectors(model_dir, [p.en for p in pairs]))  # [n, d]
    built = Embeddings.load(args.out)
    skip = {built.tokenizer.pad_id, built.tokenizer.unk_id}
    ids = [[j for j in built.tokenizer.encode(p.zh) if j not in skip] for p in pairs]
    validation = [i for i in range(min(1000, len(pairs))) if ids[i]]
    training = [i for i in range(1000, len(pairs)) if ids[i]]
    rows0 = built.vectors.float()
    before = scored(rows0, [ids[i] for i in validation], teacher[validation])
    rows = train(rows0, [ids[i] for i in training], teacher[training], args)
    heldout = read_heldout(args.heldout)
    heldout_ids = [[j for j in built.tokenizer.encode(p.zh) if j not in skip] for p in heldout]
    english = english_sentence_vectors(model_dir, [p.en for p in heldout])
    result = dict(
        settings=dict(
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            anchor=args.anchor,
            loss=args.loss,
            nce_weight=args.nce_weight,
            tau=args.tau,
        ),
        validation_before=before,
        validation_after=scored(rows, [ids[i] for i in validation], teacher[validation]),
        heldout_before=scored(rows0, heldout_ids, english),
        heldout_after=scored(rows, heldout_ids, english),
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.save:
        save_copy(args.out, args.save, rows)


if __name__ == "__main__":
    main()
