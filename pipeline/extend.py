"""Adding rows to a built matrix for new words, without its work directory."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .config import OutDir
from .io import XlembedError, read_json, read_lines, read_words, require, save_tensors, sha256_file, staged_dir, write_json_atomic
from .oov import OOV_STRATEGIES, Filler, fill_rows
from .write import vocab_tsv


def extend(out: Path, words_file: Path, oov: str | None = None) -> dict:
    """Append rows for the words of `words_file` (one per line, order kept)
    that the matrix lacks, filled by `oov` (default: the matrix's own
    strategy) from its projected rows; random rows are seeded by the
    matrix's seed and its row count. Replaces `out` atomically; returns
    what was added."""
    o = OutDir(Path(out))
    manifest = read_json(require(o.manifest, "write"))
    tensors = load_file(str(o.embeddings))
    with safe_open(str(o.embeddings), "pt") as f:
        metadata = f.metadata()
    oov = oov or metadata.get("oov_fill", "random")
    if oov not in OOV_STRATEGIES:
        raise XlembedError(f"--oov must be one of {', '.join(OOV_STRATEGIES)}, got '{oov}'")
    vocab = read_words(require(o.vocab, "write"))
    tsv = read_words(require(o.vocab_tsv, "write"))
    known = set(vocab)
    new_words = []
    for lineno, line in enumerate(read_lines(words_file), start=1):
        word = line.strip()
        if not word or " " in word:
            raise XlembedError(f"{words_file}:{lineno}: expected one word per line")
        if word not in known:
            known.add(word)
            new_words.append(word)

    rows, projected = tensors["embeddings"], tensors["projected"].bool()
    freq = [int(line.split("\t")[1]) for line in tsv[1:]]
    projected_ids = projected.nonzero().squeeze(1).tolist()
    if not projected_ids:
        raise XlembedError(f"{o.embeddings}: has no projected rows to build new rows from")
    base = rows[projected_ids].double()
    filler = Filler([vocab[i] for i in projected_ids], base, [freq[i] for i in projected_ids])
    seed = int(metadata.get("seed", 0)) * 1_000_003 + len(vocab)  # another stream than write's, still reproducible
    new_rows, sources = fill_rows(new_words, oov, filler, base.mean(0), base.std(0, unbiased=False), seed)

    counts = manifest["counts"]
    counts["vocab_size"] = len(vocab) + len(new_words)
    counts["filled_rows"] += len(new_words)
    for src in sources:
        counts.setdefault("filled_by", {}).setdefault(src, 0)
        counts["filled_by"][src] += 1
    metadata["counts"] = json.dumps(counts)
    with staged_dir(out) as stage:
        s = OutDir(stage)
        for path in (o.english, o.english_vocab):
            shutil.copy2(path, stage / path.name)
        save_tensors(s.embeddings, {"embeddings": torch.cat([rows, new_rows.float()]),
                                    "projected": torch.cat([tensors["projected"], torch.zeros(len(new_words), dtype=torch.uint8)])},
                     metadata)
        s.vocab.write_text("".join(w + "\n" for w in vocab + new_words), encoding="utf-8")
        new_lines = vocab_tsv(new_words, [(0, src, "", 0.0) for src in sources]).split("\n", 1)[1]  # without its header
        s.vocab_tsv.write_text("\n".join(tsv) + "\n" + new_lines, encoding="utf-8")
        manifest.setdefault("extended", []).append(dict(words_file=str(words_file), oov=oov, added=len(new_words)))
        manifest["files"] = {p.name: sha256_file(p) for p in s.files}
        write_json_atomic(s.manifest, manifest)
    return dict(added=len(new_words), already_present=sum(1 for _ in read_lines(words_file)) - len(new_words),
                oov=oov, sources={src: sources.count(src) for src in set(sources)}, vocab_size=len(vocab) + len(new_words))
