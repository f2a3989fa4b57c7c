"""File handling shared by the stages: strict UTF-8 line reading, atomic
writes, stage records, and the progress-reporting protocol."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import gzip
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Protocol

from .errors import XlembedError
from .layout import OutDir


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


def read_word_list(path: Path, unique: bool = True) -> list[str]:
    """A user's word list: one word per line, order kept; errors name the
    line. A word holds no whitespace or control character (a `word<TAB>count`
    line is refused: it would make an output that cannot be loaded). With
    `unique`, a word listed twice is an error."""
    words, seen = [], {}
    for lineno, line in enumerate(read_lines(path), start=1):
        word = line.strip()
        if not word or len(word.split()) != 1 or not word.isprintable():
            shown = "a tab" if "\t" in word else "whitespace or a control character" if word else "nothing"
            raise XlembedError(f"{path}:{lineno}: expected one word per line, found {shown}")
        if unique and word in seen:
            raise XlembedError(f"{path}:{lineno}: '{word}' is already on line {seen[word]}")
        seen[word] = lineno
        words.append(word)
    if not words:
        raise XlembedError(f"{path}: empty word list")
    return words


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except PermissionError:
        raise XlembedError(f"{path}: file is not readable (permission denied)")
    return h.hexdigest()


def _temp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


# what xlembed's temporaries are called, each with its process id: `.NAME.PID.HEX.tmp` beside a file
# being written, `xlembed-PID-...` directories for child processes' files (eflomal's)
_OWN_TEMPORARY = re.compile(r"^(?:\..+\.(\d+)\.[0-9a-f]{8}\.(?:tmp|partial|old)"
                            r"|xlembed-(\d+)-(?:eflomal|part|prior)-[a-z0-9_]{8})$")


def temp_dir_prefix() -> str:
    return f"xlembed-{os.getpid()}-"


@contextlib.contextmanager
def own_temp_dir(parent: Path, kind: str) -> Iterator[Path]:
    """A temporary directory of this process under `parent`, removed after;
    `parent` itself and anything else in it are never touched."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_dir_prefix() + kind, dir=parent) as tmp:
        yield Path(tmp)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(work: Path, subdirs: tuple[str, ...] = ("tmp", "vectors")) -> int:
    """Remove xlembed's temporaries left in `work` (and its `subdirs`) by
    processes that died (killed mid-stage: hundreds of MB at scale). Only
    names xlembed gives, only of dead processes; WORK/tmp itself goes only
    when empty. Called under the work directory's lock. Returns the count."""
    removed = 0
    work = Path(work)
    for directory in (work, *(work / d for d in subdirs)):
        try:
            entries = list(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = _OWN_TEMPORARY.match(entry.name)
            if not match or _process_alive(int(match.group(1) or match.group(2))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    with contextlib.suppress(OSError):
        (work / "tmp").rmdir()  # only if empty
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename
    it onto `path`, on failure remove it. Readers never see a half file.
    The file is created with mode 0666 less the umask, like any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise XlembedError(f"{path}: is a directory, expected a file path")
    if path.is_symlink() or path.exists() and not path.is_file():  # the rename would put a file in its place
        kind = "a symbolic link" if path.is_symlink() else "a device, pipe or socket"
        raise XlembedError(f"{path}: is {kind}, not a regular file; xlembed replaces the files it writes whole, "
                           "so give the path of a regular file (export: -o - for standard output)")
    tmp = _temp_name(path, ".tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename not in (None, str(tmp)):
            raise  # another file's error
        previous = "; the previous version is intact" if path.exists() else "; nothing was written"
        reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise XlembedError(f"{path}: {reason}{previous}") from e
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
    write_text_atomic(
        path, json.dumps(_finite(data), indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n"
    )


def read_json(path: Path) -> dict:
    """A JSON file xlembed wrote; a damaged one (truncated, hand-edited) is one line naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise XlembedError(f"{path}: not valid JSON ({e}); rerun the command that wrote it")


def require(path: Path, stage: str) -> Path:
    """An input artifact that an earlier stage must have written."""
    if not Path(path).exists():
        raise XlembedError(f"{path}: missing; run `xlembed {stage}` first")
    return Path(path)


def require_same_counts(where: Path, what: str, counts: dict[str, int], rerun: str) -> None:
    """Artifacts that hold one entry per pair (or per word) agree on how
    many: else one line naming them and their counts."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {n:,}" for name, n in counts.items())
        raise XlembedError(f"{where}: {listed}: the {what} disagree; rerun `xlembed {rerun}`")


XLEMBED_OUTPUT = "xlembed output"  # manifest.json's "kind": what makes a directory ours to replace


def check_output_dir(out: Path) -> None:
    """Refuse an --out that is a file, or a non-empty directory that is not
    provably an earlier xlembed output: its manifest says so, and it holds
    nothing but the files xlembed writes (we replace the directory whole)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XlembedError(f"{out}: output path is a file, expected a directory")
    if not out.is_dir():
        return
    present = {p.name for p in out.iterdir()}
    if not present:
        return
    ours = {p.name for p in OutDir(out).all_files}
    try:
        manifest = read_json(out / "manifest.json")
    except (OSError, ValueError, XlembedError):
        manifest = None
    ours_by_manifest = isinstance(manifest, dict) and (
        manifest.get("kind") == XLEMBED_OUTPUT
        # written before "kind" existed (xlembed 0.1): its version, and checksums of our files only
        or ("xlembed_version" in manifest and isinstance(manifest.get("files"), dict) and manifest["files"]
            and set(manifest["files"]) <= ours))
    if not ours_by_manifest:
        raise XlembedError(f"{out}: directory is not empty and is not an xlembed output; refusing to replace it")
    if present - ours:
        raise XlembedError(
            f"{out}: holds files xlembed did not write ({', '.join(sorted(present - ours))}); refusing to replace it"
        )


def check_out_path(out: Path, work: Path | None = None) -> None:
    """--out names a directory that xlembed may create or replace as a whole:
    not empty, not the current directory or one above it, not a symbolic
    link (it would be replaced by a directory), not a mount point (it cannot
    be renamed), not the work directory nor one holding it (replacing it
    would delete the work). Checked before any stage runs."""
    text = str(out)
    if not text.strip():
        raise XlembedError("--out: empty path; give the output directory to create or replace")
    out = Path(out)
    if out.is_symlink():
        raise XlembedError(f"{out}: --out is a symbolic link; give the directory itself (it is replaced as a whole)")
    here, resolved = Path.cwd().resolve(), out.resolve()
    if resolved == here or resolved in here.parents:
        raise XlembedError(f"{out}: --out is the current directory or holds it; "
                           f"give a directory of its own (e.g. {out}/out)")
    if out.is_dir() and os.path.ismount(out):
        raise XlembedError(f"{out}: --out is a mount point, which cannot be replaced; give a directory inside it")
    if work is not None:
        work_resolved = Path(work).resolve()
        if work_resolved == resolved:
            raise XlembedError(f"{out}: --out and --work are the same directory; give each its own")
        if resolved in work_resolved.parents:
            raise XlembedError(f"{work}: --work is inside --out, which is replaced as a whole; put it beside --out")


def check_input_stream(path: Path) -> None:
    """A corpus is read more than once (its size, then its pairs, then its
    hash): a pipe or a device (/dev/stdin, a named pipe) is refused up front
    rather than read half or waited on forever."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # require_file names what is wrong
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise XlembedError(f"{path}: not a regular file (a pipe or a device); xlembed reads its input more than once, "
                           "so save it to a file first")


def check_writable(directory: Path) -> None:
    """Create `directory` if needed and prove it takes a file: fail now, in
    one line, not after an hour of encoding."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = _temp_name(directory / "probe", ".tmp")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        probe.unlink()
    except OSError as e:
        raise XlembedError(f"{directory}: cannot write here: {e.strerror}")


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


_out_locks_held: set[str] = set()


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Writers of an output directory take turns: an flock on its parent
    directory (OUT itself is replaced whole, so a lock on it would be lost),
    waited for, released by the kernel however the holder dies. Re-entrant
    in one process: `extend` holds it from reading OUT to replacing it, so
    that two extends both keep their words."""
    parent = Path(out).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    key = str(parent.resolve())
    if key in _out_locks_held:
        yield
        return
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _out_locks_held.add(key)
        yield
    finally:
        _out_locks_held.discard(key)
        os.close(fd)


def refuse_link(directory: Path) -> None:
    """A directory xlembed replaces whole is never a symbolic link: the swap
    would put a directory in the link's place, and the link's target would stay."""
    if Path(directory).is_symlink():
        raise XlembedError(f"{directory}: is a symbolic link; give the directory's own path")


@contextlib.contextmanager
def staged_dir(out: Path, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; on success it replaces
    `out` as a whole (an atomic exchange on Linux), on failure it is removed
    and `out` is left as it was. While it is in use the staging directory is
    locked (flock), so that another writer only clears leftovers of killed
    writes, never a live one. `check` refuses an `out` that is not ours to
    replace (check_output_dir: an earlier xlembed output)."""
    out = Path(out)
    refuse_link(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # -o models/zh: its parent made, as mkdir -p would
    with out_lock(out):
        (check or check_output_dir)(out)
        existed, stage = out.exists(), None
        try:
            with _staged_dir(out) as stage:
                yield stage
        except OSError as e:
            inside = stage is not None and e.filename is not None and str(e.filename).startswith(str(stage) + os.sep)
            if not inside:
                raise
            reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            kept = "the previous output is intact" if existed else "nothing was written"
            raise XlembedError(f"{out / Path(e.filename).relative_to(stage)}: {reason}; {kept}") from e


@contextlib.contextmanager
def _staged_dir(out: Path) -> Iterator[Path]:
    for stale in out.parent.glob(f".{out.name}.*.partial"):
        _remove_if_unlocked(stale)
    for old in out.parent.glob(f".{out.name}.*.old"):  # killed between the two renames of the fallback
        if not out.exists():
            os.replace(old, out)
        else:
            _remove_if_unlocked(old)
    stage = _temp_name(out, ".partial")
    os.mkdir(stage, 0o777)  # the umask applies
    fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
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
        os.close(fd)


def _remove_if_unlocked(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        if _try_flock(fd):
            shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)


class WorkLock:
    """An exclusive lock on a work directory, held for the life of one
    xlembed command. It is an flock on WORK/.lock, so the kernel releases it
    when the process dies however it dies (kill -9 included): a stale lock
    never blocks. The file says who holds it, for the error message."""

    def __init__(self, lock_path: Path, command: str = "xlembed"):
        self.path = Path(lock_path)
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> "WorkLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_flock(fd):
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise XlembedError(f"{self.path.parent}: work directory is in use by {holder}; "
                               f"wait for it to finish, or use another --work")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({self.command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


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


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_freed_memory(collect: bool = False) -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim; a
    no-op elsewhere), for loops that allocate and free large blocks whose
    sizes keep changing (the forward pass at every batch shape, project at
    every shard): glibc keeps the freed ones, too fragmented to shrink the
    heap, and the process grew with the corpus
    (encode, measured on 1/8 of the mixed corpus: peak RSS 1.51 GiB, 0.94 GiB
    when trimmed every 4 batches, at the same speed; every batch: 2x slower).
    `collect`: first free what only reference cycles keep alive (gc), as
    between stages (mixed corpus, after encode: 802 -> 626 MiB resident)."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


SAFETENSORS_DTYPES = {
    torch_name: code
    for torch_name, code in (
        ("float64", "F64"),
        ("float32", "F32"),
        ("float16", "F16"),
        ("bfloat16", "BF16"),
        ("int64", "I64"),
        ("int32", "I32"),
        ("int16", "I16"),
        ("int8", "I8"),
        ("uint8", "U8"),
        ("bool", "BOOL"),
    )
}


def tensors_blob(tensors: dict, metadata: dict[str, str] | None = None) -> list:
    """A .safetensors file as parts to write one after the other: the header
    (JSON with sorted keys, so the bytes are reproducible) and each tensor's
    own memory, not a copy (the parts keep the tensors alive; do not change
    them before the parts are written). Tensors are laid out widest dtype
    first, then by name, so every tensor starts aligned to its element size."""
    import struct

    import torch

    ordered = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    data, offset = [], 0
    for name, tensor in ordered:
        tensor = tensor.detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy()  # [nbytes] the tensor's memory
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[str(tensor.dtype).removeprefix("torch.")],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + raw.nbytes],
        }
        data.append(memoryview(raw))
        offset += raw.nbytes
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return [struct.pack("<Q", len(encoded)), encoded, *data]


def write_bytes_atomic(path: Path, parts: list) -> None:
    """Plain file I/O, no torch: safe on a background thread (a torch op there
    would start a second OpenMP thread team that competes with the model's)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a .safetensors file atomically and byte-reproducibly."""
    write_bytes_atomic(path, tensors_blob(tensors, metadata))


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


def all_finite(vectors, rows: int = 8192) -> bool:
    """No NaN or infinity in the tensor `vectors` [n, d], checked a block of rows
    at a time (torch.isfinite of the whole makes transient copies larger than it)."""
    import torch

    if vectors.dim() == 0:  # a scalar (a model's parameter may be one)
        return bool(torch.isfinite(vectors))
    return all(bool(torch.isfinite(vectors[i : i + rows]).all()) for i in range(0, len(vectors), rows))
