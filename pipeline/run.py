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


RAY_CONNECT_SECONDS = 10.0  # how long a cluster's address may take to accept a connection
RAY_JOIN_SECONDS = 60.0  # ... and joining it (Ray's own client, in a child process) may take, all told

# run in a child process (so that a Ray client that retries for minutes can be killed): join the
# cluster at argv[1] ("auto": RAY_ADDRESS, else the last `ray start` on this machine), print what it has
RAY_PROBE = """
import json, logging, socket, sys
def say(**what):
    print("xlembed-probe " + json.dumps(what), flush=True)
    sys.exit(0)
import ray
from ray._private.services import get_ray_address_from_environment
address = sys.argv[1]
try:
    if address == "auto":
        address = get_ray_address_from_environment("auto", None)
except Exception as e:
    say(error=f"no running Ray cluster found ({str(e).strip().splitlines()[0]})")
host, _, port = address.removeprefix("ray://").rpartition(":")
try:
    socket.create_connection((host, int(port)), timeout=float(sys.argv[2])).close()
except (OSError, ValueError) as e:
    reason = f"no answer within {float(sys.argv[2]):.0f} s" if isinstance(e, TimeoutError) else (
        getattr(e, "strerror", None) or str(e)).lower()
    say(error=f"cannot reach the cluster at {address} ({reason}); is it started (`ray start --head`)?")
try:
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
except Exception as e:
    e = e.__cause__ or e  # ray.init's ConnectionError says only that it failed; its cause says why
    say(error=f"cannot join Ray at {address}: {(str(e).strip() or type(e).__name__).splitlines()[0]}")
say(address=address, gpus=ray.cluster_resources().get("GPU", 0),
    node_cpus=[n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")])
"""


def probe_ray_cluster(address: str) -> dict:
    """Join the Ray cluster at `address` in a child process, bounded by
    RAY_JOIN_SECONDS (Ray's client itself retries silently for minutes);
    returns {address, gpus, node_cpus}, or raises one line naming the option."""
    import json
    import os
    import signal
    import subprocess
    import sys

    name = f"executor.ray_address {address}"
    child = subprocess.Popen([sys.executable, "-c", RAY_PROBE, address, str(RAY_CONNECT_SECONDS)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             text=True, start_new_session=True)
    try:
        out, _ = child.communicate(timeout=RAY_JOIN_SECONDS)
    except subprocess.TimeoutExpired:
        raise XlembedError(f"{name}: no answer from a Ray cluster within {RAY_JOIN_SECONDS:.0f} s; is it started "
                           f"(`ray start --head`) and reachable from here?")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the probe and anything its Ray client started
        child.wait()
    said = [line for line in out.splitlines() if line.startswith("xlembed-probe ")]
    if not said:
        raise XlembedError(f"{name}: cannot join Ray (its client ended with status {child.returncode})")
    found = json.loads(said[-1].removeprefix("xlembed-probe "))
    if "error" in found:
        raise XlembedError(f"{name}: {found['error']}")
    return found


def check_ray_options(opts) -> None:
    """What can be known of Ray before any stage runs: an encoder's
    --worker-cpus fits this machine when Ray is started here; an address
    (auto or HOST:PORT) is joined within RAY_JOIN_SECONDS, and some node of
    that cluster can hold an encoder (a GPU, or --worker-cpus CPUs)."""
    import os

    if not opts.ray_address:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if opts.worker_cpus > cpus:
            raise XlembedError(
                f"executor.worker_cpus {opts.worker_cpus}: the local Ray has {cpus} CPUs, so no encoder could be "
                f"scheduled; use executor.worker_cpus {cpus} or less, or executor.ray_address of a bigger cluster"
            )
        return
    if opts.ray_address != "auto":
        host, _, port = opts.ray_address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise XlembedError(f"executor.ray_address {opts.ray_address}: expected auto, HOST:PORT or ray://HOST:PORT")
    cluster = probe_ray_cluster(opts.ray_address)
    largest = int(max(cluster["node_cpus"], default=0))
    if not cluster["gpus"] and largest < opts.worker_cpus:
        raise XlembedError(
            f"executor.worker_cpus {opts.worker_cpus}: no node of the Ray cluster at {cluster['address']} has that "
            f"many CPUs (the largest of its {len(cluster['node_cpus'])} nodes has {largest}, and none a GPU), so no "
            f"encoder could be scheduled; use executor.worker_cpus {max(1, largest)} or less"
        )


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
    "write": lambda config, work, out, reporter, force, executor: stage("write")(config, work, out, reporter=reporter),
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
        manifest = stage("write")(config, work, out, computed=tuple(computed), reporter=reporter)
        on_stage("write", manifest)
    return manifest
