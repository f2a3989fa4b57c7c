"""Speed of `xlembed run` against the floor, in one run.

    python bench/speed.py [--tsv data/tatoeba/cmn-eng.tsv] [--naive-sentences N] [--json FILE]

1. `xlembed run` as a user runs it (a subprocess, fresh work directory):
   wall time, and each stage's own seconds from its record.
2. The floor: the bare model forward pass over the same English sentences
   (all of them, as tokenized by `xlembed tokenize`), length-sorted batches
   of the same size, torch.inference_mode; timed alone, tokenization done
   beforehand. Also over the unique sentences only.
3. The naive baseline (the seed article's way): one sentence per forward
   call, no batching, over the first N sentences (all by default).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from xlembed.config import EncodeConfig
from xlembed.models import load_encoder, load_tokenizer, resolve_model_dir

REPO = Path(__file__).resolve().parent.parent


def forward_seconds(model, tokenizer, sentences: list[list[str]], batch_size: int) -> float:
    encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=EncodeConfig().max_length)["input_ids"]
    encoded.sort(key=len, reverse=True)
    batches = []
    for b in range(0, len(encoded), batch_size):
        chunk = encoded[b:b + batch_size]
        width = max(map(len, chunk))
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(chunk):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        batches.append((ids, mask))
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tsv", type=Path, default=REPO / "data/tatoeba/cmn-eng.tsv")
    parser.add_argument("--naive-sentences", type=int, default=0, help="0 = all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    xlembed = str(Path(sys.executable).with_name("xlembed"))

    start = time.perf_counter()
    subprocess.run([xlembed, "run", "--tsv", str(args.tsv), "--out", str(tmp / "out"), "--work", str(tmp / "work"), "-q"], check=True)
    run_wall = time.perf_counter() - start
    manifest = json.loads((tmp / "out" / "manifest.json").read_text())

    model_dir = resolve_model_dir(None)
    tokenizer, model = load_tokenizer(model_dir), load_encoder(model_dir)
    sentences = [line.split(" ") for line in (tmp / "work" / "corpus.en").read_text(encoding="utf-8").splitlines()]
    unique = [s.split(" ") for s in dict.fromkeys(" ".join(s) for s in sentences)]
    batch_size = EncodeConfig().batch_size
    floor = forward_seconds(model, tokenizer, sentences, batch_size)
    floor_unique = forward_seconds(model, tokenizer, unique, batch_size)

    naive = sentences[:args.naive_sentences] if args.naive_sentences else sentences
    naive_inputs = [tokenizer(s, is_split_into_words=True, return_tensors="pt") for s in naive]
    start = time.perf_counter()
    with torch.inference_mode():
        for x in naive_inputs:
            model(**x)
    naive_seconds = time.perf_counter() - start

    result = dict(
        corpus=str(args.tsv), sentences=len(sentences), unique_sentences=len(unique), batch_size=batch_size,
        torch_threads=torch.get_num_threads(), cpus=os.cpu_count(),
        run_wall_seconds=round(run_wall, 2), stage_seconds=manifest["seconds"],
        floor_seconds=round(floor, 2), floor_unique_seconds=round(floor_unique, 2),
        run_over_floor=round(run_wall / floor, 3), run_over_floor_unique=round(run_wall / floor_unique, 3),
        naive_sentences=len(naive), naive_seconds=round(naive_seconds, 2),
        naive_seconds_for_all=round(naive_seconds * len(sentences) / len(naive), 1),
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
