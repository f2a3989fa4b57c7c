"""Stage 2: one contextual vector per English word occurrence.

Identical sentences are encoded once. Sentences are sorted by length and
batched, each word's vector is the mean of its word pieces at the chosen
hidden layer, and vectors are written as float16 shards. The index maps
(sentence, word) to a row of the shards:

    row = word_rows[sent_offsets[s] + j]      # -1: the word has no vector

so memory stays bounded by one shard, whatever the corpus size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from .config import Config, Device, WorkDir, section_dict
from .io import Reporter, SilentReporter, XlembedError, read_json, read_lines, require, save_tensors, write_json_atomic
from .models import layer_indices, load_encoder, load_tokenizer, resolve_model_dir, special_tokens
from .records import file_hash, fingerprint, model_hash, run_stage, stage_key

TOKENIZE_CHUNK = 4096  # sentences per call of the Rust tokenizer


def resolve_device(device: Device) -> torch.device:
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise XlembedError("--device cuda: no CUDA device is available")
    return torch.device(Device(device).value)


class PiecePlan(NamedTuple):
    """Word pieces of each unique sentence, whole words only, up to the window."""

    ids: list[np.ndarray]  # per sentence: [n_kept_pieces] int32 piece ids
    words: list[np.ndarray]  # per sentence: [n_kept_pieces] int32 index of each piece's word
    has_vector: list[np.ndarray]  # per sentence: [n_words] bool, all its pieces kept (and at least one)
    no_pieces: np.ndarray  # [n_sentences] int64, words the tokenizer turned into no piece


def piece_plan(tokenizer, sentences: list[list[str]], max_pieces: int) -> PiecePlan:
    """Tokenize word-split sentences; keep whole words up to `max_pieces`."""
    plan = PiecePlan([], [], [], np.zeros(len(sentences), dtype=np.int64))
    # the Rust tokenizer itself (no per-sentence Python conversion), as a
    # private copy without the truncation/padding a tokenizer.json may carry
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        chunk = sentences[start:start + TOKENIZE_CHUNK]
        encodings = backend.encode_batch(chunk, is_pretokenized=True, add_special_tokens=False)
        for s, (words, encoding) in enumerate(zip(chunk, encodings), start=start):
            ids = np.asarray(encoding.ids, dtype=np.int32)
            word_of_piece = np.asarray(encoding.word_ids, dtype=np.int32)
            n_pieces = np.bincount(word_of_piece, minlength=len(words))  # [n_words]
            kept_words = (np.cumsum(n_pieces) <= max_pieces) & (n_pieces > 0)
            n_kept = int(n_pieces[kept_words].sum())  # kept words form a prefix of the pieces
            plan.ids.append(ids[:n_kept])
            plan.words.append(word_of_piece[:n_kept])
            plan.has_vector.append(kept_words)
            plan.no_pieces[s] = int((n_pieces == 0).sum())
    return plan


@dataclass
class RowPlan:
    """Where each word's vector goes: rows are numbered in processing order
    (longest sentences first, so memory peaks early); duplicates share rows.

        row = word_rows[sent_offsets[s] + j]      # -1: word j of sentence s has no vector
    """

    unique_of: np.ndarray  # [n_sentences] index of each sentence's unique sentence
    order: np.ndarray  # [n_unique] unique sentences in processing order
    unique_rows: list[np.ndarray]  # per unique sentence: [n_words] row of each word, -1 if none
    sent_offsets: np.ndarray  # [n_sentences + 1] first word of each sentence in word_rows
    word_rows: np.ndarray  # [n_words_total] row of every word occurrence, -1 if none
    n_rows: int


def row_plan(unique_of: np.ndarray, n_words: np.ndarray, pieces: PiecePlan) -> RowPlan:
    order = np.argsort(-np.array([len(p) for p in pieces.ids]), kind="stable")
    unique_rows = [None] * len(n_words)
    next_row = 0
    for u in order:
        rows = np.full(n_words[u], -1, dtype=np.int64)
        n_vec = int(pieces.has_vector[u].sum())
        rows[pieces.has_vector[u]] = np.arange(next_row, next_row + n_vec)
        unique_rows[u] = rows
        next_row += n_vec

    # the index over all sentences: sentence s copies unique sentence unique_of[s]
    lengths = n_words[unique_of]  # [n_sentences]
    sent_offsets = np.zeros(len(unique_of) + 1, dtype=np.int64)
    np.cumsum(lengths, out=sent_offsets[1:])
    unique_flat = np.concatenate(unique_rows) if unique_rows else np.zeros(0, dtype=np.int64)
    unique_offsets = np.zeros(len(unique_rows) + 1, dtype=np.int64)
    np.cumsum(n_words, out=unique_offsets[1:])
    within = np.arange(sent_offsets[-1]) - np.repeat(sent_offsets[:-1], lengths)  # [n_words_total] j of each word
    word_rows = unique_flat[np.repeat(unique_offsets[:-1][unique_of], lengths) + within]
    return RowPlan(unique_of, order, unique_rows, sent_offsets, word_rows, next_row)


@dataclass
class Batch:
    """One forward pass: padded input and, per kept piece, where it sits and
    which output row (local to the batch) its word goes to."""

    input_ids: torch.Tensor  # [B, T] long, padded with the pad id
    attention: torch.Tensor  # [B, T] long, 1 at real tokens
    piece_sentence: np.ndarray  # [P] batch row of each kept piece
    piece_position: np.ndarray  # [P] position of each kept piece (after the special prefix)
    piece_target: np.ndarray  # [P] local output row of each kept piece's word
    n_rows: int  # words with a vector in this batch


def make_batch(batch: np.ndarray, pieces: PiecePlan, rows: RowPlan, prefix: list[int], suffix: list[int], pad_id: int) -> Batch:
    inputs = [prefix + pieces.ids[u].tolist() + suffix for u in batch]
    width = max(len(x) for x in inputs)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(inputs):
        input_ids[i, :len(x)] = torch.tensor(x)
        attention[i, :len(x)] = 1
    batch_rows = [rows.unique_rows[u][pieces.words[u]] for u in batch]  # per sentence: [n_pieces] row of each piece's word
    row_start = min((r.min() for r in batch_rows if len(r)), default=0)  # rows of a batch are consecutive
    return Batch(
        input_ids=input_ids,
        attention=attention,
        piece_sentence=np.repeat(np.arange(len(batch)), [len(r) for r in batch_rows]),
        piece_position=np.concatenate([np.arange(len(r)) + len(prefix) for r in batch_rows]),
        piece_target=np.concatenate(batch_rows) - row_start,
        n_rows=int(sum(pieces.has_vector[u].sum() for u in batch)),
    )


def forward(model, batch: Batch, layers: list[int], device: torch.device) -> torch.Tensor:
    """Hidden states [B, T, d] (float32): the mean of `layers` (indices into
    hidden_states, 0 = embeddings)."""
    n_layers = model.config.num_hidden_layers
    last_only = len(layers) == 1 and layers[0] == n_layers
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention.to(device), output_hidden_states=not last_only)
    hidden = out.last_hidden_state if last_only else torch.stack([out.hidden_states[i] for i in layers]).mean(0)
    return hidden.float()


def pool(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Each word's vector: the mean of its pieces' hidden states. [n_rows, d] float16 on the CPU."""
    device = hidden.device
    gathered = hidden[torch.from_numpy(batch.piece_sentence).to(device),
                      torch.from_numpy(batch.piece_position).long().to(device)]  # [P, d]
    target = torch.from_numpy(batch.piece_target).to(device)  # [P]
    sums = torch.zeros((batch.n_rows, hidden.shape[-1]), device=device).index_add_(0, target, gathered)  # [n_rows, d]
    counts = torch.bincount(target, minlength=batch.n_rows).clamp_(min=1).unsqueeze(1)  # [n_rows, 1]
    return (sums / counts).to(torch.float16).cpu()


