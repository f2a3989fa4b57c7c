"""Stage bookkeeping, the same for every stage: key, skip when up to date,
invalidate, compute, record, timing.

A stage's key hashes everything its output depends on: its whole config
(input files by content, the model directory by its files' contents; fields
declared with cache_key=False left out), the keys or contents of what
earlier stages wrote, and xlembed's version. A stage writes its record
(WORK/STAGE.json, with the key) last, after all its outputs, and removes it
first, before touching them: a record whose key matches means complete
outputs.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .config import plain
from .io import read_json, sha256_file, write_json_atomic
from .layout import WorkDir
from .version import __version__


def stage_key(stage: str, **parts) -> str:
    payload = json.dumps(dict(stage=stage, xlembed_version=__version__, **parts), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def fingerprint(section) -> dict:
    """A stage config as it enters the cache key: files by their sha256,
    directories (a model) by model_hash, other values as they are."""
    result = {}
    for f in fields(section):
        if not f.metadata.get("cache_key", True):
            continue
        value = getattr(section, f.name)
        if isinstance(value, Path):
            value = model_hash(value) if value.is_dir() else file_hash(value)
        result[f.name] = plain(value)
    return result


def up_to_date(work: WorkDir, stage: str, key: str) -> dict | None:
    """The stage's record if it was computed from exactly `key`, else None."""
    path = work.record(stage)
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except (ValueError, OSError):
        return None
    return record if record.get("key") == key else None


def invalidate(work: WorkDir, stage: str) -> None:
    work.record(stage).unlink(missing_ok=True)


def run_stage(
    work: WorkDir, stage: str, key: str, force: bool, compute: Callable[[], dict], outputs: tuple[Path, ...] = ()
) -> dict:
    """Skip the stage when its record matches `key` and `outputs` (files the
    record alone does not vouch for) exist (unless `force`), else
    invalidate it, run `compute()` (which writes the outputs and returns the
    record's content: options, inputs, counts, ...) and write the record
    with the key and the seconds it took. Returns the record; `skipped` is
    set when nothing was computed."""
    if not force and (record := up_to_date(work, stage, key)) and all(Path(p).exists() for p in outputs):
        return dict(record, skipped=True)
    start = time.perf_counter()
    invalidate(work, stage)
    record = dict(stage=stage, key=key, **compute())
    record["seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(work.record(stage), record)
    return record


@lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def file_hash(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process."""
    st = Path(path).stat()
    return _cached_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _cached_model_hash(model_dir: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(model_dir)).encode() + b"\0" + file_hash(p).encode())
    return h.hexdigest()


def model_hash(model_dir: Path) -> str:
    """sha256 over the names and contents of a model directory's files."""
    model_dir = Path(model_dir).resolve()
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(model_dir.rglob("*")) if p.is_file())
    return _cached_model_hash(str(model_dir), stamp)
