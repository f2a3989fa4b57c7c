"""Stage 2: one contextual vector per English word occurrence.

Identical sentences are encoded once; a sentence longer than the model's
window is encoded as overlapping windows. Sentences and windows are sorted
by length and batched, each word's vector is the mean of its word pieces at
the chosen hidden layer, and vectors are written as float16 shards. The index maps
(sentence, word) to a row of the shards:

    row = word_rows[sent_offsets[s] + j]      # -1: the word has no vector

so memory stays bounded by one shard, whatever the corpus size.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer

from .config import Config, Device, EncodeConfig, Precision, section_dict
from .errors import XlembedError
from .io import (
    Reporter,
    SilentReporter,
    all_finite,
    read_json,
    read_lines,
    release_freed_memory,
    require,
    save_tensors,
    tensors_blob,
    write_bytes_atomic,
    write_json_atomic,
)
from .layout import WorkDir
from .models import (
    load_encoder,
    load_model_config,
    load_tokenizer,
    resolve_model_dir,
    sentence_pooling,
    special_tokens,
)
from .records import file_hash, fingerprint, model_hash, run_stage, stage_key

TOKENIZE_CHUNK = 4096  # sentences per call of the Rust tokenizer
TRIM_EVERY = 4  # batches between returns of freed heap memory to the system


def resolve_device(device: Device) -> torch.device:
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise XlembedError("encode.device cuda: no CUDA device is available")
    return torch.device(Device(device).value)


BF16_MARGIN = 1.2  # auto picks bf16 on an AVX512-BF16 CPU only when its matmul is at least this much faster


class PrecisionChoice(NamedTuple):
    """The precision the encoder runs in, and what decided it (in the encode record)."""

    precision: Precision
    decided_by: str  # "asked", "cuda", "amx_bf16", "no avx512_bf16", "matmul speed-up"
    bf16_speedup: float | None = None  # fp32 seconds / bf16 seconds of the FFN matmul, where measured


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The kernel's CPU flags (/proc/cpuinfo, or the text given); empty where they cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    return set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 matrix units (AMX-BF16 tiles)."""
    return "amx_bf16" in cpu_flags(cpuinfo)


def choose_cpu_precision(flags: set[str], bf16_speedup: Callable[[], float]) -> PrecisionChoice:
    """`auto` on a CPU. AMX-BF16 tiles: bf16. Neither those nor AVX512-BF16:
    fp32 (bf16 would be emulated). AVX512-BF16 alone: the flags cannot
    tell, so `bf16_speedup()` (fp32 seconds / bf16 seconds) decides, bf16
    only at BF16_MARGIN or more. Measured: a Xeon with AVX512-BF16 ran
    oneDNN's bf16 matmul at 140 GFLOP/s against float32's 208; an AMD EPYC
    with AVX512-BF16 ran MiniLM 1.6x faster in bf16."""
    if "amx_bf16" in flags:
        return PrecisionChoice(Precision.bf16, "amx_bf16")
    if "avx512_bf16" not in flags:
        return PrecisionChoice(Precision.fp32, "no avx512_bf16")
    speedup = round(float(bf16_speedup()), 3)
    return PrecisionChoice(Precision.bf16 if speedup >= BF16_MARGIN else Precision.fp32, "matmul speed-up", speedup)


@functools.cache
def bf16_matmul_speedup(rows: int = 2048, reps: int = 3) -> float:
    """fp32 seconds / bf16 seconds of one FFN matmul of MiniLM's shape
    ([rows, 384] by [384, 1536]), on this process's threads: the best of
    `reps` each, interleaved, after a warm-up (about 0.25 s on 2 cores).
    Measured once per process."""
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, 384, generator=generator), torch.randn(1536, 384, generator=generator)
    operands = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
    best = dict.fromkeys(operands, float("inf"))
    with torch.inference_mode():
        for rep in range(reps + 1):
            for dtype, (a, b) in operands.items():
                start = time.perf_counter()
                torch.nn.functional.linear(a, b)
                if rep:  # the first is the warm-up
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def precision_choice(precision: Precision, device: torch.device) -> PrecisionChoice:
    """`auto`: fp16 on CUDA; on a CPU, see choose_cpu_precision. Anything else: as asked."""
    precision = Precision(precision)
    if precision != Precision.auto:
        return PrecisionChoice(precision, "asked")
    if device.type == "cuda":
        return PrecisionChoice(Precision.fp16, "cuda")
    return choose_cpu_precision(cpu_flags(), bf16_matmul_speedup)


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    return precision_choice(precision, device).precision


DTYPES = {Precision.fp32: torch.float32, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


class PiecePlan(NamedTuple):
    """Word pieces of each unique sentence (all of them, no truncation)."""

    ids: list[np.ndarray]  # per sentence: [n_pieces] int32 piece ids
    words: list[np.ndarray]  # per sentence: [n_pieces] int32 index of each piece's word
    n_pieces: list[np.ndarray]  # per sentence: [n_words] int64 pieces of each word (0: the tokenizer gave none)


def piece_plan(tokenizer, sentences: list[list[str]]) -> PiecePlan:
    """Tokenize word-split sentences into word pieces, remembering each piece's word."""
    plan = PiecePlan([], [], [])
    # the Rust tokenizer itself (no per-sentence Python conversion), as a
    # private copy without the truncation/padding a tokenizer.json may carry
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        chunk = sentences[start : start + TOKENIZE_CHUNK]
        with tokenizer_threads():
            encodings = backend.encode_batch(chunk, is_pretokenized=True, add_special_tokens=False)
        # each sentence's lists joined into flat arrays, then split again (views): few numpy calls per chunk
        ids, words = [e.ids for e in encodings], [e.word_ids for e in encodings]
        n_pieces = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))  # [S] pieces per sentence
        n_words = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))  # [S] words per sentence
        flat_words = np.fromiter(itertools.chain.from_iterable(words), dtype=np.int32, count=int(n_pieces.sum()))  # [P]
        word_offsets = np.cumsum(n_words) - n_words  # [S]
        pieces_per_word = np.bincount(
            flat_words + np.repeat(word_offsets, n_pieces), minlength=int(n_words.sum())
        )  # [W]
        plan.ids.extend(
            split(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=len(flat_words)), n_pieces)
        )
        plan.words.extend(split(flat_words, n_pieces))
        plan.n_pieces.extend(split(pieces_per_word, n_words))
    return plan


