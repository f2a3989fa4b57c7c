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
- `context`: the word's company, à la carte (Khodak et al. 2018): the mean
  of the projected rows within CONTEXT_WINDOW words of its occurrences in
  a text (the corpus's Chinese side and the user's --context), mapped to a
  row by a linear map fitted on projected words (their contexts' mean to
  their own row), scaled as compositions are, then averaged with the
  `chars` composition where there is one. A word no text holds: `chars`.
Words neither strategy reaches fall back to `random`. Each filled row
records its source.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Iterable, NamedTuple

import numpy as np
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


CHUNK = 8192  # (word, character) pairs per vectorised step


class Filler:
    """Composes rows for new words from projected words and their rows."""

    def __init__(self, words: list[str], rows: torch.Tensor, freq: list[int]):
        self.words, self.rows = words, rows  # [P, d] float32 or float64: compositions come out in the same dtype
        self.weights = torch.tensor(freq, dtype=torch.float64).clamp(min=1)
        self.index = {w: i for i, w in enumerate(words)}
        self.by_char: dict[str, list[int]] = defaultdict(list)
        for i, w in enumerate(words):
            for c in set(w):
                self.by_char[c].append(i)
        self._by_sound: dict[str, list[int]] | None = None
        self.centre = self.rows.mean(0)
        self.spread = (self.rows - self.centre).norm(dim=1).median()
        # per character: the frequency-weighted sum of the rows of the words holding it, and of the weights
        self.chars_index = {c: k for k, c in enumerate(self.by_char)}
        holder = torch.tensor(
            [i for ids in self.by_char.values() for i in ids], dtype=torch.int64
        )  # [H] (word, character) pairs
        char_of = torch.tensor(
            [k for k, ids in enumerate(self.by_char.values()) for _ in ids], dtype=torch.int64
        )  # [H]
        self.char_sums = torch.zeros((len(self.by_char), self.rows.shape[1]), dtype=torch.float64)  # [C, d]
        for start in range(0, len(holder), CHUNK):  # in chunks: H x d would be several times the rows
            ids = holder[start:start + CHUNK]
            self.char_sums.index_add_(0, char_of[start:start + CHUNK], self.rows[ids] * self.weights[ids].unsqueeze(1))
        self.char_weights = torch.zeros(len(self.by_char), dtype=torch.float64).index_add_(
            0, char_of, self.weights[holder]
        )  # [C]

    def _mean(self, ids: list[int]) -> torch.Tensor:
        w = self.weights[ids].unsqueeze(1)
        return (self.rows[ids] * w).sum(0) / w.sum()

    def compose(
        self, words: list[str], leave_out: bool = False, chunk: int = CHUNK
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each word's characters composed: the mean over its characters
        (in order, repeats counted) of the frequency-weighted mean row of the
        projected words holding that character; its distance from the mean
        projected row scaled to the median distance. With `leave_out`, a
        projected word's own row is left out of its characters' means.
        Returns rows [N, d] in the rows' dtype and whether each word got one [N] bool."""
        n, d = len(words), self.rows.shape[1]
        pairs = [(i, self.chars_index[c]) for i, w in enumerate(words) for c in w if c in self.chars_index]
        own = torch.tensor([self.index.get(w, -1) if leave_out else -1 for w in words], dtype=torch.int64)  # [N]
        sums = torch.zeros((n, d), dtype=self.rows.dtype)  # [N, d] sum of the character means
        parts = torch.zeros(n, dtype=torch.float64)  # [N] how many
        for start in range(0, len(pairs), chunk):
            word, char = (
                torch.tensor(pairs[start : start + chunk], dtype=torch.int64).reshape(-1, 2).unbind(1)
            )  # [K] each
            total, weight = self.char_sums[char], self.char_weights[char].clone()  # [K, d], [K]
            mine = own[word]  # [K] the word's own projected row, -1 if none or not left out
            left = mine >= 0
            total[left] -= self.rows[mine[left]] * self.weights[mine[left]].unsqueeze(1)
            weight[left] -= self.weights[mine[left]]
            valid = weight > 1e-9  # some other word holds the character
            sums.index_add_(0, word[valid], (total[valid] / weight[valid].unsqueeze(1)).to(sums.dtype))
            parts.index_add_(0, word[valid], torch.ones(int(valid.sum()), dtype=torch.float64))
        has = parts > 0
        deviation = self.at_spread_(sums.div_(parts.clamp(min=1).unsqueeze(1).to(sums.dtype)))  # [N, d]
        deviation[~has] = 0
        return deviation, has

    def at_spread_(self, rows: torch.Tensor) -> torch.Tensor:
        """`rows` [N, d] moved, in place (N x d is large), along their direction from the centre
        (the mean projected row) to the median distance of the projected rows; returns them."""
        rows.sub_(self.centre)
        return rows.mul_(self.spread / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)).add_(self.centre)

    def chars(self, word: str) -> torch.Tensor | None:
        rows, has = self.compose([word])
        return rows[0] if has[0] else None

    def pinyin(self, word: str) -> torch.Tensor | None:
        if self._by_sound is None:
            self._by_sound = defaultdict(list)
            for i, w in enumerate(self.words):
                self._by_sound[pinyin_of(w)].append(i)
        ids = [
            i
            for i in self._by_sound.get(pinyin_of(word), [])
            if self.words[i] != word and set(self.words[i]) & set(word)
        ]
        return self._mean(ids) if ids else None

    def fill(self, word: str, strategy: str) -> tuple[torch.Tensor | None, str]:
        """(row, source) for a word without a projected row; (None, "random")
        when the strategy cannot reach it."""
        rows, sources = self.fill_many([word], strategy)
        return (None if sources[0] == "random" else rows[0].to(self.rows.dtype)), sources[0]

    def fill_many(self, words: list[str], strategy: str,
                  texts: Iterable[list[str]] | None = None) -> tuple[torch.Tensor, list[str]]:
        """Rows [N, d] (float64; zeros where unreached) and sources for words
        without a projected row, as `fill` gives each: `pinyin` first tries
        a same-sound variant, then every word still unreached is composed
        from its characters in one `compose` call (per word it cost a call
        of a few tensor operations each, which dominated the stage);
        `context` then mixes in the rows `texts` (segmented sentences) give."""
        rows = torch.zeros((len(words), self.rows.shape[1]), dtype=torch.float64)
        sources = ["random"] * len(words)
        pending = list(range(len(words))) if strategy in ("chars", "pinyin", "context") else []
        if strategy == "pinyin":
            for i, word in enumerate(words):
                row = self.pinyin(word)
                if row is not None:
                    rows[i], sources[i] = row, "pinyin"
            pending = [i for i in pending if sources[i] == "random"]
        if pending:
            composed, has = self.compose([words[i] for i in pending])
            reached = torch.tensor(pending, dtype=torch.int64)[has]
            rows[reached] = composed[has].to(torch.float64)
            for i in reached.tolist():
                sources[i] = "chars"
        if strategy == "context" and texts is not None:
            self._mix_context(words, rows, sources, texts)
        return rows, sources

    def _mix_context(self, words: list[str], rows: torch.Tensor, sources: list[str],
                     texts: Iterable[list[str]]) -> None:
        """In place: each word with contexts gets its context row, averaged with its composition where it has one."""
        if not words:
            return
        has, context = context_rows(texts, words, self)  # [N] bool, [H, d] for the H words with contexts
        composed = torch.tensor([source == "chars" for source in sources], dtype=torch.bool)[has]  # [H]
        ids = has.nonzero().squeeze(1)  # [H]
        rows[ids[composed]] = (rows[ids[composed]] + context[composed]) / 2
        rows[ids[~composed]] = context[~composed]
        for i in ids.tolist():
            sources[i] = "context"


