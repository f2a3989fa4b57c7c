"""Shared types: stage options and artifact paths.

Every stage is a function from the artifacts of `WorkDir` (and its options
dataclass) to new artifacts. The defaults here are the defaults of the CLI.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .io import XlembedError

SYMMETRIZATIONS = ("intersect", "union", "grow-diag-final-and")
STRATEGIES = ("argmax", "weighted")
PAD, UNK = "[PAD]", "[UNK]"


@dataclass
class TokenizeOptions:
    en: Path | None = None  # English text file, one sentence per line
    zh: Path | None = None  # Chinese text file, aligned with `en`
    tsv: Path | None = None  # or one TSV file holding both sides
    en_column: int = 1  # 1-based column of English in the TSV
    zh_column: int = 2  # 1-based column of Chinese in the TSV
    model: Path | None = None  # its tokenizer pre-tokenizes English; None = MiniLM
    user_dict: Path | None = None  # jieba user dictionary
    hmm: bool = True  # jieba HMM for unknown words


@dataclass
class EncodeOptions:
    model: Path | None = None  # local model directory; None = MiniLM
    layer: str = "mean-last4"  # or a hidden layer index (-1 = last); measured best (bench/RESULTS.md)
    batch_size: int = 128  # measured: 4% faster than 64 on 2 CPU cores (bench/RESULTS.md)
    max_length: int = 128  # word pieces per sentence, special tokens included
    device: str = "auto"  # auto | cpu | cuda
    shard_rows: int = 65536  # word vectors per shard file


@dataclass
class AlignOptions:
    symmetrization: str = "union"  # measured best for word similarity (bench/RESULTS.md)
    align_model: int = 3  # eflomal: 1 = IBM1, 2 = +HMM, 3 = +fertility
    iterations: float = 1.0  # eflomal: iterations relative to its default
    samplers: int = 6  # eflomal: independent samplers (its default is 3; 6 measured better)
    null_prior: float = 0.2  # eflomal: prior probability of a NULL link


@dataclass
class ProjectOptions:
    strategy: str = "argmax"  # argmax (the aligned English word with highest p) | weighted
    min_count: int = 1  # contexts needed for a projected row
    stopwords: Path | None = None  # words dropped from the vocabulary


@dataclass
class WriteOptions:
    min_freq: int = 1  # corpus frequency needed to get a row
    seed: int = 0  # seed of the random OOV rows
    oov: str = "random"  # how rows without a projected vector are filled: random | chars | pinyin
    vocab: Path | None = None  # the user's vocabulary (one word per line, order kept) instead of the corpus's


STAGE_OPTIONS = {
    "tokenize": TokenizeOptions,
    "encode": EncodeOptions,
    "align": AlignOptions,
    "project": ProjectOptions,
    "write": WriteOptions,
}


def option_names(stage: str) -> set[str]:
    return {f.name for f in fields(STAGE_OPTIONS[stage])}


def load_config(path: Path) -> dict[str, dict]:
    """Read a TOML config: one table per stage, keys are option names
    (underscores or dashes). Unknown tables or keys are errors."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XlembedError(f"{path}: config file does not exist")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise XlembedError(f"{path}: not a valid TOML file: {e}")
    config = {}
    for stage, table in data.items():
        if stage not in STAGE_OPTIONS or not isinstance(table, dict):
            raise XlembedError(f"{path}: unknown table [{stage}]; expected one of {', '.join(STAGE_OPTIONS)}")
        known = option_names(stage)
        config[stage] = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in known:
                raise XlembedError(f"{path}: unknown option '{key}' in [{stage}]")
            config[stage][name] = value
    return config


@dataclass(frozen=True)
class WorkDir:
    """Intermediate artifacts of one run, all under `root`."""

    root: Path

    # tokenize
    @property
    def corpus_en(self) -> Path:
        return self.root / "corpus.en"

    @property
    def corpus_zh(self) -> Path:
        return self.root / "corpus.zh"

    # encode
    @property
    def vectors_dir(self) -> Path:
        return self.root / "vectors"

    @property
    def vectors_index(self) -> Path:
        return self.vectors_dir / "index.safetensors"

    @property
    def vectors_progress(self) -> Path:
        """Shards completed by an encode that has not finished."""
        return self.vectors_dir / "progress.json"

    def vectors_shard(self, k: int) -> Path:
        return self.vectors_dir / f"shard-{k:05d}.safetensors"

    # align
    @property
    def links_forward(self) -> Path:
        return self.root / "align.forward"

    @property
    def links_reverse(self) -> Path:
        return self.root / "align.reverse"

    @property
    def links(self) -> Path:
        return self.root / "align.links"

    @property
    def lexicon(self) -> Path:
        return self.root / "lexicon.tsv"

    # project
    @property
    def projection(self) -> Path:
        return self.root / "projection.safetensors"

    @property
    def projection_zh_vocab(self) -> Path:
        return self.root / "projection.zh.tsv"

    @property
    def projection_en_vocab(self) -> Path:
        return self.root / "projection.en.tsv"

    def record(self, stage: str) -> Path:
        """What a stage was computed from and what it counted."""
        return self.root / f"{stage}.json"


@dataclass(frozen=True)
class OutDir:
    """The output contract."""

    root: Path

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings.safetensors"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab.txt"

    @property
    def vocab_tsv(self) -> Path:
        """Per-row provenance: word, freq, source, aligned English word, p, pinyin."""
        return self.root / "vocab.tsv"

    @property
    def english(self) -> Path:
        return self.root / "english.safetensors"

    @property
    def english_vocab(self) -> Path:
        return self.root / "english_vocab.txt"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def files(self) -> tuple[Path, ...]:
        """The files whose checksums manifest.json keeps."""
        return (self.embeddings, self.vocab, self.vocab_tsv, self.english, self.english_vocab)
