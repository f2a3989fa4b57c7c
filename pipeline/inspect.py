"""Looking into a built matrix: neighbours, a summary, and export."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .config import PAD, UNK, OutDir
from .evaluate import Matrix
from .io import XlembedError, atomic_path, read_json, read_words, require


def neighbors(out: Path, word: str, k: int = 10, lang: str = "zh") -> dict:
    """Nearest Chinese and English words (cosine) of a Chinese word
    (`lang="zh"`) or of an English word (`lang="en"`)."""
    if lang not in ("zh", "en"):
        raise XlembedError(f"--lang must be zh or en, got '{lang}'")
    m = Matrix.load(out)
    vocab, rows = (m.vocab, m.rows) if lang == "zh" else (m.english_vocab, m.english)
    if word not in vocab:
        raise XlembedError(f"'{word}' is not in {'vocab.txt' if lang == 'zh' else 'english_vocab.txt'} of {out}")
    i = vocab.index(word)
    query = rows[i]
    result = dict(word=word, lang=lang)
    if lang == "zh":
        result["projected"] = bool(m.projected[i])
    specials = {PAD, UNK}
    for side, side_vocab, side_rows in (("zh", m.vocab, m.rows), ("en", m.english_vocab, m.english)):
        scores = side_rows @ query
        found = []
        for j in scores.argsort(descending=True).tolist():
            if (side == lang and j == i) or side_vocab[j] in specials:
                continue
            found.append((side_vocab[j], round(float(scores[j]), 4)))
            if len(found) == k:
                break
        result[side] = found
    return result


def info(out: Path, top: int = 10) -> dict:
    """Shape, dtype, model and row sources from the metadata and manifest."""
    o = OutDir(Path(out))
    with safe_open(str(require(o.embeddings, "write")), "pt") as f:
        metadata = f.metadata()
        shape, dtype = list(f.get_slice("embeddings").get_shape()), f.get_slice("embeddings").get_dtype()
    manifest = read_json(require(o.manifest, "write"))
    with safe_open(str(o.english), "pt") as f:
        english_shape = list(f.get_slice("embeddings").get_shape())
    vocab = read_words(o.vocab)
    return dict(
        out=str(out), shape=shape, dtype=dtype, english_shape=english_shape,
        model=metadata.get("model"), layer=metadata.get("layer"), strategy=metadata.get("strategy"),
        symmetrization=metadata.get("symmetrization"), oov_fill=metadata.get("oov_fill"), seed=metadata.get("seed"),
        counts=manifest.get("counts", {}), xlembed_version=metadata.get("xlembed_version"),
        top_words=[w for w in vocab if w not in (PAD, UNK)][:top],
    )


def export_word2vec(out: Path, target: Path, lang: str = "zh") -> int:
    """The matrix in word2vec text format (`V d` header, then `word v1 … vd`),
    every row in order; returns the number of rows."""
    from safetensors.torch import load_file

    o = OutDir(Path(out))
    matrix_path, vocab_path = (o.embeddings, o.vocab) if lang == "zh" else (o.english, o.english_vocab)
    rows = load_file(str(require(matrix_path, "write")))["embeddings"]
    vocab = read_words(vocab_path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{rows.shape[0]} {rows.shape[1]}\n")
        for word, row in zip(vocab, rows.tolist()):
            f.write(word + " " + " ".join(f"{x:.6g}" for x in row) + "\n")
    return rows.shape[0]


def summary_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)
