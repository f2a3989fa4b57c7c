from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xlembed.io import write_json_atomic
from xlembed.layout import WorkDir

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TATOEBA = REPO / "data" / "tatoeba" / "cmn-eng.tsv"

# a WordPiece vocabulary small enough to reason about: "playing" -> play ##ing
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", "'",
              "i", "you", "he", "she", "we", "they", "a", "the", "is", "are", "like", "likes",
              "cat", "cats", "dog", "dogs", "book", "books", "read", "school", "go", "to",
              "play", "##ing", "##s", "##ed", "water", "drink", "tea", "good", "hello", "world",
              "run", "eat", "fish", "my", "his", "her", "t", "don", "do", "not"]


def make_tiny_bert(directory: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(TINY_VOCAB)}, do_lower_case=True).save_pretrained(
        str(directory)
    )
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), layers=4)


def write_fake_encoding(
    work: WorkDir, sentences_en: list[list[str]], vectors: dict[tuple[int, int], list[float]], shard_rows: int = 2
):
    """Encode-stage artifacts with known vectors: word j of sentence s gets
    vectors[(s, j)] (or no vector when missing); rows spread over shards of
    `shard_rows` rows."""
    dim = len(next(iter(vectors.values())))
    sent_offsets = np.zeros(len(sentences_en) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sentences_en], out=sent_offsets[1:])
    word_rows, rows = [], []
    for s, words in enumerate(sentences_en):
        for j in range(len(words)):
            if (s, j) in vectors:
                word_rows.append(len(rows))
                rows.append(vectors[(s, j)])
            else:
                word_rows.append(-1)
    work.vectors_dir.mkdir(parents=True, exist_ok=True)
    matrix = torch.tensor(rows, dtype=torch.float16)
    starts = list(range(0, len(rows), shard_rows)) + [len(rows)]
    for k in range(len(starts) - 1):
        save_file({"vectors": matrix[starts[k]:starts[k + 1]].contiguous()}, str(work.vectors_shard(k)))
    save_file({"sent_offsets": torch.from_numpy(sent_offsets), "word_rows": torch.tensor(word_rows, dtype=torch.int64),
               "shard_starts": torch.tensor(starts, dtype=torch.int64)}, str(work.vectors_index))
    write_json_atomic(work.record("encode"), {"dim": dim, "counts": {}, "options": {}, "seconds": 0})
