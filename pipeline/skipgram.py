"""write --context-epochs: the matrix's rows trained on --context's text by
skip-gram with negative sampling (word2vec's objective, Mikolov et al. 2013).

Each row starts where projection and the fill put it and is anchored there
(its squared change, weighted by `anchor`), so that the rows take the text's
usage (the words a task's texts use together come closer) and stay in the
English model's space. Words of the text outside the vocabulary get vectors
of their own for the training, which are dropped. The training runs at unit
scale: rows less their mean, over their mean norm; they are scaled back."""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

import numpy as np
import torch

from .io import Reporter, SilentReporter

WINDOW = 5  # words on each side that make a word's context (word2vec's default)
NEGATIVES = 5  # noise words per (word, context) pair, drawn by frequency ** 0.75
PAIRS_PER_STEP = 8192
POSITIONS_AT_ONCE = 1_000_000  # words whose pairs are shuffled together (about 2 x WINDOW a word, 24 bytes a pair)
LEARNING_RATE = 3e-3  # SparseAdam's
UNSEEN_SCALE = 0.1  # the initial norm of a vector for a word only the text has (a row is about 1)


class TextIds(NamedTuple):
    """A segmented text as word ids: ids below V are vocabulary rows, the
    others words only the text has."""

    ids: torch.Tensor  # [n] int64 every word of the text in order
    sentence: torch.Tensor  # [n] int64 the sentence each word is in
    counts: torch.Tensor  # [W] int64 occurrences of each word id (W >= V)


class TextRecorder:
    """Passes segmented sentences through (`record`) and keeps them as word
    ids, so the text is segmented once for both the fill and the training;
    `text(vocab)` gives them over a vocabulary."""

    def __init__(self):
        self.index: dict[str, int] = {}  # each word of the text, in order of first sight
        self.parts: list[np.ndarray] = []  # one [len(sentence)] int32 per sentence

    def record(self, sentences: Iterable[list[str]]) -> Iterator[list[str]]:
        for words in sentences:
            ids = [self.index.setdefault(w, len(self.index)) for w in words]
            self.parts.append(np.array(ids, dtype=np.int32))
            yield words

    def text(self, vocab: list[str], special: Iterable[str] = ()) -> TextIds:
        """Ids below len(vocab) are its rows; a word the vocabulary lacks (or
        one of `special`, e.g. a literal "[UNK]" in the text) gets one past them."""
        rows = {w: i for i, w in enumerate(vocab)}
        for word in special:
            rows.pop(word, None)
        extra = iter(range(len(vocab), len(vocab) + len(self.index)))
        to_row = torch.tensor([rows[w] if w in rows else next(extra) for w in self.index], dtype=torch.int64)  # [U]
        n_ids = len(vocab) + sum(w not in rows for w in self.index)
        own = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.int32)  # [n]
        ids = to_row[torch.from_numpy(own.astype(np.int64))]  # [n]
        lengths = torch.tensor([len(p) for p in self.parts], dtype=torch.int64)
        sentence = torch.repeat_interleave(torch.arange(len(self.parts)), lengths)  # [n]
        return TextIds(ids, sentence, torch.bincount(ids, minlength=n_ids))


def trainable(text: TextIds, vocab_size: int) -> str | None:
    """Why `text` gives the training nothing to learn (no two words in one
    sentence, or no word of the vocabulary), or None."""
    if len(text.ids) == 0 or int(torch.bincount(text.sentence).max()) < 2:
        return "it has no line of two words or more"
    if int(text.counts[:vocab_size].sum()) == 0:
        return "none of its words is in the vocabulary"
    return None


def pairs_at(text: TextIds, positions: torch.Tensor, window: int = WINDOW) -> tuple[torch.Tensor, torch.Tensor]:
    """(word, context) id pairs [M], [M] of the words at `positions` [p]: every
    word within `window` of each in the same sentence."""
    n = len(text.ids)
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)])  # [2w]
    other = positions.unsqueeze(1) + offsets  # [p, 2w]
    inside = (other >= 0) & (other < n)
    other = other.clamp(0, max(n - 1, 0))
    keep = inside & (text.sentence[other] == text.sentence[positions].unsqueeze(1))  # [p, 2w]
    centre = positions.unsqueeze(1).expand_as(other)[keep]  # [M]
    return text.ids[centre], text.ids[other[keep]]


