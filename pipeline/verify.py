"""Check an output directory against its manifest and the output contract."""
from __future__ import annotations

import json
from pathlib import Path

from .config import PAD, UNK, OutDir
from .io import read_words, sha256_file


def verify(out: Path) -> list[str]:
    """Every problem found, as one line each; empty when all is well."""
    o = OutDir(Path(out))
    if not o.root.is_dir():
        return [f"{o.root}: not a directory"]
    try:
        manifest = json.loads(o.manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{o.manifest}: missing"]
    except (ValueError, UnicodeDecodeError) as e:
        return [f"{o.manifest}: not valid JSON: {e}"]
    problems = []
    for name, expected in manifest.get("files", {}).items():
        path = o.root / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path}: checksum differs from manifest.json")
    for path in o.files:
        if path.name not in manifest.get("files", {}):
            problems.append(f"{o.manifest}: has no checksum for {path.name}")
    if problems:
        return problems

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors, english = load_file(str(o.embeddings)), load_file(str(o.english))
    except (SafetensorError, OSError) as e:
        return [f"{o.root}: cannot read the matrices: {e}"]
    vocab = read_words(o.vocab)
    english_vocab = read_words(o.english_vocab)
    emb, projected, eng = tensors.get("embeddings"), tensors.get("projected"), english.get("embeddings")
    if emb is None or projected is None or eng is None:
        return [f"{o.root}: a tensor is missing (embeddings, projected, or english embeddings)"]
    if emb.ndim != 2 or emb.shape[0] != len(vocab):
        problems.append(f"{o.embeddings}: {tuple(emb.shape)} rows, but vocab.txt has {len(vocab)} lines")
    if projected.shape != (len(vocab),):
        problems.append(f"{o.embeddings}: projected has shape {tuple(projected.shape)}, expected ({len(vocab)},)")
    elif not set(projected.unique().tolist()) <= {0, 1}:
        problems.append(f"{o.embeddings}: projected holds values other than 0 and 1")
    if eng.ndim != 2 or eng.shape[0] != len(english_vocab):
        problems.append(f"{o.english}: {tuple(eng.shape)} rows, but english_vocab.txt has {len(english_vocab)} lines")
    if emb.ndim == 2 and eng.ndim == 2 and emb.shape[1] != eng.shape[1]:
        problems.append(f"{o.root}: Chinese rows have {emb.shape[1]} dimensions, English rows {eng.shape[1]}")
    user_vocab = manifest.get("parameters", {}).get("write", {}).get("vocab")
    if vocab[:2] != [PAD, UNK] and not user_vocab:
        problems.append(f"{o.vocab}: rows 0 and 1 must be {PAD} and {UNK}")
    tsv_words = [line.split("\t", 1)[0] for line in o.vocab_tsv.read_text(encoding="utf-8").split("\n")[1:-1]]
    if tsv_words != vocab:
        problems.append(f"{o.vocab_tsv}: its words differ from vocab.txt")
    if len(set(vocab)) != len(vocab):
        problems.append(f"{o.vocab}: a word appears twice")
    counts = manifest.get("counts", {})
    if counts.get("vocab_size") != len(vocab):
        problems.append(f"{o.manifest}: vocab_size {counts.get('vocab_size')} but vocab.txt has {len(vocab)} lines")
    if projected.ndim == 1 and counts.get("projected_rows") != int(projected.sum()):
        problems.append(f"{o.manifest}: projected_rows {counts.get('projected_rows')} but the matrix marks {int(projected.sum())}")
    return problems
