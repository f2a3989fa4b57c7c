"""File handling shared by the stages: strict UTF-8 line reading, atomic
writes, stage records, and the progress-reporting protocol."""
from __future__ import annotations

import contextlib
import ctypes
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Protocol


class XlembedError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def require_file(path: Path) -> Path:
    """An input file given by the user: it exists and is not a directory."""
    path = Path(path)
    if not path.exists():
        raise XlembedError(f"{path}: file does not exist")
    if path.is_dir():
        raise XlembedError(f"{path}: is a directory, expected a file")
    return path


def _open_binary(path: Path):
    path = require_file(path)
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        return open(path, "rb")
    except PermissionError:
        raise XlembedError(f"{path}: file is not readable (permission denied)")


def read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (optionally .gz), without line
    endings. A leading BOM is dropped, CRLF counts as one line ending; lines
    are split on LF only, so a line count matches `wc -l`. Invalid UTF-8
    raises an XlembedError naming the file and line."""
    lineno = 0
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise XlembedError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start + 1} of the line)")
        except (OSError, EOFError) as e:  # truncated or corrupt gzip
            raise XlembedError(f"{path}:{lineno + 1}: cannot read: {e}")


def read_words(path: Path) -> list[str]:
    """A word list as xlembed writes it (vocab.txt, english_vocab.txt): one
    word per line, each line ended by a newline."""
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except PermissionError:
        raise XlembedError(f"{path}: file is not readable (permission denied)")
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename
    it onto `path`, on failure remove it. Readers never see a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _finite(value):
    """NaN and infinities become null: strict JSON has no such numbers."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(_finite(data), indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def require(path: Path, stage: str) -> Path:
    """An input artifact that an earlier stage must have written."""
    if not Path(path).exists():
        raise XlembedError(f"{path}: missing; run `xlembed {stage}` first")
    return Path(path)


def check_output_dir(out: Path) -> None:
    """Refuse an --out that is a file, or a non-empty directory that is not
    an earlier xlembed output (we replace the directory as a whole)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XlembedError(f"{out}: output path is a file, expected a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise XlembedError(f"{out}: directory is not empty and holds no xlembed output; refusing to replace it")


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; on success it replaces
    `out` as a whole (an atomic exchange on Linux), on failure it is removed
    and `out` is left as it was. Leftovers of a killed earlier write are
    cleared first."""
    out = Path(out)
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in out.parent.glob(f".{out.name}.*.old"):  # killed between the two renames of the fallback
        if not out.exists():
            os.replace(old, out)
        else:
            shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
        for path in stage.iterdir():
            _fsync(path)
        _fsync(stage)
        if not out.exists():
            os.replace(stage, out)
        elif not _exchange(stage, out):
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old)
        _fsync(out.parent)
    finally:
        if stage.exists():  # the previous result after an exchange, or a failed write
            shutil.rmtree(stage)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False
    where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a .safetensors file atomically, byte-reproducibly: safetensors
    serialises its metadata map in hash order, so the header is re-written
    with sorted keys (the data section is the library's, unchanged)."""
    import struct

    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header)
            f.write(memoryview(blob)[8 + n:])


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    """Progress reporting, provided by the CLI; stages only call it."""

    def task(self, description: str, total: int | None, unit: str) -> contextlib.AbstractContextManager[Task]: ...


class SilentTask:
    def advance(self, n: int = 1) -> None:
        pass


class SilentReporter:
    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str):
        yield SilentTask()
