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
from .errors import XlembedError
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


# the records each stage reads (their keys go into its record: a stage computed from an earlier
# output of one of them is stale)
STAGE_READS = {"tokenize": (), "encode": ("tokenize",), "align": ("tokenize",), "project": ("encode", "align")}


def stage_outputs(work: WorkDir, stage: str) -> list[Path]:
    """The files a stage writes into the work directory (those that exist)."""
    files = {
        "tokenize": [work.corpus_en, work.corpus_zh],
        "encode": [work.vectors_index, *sorted(work.vectors_dir.glob("shard-*.safetensors")), work.sentence_vectors],
        "align": [work.links_forward, work.links_reverse, work.links, work.lexicon],
        "project": [work.projection, work.projection_zh_vocab, work.projection_en_vocab],
    }.get(stage, [])
    return [p for p in files if p.exists()]


def stamps(work: WorkDir, paths: list[Path]) -> dict[str, list[int]]:
    """What a stage wrote, as cheap to check at any scale: size and mtime (ns) of each file."""
    result = {}
    for path in paths:
        st = Path(path).stat()
        result[str(Path(path).relative_to(work.root))] = [st.st_size, st.st_mtime_ns]
    return result


def changed_output(work: WorkDir, record: dict, missing_ok: bool = False) -> Path | None:
    """The first file the record says its stage wrote that is gone (unless
    `missing_ok`) or changed since; None if all are intact."""
    for name, (size, mtime_ns) in (record.get("wrote") or {}).items():
        path = work.root / name
        try:
            st = path.stat()
        except OSError:
            if missing_ok:
                continue
            return path
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            return path
    return None


# what every reader of a record relies on, per stage: "a.b" is key b of the object at key a. A record
# without one of these, or with one of another type (hand-edited, truncated, or from xlembed 0.4, whose
# records had no "read" and "wrote"), is not a valid record: its stage is recomputed by its own command,
# and a later stage refuses it in one line naming the file
RECORD_FIELDS = dict(stage=str, key=str, options=dict, counts=dict, read=dict, wrote=dict, seconds=(int, float))
STAGE_RECORD_FIELDS = {
    "tokenize": dict(RECORD_FIELDS, inputs=dict),
    "encode": dict(RECORD_FIELDS, model_sha256=str, dim=int, **{"options.model": str,
                                                                 "counts.words_truncated": int}),
    "align": dict(RECORD_FIELDS, **{"options.symmetrization": str}),
    "project": dict(RECORD_FIELDS, **{"options.strategy": str}),
}


def record_problem(record, stage: str) -> str | None:
    """Why `record` is not a valid record of `stage` (its first missing or
    wrong-typed field), or None."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    for path, kind in STAGE_RECORD_FIELDS.get(stage, RECORD_FIELDS).items():
        value = record
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return f"no `{path}`" + (" (written by xlembed 0.4 or earlier)" if path in ("read", "wrote") else "")
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            return f"`{path}` is a {type(value).__name__}"
    for name, stamp in record["wrote"].items():
        if not (isinstance(stamp, list) and len(stamp) == 2 and all(type(n) is int for n in stamp)):
            return f"`wrote` of {name} is not [size, mtime]"
    return None


def load_record(work: WorkDir, stage: str) -> tuple[dict | None, str | None]:
    """A stage's record and None, or None and why it cannot be used
    (missing, not JSON, or not a valid record of that stage)."""
    path = work.record(stage)
    try:
        record = read_json(path)
    except FileNotFoundError:
        return None, "missing"
    except (ValueError, OSError, XlembedError):
        return None, "not a valid record (not valid JSON)"
    problem = record_problem(record, stage)
    return (None, f"not a valid record ({problem})") if problem else (record, None)


def read_record(work: WorkDir, stage: str) -> dict | None:
    """A stage's record, or None when it is missing or not a valid record (see RECORD_FIELDS)."""
    return load_record(work, stage)[0]


def valid_record(work: WorkDir, stage: str) -> dict:
    """A stage's record, valid (see RECORD_FIELDS), else one line naming it and the command to run."""
    record, problem = load_record(work, stage)
    if record is None:
        raise XlembedError(f"{work.record(stage)}: {problem}; run `xlembed {stage}` (or `xlembed run`)")
    return record


def check_chain(work: WorkDir, stage: str, outputs: bool = True) -> dict:
    """The record of `stage`, checked with every record it was computed from:
    each exists and is valid, was computed from the current output of the
    stages it read, and the outputs of each are as it wrote them; `stage`'s
    own must all be there, those of the stages before it only where they
    still are (`xlembed work clean --vectors-only` removes the vectors once
    projected). Otherwise one line naming the file and the command to run."""
    record = valid_record(work, stage)
    changed = changed_output(work, record, missing_ok=not outputs)
    if changed is not None:
        raise XlembedError(f"{changed}: {'missing' if not changed.exists() else 'changed'} since `xlembed {stage}` "
                           f"wrote it; run `xlembed {stage}` again (or `xlembed run`)")
    for upstream, key in record["read"].items():
        if upstream not in STAGE_READS.get(stage, ()):
            raise XlembedError(f"{work.record(stage)}: not a valid record (it names `{upstream}` in `read`); "
                               f"run `xlembed {stage}` (or `xlembed run`)")
        current = check_chain(work, upstream, outputs=False)
        if current.get("key") != key:
            raise XlembedError(f"{work.record(stage)}: computed from an earlier `xlembed {upstream}` output; "
                               f"run `xlembed {stage}` again (or `xlembed run`)")
    return record


def read_keys(work: WorkDir, upstreams: tuple[str, ...]) -> dict[str, str]:
    """The keys of the upstream records as they are now (what a stage read)."""
    return {up: record["key"] for up in upstreams if (record := read_record(work, up)) is not None and "key" in record}


def up_to_date(work: WorkDir, stage: str, key: str) -> dict | None:
    """The stage's record if it was computed from exactly `key` and its
    outputs are as it wrote them, else None."""
    record = read_record(work, stage)
    if record is None or record.get("key") != key or changed_output(work, record) is not None:
        return None
    return record


def invalidate(work: WorkDir, stage: str) -> None:
    work.record(stage).unlink(missing_ok=True)


def run_stage(
    work: WorkDir, stage: str, key: str, force: bool, compute: Callable[[], dict], outputs: tuple[Path, ...] = ()
) -> dict:
    """Skip the stage when its record matches `key` and its outputs are as
    it wrote them (unless `force`), else run `compute()` (which writes the
    outputs and returns the record's content: options, inputs, counts, ...)
    and write the record with the key, the keys of the records it read, the
    size and mtime of what it wrote, and the seconds it took. The records it
    reads are checked first (stale: one line naming the file). A failing
    stage leaves its previous outputs and record in place: an output it
    replaced before failing no longer matches the record, so the stage is
    recomputed next time. Returns the record; `skipped` when nothing ran."""
    upstreams = STAGE_READS.get(stage, ())
    for upstream in upstreams:
        if work.record(upstream).exists():  # without one, the stage's own checks name its missing input
            check_chain(work, upstream)
    if not force and (record := up_to_date(work, stage, key)) and all(Path(p).exists() for p in outputs):
        return dict(record, skipped=True)
    start = time.perf_counter()
    record = dict(stage=stage, key=key, **compute())
    record["read"] = read_keys(work, upstreams)  # after compute: on Ray, project writes encode's record too
    record["wrote"] = stamps(work, stage_outputs(work, stage) + [p for p in outputs if Path(p).exists()])
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
