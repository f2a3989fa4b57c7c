"""`xlembed run` on a corpus against the bare forward-pass floor, in one run.

    python bench/speed.py [--tsv data/tatoeba/cmn-eng.tsv] [--json FILE] [--keep DIR] [--precisions fp32 bf16]

The floor is MiniLM's forward pass alone over the unique English sentences
(length-sorted batches of 128 padded to their longest, inference mode),
measured twice in this process: weights in float32, and in bfloat16; the
goal is stated against the better (faster) of the two. The run uses the defaults
(whatever precision `auto` picks on this machine; it is
reported). Also: the stages' own seconds, and the rest of the wall clock
(process start, imports, option and model checks). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from xlembed.config import EncodeConfig
from xlembed.encode import cpu_has_native_bf16
from xlembed.models import load_encoder, load_tokenizer, resolve_model_dir

REPO = Path(__file__).resolve().parent.parent


def forward_seconds(model, tokenizer, sentences: list[list[str]], batch_size: int) -> float:
    encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=EncodeConfig().max_length)[
        "input_ids"
    ]
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
            model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tsv", type=Path, default=REPO / "data/tatoeba/cmn-eng.tsv")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path,
                        help="build into DIR/work and DIR/out and keep them (default: a temp folder)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="which bare floors to measure (the goal uses the faster one)")
    parser.add_argument("--run-option", action="append", default=[], metavar="OPTION",
                        help="an option for the run, e.g. --run-option=--precision=bf16 (repeatable)")
    args = parser.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp())
    xlembed = str(Path(sys.executable).with_name("xlembed"))

    start = time.perf_counter()
    subprocess.run(
        [xlembed, "run", "--tsv", str(args.tsv), "--out", str(tmp / "out"), "--work", str(tmp / "work"), "-q",
         *args.run_option],
        check=True,
    )
    run_wall = time.perf_counter() - start
    run_peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child: the run
    manifest = json.loads((tmp / "out" / "manifest.json").read_text())
    encode_record = json.loads((tmp / "work" / "encode.json").read_text())

    model_dir = resolve_model_dir(None)
    tokenizer = load_tokenizer(model_dir)
    sentences = [line.split(" ") for line in (tmp / "work" / "corpus.en").read_text(encoding="utf-8").splitlines()]
    unique = [s.split(" ") for s in dict.fromkeys(" ".join(s) for s in sentences)]
    batch_size = EncodeConfig().batch_size
    floors = {name: round(forward_seconds(load_encoder(model_dir).to(dtype), tokenizer, unique, batch_size), 2)
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)) if name in args.precisions}
    stages = manifest["seconds"]
    floor = floors.get(encode_record["precision_used"], min(floors.values()))  # its own, else the better one
    result = dict(
        corpus=str(args.tsv),
        run_options=args.run_option,
        sentences=len(sentences),
        unique_sentences=len(unique),
        batch_size=batch_size,
        torch_threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        cpu_has_amx_bf16=cpu_has_native_bf16(),
        precision_used=encode_record["precision_used"],
        run_wall_seconds=round(run_wall, 2),
        stage_seconds=stages,
        outside_stages_seconds=round(run_wall - sum(stages.values()), 2),
        run_peak_rss_mib=round(run_peak_rss_mib, 1),
        load_average=os.getloadavg(),
        **{f"floor_{name}_seconds": seconds for name, seconds in floors.items()},
        **{f"run_over_floor_{name}": round(run_wall / seconds, 3) for name, seconds in floors.items()},
        run_over_better_floor=round(run_wall / min(floors.values()), 3),
        encode_over_its_floor=round(stages["encode"] / floor, 3),
    )
    timing = encode_record.get("timing")
    if timing:  # the encode record's own split (xlembed 0.5 on)
        result["encode_timing"] = timing
        result["encode_host_over_forward"] = round(timing["host"] / timing["forward"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
