"""The whole chain, tokenize → encode → align → project → write, and the
checks every command makes before it touches a work directory."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from .align import align
from .config import Config, Executor
from .layout import WorkDir
from .encode import encode
from .io import Reporter, SilentReporter, WorkLock, check_output_dir, check_writable
from .models import check_model
from .project import project
from .tokenize import tokenize
from .write import write


def default_work_dir(out: Path) -> Path:
    """OUT.work beside OUT."""
    return Path(out).with_name(Path(out).name + ".work")


@contextlib.contextmanager
def prepared(config: Config, stages: tuple[str, ...], work: WorkDir, out: Path | None = None,
             command: str = "xlembed") -> Iterator[None]:
    """Validate every option of `stages` (the model too, when a stage needs
    it), check that --out may be replaced and that the work directory and
    --out's parent take files, then hold the work directory's lock: all
    before any stage touches anything."""
    config.validate(stages)
    if "encode" in stages:
        check_model(config.encode.model, config.encode.layer, config.encode.max_length)
    elif "tokenize" in stages:
        check_model(config.encode.model)
    if out is not None:
        check_output_dir(out)
        check_writable(Path(out).parent)
    check_writable(work.root)
    with WorkLock(work.lock, command):
        yield


def run(config: Config, work: WorkDir | Path, out: Path, reporter: Reporter = SilentReporter(),
        on_stage: Callable[[str, dict], None] = lambda stage, record: None, force: bool = False) -> dict:
    """Run every stage in order, skipping those whose record shows they are
    up to date (unless `force`); `on_stage(name, record)` is called after
    each. Returns the manifest."""
    work = work if isinstance(work, WorkDir) else WorkDir(Path(work))
    with prepared(config, ("tokenize", "encode", "align", "project", "write", "executor"), work, out, "xlembed run"):
        on_stage("tokenize", tokenize(config, work, reporter, force))
        if config.executor.executor == Executor.ray:
            from .cluster import encode_and_project

            # alignment first: the Ray workers project as they encode
            on_stage("align", align(config, work, reporter, force))
            encoded, projected = encode_and_project(config, work, reporter, force)
            on_stage("encode", encoded)
            on_stage("project", projected)
        else:
            # one after the other: on 2 cores eflomal beside the encoder saved
            # nothing (bench/RESULTS.md), and their memory never adds up
            on_stage("encode", encode(config, work, reporter, force))
            on_stage("align", align(config, work, reporter, force))
            on_stage("project", project(config, work, reporter, force))
        manifest = write(config, work, out)
        on_stage("write", manifest)
    return manifest