class ShardWriter:
    """Buffers pooled rows and writes them as shards of about `shard_rows`
    rows; after each shard, progress.json says where a resumed run starts."""

    def __init__(self, work: WorkDir, key: str, shard_starts: list[int], shard_rows: int):
        self.work, self.key, self.shard_starts, self.shard_rows = work, key, shard_starts, shard_rows
        self.buffer: list[torch.Tensor] = []
        self.buffered = 0

    def add(self, rows: torch.Tensor, next_sentence: int) -> None:
        self.buffer.append(rows)
        self.buffered += len(rows)
        if self.buffered >= self.shard_rows:
            self.flush(next_sentence)

    def flush(self, next_sentence: int) -> None:
        save_tensors(self.work.vectors_shard(len(self.shard_starts) - 1), {"vectors": torch.cat(self.buffer)})
        self.shard_starts.append(self.shard_starts[-1] + self.buffered)
        self.buffer, self.buffered = [], 0
        write_json_atomic(self.work.vectors_progress, dict(key=self.key, shard_starts=self.shard_starts, next_sentence=next_sentence))

    def close(self, n_sentences: int) -> None:
        if self.buffered or len(self.shard_starts) == 1:
            self.flush(n_sentences)


def resume(work: WorkDir, key: str) -> tuple[list[int], int, int | None]:
    """(shard_starts, next sentence, shards reused) after the last completed
    shard of an interrupted encode with this key; shards beyond it, and the
    progress of another key, are removed."""
    shard_starts, next_sentence, resumed_at = [0], 0, None
    progress = read_progress(work, key)
    if progress is not None:
        shard_starts, next_sentence = progress["shard_starts"], progress["next_sentence"]
        resumed_at = len(shard_starts) - 1
    work.vectors_dir.mkdir(parents=True, exist_ok=True)
    for old in work.vectors_dir.glob("shard-*.safetensors"):
        if int(old.stem.split("-")[1]) >= len(shard_starts) - 1:
            old.unlink()
    if progress is None:
        work.vectors_progress.unlink(missing_ok=True)
    return shard_starts, next_sentence, resumed_at


