"""An output directory read without torch: its description (`xlembed info`)
and its check against the manifest (`xlembed verify`), so that those
commands start at once. `Embeddings` (embeddings.py) is the full reader."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

from .config import PAD, UNK
from .errors import XlembedError
from .layout import OutDir
from .models import model_name


def _words(text: str) -> list[str]:
    """A word list as xlembed writes it: one word per line, each ended by a newline."""
    return text.split("\n")[:-1]


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    return _safetensors_header(blob).get("__metadata__", {}) or {}


def read_build(out: Path, attempts: int = 100) -> dict[str, bytes]:
    """The files of an output directory (those present), all from one build.

    They are opened through one handle on the directory; once all are open,
    the path must still lead to that same directory (inode): then they were
    all files of the live build at that moment, and builds are never changed
    once live. If a writer swapped a new build in meanwhile, read again."""
    o = OutDir(Path(out))
    for attempt in range(attempts):
        try:
            fd = os.open(o.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # missing, or between the two renames of the non-Linux fallback
            time.sleep(0.01)
            continue
        except NotADirectoryError:
            raise XlembedError(f"{o.root}: not a directory")
        handles = {}
        try:
            for path in o.all_files:
                try:
                    handles[path.name] = os.open(path.name, os.O_RDONLY, dir_fd=fd)
                except FileNotFoundError:
                    continue
            try:
                live = os.stat(o.root).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                live = False
            if live:
                files = {}
                for name, handle in handles.items():
                    with os.fdopen(handle, "rb") as f:
                        files[name] = f.read()
                    handles[name] = None
                return files
        finally:
            for handle in handles.values():
                if handle is not None:
                    os.close(handle)
            os.close(fd)
    raise XlembedError(f"{o.root}: output directory does not exist")


def _safetensors_header(blob: bytes) -> dict:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n])


def info_of(
    path: Path | None,
    shape: list[int],
    dtype: str,
    english_shape: list[int],
    metadata: dict,
    manifest: dict,
    words: list[str],
    top: int = 10,
) -> dict:
    """What `xlembed info` shows: shape, model, settings, row sources and the most frequent words."""
    m = metadata
    return dict(
        out=str(path),
        shape=shape,
        dtype=dtype,
        english_shape=english_shape,
        model=model_name(m["model"]) if "/" in m.get("model", "") else m.get("model"),  # before 0.5: a path
        model_sha256=m.get("model_sha256", manifest.get("model_sha256")),
        layer=m.get("layer"),
        strategy=m.get("strategy"),
        symmetrization=m.get("symmetrization"),
        oov_fill=m.get("oov_fill"),
        seed=int(m["seed"]) if str(m.get("seed", "")).lstrip("-").isdigit() else m.get("seed"),
        counts=manifest.get("counts", {}),
        distill=manifest.get("distill"),  # write --distill's record, or None
        xlembed_version=m.get("xlembed_version"),
        top_words=[w for w in words if w not in (PAD, UNK)][:top],
    )


def read_complete_build(out: Path | str) -> tuple[OutDir, dict[str, bytes]]:
    """The files of one build (read_build), with the four that every reader needs present."""
    o = OutDir(Path(out))
    files = read_build(o.root)
    for path in (o.embeddings, o.vocab, o.english, o.english_vocab):
        if path.name not in files:
            raise XlembedError(f"{path}: missing; not a complete xlembed output (run `xlembed write`)")
    return o, files


def describe(out: Path | str, top: int = 10) -> dict:
    """`Embeddings.load(out).info(top)`, from the files' headers, without loading the matrices."""
    o, files = read_complete_build(out)
    try:
        header, english = _safetensors_header(files[o.embeddings.name]), _safetensors_header(files[o.english.name])
        manifest = json.loads(files[o.manifest.name]) if o.manifest.name in files else {}
        matrix, english_matrix = header["embeddings"], english["embeddings"]
    except Exception as e:  # struct, json and a missing tensor raise several kinds
        raise XlembedError(f"{o.root}: cannot read the matrices: {str(e).splitlines()[0]}")
    metadata = header.get("__metadata__") or {}
    words = _words(files[o.vocab.name].decode("utf-8"))
    return info_of(o.root, matrix["shape"], matrix["dtype"], english_matrix["shape"], metadata, manifest, words, top)


