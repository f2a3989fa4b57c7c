"""Where a command's work runs, decided once per command (`open_executor`)
and passed down as a value: the stages never read --executor themselves.

An executor runs the encode, align and project stages of `xlembed run`
(`stages`) and, for `xlembed align`, the alignment parts (`align_parts`).
The local one runs everything in this process; the Ray one
(cluster.RayExecutor) holds one Ray session for the whole command.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Protocol

from .align import AlignedPart, AlignPart, align, in_this_process
from .config import Config, Executor
from .encode import encode
from .io import Reporter, release_freed_memory
from .layout import WorkDir
from .project import project


class Runs(Protocol):
    """What every executor offers."""

    def align_parts(self, parts: Iterable[AlignPart]) -> Iterator[AlignedPart]: ...

    def stages(self, config: Config, work: WorkDir, reporter: Reporter, force: bool) -> Iterator[tuple[str, dict]]: ...


class LocalExecutor:
    """This process (and its eflomal children)."""

    def align_parts(self, parts: Iterable[AlignPart]) -> Iterator[AlignedPart]:
        return in_this_process(parts)

    def stages(self, config: Config, work: WorkDir, reporter: Reporter, force: bool) -> Iterator[tuple[str, dict]]:
        # one after the other: on 2 cores eflomal beside the encoder saved
        # nothing (bench/RESULTS.md), and their memory never adds up
        encoded = encode(config, work, reporter, force)
        release_freed_memory(collect=True)  # the model, the piece plan, the batches: back before project's sums
        yield "encode", encoded
        yield "align", align(config, work, reporter, force, self.align_parts)
        projected = project(config, work, reporter, force)
        release_freed_memory(collect=True)  # project's tables and links: back before write loads the sums
        yield "project", projected


@contextlib.contextmanager
def open_executor(config: Config) -> Iterator[Runs]:
    """The executor `config.executor` names, for the length of one command
    (a Ray session is joined or started at its first use, and left at the end)."""
    if config.executor.executor == Executor.ray:
        from .cluster import RayExecutor

        with RayExecutor(config) as executor:
            yield executor
    else:
        yield LocalExecutor()