def encode(config: Config, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """Encode `corpus.en` into vector shards and their index; return the
    record (counts; `skipped` when up to date, `resumed_at_shard` when an
    interrupted run of the same key was continued)."""
    opts = config.encode
    device = resolve_device(opts.device)
    corpus_en = require(work.corpus_en, "tokenize")
    model_dir = resolve_model_dir(opts.model)
    key = stage_key("encode", config=fingerprint(opts), device=str(device), corpus_en=file_hash(corpus_en))

    def compute() -> dict:
        tokenizer = load_tokenizer(model_dir)
        model = load_encoder(model_dir).to(device)
        layers = layer_indices(opts.layer, model.config.num_hidden_layers)
        # a --max-length beyond what the model can take is capped at its limit
        max_length = min(opts.max_length, getattr(model.config, "max_position_embeddings", None) or opts.max_length)
        prefix, suffix = special_tokens(tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        # deduplicate: sentence s is unique sentence unique_of[s]
        unique_index: dict[str, int] = {}
        unique_of = np.fromiter((unique_index.setdefault(line, len(unique_index)) for line in read_lines(corpus_en)), dtype=np.int64)
        unique_sentences = [line.split(" ") for line in unique_index]
        del unique_index
        pieces = piece_plan(tokenizer, unique_sentences, max_length - len(prefix) - len(suffix))
        n_words = np.array([len(w) for w in unique_sentences], dtype=np.int64)  # [n_unique]
        rows = row_plan(unique_of, n_words, pieces)

        shard_starts, next_sentence, resumed_at = resume(work, key)
        writer = ShardWriter(work, key, shard_starts, opts.shard_rows)
        autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
        with torch.inference_mode(), autocast, reporter.task("encode", len(rows.order), "sentences") as task:
            task.advance(next_sentence)
            for b in range(next_sentence, len(rows.order), opts.batch_size):
                batch = make_batch(rows.order[b:b + opts.batch_size], pieces, rows, prefix, suffix, pad_id)
                writer.add(pool(forward(model, batch, layers, device), batch), b + len(batch.input_ids))
                task.advance(len(batch.input_ids))
            writer.close(len(rows.order))

        n_total = int(rows.sent_offsets[-1])
        n_vec_words = int((rows.word_rows >= 0).sum())
        without_pieces = int(pieces.no_pieces[unique_of].sum())
        save_tensors(work.vectors_index,
                     {"sent_offsets": torch.from_numpy(rows.sent_offsets), "word_rows": torch.from_numpy(rows.word_rows),
                      "shard_starts": torch.tensor(writer.shard_starts, dtype=torch.int64)},
                     metadata={"dim": str(model.config.hidden_size), "rows": str(rows.n_rows)})
        work.vectors_progress.unlink(missing_ok=True)
        return dict(
            options=dict(section_dict(opts), model=str(model_dir), device=str(device)),
            max_length_used=max_length,
            inputs={str(corpus_en): file_hash(corpus_en)},
            model_sha256=model_hash(model_dir),
            dim=model.config.hidden_size,
            counts=dict(
                sentences=int(len(unique_of)),
                unique_sentences=int(len(unique_sentences)),
                words=n_total,
                words_with_vector=n_vec_words,
                words_truncated=n_total - n_vec_words - without_pieces,
                words_without_pieces=without_pieces,
                vector_rows=int(rows.n_rows),
                shards=len(writer.shard_starts) - 1,
            ),
            resumed_at_shard=resumed_at,
        )

    return run_stage(work, "encode", key, force, compute)


def read_progress(work: WorkDir, key: str) -> dict | None:
    """The progress of an interrupted encode with this key, if its shards are all there."""
    try:
        progress = read_json(work.vectors_progress)
    except (OSError, ValueError):
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
        return load_file(str(require(self.work.vectors_shard(k), "encode")))["vectors"]

    def rows_of(self, sentence: int) -> np.ndarray:
        return self.word_rows[self.sent_offsets[sentence]:self.sent_offsets[sentence + 1]]
