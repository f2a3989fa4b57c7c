"""Using a built matrix from Python.

    from pipeline.api import load
    embedding, tokenizer = load("runs/demo")              # frozen nn.Embedding + tokenizer
    ids, mask = tokenizer.batch_encode(["我喜欢猫。", "你好"])
    vectors = embedding(ids)                              # [2, T, d]

The tokenizer segments Chinese exactly as the build did (NFKC, control
characters as spaces, jieba with the same user dictionary and HMM setting,
read from manifest.json) and maps words to row ids: unknown words to
[UNK], padding with [PAD].
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import PAD, UNK, OutDir
from .io import XlembedError, read_json, read_words, require


class ChineseTokenizer:
    def __init__(self, vocab: list[str], user_dict: Path | None = None, hmm: bool = True):
        from .tokenize import chinese_splitter

        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.pad_id = self.ids.get(PAD)
        self.unk_id = self.ids.get(UNK)
        self.split = chinese_splitter(user_dict, hmm)

    @classmethod
    def from_output(cls, out: Path) -> "ChineseTokenizer":
        o = OutDir(Path(out))
        options = read_json(require(o.manifest, "write"))["parameters"]["tokenize"]
        user_dict = options.get("user_dict")
        return cls(read_words(o.vocab), Path(user_dict) if user_dict else None, options.get("hmm", True))

    def tokenize(self, text: str) -> list[str]:
        return self.split(text)

    def encode(self, text: str) -> list[int]:
        """Row ids of the words of `text`; unknown words become [UNK] (or are
        left out when the vocabulary has no [UNK])."""
        ids = (self.ids.get(w, self.unk_id) for w in self.split(text))
        return [i for i in ids if i is not None]

    def batch_encode(self, texts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, T] padded with [PAD], mask [B, T] True at words)."""
        if self.pad_id is None:
            raise XlembedError("the vocabulary has no [PAD] row to pad with")
        encoded = [self.encode(t)[:max_length] for t in texts]
        width = max((len(e) for e in encoded), default=0)
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.bool)
        for i, e in enumerate(encoded):
            ids[i, :len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, :len(e)] = True
        return ids, mask

    def __len__(self) -> int:
        return len(self.vocab)


def load_embedding(out: Path, freeze: bool = True) -> torch.nn.Embedding:
    """The matrix as an nn.Embedding (padding_idx = the [PAD] row)."""
    o = OutDir(Path(out))
    weights = load_file(str(require(o.embeddings, "write")))["embeddings"]
    vocab = read_words(o.vocab)
    pad = vocab.index(PAD) if PAD in vocab else None
    return torch.nn.Embedding.from_pretrained(weights, freeze=freeze, padding_idx=pad)


def load(out: Path, freeze: bool = True) -> tuple[torch.nn.Embedding, ChineseTokenizer]:
    return load_embedding(out, freeze), ChineseTokenizer.from_output(out)
