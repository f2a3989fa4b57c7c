"""The encode stage's host ceiling: the real stage with the model's forward
pass replaced by a stub of the same output shape, so what is timed is
everything a GPU cannot speed up (tokenization and the row plan, batch
building, pooling, shard writing, waiting). Words/s here is what encode
can never exceed, however fast the device.

    python bench/host_ceiling.py CORPUS_EN [--repeat 3] [--model DIR] [--profile FILE]
    python bench/host_ceiling.py CORPUS_EN --real-vectors FILE [--sentences 3000]   # the real forward, vectors kept
    python bench/host_ceiling.py --compare FILE_A FILE_B                             # two checkouts' vectors

CORPUS_EN is a tokenize output (space-separated words, one sentence a
line), e.g. /work/xl-bench/tatoeba/work/corpus.en. The stub replaces the
module-level `xlembed.encode.forward` (bench only). Works with any version
of xlembed that has that function, so the same script measures the code
before and after a change (run it with each checkout's python). Prints one
JSON object: words, seconds per repeat, words/s (median), and the stage's
own timing split where the record has one.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import xlembed.encode as encode_module
from xlembed.config import Config
from xlembed.layout import WorkDir

STUB_MEMORY: list[torch.Tensor] = []


def stub_forward(model, batch, layers, device, *args, **kwargs) -> torch.Tensor:
    """Hidden states of the shape the model would give [B, T, d], float32,
    without the model: a view of one zeroed block kept across batches (a
    device's output lives in device memory; the host allocates nothing)."""
    shape = (*batch.input_ids.shape, model.config.hidden_size)
    size = shape[0] * shape[1] * shape[2]
    if not STUB_MEMORY or STUB_MEMORY[0].numel() < size:
        STUB_MEMORY[:] = [torch.zeros(size, device=device)]
    return STUB_MEMORY[0][:size].view(shape)


def one_run(corpus_en: Path, root: Path, model: Path | None) -> dict:
    work = WorkDir(root)
    root.mkdir(parents=True)
    shutil.copy(corpus_en, work.corpus_en)
    options = dict(device="cpu", precision="fp32")
    if model is not None:
        options["model"] = model
    config = Config().set(**options).validate(("encode",))
    start, cpu_start = time.perf_counter(), time.process_time()
    record = encode_module.encode(config, work, force=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    shutil.rmtree(root)
    return dict(wall=wall, cpu=cpu, record=record)


def real_vectors(corpus_en: Path, root: Path, model: Path | None, n_sentences: int, into: Path) -> None:
    """The real encode stage (float32) on the first sentences; every word occurrence's vector, in sentence order."""
    from xlembed.encode import VectorStore

    work = WorkDir(root)
    root.mkdir(parents=True)
    lines = corpus_en.read_text(encoding="utf-8").splitlines()[:n_sentences]
    work.corpus_en.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    options = dict(device="cpu", precision="fp32", **({"model": model} if model is not None else {}))
    encode_module.encode(Config().set(**options).validate(("encode",)), work)
    store = VectorStore(work)
    matrix = torch.cat([store.shard(k) for k in range(store.n_shards)])
    torch.save(matrix[torch.from_numpy(store.word_rows[store.word_rows >= 0])], into)
    shutil.rmtree(root)


def compare(a: Path, b: Path) -> dict:
    x, y = torch.load(a).float(), torch.load(b).float()
    cos = torch.nn.functional.cosine_similarity(x, y)
    return dict(
        words=len(x),
        identical=bool(torch.equal(x, y)),
        rows_differing=int((x != y).any(1).sum()),
        max_abs_diff=(x - y).abs().max().item(),
        cosine_min=cos.min().item(),
        cosine_mean=cos.mean().item(),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus_en", type=Path, nargs="?")
    parser.add_argument("--real-vectors", type=Path, help="encode with the real model and save the vectors here")
    parser.add_argument("--sentences", type=int, default=3000, help="with --real-vectors: the first N sentences")
    parser.add_argument("--compare", type=Path, nargs=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more run here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if args.compare:
        print(json.dumps(compare(*args.compare), indent=2))
        return
    if args.real_vectors:
        real_vectors(args.corpus_en, tmp / "real", args.model, args.sentences, args.real_vectors)
        return
    encode_module.forward = stub_forward
    runs = [one_run(args.corpus_en, tmp / f"run-{i}", args.model) for i in range(args.repeat)]
    record = runs[-1]["record"]
    words = record["counts"]["words"]
    timing = [r["record"].get("timing") for r in runs]
    # the stage's seconds less loading the model (a fixed cost, not per word), where the record says
    loop = [r["record"]["seconds"] - t["load"] if t else None for r, t in zip(runs, timing)]
    result = dict(
        corpus=str(args.corpus_en),
        words=words,
        vector_rows=record["counts"]["vector_rows"],
        torch_threads=torch.get_num_threads(),
        stage_seconds=[round(r["record"]["seconds"], 3) for r in runs],
        words_per_second=round(words / statistics.median(r["record"]["seconds"] for r in runs)),
        # CPU seconds of the whole process (every thread), less sensitive to a loaded machine than the wall clock
        cpu_seconds=[round(r["cpu"], 3) for r in runs],
        words_per_cpu_second=round(words / statistics.median(r["cpu"] for r in runs)),
    )
    if all(x is not None for x in loop):
        result["stage_seconds_without_model_load"] = [round(x, 3) for x in loop]
        result["words_per_second_without_model_load"] = round(words / statistics.median(loop))
        result["timing"] = timing
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        one_run(args.corpus_en, tmp / "profiled", args.model)
        profiler.disable()
        profiler.dump_stats(str(args.profile))
    shutil.rmtree(tmp)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
