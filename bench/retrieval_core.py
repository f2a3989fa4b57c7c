"""What the retrieval benchmarks share: held-out pairs, the English model's
own sentence embeddings, and P@1 in both directions.

    from retrieval_core import read_heldout, english_sentence_vectors, precision_at_1
    pairs = read_heldout(Path("/work/xl-bench/tatoeba/heldout.tsv"))   # bench/splits.py wrote it
    en = english_sentence_vectors(model_dir, [p.en for p in pairs])     # [n, d], mean pooling
    zh = ...                                                            # [n, d], any Chinese encoder
    print(precision_at_1(zh, en))                                       # Retrieval(zh_to_en=…, en_to_zh=…)
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch


class HeldoutPair(NamedTuple):
    en: str
    zh: str


class Retrieval(NamedTuple):
    zh_to_en: float  # P@1: the nearest English sentence (cosine) is the translation
    en_to_zh: float


def read_heldout(path: Path) -> list[HeldoutPair]:
    """english<TAB>chinese per line (bench/splits.py's heldout.tsv, or any such TSV)."""
    pairs = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 2:
                pairs.append(HeldoutPair(cols[0], cols[1]))
    return pairs


@torch.no_grad()
def english_sentence_vectors(
    model_dir: Path, sentences: list[str], batch_size: int = 64, max_length: int = 256
) -> torch.Tensor:
    """The English model's sentence embeddings as it pools them for
    sentence-transformers (mean over word pieces of the last layer,
    attention mask applied). Returns [n, d] float32."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # batches of similar length: less padding
    out = torch.zeros((len(sentences), model.config.hidden_size))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([sentences[i] for i in chunk], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        hidden = model(**batch).last_hidden_state  # [b, t, d]
        mask = batch["attention_mask"].unsqueeze(-1).float()  # [b, t, 1]
        out[chunk] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float()
    return out


def precision_at_1(zh: torch.Tensor, en: torch.Tensor) -> Retrieval:
    """zh [n, d] and en [n, d], row i of each the same pair. A zero row
    (a sentence with no known word) never ranks first by accident: its
    cosines are all 0."""
    zh = torch.nn.functional.normalize(zh.float(), dim=1)
    en = torch.nn.functional.normalize(en.float(), dim=1)
    scores = zh @ en.T  # [n, n]
    gold = torch.arange(len(zh))
    return Retrieval(zh_to_en=(scores.argmax(1) == gold).float().mean().item(),
                     en_to_zh=(scores.argmax(0) == gold).float().mean().item())
