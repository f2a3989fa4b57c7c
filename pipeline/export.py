"""A built matrix in the formats other tools load, none of which needs
xlembed to read:

- word2vec      text (`V d` header, then `word v1 … vd`); gensim's
                KeyedVectors.load_word2vec_format(path) reads it;
- word2vec-bin  word2vec's binary format (float32); load_word2vec_format(path, binary=True);
- gensim        a gensim KeyedVectors file: KeyedVectors.load(path);
- model2vec     a directory that model2vec.StaticModel.from_pretrained(DIR)
                and sentence_transformers.SentenceTransformer(DIR) (a
                StaticEmbedding module) load: Chinese sentences encode in
                the English model's sentence space. jieba cannot travel
                inside a tokenizer.json, so its tokenizer takes the most
                probable segmentation over the vocabulary by the build's
                corpus frequencies (export_tokenizer, hf_tokenizer).

The word formats leave out [PAD] and [UNK] unless `special` is set (gensim
warns about [PAD]'s zero vector, and [UNK], the mean row, is everybody's
neighbour). The model2vec tokenizer needs [UNK]; there [PAD] and [UNK]
are zero rows, so a mean over a sentence's tokens points where the mean over
its known words points (model2vec drops [UNK] ids; sentence-transformers
averages them in, which only scales the mean). Nothing is ever written inside
an xlembed output directory (a rebuild would refuse the foreign file).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .config import PAD, UNK
from .config import ExportFormat as Format
from .errors import XlembedError
from .io import XLEMBED_OUTPUT, _temp_name, atomic_path, read_json, refuse_link

DEFAULT_SUFFIX = {Format.word2vec: ".word2vec.txt", Format.word2vec_bin: ".word2vec.bin", Format.gensim: ".kv",
                  Format.model2vec: ".model2vec"}
MODEL2VEC_FILES = {"config.json", "model.safetensors", "tokenizer.json", "modules.json", "README.md"}
STDOUT = Path("-")


class Rows(NamedTuple):
    words: list[str]  # [V']
    vectors: np.ndarray  # [V', d] float32


def default_target(out_dir: Path, format: Format, lang: str = "zh") -> Path:
    """Beside the output directory, never in it: runs/demo -> runs/demo.word2vec.txt
    (runs/demo.en.word2vec.txt for English)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + (".en" if lang == "en" else "") + DEFAULT_SUFFIX[Format(format)])


def export_rows(e, lang: str = "zh", special: bool = False) -> Rows:
    """The rows a word format holds: every word of `lang`, less [PAD] and [UNK] unless `special`."""
    words, vectors = (e.words, e.vectors) if lang == "zh" else (e.english_words, e.english_vectors)
    keep = [i for i, w in enumerate(words) if special or w not in (PAD, UNK)]
    return Rows([words[i] for i in keep], vectors[keep].float().numpy())


def check_target(target: Path, command: str = "export") -> None:
    """Refuse a target inside an xlembed output or work directory (or one itself)."""
    from .workspace import is_work_dir

    for directory in (target, target.parent):
        if is_work_dir(directory) and not (directory != target and target.is_dir()):  # `-o WORK/corpus.en`
            # would replace a stage's file; an existing directory below one is refused on its own terms
            raise XlembedError(f"{target}: inside the xlembed work directory {directory}; {command} writes beside "
                               "the output, never among the files of the stages")
        try:
            manifest = read_json(directory / "manifest.json")
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("kind") == XLEMBED_OUTPUT:
            raise XlembedError(f"{target}: inside the xlembed output directory {directory}; "
                               f"{command} writes beside it (a rebuild replaces that directory whole)")


def write_word2vec(rows: Rows, target: Path, binary: bool = False) -> None:
    """word2vec text (`-` = stdout) or binary (float32, each vector then a newline, as word2vec's C tool)."""
    header = f"{len(rows.words)} {rows.vectors.shape[1]}\n"
    if target == STDOUT:
        if binary:
            raise XlembedError("-o -: standard output takes the text formats only (word2vec)")
        _write_word2vec_text(rows, header, sys.stdout)
        sys.stdout.flush()
        return
    check_target(target)
    with atomic_path(target) as tmp:
        if binary:
            with open(tmp, "wb") as f:
                f.write(header.encode("utf-8"))
                for word, vector in zip(rows.words, rows.vectors.astype("<f4")):
                    f.write(word.encode("utf-8") + b" " + vector.tobytes() + b"\n")
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                _write_word2vec_text(rows, header, f)


def _write_word2vec_text(rows: Rows, header: str, f) -> None:
    f.write(header)
    for word, vector in zip(rows.words, rows.vectors.tolist()):
        f.write(word + " " + " ".join(f"{x:.6g}" for x in vector) + "\n")


def write_keyed_vectors(rows: Rows, target: Path) -> None:
    """A gensim KeyedVectors file (one file: no arrays stored beside it)."""
    try:
        from gensim.models import KeyedVectors
    except ImportError:
        raise XlembedError("--format gensim needs gensim (pip install gensim); word2vec and word2vec-bin do not")
    check_target(target)
    kv = KeyedVectors(rows.vectors.shape[1], dtype=np.float32)
    kv.add_vectors(rows.words, rows.vectors)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        kv.save(f, separately=[])