class SkipGramTrainer:
    """The options are constructor arguments; `train(rows, text)` returns the new rows."""

    def __init__(self, epochs: int, anchor: float, seed: int = 0, reporter: Reporter = SilentReporter()):
        self.epochs, self.anchor, self.seed, self.reporter = epochs, anchor, seed, reporter
        self.record: dict = {}  # what train did, for the manifest

    def train(self, rows: torch.Tensor, trained: torch.Tensor, text: TextIds) -> torch.Tensor:
        """rows [V, d] float32; trained [V] bool: the rows to train (the others are kept as they are)."""
        g = torch.Generator().manual_seed(self.seed)
        vocab_size, d = rows.shape
        centre = rows[trained].double().mean(0)  # [d]
        scale = (rows[trained].double() - centre).norm(dim=1).mean().clamp_min(1e-12)
        start = ((rows.double() - centre) / scale).float()  # [V, d] unit scale
        unseen = torch.randn((len(text.counts) - vocab_size, d), generator=g) * (UNSEEN_SCALE / d ** 0.5)
        initial = torch.cat([start, unseen])  # [W, d]
        word_in = torch.nn.Embedding.from_pretrained(initial.clone(), freeze=False, sparse=True)
        word_out = torch.nn.Embedding(len(text.counts), d, sparse=True)
        torch.nn.init.zeros_(word_out.weight)
        anchored = torch.cat([trained.float(), torch.zeros(len(unseen))])  # [W]
        noise = text.counts.double().pow(0.75)  # [W]
        optimizer = torch.optim.SparseAdam([word_in.weight, word_out.weight], lr=LEARNING_RATE)
        losses, pairs = self._epochs(text, word_in, word_out, initial, anchored, noise, optimizer, g)
        learnt = word_in.weight.detach()[:vocab_size]  # [V, d]
        changed = trained & (learnt != start).any(1)  # [V] the rows the training moved; the others bit for bit
        out = rows.clone()
        out[changed] = (learnt[changed].double() * scale + centre).float()
        moved = (learnt[changed] - start[changed]).norm(dim=1).mean() if bool(changed.any()) else torch.tensor(0.0)
        self.record = dict(epochs=self.epochs, anchor=self.anchor, words=int(len(text.ids)),
                           pairs=pairs // max(self.epochs, 1), rows=int(changed.sum()), loss=losses,
                           moved=round(float(moved), 4))
        return out

    def _epochs(self, text, word_in, word_out, initial, anchored, noise, optimizer, g) -> tuple[list[float], int]:
        """Each epoch: the text's words in a random order, POSITIONS_AT_ONCE at a time made into their
        pairs, which are shuffled and taken PAIRS_PER_STEP at a time. Returns each epoch's mean loss
        and the pairs trained on over all of them."""
        losses, pairs = [], 0
        with self.reporter.task("skip-gram", self.epochs * len(text.ids), "words") as task:
            for _ in range(self.epochs):
                total, count = 0.0, 0
                order = torch.randperm(len(text.ids), generator=g)
                for at in range(0, len(order), POSITIONS_AT_ONCE):
                    positions = order[at:at + POSITIONS_AT_ONCE]  # [p]
                    word, context = pairs_at(text, positions)  # [M], [M]
                    mixed = torch.randperm(len(word), generator=g)
                    pairs += len(word)
                    shown = 0  # of the p words, those the progress bar has counted
                    for step in range(0, len(mixed), PAIRS_PER_STEP):
                        pick = mixed[step:step + PAIRS_PER_STEP]
                        loss = self._loss(word[pick], context[pick], word_in, word_out, initial, anchored, noise, g)
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        total, count = total + float(loss.detach()), count + 1
                        done = len(positions) * (step + len(pick)) // len(mixed)  # the share of the pairs trained
                        task.advance(done - shown)
                        shown = done
                    task.advance(len(positions) - shown)  # a piece without pairs (one-word sentences)
                losses.append(round(total / max(count, 1), 4))
        return losses, pairs

    def _loss(self, word, context, word_in, word_out, initial, anchored, noise, g) -> torch.Tensor:
        negatives = torch.multinomial(noise, len(word) * NEGATIVES, replacement=True, generator=g)
        vec = word_in(word)  # [M, d]
        positive = (vec * word_out(context)).sum(1)  # [M]
        negative = torch.bmm(word_out(negatives.view(len(word), NEGATIVES)), vec.unsqueeze(2)).squeeze(2)  # [M, K]
        sgns = -(torch.nn.functional.logsigmoid(positive) + torch.nn.functional.logsigmoid(-negative).sum(1))
        change = ((vec - initial[word]) ** 2).sum(1) * anchored[word]  # [M], zero for the text's own words
        return (sgns + self.anchor * change).mean()
