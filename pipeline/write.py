"""Stage 5: build the vocabulary, fill rows without a projected vector, and
write the output contract (see README) into a directory that replaces
`--out` as a whole, or not at all."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import torch
from safetensors import safe_open

from . import __version__
from .config import PAD, UNK, OutDir, WorkDir, WriteOptions
from .io import XlembedError, check_output_dir, read_json, read_lines, require, save_tensors, sha256_file, staged_dir, write_json_atomic
from .oov import OOV_STRATEGIES, Filler, fill_rows, pinyin_of
from .project import load_projection

STAGES = ("tokenize", "encode", "align", "project")


def read_vocab(path: Path) -> list[str]:
    """A user's vocabulary: one word per line, order kept."""
    vocab, seen = [], {}
    for lineno, line in enumerate(read_lines(path), start=1):
        word = line.strip()
        if not word or " " in word:
            raise XlembedError(f"{path}:{lineno}: expected one word per line")
        if word in seen:
            raise XlembedError(f"{path}:{lineno}: '{word}' is already on line {seen[word]}")
        seen[word] = lineno
        vocab.append(word)
    if not vocab:
        raise XlembedError(f"{path}: empty vocabulary")
    return vocab


def build_matrix(zh_rows, zh_sum, zh_count, min_count: int, min_freq: int, seed: int,
                 oov: str = "random", vocab: list[str] | None = None):
    """Vocabulary, rows and where each row came from.

    The vocabulary is `vocab` as given, or [PAD], [UNK], then every corpus
    word with frequency >= min_freq, most frequent first. [PAD] is zeros,
    [UNK] the mean projected row; words with >= min_count aligned contexts
    get their projected row, the others a row from the `oov` strategy
    (random rows drawn in vocabulary order with `seed`, scaled to the
    per-dimension mean and std of the projected rows).
    Returns (vocab, embeddings float32, projected uint8, rows_info), where
    rows_info[i] = (freq, source, aligned English word, p(en|zh))."""
    if oov not in OOV_STRATEGIES:
        raise XlembedError(f"--oov must be one of {', '.join(OOV_STRATEGIES)}, got '{oov}'")
    projected_ids = [k for k, (word, *_) in enumerate(zh_rows) if zh_count[k] >= min_count and word not in (PAD, UNK)]
    if not projected_ids:
        raise XlembedError("no Chinese word got a projected vector: the corpus is too small, or --min-count too high")
    means = zh_sum[projected_ids] / zh_count[projected_ids].unsqueeze(1).double()
    mean, std = means.mean(0), means.std(0, unbiased=False)
    projected_index = {zh_rows[k][0]: i for i, k in enumerate(projected_ids)}
    in_corpus = {row[0]: row for row in zh_rows}
    if vocab is None:
        vocab = [PAD, UNK] + [w for w, freq, *_ in zh_rows if freq >= min_freq and w not in (PAD, UNK)]
    filler = None if oov == "random" else Filler([zh_rows[k][0] for k in projected_ids], means, [zh_rows[k][1] for k in projected_ids])

    rows = torch.zeros((len(vocab), means.shape[1]), dtype=torch.float64)
    sources, to_fill = [], []
    for i, word in enumerate(vocab):
        if word in (PAD, UNK):
            sources.append("special")
            if word == UNK:
                rows[i] = mean
        elif word in projected_index:
            sources.append("projected")
            rows[i] = means[projected_index[word]]
        else:
            sources.append(None)  # set below
            to_fill.append(i)
    filled, filled_sources = fill_rows([vocab[i] for i in to_fill], oov, filler, mean, std, seed)
    rows[to_fill] = filled
    for i, source in zip(to_fill, filled_sources):
        sources[i] = source
    projected = torch.tensor([s == "projected" for s in sources], dtype=torch.uint8)
    rows_info = [(in_corpus[w][1], s, in_corpus[w][2], in_corpus[w][3]) if w in in_corpus else (0, s, "", 0.0)
                 for w, s in zip(vocab, sources)]
    return vocab, rows.float(), projected, rows_info


def vocab_tsv(vocab: list[str], rows_info) -> str:
    """Per-row provenance: word, corpus frequency, source, aligned English
    word and p(en|zh), pinyin with tone marks."""
    lines = ["word\tfreq\tsource\taligned_en\tp_en_given_zh\tpinyin\n"]
    for word, (freq, source, en, p) in zip(vocab, rows_info):
        sound = "" if source == "special" else pinyin_of(word)
        lines.append(f"{word}\t{freq}\t{source}\t{en}\t{p:.6g}\t{sound}\n")
    return "".join(lines)


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

    user_vocab = read_vocab(opts.vocab) if opts.vocab is not None else None
    vocab, embeddings, projected, rows_info = build_matrix(
        zh_rows, tensors["zh_sum"], tensors["zh_count"], min_count, opts.min_freq, opts.seed, opts.oov, user_vocab)
    english_vocab, english = english_matrix(en_vocab, tensors["en_sum"], tensors["en_count"])
    sources = Counter(source for _, source, _, _ in rows_info)
    counts = dict(
        pairs_read=records["tokenize"]["counts"]["pairs_read"],
        pairs_dropped=records["tokenize"]["counts"]["pairs_dropped"],
        pairs_kept=records["tokenize"]["counts"]["pairs_kept"],
        words_truncated=records["encode"]["counts"]["words_truncated"],
        vocab_size=len(vocab),
        projected_rows=sources["projected"],
        filled_rows=sources["chars"] + sources["pinyin"] + sources["random"],
        filled_by={name: sources[name] for name in OOV_STRATEGIES},
        special_rows=sources["special"],
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
        oov_fill=opts.oov,
        counts=json.dumps(counts),
        xlembed_version=__version__,
    )
    with staged_dir(out) as stage:
        o = OutDir(stage)
        save_tensors(o.embeddings, {"embeddings": embeddings, "projected": projected}, metadata)
        o.vocab.write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
        o.vocab_tsv.write_text(vocab_tsv(vocab, rows_info), encoding="utf-8")
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
            files={p.name: sha256_file(p) for p in o.files},
        )
        write_json_atomic(o.manifest, manifest)
    return manifest
