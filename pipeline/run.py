"""The whole chain, tokenize → encode → align → project → write, and the
checks every command makes before it touches a work directory."""
from __future__ import annotations

import contextlib
import importlib
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .config import Config, Executor
from .errors import XlembedError
from .io import (
    Reporter,
    SilentReporter,
    WorkLock,
    check_out_path,
    check_output_dir,
    check_writable,
    remove_stale_temporaries,
)
from .layout import WorkDir
from .models import check_device, check_model

if TYPE_CHECKING:
    from .executor import Runs


def stage(name: str) -> Callable:
    """A stage's function, imported when first run: the stages bring torch, which `xlembed --help` does without."""
    return getattr(importlib.import_module(f".{name}", __package__), name)


def open_executor(config: Config):
    from .executor import open_executor

    return open_executor(config)


def check_ray_installed() -> None:
    """--executor ray (or --ray-address) without Ray installed: refused before any stage."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise XlembedError("executor.executor ray needs the `ray` package: pip install 'xlembed[ray]'")


RAY_CONNECT_SECONDS = 10.0  # how long an explicit --ray-address may take to answer before the job is refused


def check_ray_options(opts) -> None:
    """What can be known of Ray before any stage runs: an encoder's
    --worker-cpus fits this machine when Ray is started here, and an
    explicit HOST:PORT address answers within RAY_CONNECT_SECONDS (Ray
    itself would retry for minutes, silently)."""
    import os
    import socket

    if not opts.ray_address:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if opts.worker_cpus > cpus:
            raise XlembedError(
                f"executor.worker_cpus {opts.worker_cpus}: the local Ray has {cpus} CPUs, so no encoder could be "
                f"scheduled; use executor.worker_cpus {cpus} or less, or executor.ray_address of a bigger cluster"
            )
        return
    if opts.ray_address == "auto":
        return
    host, _, port = opts.ray_address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise XlembedError(f"executor.ray_address {opts.ray_address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise XlembedError(f"executor.ray_address {opts.ray_address}: cannot reach the cluster ({reason} within "
                           f"{RAY_CONNECT_SECONDS:.0f} s); is it started (`ray start --head`)?")


def default_work_dir(out: Path) -> Path:
    """OUT.work beside OUT."""
    check_out_path(out)
    out = Path(out)
    return out.with_name(out.name + ".work") if out.name else out.resolve().with_name(out.resolve().name + ".work")


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
        check_device(config.encode.device)
    elif "tokenize" in stages:
        check_model(config.encode.model)
    if "executor" in stages and (config.executor.executor == Executor.ray or config.executor.ray_address):
        check_ray_installed()
        if config.executor.executor == Executor.ray:
            check_ray_options(config.executor)
    if out is not None:
        check_out_path(out, work.root)
        check_output_dir(out)
        check_writable(Path(out).parent)
    created = not work.root.exists()
    check_writable(work.root)
    try:
        with WorkLock(work.lock, command) as lock:
            remove_stale_temporaries(work.root)  # of killed earlier commands; ours alone hold the lock now
            try:
                yield
            finally:
                if created and [p.name for p in work.root.iterdir()] == [work.lock.name]:
                    lock.path.unlink()  # a command that failed before writing anything leaves no folder of one .lock
    finally:
        if created and work.root.is_dir() and not any(work.root.iterdir()):
            work.root.rmdir()


StageFunction = Callable[[Config, WorkDir, "Path | None", Reporter, bool, "Runs"], dict]

# every stage as one command runs it: (config, work, out, reporter, force, executor) -> its record
STAGES: dict[str, StageFunction] = {
    "tokenize": lambda config, work, out, reporter, force, executor: stage("tokenize")(config, work, reporter, force),
    "encode": lambda config, work, out, reporter, force, executor: stage("encode")(config, work, reporter, force),
    "align": lambda config, work, out, reporter, force, executor: stage("align")(
        config, work, reporter, force, executor.align_parts
    ),
    "project": lambda config, work, out, reporter, force, executor: stage("project")(config, work, reporter, force),
    "write": lambda config, work, out, reporter, force, executor: stage("write")(config, work, out),
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
        raise XlembedError(f"executor.executor ray: {stage} runs on Ray only together with encode and project, in "
                           f"`xlembed run`; set executor.executor to local to run it alone")
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
        tokenized = [("tokenize", stage("tokenize")(config, work, reporter, force))]
        for name, record in chain(tokenized, executor.stages(config, work, reporter, force)):
            if not record.get("skipped"):
                computed.append(name)
            on_stage(name, record)
        manifest = stage("write")(config, work, out, computed=tuple(computed))
        on_stage("write", manifest)
    return manifest
