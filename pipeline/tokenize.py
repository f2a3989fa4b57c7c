"""Stage 1: read the parallel corpus and split both sides into words.

English is split exactly as the model's tokenizer pre-tokenizes it (its
normalizer included, so an uncased model's words are lowercased): every
English word then maps to whole word pieces in `encode`. Chinese is
NFKC-normalised and segmented by jieba.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import re
import signal
import unicodedata
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .config import Config, section_dict
from .errors import XlembedError
from .io import Reporter, SilentReporter, atomic_path, read_lines
from .layout import WorkDir
from .models import load_tokenizer, resolve_model_dir
from .records import file_hash, fingerprint, model_hash, run_stage, stage_key


def without_controls(text: str) -> str:
    """Control and format characters (NUL, lone CR, zero-width space, BOM,
    joiners...) become spaces: they separate words and are never part of one."""
    if text.isprintable():
        return text
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def english_splitter(model_dir: Path) -> Callable[[str], list[str]]:
    """The model tokenizer's own normalizer and pre-tokenizer, as a function
    from a sentence to its words."""
    backend = load_tokenizer(model_dir).backend_tokenizer
    normalizer, pre_tokenizer = backend.normalizer, backend.pre_tokenizer

    def split(text: str) -> list[str]:
        text = without_controls(text)
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        if pre_tokenizer is None:
            return text.split()
        words = (text[start:end].strip() for _, (start, end) in pre_tokenizer.pre_tokenize_str(text))
        return [w for word in words for w in word.split()]

    return split


SYSTEM_TEMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")  # as Python's tempfile tries them, less its last resort, the cwd


def jieba_cache_dir() -> str:
    """Where jieba keeps its 9 MB dictionary cache: the system's temporary
    folder as usual, else the user's cache folder, but never the current
    directory (where Python's tempfile falls back when /tmp is read-only).
    Where none is writable, jieba rebuilds the dictionary each time, silently."""
    import tempfile

    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")] + list(SYSTEM_TEMP_DIRS)
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for directory in [*(c for c in candidates if c), os.path.join(cache_home, "xlembed")]:
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
            return directory
        except OSError:
            continue
    return os.path.join(cache_home, "xlembed")  # not writable: jieba's dump fails quietly


def chinese_splitter(user_dict: Path | None = None, hmm: bool = True) -> Callable[[str], list[str]]:
    import jieba

    jieba.setLogLevel(logging.CRITICAL)  # a cache it cannot write costs time, not a traceback on the screen
    segmenter = jieba.Tokenizer()
    segmenter.tmp_dir = jieba_cache_dir()
    if user_dict is not None:
        if not Path(user_dict).is_file():
            raise XlembedError(f"{user_dict}: jieba user dictionary does not exist")
        segmenter.load_userdict(str(user_dict))

    def split(text: str) -> list[str]:
        text = without_controls(unicodedata.normalize("NFKC", text))
        return [w for token in segmenter.cut(text, HMM=hmm) for w in token.split()]

    return split


def recorded_splitter(tokenize_options: dict) -> Callable[[str], list[str]]:
    """Chinese split as a build's tokenize record (or manifest) says: its
    user dictionary and HMM setting; a dictionary moved since is named as such."""
    user_dict = tokenize_options.get("user_dict")
    if user_dict and not Path(user_dict).is_file():
        raise XlembedError(f"{user_dict}: the jieba user dictionary this build was tokenized with is no longer "
                           "there; put it back, or tokenize again with `--force --user-dict FILE`")
    return chinese_splitter(Path(user_dict) if user_dict else None, tokenize_options.get("hmm", True))


def count_lines(path: Path) -> int | None:
    """Lines as read_lines yields them (a last line without a newline counts); None for .gz or not a file."""
    if path.suffix == ".gz" or not path.is_file():
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return lines + (last != b"\n")


def _pairs_from_tsv(path: Path, en_col: int, zh_col: int) -> Iterator[tuple[str, str]]:
    need = max(en_col, zh_col)
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            yield "", ""
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise XlembedError(f"{path}:{lineno}: has {len(cols)} tab-separated column(s), need at least {need}")
        yield cols[en_col - 1], cols[zh_col - 1]


def _pairs_from_files(en: Path, zh: Path) -> Iterator[tuple[str, str]]:
    n_pairs = 0
    for e, z in itertools.zip_longest(read_lines(en), read_lines(zh)):
        if e is None or z is None:
            # report both totals: count the rest of the longer file
            n_en = sum(1 for _ in read_lines(en)) if e is not None else n_pairs
            n_zh = sum(1 for _ in read_lines(zh)) if z is not None else n_pairs
            raise XlembedError(f"line counts differ: {en} has {n_en} lines, {zh} has {n_zh}")
        n_pairs += 1
        yield e, z


HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
LANGUAGE_SAMPLE = 1000  # first non-empty pairs whose scripts are checked


def checked_languages(pairs: Iterator[tuple[str, str]], en_side: str, zh_side: str) -> Iterator[tuple[str, str]]:
    """`pairs`, unchanged, after checking their first LANGUAGE_SAMPLE
    non-empty pairs: most Chinese sides hold a Chinese character, most
    English sides none. Swapped or wrong columns fail here, in one line
    naming the side, before anything is written."""
    head: list[tuple[str, str]] = []
    n = zh_han = en_han = 0
    for pair in pairs:
        head.append(pair)
        if pair[0].strip() and pair[1].strip():
            n += 1
            zh_han += bool(HAN.search(pair[1]))
            en_han += bool(HAN.search(pair[0]))
            if n == LANGUAGE_SAMPLE:
                break
    hint = "; pass --no-check-languages if the corpus is genuinely mixed"
    if n and zh_han * 2 < n:
        raise XlembedError(f"{zh_side}: does not look Chinese: only {zh_han} of its first {n} sentences hold a Chinese "
                           f"character{hint}")
    if n and en_han * 2 > n:
        raise XlembedError(f"{en_side}: does not look English: {en_han} of its first {n} sentences hold Chinese "
                           f"characters (swapped columns?){hint}")
    yield from head
    yield from pairs


CHUNK = 2048  # pairs per task of a worker process

_splitters: tuple[Callable, ...] | None = None  # one per column, set before the workers fork


def _split(splitters: tuple[Callable, ...], chunk: list[tuple[str, ...]]) -> list[tuple[list[str], ...]]:
    return [tuple(split(text) for split, text in zip(splitters, row)) for row in chunk]


def _split_chunk(chunk: list[tuple[str, ...]]) -> list[tuple[list[str], ...]]:
    """In a worker: _split with the splitters it inherited at the fork."""
    return _split(_splitters, chunk)


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the main process
    alone handles it (one line, no traceback per worker) and ends the pool,
    whose SIGTERM then ends a worker plainly (not through the CLI's handler, inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _chunks(rows: Iterator[tuple[str, ...]], size: int) -> Iterator[list[tuple[str, ...]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def split_rows(rows: Iterable[tuple[str, ...]], splitters: tuple[Callable, ...],
               workers: int) -> Iterator[tuple[list[str], ...]]:
    """Each row's texts split into words, column i by splitters[i], in order
    (a pair: (English words, Chinese words)). With more than one worker and
    more than one chunk of input, chunks are split by forked worker processes
    (jieba is single-threaded), results kept in input order, so the output is
    the same whatever the number of workers. Reading and its errors (file and
    line) stay in this process."""
    global _splitters
    chunks = _chunks(iter(rows), CHUNK)
    first = next(chunks, [])
    second = next(chunks, None)
    if workers <= 1 or second is None:
        for chunk in itertools.chain([first], [second] if second else [], chunks):
            yield from _split(splitters, chunk)
        return
    _splitters = splitters  # inherited by the forked workers; without a user dictionary each loads jieba's
    # dictionary at its first cut (~1 s of CPU each), which keeps it out of this process, that goes on to encode
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupts) as pool:
            pending: deque = deque()  # chunks in flight, in input order: a bounded read-ahead
            for chunk in itertools.chain([first, second], chunks):
                pending.append(pool.submit(_split_chunk, chunk))
                if len(pending) > 2 * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
    except BrokenProcessPool as e:  # a worker killed (out of memory, `kill`): an error, never a wait for its chunk
        raise XlembedError("a word-splitting worker process died (killed, or out of memory?); nothing was "
                           "written (tokenize.workers sets how many run)") from e
    finally:
        _splitters = None


def worker_count(workers: int) -> int:
    """0: one per CPU core this process may use."""
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def tokenize(config: Config, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """Write `corpus.en` and `corpus.zh` (space-separated words, one pair per
    line) and return the record (counts; `skipped` when up to date). The
    English side is split by the tokenizer of `config.encode.model`."""
    opts = config.tokenize
    if opts.tsv is not None:
        inputs = [Path(opts.tsv)]
    else:
        inputs = [Path(opts.en), Path(opts.zh)]
    model_dir = resolve_model_dir(config.encode.model)
    key = stage_key("tokenize", config=fingerprint(opts), model=model_hash(model_dir))

    def compute() -> dict:
        if opts.tsv is not None:
            pairs = _pairs_from_tsv(Path(opts.tsv), opts.en_column, opts.zh_column)
            sides = (f"{opts.tsv}: column {opts.en_column} (tokenize.en_column)",
                     f"{opts.tsv}: column {opts.zh_column} (tokenize.zh_column)")
        else:
            pairs = _pairs_from_files(Path(opts.en), Path(opts.zh))
            sides = (f"{opts.en} (tokenize.en)", f"{opts.zh} (tokenize.zh)")
        if opts.check_languages:
            pairs = checked_languages(pairs, *sides)
        split_en = english_splitter(model_dir)
        split_zh = chinese_splitter(opts.user_dict, opts.hmm)
        counts = dict(pairs_read=0, pairs_kept=0, dropped_empty_en=0, dropped_empty_zh=0, en_words=0, zh_words=0)
        with atomic_path(work.corpus_en) as en_tmp, atomic_path(work.corpus_zh) as zh_tmp, \
                open(en_tmp, "w", encoding="utf-8") as en_out, open(zh_tmp, "w", encoding="utf-8") as zh_out, \
                reporter.task("tokenize", count_lines(inputs[0]), "pairs") as task:
            for en_words, zh_words in split_rows(pairs, (split_en, split_zh), worker_count(opts.workers)):
                counts["pairs_read"] += 1
                task.advance()
                if not en_words or not zh_words:
                    counts["dropped_empty_en"] += not en_words
                    counts["dropped_empty_zh"] += bool(en_words) and not zh_words
                    continue
                en_out.write(" ".join(en_words) + "\n")
                zh_out.write(" ".join(zh_words) + "\n")
                counts["pairs_kept"] += 1
                counts["en_words"] += len(en_words)
                counts["zh_words"] += len(zh_words)
            if counts["pairs_read"] == 0:
                raise XlembedError(f"{inputs[0]}: empty file, no sentence pairs")
            if counts["pairs_kept"] == 0:
                raise XlembedError(
                    f"{inputs[0]}: no sentence pair left after tokenization ({counts['pairs_read']} read)"
                )
        counts["pairs_dropped"] = counts["pairs_read"] - counts["pairs_kept"]
        options = dict(section_dict(opts), model=str(model_dir))
        if opts.user_dict is not None:  # write (--oov context) and Embeddings.tokenizer read it later, from anywhere
            options["user_dict"] = str(Path(opts.user_dict).resolve())
        return dict(options=options,
                    inputs={str(p): file_hash(p) for p in inputs}, model_sha256=model_hash(model_dir), counts=counts)

    return run_stage(work, "tokenize", key, force, compute)
