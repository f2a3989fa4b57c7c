"""Stage 2: one contextual vector per English word occurrence.

Identical sentences are encoded once. Sentences are sorted by length and
batched, each word's vector is the mean of its word pieces at the chosen
hidden layer, and vectors are written as float16 shards. The index maps
(sentence, word) to a row of the shards:

    row = word_rows[sent_offsets[s] + j]      # -1: the word has no vector

so memory stays bounded by one shard, whatever the corpus size.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from .config import EncodeOptions, WorkDir
from .io import Reporter, SilentReporter, XlembedError, read_json, read_lines, require, save_tensors, write_json_atomic
from .models import load_encoder, load_tokenizer, resolve_model_dir
from .records import file_hash, invalidate, model_hash, stage_key, up_to_date

TOKENIZE_CHUNK = 4096  # sentences per call of the Rust tokenizer


def layer_indices(layer: str, n_layers: int) -> list[int]:
    """Indices into `hidden_states` (0 = embeddings, n_layers = last layer)."""
    if layer == "mean-last4":
        if n_layers < 4:
            raise XlembedError(f"--layer mean-last4 needs at least 4 layers, the model has {n_layers}")
        return list(range(n_layers - 3, n_layers + 1))
    try:
        index = int(layer)
    except ValueError:
        raise XlembedError(f"--layer must be an integer or 'mean-last4', got '{layer}'")
    resolved = index + n_layers + 1 if index < 0 else index
    if not 0 <= resolved <= n_layers:
        raise XlembedError(f"--layer {layer} is out of range: the model has {n_layers} layers (0 = embeddings, -1 = last)")
    return [resolved]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise XlembedError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise XlembedError(f"--device must be auto, cpu or cuda, got '{device}'")
    return torch.device(device)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence
    (e.g. [CLS] and [SEP]), found by encoding a probe word both ways."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise XlembedError("cannot tell where this tokenizer puts its special tokens")


def piece_plan(tokenizer, sentences: list[list[str]], max_pieces: int):
    """Tokenize word-split sentences; keep whole words up to `max_pieces`.

    Returns per sentence the kept piece ids (int32) and, per piece, the index
    of its word (int32); per sentence a bool mask of the words that get a
    vector (all their pieces kept, and at least one piece); and per sentence
    the number of words the tokenizer turned into no piece at all.
    """
    piece_ids, piece_words, has_vector, no_pieces = [], [], [], []
    # the Rust tokenizer itself (no per-sentence Python conversion), as a
    # private copy without the truncation/padding a tokenizer.json may carry
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        chunk = sentences[start:start + TOKENIZE_CHUNK]
        encodings = backend.encode_batch(chunk, is_pretokenized=True, add_special_tokens=False)
        for words, encoding in zip(chunk, encodings):
            ids = np.asarray(encoding.ids, dtype=np.int32)
            word_of_piece = np.asarray(encoding.word_ids, dtype=np.int32)
            n_pieces = np.bincount(word_of_piece, minlength=len(words))
            kept_words = (np.cumsum(n_pieces) <= max_pieces) & (n_pieces > 0)
            n_kept = int(n_pieces[kept_words].sum())  # kept words form a prefix of the pieces
            piece_ids.append(ids[:n_kept])
            piece_words.append(word_of_piece[:n_kept])
            has_vector.append(kept_words)
            no_pieces.append(int((n_pieces == 0).sum()))
    return piece_ids, piece_words, has_vector, np.array(no_pieces, dtype=np.int64)


def encode(opts: EncodeOptions, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """Encode `corpus.en` into vector shards and their index; return the
    record (counts; `skipped` when up to date, `resumed_at_shard` when an
    interrupted run of the same key was continued)."""
    start = time.perf_counter()
    if opts.batch_size < 1:
        raise XlembedError("--batch-size must be at least 1")
    if opts.shard_rows < 1:
        raise XlembedError("--shard-rows must be at least 1")
    device = resolve_device(opts.device)
    corpus_en = require(work.corpus_en, "tokenize")
    model_dir = resolve_model_dir(opts.model)
    options = dict(vars(opts), model=str(model_dir), device=str(device))
    model_sha256 = model_hash(model_dir)
    key = stage_key("encode", corpus_en=file_hash(corpus_en), model=model_sha256,
                    **{k: v for k, v in options.items() if k != "model"})
    if not force and (record := up_to_date(work, "encode", key)):
        return dict(record, skipped=True)
    invalidate(work, "encode")

    tokenizer = load_tokenizer(model_dir)
    model = load_encoder(model_dir).to(device)
    layers = layer_indices(opts.layer, model.config.num_hidden_layers)
    # a --max-length beyond what the model can take is capped at its limit
    max_length = min(opts.max_length, getattr(model.config, "max_position_embeddings", None) or opts.max_length)
    special_prefix, special_suffix = special_tokens(tokenizer)
    n_special = len(special_prefix) + len(special_suffix)
    if max_length <= n_special:
        raise XlembedError(f"--max-length must be more than the {n_special} special tokens, got {opts.max_length}")
    prefix = len(special_prefix)

    # deduplicate sentences: sentence s is unique sentence unique_of[s]
    unique_index: dict[str, int] = {}
    unique_of = np.fromiter((unique_index.setdefault(line, len(unique_index)) for line in read_lines(corpus_en)), dtype=np.int64)
    unique_sentences = [line.split(" ") for line in unique_index]
    del unique_index
    piece_ids, piece_words, has_vector, words_without_pieces = piece_plan(tokenizer, unique_sentences, max_length - n_special)

    # rows in processing order: longest sentences first (memory peaks early)
    n_words = np.array([len(w) for w in unique_sentences], dtype=np.int64)
    order = np.argsort(-np.array([len(p) for p in piece_ids]), kind="stable")
    unique_rows = [None] * len(unique_sentences)
    next_row = 0
    for u in order:
        rows = np.full(n_words[u], -1, dtype=np.int64)
        n_vec = int(has_vector[u].sum())
        rows[has_vector[u]] = np.arange(next_row, next_row + n_vec)
        unique_rows[u] = rows
        next_row += n_vec
    n_rows = next_row

    # index over all sentences (duplicates share rows)
    lengths = n_words[unique_of]
    sent_offsets = np.zeros(len(unique_of) + 1, dtype=np.int64)
    np.cumsum(lengths, out=sent_offsets[1:])
    unique_flat = np.concatenate(unique_rows) if unique_rows else np.zeros(0, dtype=np.int64)
    unique_offsets = np.zeros(len(unique_rows) + 1, dtype=np.int64)
    np.cumsum(n_words, out=unique_offsets[1:])
    within = np.arange(sent_offsets[-1]) - np.repeat(sent_offsets[:-1], lengths)
    word_rows = unique_flat[np.repeat(unique_offsets[:-1][unique_of], lengths) + within]

    # resume after the last completed shard of an interrupted run with this key
    shard_starts, next_sentence = [0], 0
    progress = read_progress(work, key)
    if progress is not None:
        shard_starts, next_sentence = progress["shard_starts"], progress["next_sentence"]
    resumed_at_shard = len(shard_starts) - 1 if progress is not None else None
    work.vectors_dir.mkdir(parents=True, exist_ok=True)
    for old in work.vectors_dir.glob("shard-*.safetensors"):
        if int(old.stem.split("-")[1]) >= len(shard_starts) - 1:
            old.unlink()
    if progress is None:
        work.vectors_progress.unlink(missing_ok=True)

    dim = model.config.hidden_size
    buffer, buffered = [], 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def flush(next_sentence: int):
        nonlocal buffer, buffered
        save_tensors(work.vectors_shard(len(shard_starts) - 1), {"vectors": torch.cat(buffer)})
        shard_starts.append(shard_starts[-1] + buffered)
        buffer, buffered = [], 0
        write_json_atomic(work.vectors_progress, dict(key=key, shard_starts=shard_starts, next_sentence=next_sentence))

    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast, reporter.task("encode", len(order), "sentences") as task:
        task.advance(next_sentence)
        for b in range(next_sentence, len(order), opts.batch_size):
            batch = order[b:b + opts.batch_size]
            inputs = [special_prefix + piece_ids[u].tolist() + special_suffix for u in batch]
            width = max(len(x) for x in inputs)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for i, x in enumerate(inputs):
                input_ids[i, :len(x)] = torch.tensor(x)
                attention[i, :len(x)] = 1
            # each kept piece -> (batch row, position) and the local row of its word
            batch_rows = [unique_rows[u][piece_words[u]] for u in batch]
            row_start = min((r.min() for r in batch_rows if len(r)), default=0)
            piece_sentence = np.repeat(np.arange(len(batch)), [len(r) for r in batch_rows])
            piece_position = np.concatenate([np.arange(len(r)) + prefix for r in batch_rows])
            piece_target = np.concatenate(batch_rows) - row_start
            n_batch_rows = int(sum(has_vector[u].sum() for u in batch))

            out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                        output_hidden_states=len(layers) > 1 or layers[0] != model.config.num_hidden_layers)
            if len(layers) == 1 and layers[0] == model.config.num_hidden_layers:
                hidden = out.last_hidden_state
            else:
                hidden = torch.stack([out.hidden_states[i] for i in layers]).mean(0)
            hidden = hidden.float()
            gathered = hidden[torch.from_numpy(piece_sentence).to(device), torch.from_numpy(piece_position).long().to(device)]
            target = torch.from_numpy(piece_target).to(device)
            sums = torch.zeros((n_batch_rows, dim), device=device).index_add_(0, target, gathered)
            counts = torch.bincount(target, minlength=n_batch_rows).clamp_(min=1).unsqueeze(1)
            buffer.append((sums / counts).to(torch.float16).cpu())
            buffered += n_batch_rows
            if buffered >= opts.shard_rows:
                flush(b + len(batch))
            task.advance(len(batch))
        if buffered or len(shard_starts) == 1:
            flush(len(order))

    n_vec_words = int((word_rows >= 0).sum())
    counts = dict(
        sentences=int(len(unique_of)),
        unique_sentences=int(len(unique_sentences)),
        words=int(sent_offsets[-1]),
        words_with_vector=n_vec_words,
        words_truncated=int(sent_offsets[-1]) - n_vec_words - int(words_without_pieces[unique_of].sum()),
        words_without_pieces=int(words_without_pieces[unique_of].sum()),
        vector_rows=int(n_rows),
        shards=len(shard_starts) - 1,
    )
    save_tensors(work.vectors_index,
                 {"sent_offsets": torch.from_numpy(sent_offsets), "word_rows": torch.from_numpy(word_rows),
                  "shard_starts": torch.tensor(shard_starts, dtype=torch.int64)},
                 metadata={"dim": str(dim), "rows": str(n_rows)})
    record = dict(
        stage="encode",
        key=key,
        options=options,
        max_length_used=max_length,
        inputs={str(corpus_en): file_hash(corpus_en)},
        model_sha256=model_sha256,
        dim=dim,
        counts=counts,
        resumed_at_shard=resumed_at_shard,
        seconds=round(time.perf_counter() - start, 3),
    )
    write_json_atomic(work.record("encode"), record)
    work.vectors_progress.unlink(missing_ok=True)
    return record


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
