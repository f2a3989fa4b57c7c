"""What each stage was computed from, so that an up-to-date stage is skipped.

A stage's key hashes everything its output depends on: its options, the
contents of its input files (or, for deterministic upstream stages, their
keys), the model's files and xlembed's version. A stage writes its record
(with the key) last, after all its outputs, and removes it first, before
touching them: a record whose key matches means complete outputs.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from . import __version__
from .config import WorkDir
from .io import read_json, sha256_file


def stage_key(stage: str, **parts) -> str:
    payload = json.dumps(dict(stage=stage, xlembed_version=__version__, **parts), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


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


@lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def file_hash(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process."""
    st = Path(path).stat()
    return _cached_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def model_hash(model_dir: Path) -> str:
    """sha256 over the names and contents of a model directory's files."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(model_dir)).encode() + b"\0" + file_hash(p).encode())
    return h.hexdigest()