@contextlib.contextmanager
def tokenizer_threads() -> Iterator[None]:
    """The Rust tokenizer's own threads for a batch encode. It reads
    TOKENIZERS_PARALLELISM at each call; models.py sets it to false for
    the forks of the tokenize stage, and it is set back after the call, so
    a later fork is told parallelism is configured (no warning) and off."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """`flat` cut into consecutive parts of `lengths` (views; np.split is slower by far for many small parts)."""
    ends = np.cumsum(lengths).tolist()
    return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends)]


class Item(NamedTuple):
    """One row of a forward pass: a whole sentence, or one window of a long one."""

    sentence: int  # unique sentence
    start: int  # its first piece
    stop: int  # one past its last piece
    owned: np.ndarray | None  # the words that take their vector from this item (None: all words with pieces)


def windows(n_pieces: np.ndarray, window: int) -> list[tuple[int, int, np.ndarray]]:
    """Overlapping windows over a sentence longer than `window` pieces, as
    (start, stop, owned words). Windows start every window // 2 pieces (the
    last one ends with the sentence), each snapped to word boundaries; each
    word takes its vector from the window whose centre is nearest its own,
    i.e. where it has the most context on both sides (at least about a
    quarter window each side, except at the sentence's ends). A word longer
    than half a window that no window holds whole gets a window of its own
    (its first `window` pieces)."""
    ends = np.cumsum(n_pieces)  # [n_words] one past each word's last piece
    begins = ends - n_pieces  # [n_words]
    total, stride = int(ends[-1]), max(1, window // 2)
    nominal = list(range(0, total - window, stride)) + [total - window]
    spans = []
    for s in nominal:
        start = int(begins[np.searchsorted(ends, s, side="right")])  # start of the word holding piece s
        fits = int(np.searchsorted(ends, start + window, side="right")) - 1  # the last word ending within the window
        stop = int(ends[fits]) if fits >= 0 and ends[fits] > start else start + window
        if not spans or spans[-1] != (start, stop):
            spans.append((start, stop))
    starts = np.array([a for a, _ in spans], dtype=np.int64)  # [K] non-decreasing, as are stops
    stops = np.array([b for _, b in spans], dtype=np.int64)  # [K]
    # the windows holding word j whole are the range first[j]..last[j] (memory linear in the
    # sentence, not [n_words, K]); its owner is the one whose centre is nearest its own
    first = np.searchsorted(np.maximum.accumulate(stops), ends, side="left")  # [n_words]
    last = np.searchsorted(starts, begins, side="right") - 1  # [n_words]
    homeless = (n_pieces > 0) & (first > last)
    centres, word_centres = starts + stops, begins + ends  # 2 x centre
    lo = np.minimum(first, len(spans) - 1)  # (for homeless words: any window)
    hi = np.clip(last, lo, None)
    nearest = np.clip(np.searchsorted(centres, word_centres), lo, hi)  # [n_words]
    before = np.clip(nearest - 1, lo, hi)
    owner = np.where(np.abs(centres[before] - word_centres) <= np.abs(centres[nearest] - word_centres), before, nearest)
    owner = np.maximum(np.searchsorted(centres, centres[owner], side="left"), lo)  # the first of equally near windows
    result = []
    owned_words = np.flatnonzero((n_pieces > 0) & ~homeless)
    owned_words = owned_words[np.argsort(owner[owned_words], kind="stable")]  # grouped by window, in word order
    by_owner = np.split(owned_words, np.searchsorted(owner[owned_words], np.arange(1, len(spans)), side="left"))
    for (start, stop), owned in zip(spans, by_owner):
        if len(owned):
            result.append((start, stop, owned.astype(np.int32)))
    for j in np.flatnonzero(homeless):
        result.append((int(begins[j]), int(begins[j]) + window, np.array([j], dtype=np.int32)))
    return result


def ends_sentence(item: Item, pieces: PiecePlan) -> bool:
    """Whether `item` is a whole sentence or its last window (progress counts sentences)."""
    return item.owned is None or item.stop == len(pieces.ids[item.sentence])


def items_of(pieces: PiecePlan, window: int) -> list[Item]:
    items = []
    for u, n in enumerate(pieces.n_pieces):
        total = len(pieces.ids[u])
        if total <= window:
            items.append(Item(u, 0, total, None))
        else:
            items += [Item(u, start, stop, owned) for start, stop, owned in windows(n, window)]
    return items


@dataclass
class RowPlan:
    """Where each word's vector goes. Rows are numbered in processing order
    (the longest items first, so memory peaks early; the words of one item
    get consecutive rows); duplicate sentences share rows.

        row = word_rows[sent_offsets[s] + j]      # -1: word j of sentence s has no vector
    """

    unique_of: np.ndarray  # [n_sentences] index of each sentence's unique sentence
    items: list[Item]  # in processing order
    unique_rows: list[np.ndarray]  # per unique sentence: [n_words] row of each word, -1 if none
    sent_offsets: np.ndarray  # [n_sentences + 1] first word of each sentence in word_rows
    word_rows: np.ndarray  # [n_words_total] row of every word occurrence, -1 if none
    n_rows: int


def row_plan(unique_of: np.ndarray, n_words: np.ndarray, pieces: PiecePlan, window: int) -> RowPlan:
    items = items_of(pieces, window)
    order = np.argsort(-np.array([item.stop - item.start for item in items]), kind="stable")
    items = [items[i] for i in order]
    unique_rows, next_row = assign_rows(items, n_words, pieces)

    # the index over all sentences: sentence s copies unique sentence unique_of[s]
    lengths = n_words[unique_of]  # [n_sentences]
    sent_offsets = np.zeros(len(unique_of) + 1, dtype=np.int64)
    np.cumsum(lengths, out=sent_offsets[1:])
    unique_flat = np.concatenate(unique_rows) if unique_rows else np.zeros(0, dtype=np.int64)
    unique_offsets = np.zeros(len(unique_rows) + 1, dtype=np.int64)
    np.cumsum(n_words, out=unique_offsets[1:])
    within = np.arange(sent_offsets[-1]) - np.repeat(sent_offsets[:-1], lengths)  # [n_words_total] j of each word
    word_rows = unique_flat[np.repeat(unique_offsets[:-1][unique_of], lengths) + within]
    return RowPlan(unique_of, items, unique_rows, sent_offsets, word_rows, next_row)


def assign_rows(items: list[Item], n_words: np.ndarray, pieces: PiecePlan) -> tuple[list[np.ndarray], int]:
    """Rows in processing order, the words of one item consecutive: per unique
    sentence, the row of each word [n_words] (-1: none), and the number of rows."""
    n_pieces = np.concatenate(pieces.n_pieces) if pieces.n_pieces else np.zeros(0, dtype=np.int64)  # [W] all words
    word_offsets = np.cumsum(n_words) - n_words  # [U] each sentence's first word
    has = n_pieces > 0  # [W]
    before = np.concatenate([[0], np.cumsum(has)])  # [W + 1] words with pieces before each word
    with_pieces = before[word_offsets + n_words] - before[word_offsets]  # [U] a whole sentence's rows
    sentence = np.fromiter((item.sentence for item in items), dtype=np.int64, count=len(items))  # [I]
    whole = np.fromiter((item.owned is None for item in items), dtype=bool, count=len(items))  # [I]
    owned = np.fromiter(
        (0 if item.owned is None else len(item.owned) for item in items), dtype=np.int64, count=len(items)
    )
    counts = np.where(whole, with_pieces[sentence], owned)  # [I] rows of each item
    first_row = np.cumsum(counts) - counts  # [I]
    rows = np.full(len(n_pieces), -1, dtype=np.int64)  # [W]
    base = np.full(len(n_words), -1, dtype=np.int64)  # [U] first row of a sentence encoded whole (-1: in windows)
    base[sentence[whole]] = first_row[whole]
    sentence_of_word = np.repeat(np.arange(len(n_words)), n_words)  # [W]
    take = has & (base[sentence_of_word] >= 0)
    rows[take] = base[sentence_of_word[take]] + (before[:-1] - before[word_offsets][sentence_of_word])[take]
    for i in np.flatnonzero(~whole):
        item = items[i]
        rows[word_offsets[item.sentence] + item.owned] = np.arange(first_row[i], first_row[i] + counts[i])
    return split(rows, n_words), int(counts.sum())


@dataclass
class Batch:
    """One forward pass: padded input and, per word that gets its vector
    from this batch (its local row r = 0 … n_rows-1), where its pieces sit in
    the flattened hidden states [B*T, d]: from word_first[r], word_pieces[r]
    of them (a word's pieces are consecutive)."""

    input_ids: torch.Tensor  # [B, T] long, padded with the pad id
    attention: torch.Tensor  # [B, T] long, 1 at real tokens
    word_first: torch.Tensor  # [n_rows] long, flat index b*T + t of each word's first piece
    word_pieces: torch.Tensor  # [n_rows] float32, pieces of each word (>= 1)
    later_pieces: list[
        tuple[torch.Tensor, torch.Tensor]
    ]  # k = 1, 2, …: (rows with more than k pieces, flat index of their piece k)
    n_rows: int  # words that get their vector from this batch
    n_sentences: int  # items that end a sentence
    n_pieces: int  # word pieces of its items, special tokens and padding left out (progress counts these)
    sentence_of: torch.Tensor  # [B] long, the unique sentence of each item
    sentence_mask: torch.Tensor  # [B, T] float32, 1 at the tokens each item adds to its sentence's pooled sum

    def pin_memory(self) -> Batch:
        """The same batch in page-locked memory, for asynchronous copies to a CUDA device."""
        return Batch(
            self.input_ids.pin_memory(),
            self.attention.pin_memory(),
            self.word_first.pin_memory(),
            self.word_pieces.pin_memory(),
            [(r.pin_memory(), f.pin_memory()) for r, f in self.later_pieces],
            self.n_rows,
            self.n_sentences,
            self.n_pieces,
            self.sentence_of,
            self.sentence_mask.pin_memory(),
        )


def make_batch(
    items: list[Item], pieces: PiecePlan, rows: RowPlan, prefix: list[int], suffix: list[int], pad_id: int,
    pooling: str = "mean",
) -> Batch:
    n_prefix = len(prefix)
    lengths = np.array(
        [min(item.stop, len(pieces.ids[item.sentence])) - item.start for item in items], dtype=np.int64
    )  # [B] pieces
    width = max(item.stop - item.start for item in items) + n_prefix + len(suffix)
    input_ids = np.full((len(items), width), pad_id, dtype=np.int64)  # [B, T]
    input_ids[:, :n_prefix] = prefix
    input_ids[np.arange(len(items))[:, None], n_prefix + lengths[:, None] + np.arange(len(suffix))] = suffix
    attention = (np.arange(width)[None, :] < (lengths + n_prefix + len(suffix))[:, None]).astype(np.int64)  # [B, T]
    whole = np.array([item.owned is None for item in items])  # [B] whole sentences; else windows of long ones
    words = whole_sentences(
        np.flatnonzero(whole),
        [items[b].sentence for b in np.flatnonzero(whole)],
        pieces,
        rows,
        input_ids,
        lengths[whole],
        width,
        n_prefix,
    )
    windowed = [window_words(b, items[b], pieces, rows, input_ids, width, n_prefix) for b in np.flatnonzero(~whole)]
    words += windowed
    in_sentence = sentence_mask(items, pieces, attention, windowed, n_prefix, len(suffix), pooling)  # [B, T]
    first, count, target = (
        np.concatenate(parts) for parts in zip(*words)
    )  # [n_rows] each; a batch's rows are consecutive
    row_start = target.min() if len(target) else 0
    n_rows = int(target.max() - row_start + 1) if len(target) else 0
    word_first, word_pieces = np.zeros(n_rows, dtype=np.int64), np.ones(n_rows, dtype=np.int64)  # [n_rows]
    word_first[target - row_start], word_pieces[target - row_start] = first, count
    later = [
        (np.flatnonzero(word_pieces > k), word_first[word_pieces > k] + k)
        for k in range(1, int(word_pieces.max(initial=1)))
    ]
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        attention=torch.from_numpy(attention),
        word_first=torch.from_numpy(word_first),
        word_pieces=torch.from_numpy(word_pieces.astype(np.float32)),
        later_pieces=[(torch.from_numpy(r), torch.from_numpy(f)) for r, f in later],
        n_rows=n_rows,
        n_sentences=sum(ends_sentence(item, pieces) for item in items),
        n_pieces=sum(item.stop - item.start for item in items),
        sentence_of=torch.tensor([item.sentence for item in items], dtype=torch.int64),
        sentence_mask=torch.from_numpy(in_sentence),
    )


def sentence_mask(items: list[Item], pieces: PiecePlan, attention: np.ndarray, windowed: list[BatchWords],
                  n_prefix: int, n_suffix: int, pooling: str) -> np.ndarray:
    """[B, T] float32: the tokens each item adds to its sentence's pooled sum,
    so that a sentence's items add up to the model's own pooling of it
    ("mean": every token, special ones included; "cls": the first). A whole
    sentence: its tokens. A window of a long one: the pieces of the words
    it owns (each word is owned by one window), and the special tokens
    that open and close the sentence in the windows that own its first and
    last word. (A word longer than a window adds its first window's pieces.)"""
    if pooling == "cls":
        mask = np.zeros(attention.shape, dtype=np.float32)
        mask[[item.start == 0 for item in items], 0] = 1.0
        return mask
    mask = attention.astype(np.float32)  # [B, T]
    for b, words in zip(np.flatnonzero([item.owned is not None for item in items]), windowed):
        item = items[b]
        mask[b] = 0.0
        within = np.arange(words.count.sum()) - np.repeat(np.cumsum(words.count) - words.count, words.count)
        mask.reshape(-1)[np.repeat(words.first, words.count) + within] = 1.0  # flat b*T + t of each owned piece
        with_pieces = np.flatnonzero(pieces.n_pieces[item.sentence])  # (a window owns at least one of them)
        if with_pieces[0] in item.owned:
            mask[b, :n_prefix] = 1.0
        if with_pieces[-1] in item.owned:
            end = int(attention[b].sum())
            mask[b, end - n_suffix : end] = 1.0
    return mask


class BatchWords(NamedTuple):
    """Words that take their vector from a batch."""

    first: np.ndarray  # [n] flat index b*T + t of each word's first piece
    count: np.ndarray  # [n] its pieces in the batch
    row: np.ndarray  # [n] its row


def whole_sentences(
    batch_rows: np.ndarray,
    sentences: list[int],
    pieces: PiecePlan,
    rows: RowPlan,
    input_ids: np.ndarray,
    lengths: np.ndarray,
    width: int,
    n_prefix: int,
) -> list[BatchWords]:
    """Fill `input_ids` at `batch_rows` with whole sentences, all at once (no loop over sentences
    in Python but list look-ups); their words with pieces."""
    if not sentences:
        return []
    piece_offsets = np.cumsum(lengths) - lengths  # [S] where each sentence starts among all their pieces
    within = np.arange(lengths.sum()) - np.repeat(piece_offsets, lengths)  # [P] each piece's position in its sentence
    input_ids[np.repeat(batch_rows, lengths), n_prefix + within] = np.concatenate([pieces.ids[u] for u in sentences])
    n_pieces = np.concatenate([pieces.n_pieces[u] for u in sentences])  # [W] pieces of each word
    n_words = np.array([len(pieces.n_pieces[u]) for u in sentences])  # [S]
    begins = (
        np.cumsum(n_pieces) - n_pieces - np.repeat(piece_offsets, n_words)
    )  # [W] first piece of each word in its sentence
    has = n_pieces > 0
    first = (np.repeat(batch_rows, n_words) * width + n_prefix + begins)[has]
    return [BatchWords(first, n_pieces[has], np.concatenate([rows.unique_rows[u] for u in sentences])[has])]


def window_words(
    b: int, item: Item, pieces: PiecePlan, rows: RowPlan, input_ids: np.ndarray, width: int, n_prefix: int
) -> BatchWords:
    """Fill row `b` of `input_ids` with a window of a long sentence; the words it owns."""
    ids = pieces.ids[item.sentence][item.start : item.stop]
    input_ids[b, n_prefix : n_prefix + len(ids)] = ids
    n_pieces = pieces.n_pieces[item.sentence]  # [n_words]
    begins = (np.cumsum(n_pieces) - n_pieces)[item.owned]  # [n_owned] first piece of each word in the sentence
    count = np.minimum(n_pieces[item.owned], item.stop - begins)  # a word longer than a window: its first pieces
    return BatchWords(begins + (b * width + n_prefix - item.start), count, rows.unique_rows[item.sentence][item.owned])


def batch_bounds(items: list[Item], batch_size: int, batch_tokens: int, n_special: int) -> list[int]:
    """Where each batch starts (and, last, where the items end): at most
    `batch_size` items, and at most `batch_tokens` padded pieces (items come
    longest first, so a batch is as wide as its first item), at least one."""
    bounds, b = [0], 0
    while b < len(items):
        width = items[b].stop - items[b].start + n_special
        b += max(1, min(batch_size, batch_tokens // width, len(items) - b))
        bounds.append(b)
    return bounds


class Hidden(NamedTuple):
    """A forward pass's hidden states, float32, computed in the model's precision."""

    words: torch.Tensor  # [B, T, d] the mean of the chosen layers: what word vectors pool
    last: torch.Tensor  # [B, T, d] the last layer: what the model's own sentence embedding pools


def forward(model, batch: Batch, layers: list[int], device: torch.device) -> Hidden:
    """The hidden states of `layers` (indices into hidden_states, 0 =
    embeddings), averaged, and of the last layer."""
    n_layers = model.config.num_hidden_layers
    last_only = len(layers) == 1 and layers[0] == n_layers
    out = model(
        input_ids=batch.input_ids.to(device, non_blocking=True),
        attention_mask=batch.attention.to(device, non_blocking=True),
        output_hidden_states=not last_only,
    )
    last = out.last_hidden_state.float()
    if last_only:
        return Hidden(last, last)
    return Hidden(torch.stack([out.hidden_states[i].float() for i in layers]).mean(0), last)


def pool_sentences(last: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[B, d] float32 on the CPU: each item's sum of the last layer over its
    sentence_mask tokens (a sentence's items add up to its pooled sum)."""
    mask = batch.sentence_mask.to(last.device, non_blocking=True)  # [B, T]
    return torch.bmm(mask.unsqueeze(1), last).squeeze(1).cpu()  # [B, d]


def pool(hidden: torch.Tensor, batch: Batch, out: torch.Tensor) -> None:
    """Each word's vector, the mean of its pieces' hidden states, computed
    on the model's device and written into `out` [n_rows, d] (float16, CPU).
    Pieces are added in order (first, then second, …), as a sequential
    index_add_ would, at a gather per piece rank instead of a scatter per piece."""
    with one_thread() if hidden.device.type == "cpu" else contextlib.nullcontext():
        pool_mean(hidden, batch, out)


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused: the plan makes a list, a tuple or an
    array per sentence, none of them in a cycle, and every few thousand
    of them would start a collection that walks the objects torch and
    transformers keep (hundreds of thousands)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch ops on one CPU thread: for small ops (pooling a batch takes well
    under a millisecond), whose parallel region costs a scheduler time slice
    when its second thread waits for a core (measured on the busy 2-core
    machine: 25 ms for a division that takes 0.3 ms on one thread)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def pool_mean(hidden: torch.Tensor, batch: Batch, out: torch.Tensor) -> None:
    device = hidden.device
    flat = hidden.reshape(-1, hidden.shape[-1])  # [B*T, d]
    sums = flat.index_select(0, batch.word_first.to(device, non_blocking=True))  # [n_rows, d]
    for rows, pieces in batch.later_pieces:
        rows = rows.to(device, non_blocking=True)  # [n_longer] rows with more than k pieces
        sums.index_copy_(
            0, rows, sums.index_select(0, rows) + flat.index_select(0, pieces.to(device, non_blocking=True))
        )
    out.copy_(sums.div_(batch.word_pieces.to(device, non_blocking=True).unsqueeze(1)))


def prefetched(make: Callable[[int], Batch], starts: list[int], depth: int = 4) -> Iterator[tuple[int, Batch]]:
    """(start, batch) for each start, built by a background thread `depth`
    batches ahead, so that batch building overlaps the forward pass (which
    releases the GIL)."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for b in starts:
                if stop.is_set():
                    return
                queue.put((b, make(b)))
        except BaseException as e:  # handed to the consumer
            queue.put((None, e))
            return
        queue.put((None, None))

    thread = threading.Thread(target=produce, name="xlembed-batches", daemon=True)
    thread.start()
    try:
        while True:
            b, batch = queue.get()
            if b is None:
                if batch is not None:
                    raise batch
                return
            yield b, batch
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.01)


class ShardWriter:
    """Collects pooled rows and writes them as shards of about `shard_rows`
    rows, on a background thread so the forward pass does not wait for the
    disk; after each shard, progress.json says where a resumed run starts.

    Rows are pooled straight into one of two buffers, each allocated once
    for the whole run: while the disk thread writes one as a shard (from
    the buffer's own memory, no copy), batches fill the other."""

    def __init__(self, work: WorkDir, key: str, shard_starts: list[int], shard_rows: int, dim: int, batch_rows: int):
        self.work, self.key, self.shard_starts, self.shard_rows = work, key, shard_starts, shard_rows
        self.buffers = [torch.empty((shard_rows + batch_rows, dim), dtype=torch.float16)]  # [capacity, d] each
        self.current, self.buffered = 0, 0
        self.disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xlembed-shards")
        self.pending: list = []  # the write in flight (of the other buffer), if any
        self.seconds = 0.0  # spent here on the caller's thread
        self.sentence_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # since the last shard

    def add_sentences(self, batch: Batch, sentence_sums: torch.Tensor) -> None:
        """A batch's pooled sums [B, d] (pool_sentences), for the next shard: each shard holds
        those of its own items, so a resumed run has every item's."""
        self.sentence_parts.append((batch.sentence_of, sentence_sums, batch.sentence_mask.sum(1)))

    def rows(self, n: int) -> torch.Tensor:
        """The next `n` rows of the buffer [n, d], for a batch to pool into."""
        buffer = self.buffers[self.current]
        if self.buffered + n > len(buffer):  # a batch beyond the planned bound: grow once
            buffer = self.buffers[self.current] = torch.cat(
                [buffer[: self.buffered], torch.empty((n, buffer.shape[1]), dtype=buffer.dtype)]
            )
        return buffer[self.buffered : self.buffered + n]

    def add(self, n: int, next_item: int) -> None:
        """The `n` rows handed out by `rows` are filled; `next_item` is where a resumed run would start."""
        self.buffered += n
        if self.buffered >= self.shard_rows:
            self.flush(next_item)

    def flush(self, next_item: int) -> None:
        start = time.perf_counter()
        k = len(self.shard_starts) - 1
        self.shard_starts.append(self.shard_starts[-1] + self.buffered)
        progress = dict(key=self.key, shard_starts=list(self.shard_starts), next_item=next_item)
        self.wait()  # the other buffer's write is done: it may be filled again
        # the blob's parts are the buffer's memory; made here: torch work stays on this thread
        ids, sums, tokens = (torch.cat(part) for part in zip(*self.sentence_parts)) if self.sentence_parts else (
            torch.zeros(0, dtype=torch.int64), torch.zeros((0, self.buffers[0].shape[1])), torch.zeros(0))
        self.sentence_parts = []
        blob = tensors_blob({"vectors": self.buffers[self.current][: self.buffered],
                             "sentence_ids": ids, "sentence_sums": sums, "sentence_tokens": tokens})
        self.pending.append(self.disk.submit(self._write, k, blob, progress))
        self.current, self.buffered = 1 - self.current, 0
        if len(self.buffers) == 1:
            self.buffers.append(torch.empty_like(self.buffers[0]))
        self.seconds += time.perf_counter() - start

    def wait(self) -> None:
        """Wait for the write in flight; a failed write raises here."""
        for f in self.pending:
            f.result()
        self.pending = []

    def _write(self, k: int, blob: list, progress: dict) -> None:
        write_bytes_atomic(self.work.vectors_shard(k), blob)
        write_json_atomic(self.work.vectors_progress, progress)  # only after the shard is in place

    def close(self, n_items: int) -> None:
        """Write what is left and wait for the disk."""
        if self.buffered or len(self.shard_starts) == 1:
            self.flush(n_items)
        start = time.perf_counter()
        try:
            self.wait()
        finally:
            self.disk.shutdown(wait=True)
        self.seconds += time.perf_counter() - start


def resume(work: WorkDir, key: str) -> tuple[list[int], int, int | None]:
    """(shard_starts, next item, shards reused) after the last completed
    shard of an interrupted encode with this key; shards beyond it, and the
    progress of another key, are removed."""
    shard_starts, next_item, resumed_at = [0], 0, None
    progress = read_progress(work, key)
    if progress is not None:
        shard_starts, next_item = progress["shard_starts"], progress["next_item"]
        resumed_at = len(shard_starts) - 1
    work.vectors_dir.mkdir(parents=True, exist_ok=True)
    for old in work.vectors_dir.glob("shard-*.safetensors"):
        if int(old.stem.split("-")[1]) >= len(shard_starts) - 1:
            old.unlink()
    if progress is None:
        work.vectors_progress.unlink(missing_ok=True)
    return shard_starts, next_item, resumed_at


def load_model(model_dir: Path, device: torch.device, precision: Precision):
    """The encoder on `device` with its weights in `precision`, without the
    pooler a BERT carries for [CLS] (dense + tanh, run for nothing here)."""
    model = load_encoder(model_dir)
    if isinstance(getattr(model, "pooler", None), torch.nn.Module):
        model.pooler = None  # BERT, RoBERTa and kin skip a pooler that is None
    return model.to(device=device, dtype=DTYPES[precision])


ENCODE_COUNTS = (
    "sentences",
    "unique_sentences",
    "words",
    "words_with_vector",
    "words_truncated",
    "words_without_pieces",
    "sentences_in_windows",
    "windows",
    "vector_rows",
)


class EncodePlan(NamedTuple):
    """What the forward passes over some sentences will do."""

    unique_of: np.ndarray  # [n_sentences] index of each sentence's unique sentence
    n_words: np.ndarray  # [n_unique] words per unique sentence
    pieces: PiecePlan
    rows: RowPlan


def max_length_used(opts: EncodeConfig, model_config) -> int:
    """--max-length, capped at what the model can take."""
    return min(opts.max_length, getattr(model_config, "max_position_embeddings", None) or opts.max_length)


@dataclass
class EncodeTiming:
    """Where the encode stage's wall-clock seconds went, as seen from the
    thread that runs the model: the forward pass (model and pooling) and the
    host's parts. Batches are built ahead on another thread; only the time
    spent waiting for one counts here."""

    forward: float = 0.0  # the model and pooling, up to the vectors in host memory
    load: float = 0.0  # loading the model and tokenizer
    plan: float = 0.0  # deduplication, word pieces, the row plan
    waiting: float = 0.0  # for the next batch to be built
    shards: float = 0.0  # handing shards to the disk thread, waiting for it, the index
    other: float = 0.0  # the rest: progress, resume, freeing memory

    def record(self, total: float) -> dict:
        """The split of `total` seconds (`other` is what the parts leave), and host = total - forward."""
        parts = asdict(self)
        parts["other"] = max(0.0, total - sum(v for k, v in parts.items() if k != "other"))
        return dict({k: round(v, 3) for k, v in parts.items()}, host=round(total - self.forward, 3))


class Encoder:
    """The model and tokenizer, loaded once, and everything a forward pass
    needs; encodes any sentences, for the encode stage or for a worker of
    the Ray executor."""

    def __init__(self, model_dir: Path, opts: EncodeConfig, device: torch.device, precision: Precision):
        start = time.perf_counter()
        self.opts, self.device, self.precision = opts, device, Precision(precision)
        self.timing = EncodeTiming()
        self.tokenizer = load_tokenizer(model_dir)
        config = load_model_config(model_dir)
        # the model loads on a thread of its own while the plan is made (tokenizing releases the GIL);
        # transformers' modules are imported above, on this thread, before it starts
        self._model, loader = None, ThreadPoolExecutor(max_workers=1, thread_name_prefix="xlembed-model")
        self._model_loading = loader.submit(load_model, model_dir, device, self.precision)
        loader.shutdown(wait=False)
        self.dim = config.hidden_size
        self.layers = opts.layer.indices(config.num_hidden_layers)
        self.max_length = max_length_used(opts, config)
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        self.pooling = sentence_pooling(model_dir)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.window = self.max_length - len(self.prefix) - len(self.suffix)  # word pieces per forward row
        self.timing.load += time.perf_counter() - start

    @property
    def model(self):
        """The model, once loaded (the time waited for it counts as `load`)."""
        if self._model is None:
            start = time.perf_counter()
            self._model = self._model_loading.result()  # an error loading it is raised here
            self.timing.load += time.perf_counter() - start
        return self._model

    def plan(self, lines: Iterable[str]) -> EncodePlan:
        """Deduplicate (sentence s is unique sentence unique_of[s]), split into
        word pieces, and place every word's vector in a row."""
        start = time.perf_counter()
        with no_cycle_collection():
            plan = self._plan(lines)
        self.timing.plan += time.perf_counter() - start
        return plan

    def _plan(self, lines: Iterable[str]) -> EncodePlan:
        unique_index: dict[str, int] = {}
        unique_of = np.fromiter((unique_index.setdefault(line, len(unique_index)) for line in lines), dtype=np.int64)
        n_words = np.fromiter(
            (line.count(" ") + 1 for line in unique_index), dtype=np.int64, count=len(unique_index)
        )  # [n_unique]
        pieces = piece_plan(self.tokenizer, [line.split(" ") for line in unique_index])
        del unique_index
        return EncodePlan(unique_of, n_words, pieces, row_plan(unique_of, n_words, pieces, self.window))

    def run(
        self,
        plan: EncodePlan,
        next_item: int,
        rows_for: Callable[[int], torch.Tensor],
        done: Callable[[Batch, int, torch.Tensor], None],
    ) -> None:
        """Forward passes over the items from `next_item` on, in batches; each
        batch pools into `rows_for(n_rows)` [n_rows, d], then `done(batch,
        next item, sentence sums [B, d])` is called (pool_sentences). Adds the
        forward and waiting seconds to `timing`."""
        bounds = batch_bounds(
            plan.rows.items, self.opts.batch_size, self.opts.batch_tokens, len(self.prefix) + len(self.suffix)
        )
        end_of = dict(zip(bounds[:-1], bounds[1:]))

        pin = self.device.type == "cuda"  # page-locked batches: asynchronous copies to the device

        def make(b: int) -> Batch:
            batch = make_batch(
                plan.rows.items[b : end_of[b]], plan.pieces, plan.rows, self.prefix, self.suffix, self.pad_id,
                self.pooling,
            )
            return batch.pin_memory() if pin else batch

        model = self.model  # loaded by now (a wait for it counts as load, not forward)
        batches = prefetched(make, [b for b in bounds[:-1] if b >= next_item])
        with torch.inference_mode():
            for n_batches in itertools.count(1):
                start = time.perf_counter()
                b, batch = next(batches, (None, None))
                ready = time.perf_counter()
                self.timing.waiting += ready - start
                if batch is None:
                    return
                hidden = forward(model, batch, self.layers, self.device)
                pool(hidden.words, batch, rows_for(batch.n_rows))
                sentence_sums = pool_sentences(hidden.last, batch)  # [B, d]
                del hidden
                self.timing.forward += time.perf_counter() - ready
                done(batch, b + len(batch.input_ids), sentence_sums)
                if n_batches % TRIM_EVERY == 0:
                    release_freed_memory()

    def vectors(self, lines: list[str]) -> EncodedLines:
        """`lines` encoded in memory, as the encode stage stores them."""
        plan = self.plan(lines)
        vectors = torch.empty((plan.rows.n_rows, self.dim), dtype=torch.float16)  # [n_rows, d]
        sentences = SentenceSums(len(plan.n_words), self.dim)
        filled = 0

        def rows_for(n: int) -> torch.Tensor:
            return vectors[filled : filled + n]  # a batch's rows are consecutive, in processing order

        def done(batch: Batch, next_item: int, sentence_sums: torch.Tensor) -> None:
            nonlocal filled
            filled += batch.n_rows
            sentences.add(batch.sentence_of, sentence_sums, batch.sentence_mask.sum(1))

        self.run(plan, 0, rows_for, done)
        line_vectors = sentences.means()[torch.from_numpy(plan.unique_of)]  # [n_lines, d]
        return EncodedLines(plan.rows.word_rows, vectors, line_vectors, self.counts(plan))

    def counts(self, plan: EncodePlan) -> dict:
        """What the encode record counts (all sums over sentences: additive)."""
        n_total = int(plan.rows.sent_offsets[-1])
        n_vec_words = int((plan.rows.word_rows >= 0).sum())
        pieces = np.concatenate(plan.pieces.n_pieces) if plan.pieces.n_pieces else np.zeros(0, dtype=np.int64)  # [W]
        sentence_of_word = np.repeat(np.arange(len(plan.n_words)), plan.n_words)  # [W] each word's unique sentence
        times = np.bincount(plan.unique_of, minlength=len(plan.n_words))[sentence_of_word]  # [W] its occurrences
        without_pieces = int(times[pieces == 0].sum())
        # a word longer than the window gets its vector from its first pieces: truncated, as is one without a vector
        truncated = n_total - n_vec_words - without_pieces + int(times[pieces > self.window].sum())
        counts = (
            len(plan.unique_of),
            len(plan.n_words),
            n_total,
            n_vec_words,
            truncated,
            without_pieces,
            int((np.fromiter(map(len, plan.pieces.ids), dtype=np.int64) > self.window).sum()),
            len(plan.rows.items),
            plan.rows.n_rows,
        )
        return {name: int(n) for name, n in zip(ENCODE_COUNTS, counts)}


class EncodedLines(NamedTuple):
    """Sentences encoded in memory (Encoder.vectors)."""

    word_rows: np.ndarray  # [n_words_total] the row of every word (-1: no vector)
    vectors: torch.Tensor  # [n_rows, d] float16, the word vectors
    sentences: torch.Tensor  # [n_lines, d] float16, the model's own embedding of each line (SentenceSums)
    counts: dict  # the plan's counts (Encoder.counts)


class SentenceSums:
    """The model's own embedding of each unique sentence, as it pools it (the
    mean of its last layer's tokens, or its first token): pooled sums and
    token counts, added up over the items of the sentence (additive, so
    windows, shards and machines add up)."""

    def __init__(self, n_sentences: int, dim: int):
        self.sums = torch.zeros((n_sentences, dim))  # [U, d] float32
        self.tokens = torch.zeros(n_sentences)  # [U]

    def add(self, ids: torch.Tensor, sums: torch.Tensor, tokens: torch.Tensor) -> None:
        self.sums.index_add_(0, ids, sums.float())
        self.tokens.index_add_(0, ids, tokens.float())

    def means(self) -> torch.Tensor:
        """[U, d] float16, each sentence's pooled embedding."""
        return (self.sums / self.tokens.clamp(min=1).unsqueeze(1)).half()


def save_sentence_vectors(work: WorkDir, key: str, n_shards: int, unique_of: np.ndarray, dim: int) -> bool:
    """The shards' pooled sums added up into WORK/sentences.safetensors: `vectors`
    [U, d] float16, one per unique sentence, and `line_sentence` [n_lines], the
    unique sentence of each line of corpus.en. False (and no file) where a shard
    (of an interrupted run before xlembed kept them) has none."""
    work.sentence_vectors.unlink(missing_ok=True)
    sentences = SentenceSums(int(unique_of.max(initial=-1)) + 1, dim)
    for k in range(n_shards):
        with safe_open(str(work.vectors_shard(k)), "pt") as f:
            if "sentence_sums" not in f.keys():
                return False
            sentences.add(f.get_tensor("sentence_ids"), f.get_tensor("sentence_sums"), f.get_tensor("sentence_tokens"))
    write_sentence_vectors(work, key, sentences.means(), torch.from_numpy(unique_of))
    return True


def write_sentence_vectors(work: WorkDir, key: str, vectors: torch.Tensor, line_sentence: torch.Tensor) -> None:
    """WORK/sentences.safetensors (distill.stored_targets reads it): `vectors` [U, d]
    float16, `line_sentence` [n_lines] the row of each line of corpus.en, and the
    key of the encode that made them."""
    save_tensors(work.sentence_vectors, {"vectors": vectors, "line_sentence": line_sentence},
                 metadata={"encode_key": key})


class EncodeSetup(NamedTuple):
    """What the encode stage's key is made of, resolved once."""

    model_dir: Path
    device: torch.device
    key: str
    precision_choice: PrecisionChoice

    @property
    def precision(self) -> Precision:
        return self.precision_choice.precision


def resolve_device_precision(opts: EncodeConfig) -> tuple[torch.device, Precision]:
    """Where the encoder runs and in what precision, resolved on the machine
    that runs it (the same function on the driver and on every Ray worker)."""
    device = resolve_device(opts.device)
    return device, resolve_precision(opts.precision, device)


def encode_setup(config: Config, work: WorkDir) -> EncodeSetup:
    opts = config.encode
    device = resolve_device(opts.device)
    choice = precision_choice(opts.precision, device)
    corpus_en = require(work.corpus_en, "tokenize")
    model_dir = resolve_model_dir(opts.model)
    key = stage_key(
        "encode",
        config=fingerprint(opts),
        device=str(device),
        precision_used=choice.precision.value,
        corpus_en=file_hash(corpus_en),
        kept="word vectors, sentence embeddings",  # an encode before the sentence embeddings were kept is not this
    )
    return EncodeSetup(model_dir, device, key, choice)


def encode_record(config: Config, work: WorkDir, setup: EncodeSetup, max_length: int, dim: int, counts: dict) -> dict:
    """The encode record, less the stage's own bookkeeping (see records.run_stage)."""
    return dict(
        options=dict(section_dict(config.encode), model=str(setup.model_dir), device=str(setup.device)),
        precision_used=setup.precision.value,
        precision_decided_by=dict(
            by=setup.precision_choice.decided_by, bf16_speedup=setup.precision_choice.bf16_speedup
        ),
        max_length_used=max_length,
        inputs={str(work.corpus_en): file_hash(work.corpus_en)},
        model_sha256=model_hash(setup.model_dir),
        dim=dim,
        counts=counts,
    )


def encode(config: Config, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """Encode `corpus.en` into vector shards and their index; return the
    record (counts; `skipped` when up to date, `resumed_at_shard` when an
    interrupted run of the same key was continued)."""
    opts = config.encode
    setup = encode_setup(config, work)

    def compute() -> dict:
        start = time.perf_counter()
        encoder = Encoder(setup.model_dir, opts, setup.device, setup.precision)
        plan = encoder.plan(read_lines(work.corpus_en))
        shard_starts, next_item, resumed_at = resume(work, setup.key)
        writer = ShardWriter(
            work,
            setup.key,
            shard_starts,
            opts.shard_rows,
            encoder.dim,
            batch_rows=max(opts.batch_tokens, encoder.window),
        )  # a batch's words <= its pieces
        # progress in units of work: items run longest first, so sentences/s would start slow and
        # make the ETA hours too long; word pieces/s holds from the first batch to the last
        with reporter.task("encode", sum(item.stop - item.start for item in plan.rows.items), "word pieces") as task:
            task.advance(sum(item.stop - item.start for item in plan.rows.items[:next_item]))

            def done(batch: Batch, next_item: int, sentence_sums: torch.Tensor) -> None:
                writer.add_sentences(batch, sentence_sums)
                writer.add(batch.n_rows, next_item)
                task.advance(batch.n_pieces)

            encoder.run(plan, next_item, writer.rows, done)
            writer.close(len(plan.rows.items))
        kept = save_sentence_vectors(work, setup.key, len(writer.shard_starts) - 1, plan.unique_of, encoder.dim)

        start_index = time.perf_counter()
        save_tensors(
            work.vectors_index,
            {
                "sent_offsets": torch.from_numpy(plan.rows.sent_offsets),
                "word_rows": torch.from_numpy(plan.rows.word_rows),
                "shard_starts": torch.tensor(writer.shard_starts, dtype=torch.int64),
            },
            metadata={"dim": str(encoder.dim), "rows": str(plan.rows.n_rows)},
        )
        work.vectors_progress.unlink(missing_ok=True)
        encoder.timing.shards += writer.seconds + time.perf_counter() - start_index
        counts = dict(encoder.counts(plan), shards=len(writer.shard_starts) - 1)
        return dict(
            encode_record(config, work, setup, encoder.max_length, encoder.dim, counts),
            vectors_kept=True,
            sentence_vectors=kept,
            resumed_at_shard=resumed_at,
            timing=encoder.timing.record(time.perf_counter() - start),
        )

    return run_stage(work, "encode", setup.key, force, compute, outputs=(work.vectors_index,))


def remove_vectors(work: WorkDir) -> None:
    """Remove the encode stage's vector files (ours by name) from the work directory."""
    for path in [*work.vectors_dir.glob("shard-*.safetensors"), work.vectors_index, work.vectors_progress]:
        path.unlink(missing_ok=True)


def read_progress(work: WorkDir, key: str) -> dict | None:
    """The progress of an interrupted encode with this key, if its shards are all there."""
    try:
        progress = read_json(work.vectors_progress)
    except (OSError, ValueError, XlembedError):
        return None
    if progress.get("key") != key:
        return None
    if not all(work.vectors_shard(k).exists() for k in range(len(progress["shard_starts"]) - 1)):
        return None
    return progress


class VectorStore:
    """Read access to the encode stage's shards and index."""

    def __init__(self, work: WorkDir):
        index = load_file(str(require(work.vectors_index, "encode")))
        self.sent_offsets = index["sent_offsets"].numpy()
        self.word_rows = index["word_rows"].numpy()
        self.shard_starts = index["shard_starts"].numpy()
        self.work = work

    @property
    def n_shards(self) -> int:
        return len(self.shard_starts) - 1

    def shard(self, k: int) -> torch.Tensor:
        """Shard k's vectors, checked: a whole safetensors file, every value
        finite (a damaged shard never reaches a matrix)."""
        path = require(self.work.vectors_shard(k), "encode")
        try:
            with safe_open(str(path), "pt") as f:  # the tensor alone, not the file's bytes and then a copy
                vectors = f.get_tensor("vectors")
        except Exception as e:  # safetensors' own error types: truncated or garbled file
            raise XlembedError(f"{path}: not a readable vector shard ({str(e).splitlines()[0]}); "
                               "run `xlembed encode --force`")
        if not all_finite(vectors):
            raise XlembedError(f"{path}: holds non-finite values (NaN or infinity); run `xlembed encode --force`")
        return vectors

    def rows_of(self, sentence: int) -> np.ndarray:
        return self.word_rows[self.sent_offsets[sentence] : self.sent_offsets[sentence + 1]]
