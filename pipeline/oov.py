"""Rows for words without a projected vector (out of vocabulary, OOV).

- `random`: a row drawn from N(mean, std²) of the projected rows, per
  dimension, reproducible by seed. Carries no meaning.
- `chars`: Chinese words are built from characters. Each character of the
  word stands for the projected words that contain it (their rows' mean,
  weighted by corpus frequency); the row is the mean over the characters,
  its distance from the mean projected row scaled to the median distance
  of projected rows (averaging shrinks it, and contextual vectors share a
  common direction, so unscaled compositions all look alike).
- `pinyin`: first a variant spelling: projected words that sound the same
  (pypinyin, tone marks) and share a character (帐号 → 账号); else `chars`.
Words neither strategy reaches fall back to `random`. Each filled row
records its source.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import torch

@lru_cache(maxsize=65536)
def pinyin_of(word: str) -> str:
    """Tone-marked pinyin, syllables separated by spaces (pypinyin)."""
    from pypinyin import Style, lazy_pinyin

    return " ".join(lazy_pinyin(word, style=Style.TONE, errors="default"))


def random_rows(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """`n` rows drawn from N(mean, std²) per dimension, reproducible by seed."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, mean.numel()), generator=generator, dtype=torch.float64)
    return mean + std * noise


class Filler:
    """Composes rows for new words from projected words and their rows."""

    def __init__(self, words: list[str], rows: torch.Tensor, freq: list[int]):
        self.words, self.rows = words, rows.double()
        self.weights = torch.tensor(freq, dtype=torch.float64).clamp(min=1)
        self.index = {w: i for i, w in enumerate(words)}
        self.by_char: dict[str, list[int]] = defaultdict(list)
        for i, w in enumerate(words):
            for c in set(w):
                self.by_char[c].append(i)
        self._by_sound: dict[str, list[int]] | None = None
        self.centre = self.rows.mean(0)
        self.spread = (self.rows - self.centre).norm(dim=1).median()

        self._char_sums: dict[str, tuple[torch.Tensor, float]] = {}

    def _mean(self, ids: list[int]) -> torch.Tensor:
        w = self.weights[ids].unsqueeze(1)
        return (self.rows[ids] * w).sum(0) / w.sum()

    def _char_sum(self, c: str) -> tuple[torch.Tensor, float]:
        """(frequency-weighted sum of the rows of the words holding c, sum of the weights)."""
        if c not in self._char_sums:
            ids = self.by_char[c]
            w = self.weights[ids]
            self._char_sums[c] = ((self.rows[ids] * w.unsqueeze(1)).sum(0), float(w.sum()))
        return self._char_sums[c]

    def chars(self, word: str, leave_out: bool = False) -> torch.Tensor | None:
        """The composition of `word`'s characters; with `leave_out`, from
        the other projected words only (None where no other word has them)."""
        own = self.index.get(word) if leave_out else None
        parts = []
        for c in word:
            if not self.by_char.get(c):
                continue
            total, weight = self._char_sum(c)
            if own is not None:
                total, weight = total - self.weights[own] * self.rows[own], weight - float(self.weights[own])
            if weight > 0:
                parts.append(total / weight)
        if not parts:
            return None
        deviation = torch.stack(parts).mean(0) - self.centre
        return self.centre + deviation * (self.spread / deviation.norm().clamp(min=1e-12))

    def pinyin(self, word: str) -> torch.Tensor | None:
        if self._by_sound is None:
            self._by_sound = defaultdict(list)
            for i, w in enumerate(self.words):
                self._by_sound[pinyin_of(w)].append(i)
        ids = [i for i in self._by_sound.get(pinyin_of(word), []) if self.words[i] != word and set(self.words[i]) & set(word)]
        return self._mean(ids) if ids else None

    def fill(self, word: str, strategy: str) -> tuple[torch.Tensor | None, str]:
        """(row, source) for a word without a projected row; (None, "random")
        when the strategy cannot reach it."""
        if strategy == "pinyin":
            row = self.pinyin(word)
            if row is not None:
                return row, "pinyin"
        if strategy in ("chars", "pinyin"):
            row = self.chars(word)
            if row is not None:
                return row, "chars"
        return None, "random"


def fill_rows(words: list[str], strategy: str, filler: Filler | None, mean: torch.Tensor, std: torch.Tensor,
              seed: int) -> tuple[torch.Tensor, list[str]]:
    """Rows (float64) and sources for words without a projected row: the
    strategy's rows, and random rows (drawn in the words' order with `seed`)
    where it cannot reach. `filler` may be None for `random`."""
    rows = torch.zeros((len(words), mean.numel()), dtype=torch.float64)
    sources, need_random = [], []
    for i, word in enumerate(words):
        row, source = filler.fill(word, strategy) if filler is not None else (None, "random")
        if row is None:
            need_random.append(i)
        else:
            rows[i] = row
        sources.append(source)
    rows[need_random] = random_rows(len(need_random), mean, std, seed)
    return rows, sources