CONTEXT_WINDOW = 10  # words on each side whose projected rows make a word's context
FIT_WORDS = 20000  # the most frequent projected words the map from contexts to rows is fitted on
TOKENS_PER_BLOCK = 200_000  # words of text turned into (word, context word) pairs at once (a longer line: in pieces)
RIDGE = 1e-3  # of the fit, per fitted word
ROWS_AT_ONCE = 8192  # rows mapped and scaled per step


class ContextSums(NamedTuple):
    """Per target word: the sum of the projected rows of the words within
    CONTEXT_WINDOW of its occurrences, how many rows that is, and how often
    it occurs (all additive over texts)."""

    sum: torch.Tensor  # [T, d] float32
    count: torch.Tensor  # [T] int64
    occurrences: torch.Tensor  # [T] int64


def context_sums(texts: Iterable[list[str]], targets: list[str], filler: Filler) -> ContextSums:
    """ContextSums of `targets` over `texts` (segmented sentences), a block of
    about TOKENS_PER_BLOCK words at a time; a longer sentence is cut into
    pieces of that many words (its words near a cut lose the context across it)."""
    target_index = {w: i for i, w in enumerate(targets)}
    totals = ContextSums(torch.zeros((len(targets), filler.rows.shape[1]), dtype=torch.float32),
                         torch.zeros(len(targets), dtype=torch.int64), torch.zeros(len(targets), dtype=torch.int64))
    rows = filler.rows.float()  # [P, d]
    block: list[list[str]] = []
    in_block = 0
    for sentence in texts:
        for start in range(0, len(sentence), TOKENS_PER_BLOCK):
            block.append(sentence[start:start + TOKENS_PER_BLOCK])
            in_block += len(block[-1])
            if in_block >= TOKENS_PER_BLOCK:
                _add_block(totals, block, target_index, filler.index, rows)
                block, in_block = [], 0
    _add_block(totals, block, target_index, filler.index, rows)
    return totals


