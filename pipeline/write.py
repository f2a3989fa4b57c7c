"""Stage 5: build the vocabulary, fill rows without a projected vector, and
write the output contract (see README) into a directory that replaces
`--out` as a whole, or not at all."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors import safe_open

from . import __version__
from .config import PAD, UNK, OutDir, WorkDir, WriteOptions
from .io import XlembedError, check_output_dir, read_json, require, save_tensors, sha256_file, staged_dir, write_json_atomic
from .project import load_projection

STAGES = ("tokenize", "encode", "align", "project")


def random_rows(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """`n` rows drawn from N(mean, std²) per dimension, reproducible by seed."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, mean.numel()), generator=generator, dtype=torch.float64)
    return mean + std * noise


def build_matrix(zh_rows, zh_sum, zh_count, min_count: int, min_freq: int, seed: int):
    """Vocabulary and rows: [PAD] (zeros), [UNK] (the mean projected row),
    then every word with frequency >= min_freq, most frequent first.
    Returns (vocab, embeddings float32, projected uint8)."""
    keep = [k for k, (word, freq, _, _) in enumerate(zh_rows) if freq >= min_freq and word not in (PAD, UNK)]
    vocab = [PAD, UNK] + [zh_rows[k][0] for k in keep]
    counts = zh_count[keep]
    projected = counts >= min_count
    if not projected.any():
        raise XlembedError("no Chinese word got a projected vector: the corpus is too small, or --min-count/--min-freq too high")
    dim = zh_sum.shape[1]
    rows = torch.zeros((len(vocab), dim), dtype=torch.float64)
    word_rows = zh_sum[keep] / counts.clamp(min=1).unsqueeze(1).double()
    mean, std = word_rows[projected].mean(0), word_rows[projected].std(0, unbiased=False)
    n_filled = int((~projected).sum())
    word_rows[~projected] = random_rows(n_filled, mean, std, seed)
    rows[2:] = word_rows
    rows[1] = mean
    projected_flags = torch.zeros(len(vocab), dtype=torch.uint8)
    projected_flags[2:] = projected.to(torch.uint8)
    return vocab, rows.float(), projected_flags


def english_matrix(en_vocab, en_sum, en_count):
    keep = (en_count > 0).nonzero().squeeze(1)
    vocab = [en_vocab[k] for k in keep.tolist()]
    return vocab, (en_sum[keep] / en_count[keep].unsqueeze(1).double()).float()


def write(opts: WriteOptions, work: WorkDir, out: Path) -> dict:
    """Write embeddings.safetensors, vocab.txt, english.safetensors,
    english_vocab.txt and manifest.json into `out`; return the manifest."""
    start = time.perf_counter()
    check_output_dir(out)
    if opts.min_freq < 1:
        raise XlembedError("--min-freq must be at least 1")
    records = {stage: read_json(require(work.record(stage), stage)) for stage in STAGES}
    tensors, zh_rows, en_vocab = load_projection(work)
    with safe_open(str(work.projection), "pt") as f:
        projection_meta = f.metadata()
    min_count = int(projection_meta["min_count"])

    vocab, embeddings, projected = build_matrix(zh_rows, tensors["zh_sum"], tensors["zh_count"], min_count, opts.min_freq, opts.seed)
    english_vocab, english = english_matrix(en_vocab, tensors["en_sum"], tensors["en_count"])
    n_projected = int(projected.sum())
    counts = dict(
        pairs_read=records["tokenize"]["counts"]["pairs_read"],
        pairs_dropped=records["tokenize"]["counts"]["pairs_dropped"],
        pairs_kept=records["tokenize"]["counts"]["pairs_kept"],
        words_truncated=records["encode"]["counts"]["words_truncated"],
        vocab_size=len(vocab),
        projected_rows=n_projected,
        filled_rows=len(vocab) - 2 - n_projected,
        special_rows=2,
        english_vocab_size=len(english_vocab),
        dim=int(embeddings.shape[1]),
    )
    encode_options = records["encode"]["options"]
    metadata = dict(
        model=encode_options["model"],
        layer=str(encode_options["layer"]),
        strategy=records["project"]["options"]["strategy"],
        symmetrization=records["align"]["options"]["symmetrization"],
        seed=str(opts.seed),
        oov_fill="random",
        counts=json.dumps(counts),
        xlembed_version=__version__,
    )
    with staged_dir(out) as stage:
        o = OutDir(stage)
        save_tensors(o.embeddings, {"embeddings": embeddings, "projected": projected}, metadata)
        o.vocab.write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
        save_tensors(o.english, {"embeddings": english}, dict(model=metadata["model"], layer=metadata["layer"]))
        o.english_vocab.write_text("".join(w + "\n" for w in english_vocab), encoding="utf-8")
        seconds = {stage: records[stage]["seconds"] for stage in STAGES}
        seconds["write"] = round(time.perf_counter() - start, 3)
        manifest = dict(
            xlembed_version=__version__,
            parameters={stage: records[stage]["options"] for stage in STAGES} | {"write": vars(opts)},
            inputs=records["tokenize"]["inputs"],
            model_sha256=records["encode"]["model_sha256"],
            counts=counts,
            stage_counts={stage: records[stage]["counts"] for stage in STAGES},
            seconds=seconds,
            files={p.name: sha256_file(p) for p in (o.embeddings, o.vocab, o.english, o.english_vocab)},
        )
        write_json_atomic(o.manifest, manifest)
    return manifest