def export_tokenizer(e, words: list[str]):
    """The model2vec export's tokenizer over `words`: the most probable
    segmentation by the build's corpus frequencies (how jieba cuts; the
    transplant's tokenizer is the same), longest match where the output has
    no vocabulary rows."""
    from .hf_tokenizer import vocabulary_tokenizer

    if not e.rows:
        return vocabulary_tokenizer(words)
    freq = {r.word: r.freq for r in e.rows}
    return vocabulary_tokenizer(words, freqs=[freq.get(w, 0) for w in words])


def write_model2vec(e, target: Path, sif: float | None = None) -> int:
    """A model2vec / sentence-transformers directory, replacing `target` as a
    whole only when it is an earlier export of ours. Rows are multiplied by
    their SIF weight a / (a + p(word)), a = `sif` (None: e.default_sif(); 0: not
    weighted), so a mean of the rows points where Embeddings.encode(sif=…)'s
    weighted mean points; config.json's max_length is null, so model2vec
    (0.10 reads it) cuts no text at 512 tokens, as encode does not. Returns
    the rows."""
    from safetensors.numpy import save_file

    sif = e.sif_for(sif)
    check_target(target)
    _check_replaceable(target)
    weights = e.word_weights(sif)  # [V] float64
    vectors = e.vectors.float() * (weights / weights.max()).float().unsqueeze(1)  # [V, d]; scaled to <= 1: any a
    for special in (PAD, UNK):
        if special in e.word_index:
            vectors[e.word_index[special]] = 0
    if UNK not in e.word_index:  # the tokenizer's [UNK] is one past the last row
        vectors = torch.cat([vectors, torch.zeros(1, vectors.shape[1])])
    stage = _temp_name(target, ".partial")
    stage.mkdir(parents=True)
    try:
        save_file({"embeddings": vectors.numpy()}, str(stage / "model.safetensors"))
        e.sentence_tokenizer.save(str(stage / "tokenizer.json"))
        config = dict(model_type="model2vec", architectures=["StaticModel"], tokenizer_name=None, apply_pca=None,
                      apply_zipf=None, sif_coefficient=sif or None, hidden_dim=int(vectors.shape[1]),
                      seq_length=1000000, max_length=None, normalize=False, embedding_dtype="float32",
                      xlembed_export=_provenance(e))
        (stage / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        modules = [{"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"}]
        (stage / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
        (stage / "README.md").write_text(_model_card(e, sif), encoding="utf-8")
        _swap_in(stage, target)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return len(vectors)


def _provenance(e) -> dict:
    m = e.metadata
    return dict(source=str(e.path) if e.path else None, model=m.get("model"), layer=m.get("layer"),
                xlembed_version=m.get("xlembed_version"))


def _model_card(e, sif: float | None) -> str:
    return ("---\nlibrary_name: model2vec\nlanguage: zh\n---\n\n"
            f"# Chinese static embeddings in {e.metadata.get('model', 'an English model')}'s space\n\n"
            "Exported by xlembed from a matrix built on an English–Chinese parallel corpus. Chinese is cut into the\n"
            "vocabulary's words, the most probable cut by the build's corpus frequencies; a sentence is the mean of\n"
            "its words' rows"
            + (f" (rows weighted by SIF, a = {sif})" if sif else "") + ".\n\n"
            "```python\nfrom model2vec import StaticModel\nmodel = StaticModel.from_pretrained(\"THIS_DIR\")\n"
            "vectors = model.encode([\"我喜欢猫。\"])\n```\n")


def _check_replaceable(target: Path) -> None:
    refuse_link(target)
    if target.exists() and not target.is_dir():
        raise XlembedError(f"{target}: is a file; --format model2vec writes a directory")
    if target.is_dir() and any(target.iterdir()):
        try:
            ours = "xlembed_export" in read_json(target / "config.json")
        except (OSError, ValueError, TypeError):
            ours = False
        extra = {p.name for p in target.iterdir()} - MODEL2VEC_FILES
        if not ours or extra:
            raise XlembedError(f"{target}: directory is not empty and is not an earlier xlembed model2vec export; "
                               "refusing to replace it")


def _swap_in(stage: Path, target: Path) -> None:
    if target.exists():
        old = _temp_name(target, ".old")
        os.replace(target, old)
        os.replace(stage, target)
        shutil.rmtree(old)
    else:
        os.replace(stage, target)


def export(e, format: Format | str, target: Path, lang: str = "zh", special: bool = False,
           sif: float | None = None) -> int:
    """Write `e` (an Embeddings; not imported here, as embeddings imports this module) to `target`
    in `format`; returns the number of rows written."""
    format = Format(format)
    target = Path(target)
    if sif is not None and format != Format.model2vec:
        raise XlembedError(f"--sif {sif}: only with --format model2vec")
    if target == STDOUT and format != Format.word2vec:
        raise XlembedError(f"-o -: standard output takes the text format only (word2vec), not {format.value}")
    if format == Format.model2vec:
        if lang != "zh":
            raise XlembedError("--format model2vec exports the Chinese matrix (--lang zh)")
        return write_model2vec(e, target, sif)
    rows = export_rows(e, lang, special)
    if format == Format.gensim:
        write_keyed_vectors(rows, target)
    else:
        write_word2vec(rows, target, binary=format == Format.word2vec_bin)
    return len(rows.words)
