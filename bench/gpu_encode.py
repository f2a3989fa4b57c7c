"""Check the CUDA path of `encode` (precision auto: float16 weights) against the CPU path (float32),
and time it on a whole corpus.

    python bench/gpu_encode.py MODEL_DIR CORPUS_EN [--random-init] [--compare N]

MODEL_DIR may hold only config and tokenizer files with --random-init: the
encoder is then built from the config with random weights (same shape, so
the same compute), for machines the weights cannot be carried to.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from xlembed.config import Config
from xlembed.encode import VectorStore, encode
from xlembed.layout import WorkDir


def random_init_copy(model_dir: Path, into: Path) -> Path:
    from transformers import AutoConfig, AutoModel

    shutil.copytree(model_dir, into)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(str(into))).save_pretrained(str(into))
    return into


def all_vectors(work: WorkDir) -> tuple[torch.Tensor, VectorStore]:
    store = VectorStore(work)
    matrix = torch.cat([store.shard(k) for k in range(store.n_shards)]).float()
    return matrix, store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("corpus_en", type=Path)
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--compare", type=int, default=2000, help="sentences encoded on both devices")
    parser.add_argument("--batch-sizes", default="64,256")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = random_init_copy(args.model, tmp / "model") if args.random_init else args.model
    lines = args.corpus_en.read_text(encoding="utf-8").splitlines()
    result = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, sentences=len(lines))

    # the same sentences on CPU (float32) and CUDA (precision auto: float16 weights)
    matrices = {}
    for device in ("cpu", "cuda"):
        work = WorkDir(tmp / f"cmp-{device}")
        work.root.mkdir()
        work.corpus_en.write_text("".join(line + "\n" for line in lines[:args.compare]), encoding="utf-8")
        record = encode(
            Config()
            .set(model=model, device=device, precision="fp32" if device == "cpu" else "auto")
            .validate(("encode",)),
            work,
        )
        matrix, store = all_vectors(work)
        # rows in sentence order, so both devices' matrices line up
        matrices[device] = matrix[torch.from_numpy(store.word_rows[store.word_rows >= 0])]
        result[f"compare_{device}_seconds"] = record["seconds"]
    cos = torch.nn.functional.cosine_similarity(matrices["cpu"], matrices["cuda"])
    result["compare_words"] = len(cos)
    result["cosine_cpu_vs_cuda"] = dict(min=cos.min().item(), mean=cos.mean().item())
    result["max_abs_diff"] = (matrices["cpu"] - matrices["cuda"]).abs().max().item()

    # the whole corpus on CUDA, per batch size
    for batch_size in map(int, args.batch_sizes.split(",")):
        work = WorkDir(tmp / f"full-{batch_size}")
        work.root.mkdir()
        shutil.copy(args.corpus_en, work.corpus_en)
        torch.cuda.synchronize()
        start = time.perf_counter()
        record = encode(Config().set(model=model, device="cuda", batch_size=batch_size).validate(("encode",)), work)
        result[f"cuda_batch{batch_size}_seconds"] = round(time.perf_counter() - start, 2)
        result["vector_rows"] = record["counts"]["vector_rows"]
    result["peak_cuda_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