def checksum_problems(o: OutDir, manifest: dict, files: dict[str, bytes]) -> list[str]:
    """Files missing, or differing from their checksum in manifest.json, or without one."""
    import hashlib

    problems = []
    for name, expected in manifest.get("files", {}).items():
        if name not in files:
            problems.append(f"{o.root / name}: missing")
        elif hashlib.sha256(files[name]).hexdigest() != expected:
            problems.append(f"{o.root / name}: checksum differs from manifest.json")
    for path in o.files:
        if path.name not in manifest.get("files", {}):
            problems.append(f"{o.manifest}: has no checksum for {path.name}")
    return problems


def verify(out: Path | str) -> list[str]:
    """Every problem of an output directory, one line each; empty when all is
    well: checksums against manifest.json, and rows, vocabulary lines, the
    `projected` flags and the English matrix agree."""
    import numpy as np
    from safetensors.numpy import load as load_tensors

    o = OutDir(Path(out))
    if not o.root.is_dir():
        return [f"{o.root}: not a directory"]
    files = read_build(o.root)
    if o.manifest.name not in files:
        return [f"{o.manifest}: missing"]
    try:
        manifest = json.loads(files[o.manifest.name])
    except (ValueError, UnicodeDecodeError) as e:
        return [f"{o.manifest}: not valid JSON: {e}"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        return [f"{o.manifest}: not an xlembed manifest (expected a JSON object with a 'files' table)"]
    if problems := checksum_problems(o, manifest, files):
        return problems
    problems = []
    try:
        tensors, english = load_tensors(files[o.embeddings.name]), load_tensors(files[o.english.name])
    except Exception as e:
        return [f"{o.root}: cannot read the matrices: {e}"]
    vocab = _words(files[o.vocab.name].decode("utf-8"))
    english_vocab = _words(files[o.english_vocab.name].decode("utf-8"))
    emb, projected, eng = tensors.get("embeddings"), tensors.get("projected"), english.get("embeddings")
    if emb is None or projected is None or eng is None:
        return [f"{o.root}: a tensor is missing (embeddings, projected, or english embeddings)"]
    if emb.ndim != 2 or emb.shape[0] != len(vocab):
        problems.append(f"{o.embeddings}: {tuple(emb.shape)} rows, but vocab.txt has {len(vocab)} lines")
    if projected.shape != (len(vocab),):
        problems.append(f"{o.embeddings}: projected has shape {tuple(projected.shape)}, expected ({len(vocab)},)")
    elif not set(np.unique(projected).tolist()) <= {0, 1}:
        problems.append(f"{o.embeddings}: projected holds values other than 0 and 1")
    if eng.ndim != 2 or eng.shape[0] != len(english_vocab):
        problems.append(f"{o.english}: {tuple(eng.shape)} rows, but english_vocab.txt has {len(english_vocab)} lines")
    if emb.ndim == 2 and eng.ndim == 2 and emb.shape[1] != eng.shape[1]:
        problems.append(f"{o.root}: Chinese rows have {emb.shape[1]} dimensions, English rows {eng.shape[1]}")
    user_vocab = manifest.get("parameters", {}).get("write", {}).get("vocab")
    if vocab[:2] != [PAD, UNK] and not user_vocab:
        problems.append(f"{o.vocab}: rows 0 and 1 must be {PAD} and {UNK}")
    tsv_words = [line.split("\t", 1)[0] for line in files[o.vocab_tsv.name].decode("utf-8").split("\n")[1:-1]]
    if tsv_words != vocab:
        problems.append(f"{o.vocab_tsv}: its words differ from vocab.txt")
    if len(set(vocab)) != len(vocab):
        problems.append(f"{o.vocab}: a word appears twice")
    counts = manifest.get("counts", {})
    if counts.get("vocab_size") != len(vocab):
        problems.append(f"{o.manifest}: vocab_size {counts.get('vocab_size')} but vocab.txt has {len(vocab)} lines")
    if projected.ndim == 1 and counts.get("projected_rows") != int(projected.sum()):
        problems.append(
            f"{o.manifest}: projected_rows {counts.get('projected_rows')} but the matrix marks {int(projected.sum())}"
        )
    return problems
