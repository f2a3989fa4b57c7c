"""See and clean work directories, in the spirit of `pip cache`: what one
holds, how big it is, which stage a rerun would recompute without it. Only
the files xlembed writes there are ever removed; anything else is left, and
so is the directory that holds it."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .errors import XlembedError
from .io import WorkLock
from .layout import WorkDir

STAGES = ("tokenize", "encode", "align", "project")


class Artifact(NamedTuple):
    """Names a stage writes into the work directory, and what they are for."""

    stage: str
    names: tuple[str, ...]
    what: str


ARTIFACTS = (
    Artifact("tokenize", ("corpus.en", "corpus.zh", "tokenize.json"), "the segmented corpus"),
    Artifact(
        "encode", ("vectors", "encode.json"), "one vector per English word occurrence (float16); project reads them"
    ),
    Artifact(
        "align",
        ("align.forward", "align.reverse", "align.links", "lexicon.tsv", "align.json", "tmp"),
        "word alignments and the lexicon",
    ),
    Artifact(
        "project",
        ("projection.safetensors", "projection.zh.tsv", "projection.en.tsv", "project.json"),
        "per-word sums and counts; write reads them",
    ),
    Artifact("encode", ("sentences.safetensors",), "the English model's embedding of each sentence; write reads them"),
    Artifact("encode", ("ray",), "shards returned by Ray workers, until the job finishes"),
)
LOCK = ".lock"


class WorkEntry(NamedTuple):
    stage: str
    name: str
    bytes: int
    what: str


@dataclass(frozen=True)
class WorkUsage:
    """What one work directory holds: xlembed's entries and anything else."""

    root: Path
    entries: tuple[WorkEntry, ...]
    others: tuple[str, ...]  # names xlembed did not write there: never removed

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.entries)

    @property
    def stages_done(self) -> tuple[str, ...]:
        return tuple(s for s in STAGES if (self.root / f"{s}.json").is_file())


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(_size(p) for p in path.iterdir())


def _ours(name: str) -> bool:
    """A name xlembed writes into a work directory (temporary files of atomic writes included)."""
    known = {n for a in ARTIFACTS for n in a.names} | {LOCK}
    if name in known:
        return True
    # leftovers of a killed atomic write: .NAME.PID.HEX.tmp
    parts = name.split(".")
    return name.startswith(".") and name.endswith(".tmp") and len(parts) >= 4 and ".".join(parts[1:-3]) in known


def is_work_dir(path: Path) -> bool:
    """A directory holding a stage record or the lock of an xlembed work directory."""
    path = Path(path)
    return path.is_dir() and (any((path / f"{s}.json").is_file() for s in STAGES) or (path / LOCK).is_file())


def usage(path: Path) -> WorkUsage:
    """What the work directory at `path` holds, entry by entry."""
    root = Path(path)
    if not is_work_dir(root):
        raise XlembedError(f"{root}: not an xlembed work directory (no stage record, no .lock)")
    entries = []
    for artifact in ARTIFACTS:
        for name in artifact.names:
            if (root / name).exists():
                entries.append(WorkEntry(artifact.stage, name, _size(root / name), artifact.what))
    for child in sorted(root.iterdir()):
        if child.name not in {e.name for e in entries} and _ours(child.name):
            entries.append(
                WorkEntry("", child.name, _size(child), "lock" if child.name == LOCK else "an unfinished write")
            )
    others = tuple(sorted(c.name for c in root.iterdir() if not _ours(c.name)))
    return WorkUsage(root, tuple(entries), others)


def find_work_dirs(root: Path, depth: int = 3) -> list[Path]:
    """Work directories at `root` or below it, at most `depth` levels down
    (hidden folders and virtual environments are not searched)."""
    root = Path(root)
    if is_work_dir(root):
        return [root]
    found: list[Path] = []
    if depth == 0 or not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if (
            child.is_dir()
            and not child.is_symlink()
            and not child.name.startswith(".")
            and not (child / "pyvenv.cfg").exists()
        ):
            found += find_work_dirs(child, depth - 1)
    return found


def clean(path: Path, vectors_only: bool = False, dry_run: bool = False) -> WorkUsage:
    """Remove what xlembed wrote into the work directory at `path` (with
    `vectors_only`: only WORK/vectors, the largest part, which only project
    reads: `xlembed write` still works, `xlembed run` encodes again), then the directory itself if nothing else is left.
    Holds the directory's lock, so a running job is never cleaned under it.
    A file xlembed did not write stays, and so does its folder.
    Returns what was (or, with `dry_run`, would be) removed."""
    before = usage(path)
    chosen = tuple(e for e in before.entries if not vectors_only or e.name == "vectors")
    removed = WorkUsage(before.root, chosen, before.others)
    if dry_run:
        return removed
    work = WorkDir(before.root)
    with WorkLock(work.lock, "xlembed work clean"):
        for entry in chosen:
            if entry.name != LOCK:
                _remove(before.root / entry.name)
        if not vectors_only:
            work.lock.unlink(missing_ok=True)  # still held: a process starting now fails with "in use", never races
    if not vectors_only and not any(before.root.iterdir()):
        before.root.rmdir()
    return removed


def _remove(target: Path) -> None:
    """A file, or a folder xlembed writes: vectors/ file by file (only the
    names encode writes; the folder goes once empty), tmp/ and ray/ as a
    whole (scratch that xlembed itself clears on its next run)."""
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    elif target.name == "vectors":
        for f in target.iterdir():
            if (
                re.fullmatch(r"index\.safetensors|shard-\d+\.safetensors|progress\.json|\..+\.tmp", f.name)
                and f.is_file()
            ):
                f.unlink()
        if not any(target.iterdir()):
            target.rmdir()
    else:
        shutil.rmtree(target)
