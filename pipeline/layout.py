"""Where every artifact lives: the work directory's files (WorkDir) and the
output directory's (OutDir). Imports nothing of xlembed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def sentence_vectors(self) -> Path:
        """The English model's own embedding of each sentence (as it pools them), kept by encode."""
        return self.root / "sentences.safetensors"

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

    @property
    def scratch(self) -> Path:
        """Temporary files of child processes (eflomal's); cleared by the next run."""
        return self.root / "tmp"

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

    @property
    def lock(self) -> Path:
        """Held (flock) by the xlembed process working here."""
        return self.root / ".lock"

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

    @property
    def all_files(self) -> tuple[Path, ...]:
        """Everything xlembed writes into an output directory."""
        return self.files + (self.manifest,)