def _add_block(totals: ContextSums, block: list[list[str]], target_index: dict[str, int],
               row_index: dict[str, int], rows: torch.Tensor) -> None:
    words = [w for sentence in block for w in sentence]
    if not words:
        return
    target = np.array([target_index.get(w, -1) for w in words])  # [n] -1: not a target
    source = np.array([row_index.get(w, -1) for w in words])  # [n] its projected row, -1: none
    sentence = np.repeat(np.arange(len(block)), [len(s) for s in block])  # [n]
    centres, contexts = [], []
    for offset in range(1, CONTEXT_WINDOW + 1):
        same = sentence[:-offset] == sentence[offset:]
        for centre, context in ((target[:-offset], source[offset:]), (target[offset:], source[:-offset])):
            keep = same & (centre >= 0) & (context >= 0)
            centres.append(centre[keep])
            contexts.append(context[keep])
    from .project import add_part, sums_by_id  # project's sparse (id x row) sum: only the targets in this block

    add_part(totals.sum, totals.count, sums_by_id(rows, np.concatenate(centres), np.concatenate(contexts)))
    totals.occurrences.add_(torch.from_numpy(np.bincount(target[target >= 0], minlength=len(totals.count))))


def context_rows(texts: Iterable[list[str]], words: list[str], filler: Filler) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of `words` have a context [N] bool, and their à la carte rows [H, d] float64: the mean
    projected row of a word's contexts times a [d, d] map fitted (least squares, weighted by log
    occurrences) on the FIT_WORDS most frequent projected words, scaled to the compositions' spread
    around the centre. No word has one when d or fewer projected words have contexts (no map)."""
    d = filler.rows.shape[1]
    fit_ids = torch.argsort(filler.weights, descending=True, stable=True)[:FIT_WORDS]  # [F]
    targets = list(dict.fromkeys(words + [filler.words[i] for i in fit_ids.tolist()]))  # [T] each word once
    where = {w: i for i, w in enumerate(targets)}
    sums = context_sums(texts, targets, filler)
    mine = torch.tensor([where[w] for w in words], dtype=torch.int64)  # [N]
    fit = torch.tensor([where[filler.words[i]] for i in fit_ids.tolist()], dtype=torch.int64)  # [F]
    fitted = sums.count[fit] > 0  # [F]
    has = sums.count[mine] > 0  # [N]
    if int(fitted.sum()) <= d or not bool(has.any()):  # too few to fit a d x d map
        return torch.zeros(len(words), dtype=torch.bool), torch.zeros((0, d), dtype=torch.float64)
    u = sums.sum[fit[fitted]].double() / sums.count[fit[fitted]].unsqueeze(1)  # [F', d]
    v = filler.rows[fit_ids[fitted]].double()  # [F', d]
    weight = sums.occurrences[fit[fitted]].double().log1p().sqrt().unsqueeze(1)  # [F', 1]
    gram = (u * weight).T @ (u * weight) + RIDGE * len(u) * torch.eye(d, dtype=torch.float64)  # [d, d]
    to_row = torch.linalg.solve(gram, (u * weight).T @ (v * weight))  # [d, d]: v ~ u @ to_row
    ids = mine[has]  # [H]
    rows = torch.empty((len(ids), d), dtype=torch.float64)  # [H, d]
    for start in range(0, len(ids), ROWS_AT_ONCE):
        chunk = ids[start:start + ROWS_AT_ONCE]
        mapped = (sums.sum[chunk].double() / sums.count[chunk].unsqueeze(1)) @ to_row  # [c, d]
        rows[start:start + len(chunk)] = filler.at_spread_(mapped)
    return has, rows


def fill_rows(words: list[str], strategy: str, filler: Filler | None, mean: torch.Tensor, std: torch.Tensor,
              seed: int, texts: Iterable[list[str]] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Rows (float64) and sources for words without a projected row: the
    strategy's rows, and random rows (drawn in the words' order with `seed`)
    where it cannot reach. `filler` may be None for `random`; `texts`
    (segmented sentences) are what `context` reads (None: `context` is `chars`)."""
    if filler is None:
        rows, sources = torch.zeros((len(words), mean.numel()), dtype=torch.float64), ["random"] * len(words)
    else:
        rows, sources = filler.fill_many(words, strategy, texts)
    need_random = [i for i, source in enumerate(sources) if source == "random"]
    rows[need_random] = random_rows(len(need_random), mean, std, seed)
    return rows, sources
