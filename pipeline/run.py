"""The whole chain, tokenize → encode → align → project → write, and the
checks every command makes before it touches a work directory."""
from __future__ import annotations

import contextlib
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator

from .align import align
from .config import Config, Executor
from .encode import encode
from .errors import XlembedError
from .executor import Runs, open_executor
from .io import Reporter, SilentReporter, WorkLock, check_output_dir, check_writable
from .layout import WorkDir
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
    before any stage touches anything. A work directory this command
    created is removed again if it fails before writing anything into it."""
    config.validate(stages)
    if "encode" in stages:
        check_model(config.encode.model, config.encode.layer, config.encode.max_length)
    elif "tokenize" in stages:
        check_model(config.encode.model)
    if out is not None:
        check_output_dir(out)
        check_writable(Path(out).parent)
    created = not work.root.exists()
    check_writable(work.root)
    try:
        with WorkLock(work.lock, command) as lock:
            try:
                yield
            finally:
                if created and [p.name for p in work.root.iterdir()] == [work.lock.name]:
                    lock.path.unlink()  # a command that failed before writing anything leaves no folder of one .lock
    finally:
        if created and work.root.is_dir() and not any(work.root.iterdir()):
            work.root.rmdir()


StageFunction = Callable[[Config, WorkDir, "Path | None", Reporter, bool, Runs], dict]

# every stage as one command runs it: (config, work, out, reporter, force, executor) -> its record
STAGES: dict[str, StageFunction] = {
    "tokenize": lambda config, work, out, reporter, force, executor: tokenize(config, work, reporter, force),
    "encode": lambda config, work, out, reporter, force, executor: encode(config, work, reporter, force),
    "align": lambda config, work, out, reporter, force, executor: align(
        config, work, reporter, force, executor.align_parts
    ),
    "project": lambda config, work, out, reporter, force, executor: project(config, work, reporter, force),
    "write": lambda config, work, out, reporter, force, executor: write(config, work, out),
}
ON_RAY_ONLY_IN_RUN = ("encode", "project")  # on Ray these two run together, in `run`


def run_one(stage: str, config: Config, work: WorkDir | Path, out: Path | None = None,
            reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """One stage, with the checks `run` makes (its options validated, the
    model checked, the work directory writable and locked; `out` for write
    only); returns its record (write: the manifest)."""
    if stage not in STAGES:
        raise XlembedError(f"unknown stage '{stage}'; expected one of {', '.join(STAGES)}")
    if stage in ON_RAY_ONLY_IN_RUN and config.executor.executor == Executor.ray:
        raise XlembedError(f"executor.executor = ray: {stage} runs on Ray only together with encode and project, in "
                           f"`xlembed run`; set executor = \"local\" to run it alone")
    work = work if isinstance(work, WorkDir) else WorkDir(Path(work))
    tables = ("write",) if stage == "write" else (stage, "executor")
    with prepared(config, tables, work, out, f"xlembed {stage}"), open_executor(config) as executor:
        return STAGES[stage](config, work, out, reporter, force, executor)


def run(config: Config, work: WorkDir | Path, out: Path, reporter: Reporter | None = None,
        on_stage: Callable[[str, dict], None] = lambda stage, record: None, force: bool = False,
        progress: bool | Callable[[str, int, int | None, str], None] = False) -> dict:
    """Run every stage in order, skipping those whose record shows they are
    up to date (unless `force`); `on_stage(name, record)` is called after
    each. Where encode, align and project run is decided here, once: the
    executor. Returns the manifest (its `reused` lists the stages skipped).
    `progress=True` shows the CLI's bars (a terminal) or lines (a log) on
    stderr; a function gets `(description, done, total, unit)` as work is
    done (`reporter`, the CLI's, takes precedence)."""
    from .progress import reporter_for

    reporter = reporter if reporter is not None else reporter_for(progress) if progress else SilentReporter()
    work = work if isinstance(work, WorkDir) else WorkDir(Path(work))
    computed: list[str] = []
    with prepared(config, ("tokenize", "encode", "align", "project", "write", "executor"), work, out, "xlembed run"), \
            open_executor(config) as executor:
        tokenized = [("tokenize", tokenize(config, work, reporter, force))]
        for stage, record in chain(tokenized, executor.stages(config, work, reporter, force)):
            if not record.get("skipped"):
                computed.append(stage)
            on_stage(stage, record)
        manifest = write(config, work, out, computed=tuple(computed))
        on_stage("write", manifest)
    return manifest
