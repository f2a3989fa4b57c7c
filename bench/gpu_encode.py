"""The CUDA path of the encode stage, proven and timed: the real stage (not a
separate loop) on a MiniLM-shaped model with random weights, so that only
the config and tokenizer files have to travel to the GPU machine.

    python bench/gpu_encode.py --export-shape DIR           # here: MiniLM's config + tokenizer files (< 1 MB) into DIR
    python bench/gpu_encode.py DIR CORPUS_EN [--compare 2000] [--batch-tokens 4096,16384] [--json FILE]  # on the GPU

The model is built from DIR's config with seeded random weights (the same
shape, so the same arithmetic as MiniLM). Reports, as one JSON object:
- the same first `--compare` sentences encoded on the CPU (float32) and on
  CUDA (precision auto: float16): cosine of every word vector (goal >= 0.9999);
- the whole corpus on CUDA per --batch-tokens: seconds, sentences/s, words/s,
  the encode record's forward/host split, and the GPU's utilisation sampled
  by nvidia-smi every 100 ms while the stage ran (mean and median, in %).
Sized to finish in well under 5 minutes on an H100/H200 with Tatoeba.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from xlembed.config import Config
from xlembed.encode import VectorStore, encode
from xlembed.layout import WorkDir

SHAPE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def export_shape(into: Path) -> None:
    """The default model's config and tokenizer files, without its weights."""
    from xlembed.models import resolve_model_dir

    model_dir = resolve_model_dir(None)
    into.mkdir(parents=True, exist_ok=True)
    for name in SHAPE_FILES:
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, into / name)


def random_model(shape_dir: Path, into: Path) -> Path:
    """A model directory: `shape_dir`'s config and tokenizer, seeded random weights."""
    from transformers import AutoConfig, AutoModel

    shutil.copytree(shape_dir, into)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(str(into))).save_pretrained(str(into))
    return into


class Utilisation:
    """GPU utilisation (%) sampled by nvidia-smi every 100 ms while in the `with` block."""

    def __enter__(self):
        self.samples: list[int] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100", "-i", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(
            target=lambda: [self.samples.append(int(x)) for x in self.proc.stdout if x.strip().isdigit()], daemon=True
        )
        self.reader.start()
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()
        self.reader.join(1)

    def summary(self) -> dict:
        s = self.samples or [0]
        return dict(mean=round(statistics.mean(s), 1), median=statistics.median(s), samples=len(self.samples))


def encode_lines(model: Path, lines: list[str], root: Path, **options) -> tuple[dict, WorkDir]:
    work = WorkDir(root)
    root.mkdir(parents=True)
    work.corpus_en.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return encode(Config().set(model=model, **options).validate(("encode",)), work, force=True), work


def word_vectors(work: WorkDir) -> torch.Tensor:
    """Every word occurrence's vector, in sentence order [n_words, d] (so two runs line up)."""
    store = VectorStore(work)
    matrix = torch.cat([store.shard(k) for k in range(store.n_shards)]).float()
    return matrix[torch.from_numpy(store.word_rows[store.word_rows >= 0])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "shape", type=Path, help="a directory with a model's config and tokenizer files (weights not needed)"
    )
    parser.add_argument("corpus_en", type=Path, nargs="?")
    parser.add_argument(
        "--export-shape",
        action="store_true",
        help="write the default model's config and tokenizer into SHAPE, then stop",
    )
    parser.add_argument("--compare", type=int, default=2000, help="sentences encoded on both devices")
    parser.add_argument("--batch-tokens", default="4096,16384", help="padded pieces per batch, one full run each")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.export_shape:
        export_shape(args.shape)
        return
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp())
    model = random_model(args.shape, tmp / "model")
    lines = args.corpus_en.read_text(encoding="utf-8").splitlines()
    result = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, sentences=len(lines))

    cpu_record, cpu_work = encode_lines(model, lines[: args.compare], tmp / "cmp-cpu", device="cpu", precision="fp32")
    cuda_record, cuda_work = encode_lines(
        model, lines[: args.compare], tmp / "cmp-cuda", device="cuda", precision="auto"
    )
    cpu, cuda = word_vectors(cpu_work), word_vectors(cuda_work)
    cos = torch.nn.functional.cosine_similarity(cpu, cuda)
    result["compare"] = dict(
        sentences=args.compare,
        words=len(cos),
        precision_cuda=cuda_record["precision_used"],
        cosine_min=cos.min().item(),
        cosine_mean=cos.mean().item(),
        goal_met=bool(cos.min().item() >= 0.9999),
        cpu_seconds=cpu_record["seconds"],
        cuda_seconds=cuda_record["seconds"],
    )

    for batch_tokens in map(int, args.batch_tokens.split(",")):
        with Utilisation() as gpu:
            torch.cuda.synchronize()
            start = time.perf_counter()
            record, _ = encode_lines(
                model,
                lines,
                tmp / f"full-{batch_tokens}",
                device="cuda",
                batch_tokens=batch_tokens,
                batch_size=max(128, batch_tokens // 16),
            )
            seconds = time.perf_counter() - start
        loop = seconds - record["timing"]["load"]  # the stage less loading the model
        result[f"batch_tokens_{batch_tokens}"] = dict(
            seconds=round(seconds, 2),
            seconds_without_model_load=round(loop, 2),
            sentences_per_second=round(record["counts"]["sentences"] / loop),
            words_per_second=round(record["counts"]["words"] / loop),
            timing=record["timing"],
            gpu_utilisation=gpu.summary(),
        )
    result["peak_cuda_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    shutil.rmtree(tmp)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
