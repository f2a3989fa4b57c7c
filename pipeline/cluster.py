"""The Ray executor: encode+project and alignment parts as Ray tasks.

Words: a *block* is a run of consecutive pairs that one encoder actor
encodes and projects (BlockTask, BlockSums; --shards sets how many, and the
flag, the progress line, the records and WORK/ray/'s file names keep
"shard"); a *vector shard* is a file of the local encode stage
(--shard-rows); an alignment *part* is one eflomal run of --align-shards.

encode+project: the corpus is cut into blocks of consecutive pairs. Each
block (both sides and their links) goes to an encoder actor (one per GPU
on a node with GPUs, else one per --worker-cpus CPUs), which loads the
model, the lexicon and the vocabularies once, chooses the links, encodes
the shard's English sentences in memory and adds the vectors into
per-word sums and counts, Chinese and English; only those tables travel
back. The driver reads the corpus twice, streaming (to count the words,
which fixes the vocabularies, then to send the shards), and adds the
tables up: sums and counts are additive, so the result is the local
projection's up to float rounding.
The vectors themselves are never kept on this path (they would be about
2 bytes x dim per English word, on the workers' disks): re-projecting with
another strategy encodes again, or run the local `encode` on a machine
that can hold them.

Faults: an actor whose process dies is restarted (loading the model again)
and its shard is retried, by Ray. Each returned shard's tables are written
to WORK/ray/KEY-SHARDS/ at once (and folded into a checkpoint of the sums
every FOLD_EVERY shards), so a driver killed mid-job is resumed by the next
run with the same key from the shards it had.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .align import AlignedPart, AlignPart, align, align_part
from .config import Config, ExecutorConfig, section_dict
from .encode import (
    ENCODE_COUNTS,
    Encoder,
    EncodeSetup,
    encode_record,
    encode_setup,
    max_length_used,
    remove_vectors,
    resolve_device_precision,
    write_sentence_vectors,
)
from .errors import XlembedError
from .io import Reporter, SilentReporter, read_lines, require, require_same_counts, save_tensors, write_json_atomic
from .layout import WorkDir
from .models import load_config
from .project import (
    SUM_DTYPE,
    PartSums,
    ProjectionSums,
    ProjectionTables,
    add_part,
    choose_links,
    link_rows,
    prepare_projection,
    project,
    project_key,
    save_projection,
    sums_by_id,
)
from .records import STAGE_READS, invalidate, model_hash, read_keys, run_stage, stage_outputs, stamps, up_to_date

RETRIES = 3  # of a shard or an alignment part whose worker died
FOLD_EVERY = 16  # returned shards the driver keeps as files before it checkpoints their sum
PAIRS_PER_SHARD = 20_000  # the automatic --shards: at least one shard per this many pairs
SHARDS_PER_ENCODER = 4  # ... and at least this many per encoder, so a slow or restarted one holds up little
# the fault tests: the worker process that takes shard K SIGKILLs itself, once (WORK/ray/killed-at-shard-K
# says it did); the driver SIGKILLs itself once it has saved N shards
KILL_WORKER_AT = "XLEMBED_TEST_KILL_WORKER_AT_SHARD"
KILL_DRIVER_AFTER = "XLEMBED_TEST_KILL_DRIVER_AFTER_SHARDS"


def import_ray():
    try:
        import ray
    except ImportError:
        raise XlembedError("executor.executor ray needs the `ray` package: pip install 'xlembed[ray]'")
    return ray


@contextlib.contextmanager
def ray_cluster(opts: ExecutorConfig) -> Iterator:
    """Ray, connected for the length of the block: the cluster at
    --ray-address, else a local one with this machine's CPUs (stopped
    after). A Ray the caller already started is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if opts.ray_address:
            ray.init(address=opts.ray_address, **options)
        else:
            ray.init(num_cpus=os.cpu_count(), **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise XlembedError(
            f"executor.ray_address {opts.ray_address or '(local)'}: cannot start or join Ray: {str(e).splitlines()[0]}"
        )
    finally:  # ray.init puts its own SIGTERM handler (exit at once, untidily) over the caller's: the caller's again
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield ray
    except BaseException:  # an error, Ctrl-C or SIGTERM: the caller prints its one line after this
        silence_stderr_descriptor()
        ray.shutdown()
        raise
    ray.shutdown()


def silence_stderr_descriptor() -> None:
    """File descriptor 2 sent to /dev/null for the rest of the process, and
    Python's sys.stderr (when it wrote to that descriptor) moved to a copy of
    the descriptor as it was, with the logging handlers that wrote to it.
    Leaving Ray after an error or a signal, the threads of its C++ core write
    log lines of their own (`task_manager.cc: Failed to push error to driver
    …`) straight to the descriptor, past sys.stderr, and they may still do so
    after ray.shutdown() returns: so the descriptor is not given back. The CLI
    is about to print its one line and exit. A program that embeds xlembed
    keeps sys.stderr, its logging and rich consoles made with stderr=True;
    what still writes to descriptor 2 itself after a failed Ray session is
    lost: native code, a stream object kept from before (a Console made with
    file=sys.stderr), and the stderr of child processes started after."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    old = sys.stderr
    if stream_descriptor(old) == 2:
        sys.stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(old, "encoding", None) or "utf-8",
                               errors=getattr(old, "errors", None) or "backslashreplace")
        with contextlib.suppress(Exception):  # a logger made by another thread meanwhile: keep the one line
            for handler in logging_stream_handlers():
                if handler.stream is old:
                    handler.setStream(sys.stderr)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def logging_stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        logger for logger in list(logging.Logger.manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    ]
    return [h for logger in loggers for h in logger.handlers if isinstance(h, logging.StreamHandler)]


def stream_descriptor(stream) -> int | None:
    """The file descriptor a text stream writes to; None for one without (a test runner's buffer)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class Encoders(NamedTuple):
    """How many encoder actors the cluster takes, and what each asks for."""

    count: int
    gpus: int  # per actor: 1 on a GPU cluster, else 0
    cpus: int


def plan_encoders(ray, opts: ExecutorConfig) -> Encoders:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return Encoders(gpus, 1, 1)
    largest = max((node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if largest < opts.worker_cpus:  # Ray would wait forever for a node that big, without a word
        raise XlembedError(f"executor.worker_cpus {opts.worker_cpus}: no node of the Ray cluster has that many CPUs "
                           f"(the largest has {int(largest)}); use executor.worker_cpus {max(1, int(largest))} or less")
    return Encoders(max(1, int(resources.get("CPU", 1)) // opts.worker_cpus), 0, opts.worker_cpus)


def block_bounds(n_sentences: int, shards: int, encoders: int) -> list[int]:
    """Where each shard of consecutive sentences starts (and, last, the end)."""
    if shards == 0:
        shards = max(SHARDS_PER_ENCODER * encoders, math.ceil(n_sentences / PAIRS_PER_SHARD))
    shards = max(1, min(shards, n_sentences))
    return np.linspace(0, n_sentences, shards + 1).astype(np.int64).tolist()


class ModelSource(NamedTuple):
    """Where a worker finds the model: the driver's directory when its node
    holds the same files, else the copy shipped in Ray's object store."""

    path: str
    sha256: str
    shipped: list  # [ObjectRef of {relative path: bytes}], in a list so that Ray hands over the reference


class BlockTask(NamedTuple):
    """What one encoder needs for one shard of consecutive pairs: both sides and their links."""

    index: int
    model: ModelSource
    tables: list  # [ObjectRef of ProjectionTables], in a list so that Ray hands over the reference
    zh_lines: list[str]
    en_lines: list[str]
    links_lines: list[str]
    kill_marker: str | None  # fault test only: die once at this shard


class BlockSums(NamedTuple):
    """One shard's projection: sums (float32: sums_by_id sums in float32, as
    the local project does within a vector shard, so nothing is lost) and
    counts of the word ids present in it."""

    index: int
    zh: PartSums
    en: PartSums
    links_without_vector: int
    encode_counts: dict  # Encoder.counts of the shard
    ran_on: str  # "DEVICE PRECISION" of the encoder that made it
    sentences: torch.Tensor | None = None  # [n_pairs, d] float16, the English model's embedding of each pair's sentence


def project_block(encoder: Encoder, tables: ProjectionTables, task: BlockTask) -> BlockSums:
    """The projection core on one shard: choose links, encode, rows, sums (as the local stage does)."""
    links = choose_links(task.zh_lines, task.en_lines, task.links_lines, tables)
    encoded = encoder.vectors(task.en_lines)
    rows = link_rows(links, encoded.word_rows)
    zh = sums_by_id(encoded.vectors, rows.zh_ids, rows.zh_rows)
    en = sums_by_id(encoded.vectors, rows.en_ids, rows.en_rows)
    return BlockSums(
        task.index,
        zh._replace(sum=zh.sum.float()),
        en._replace(sum=en.sum.float()),
        rows.links_without_vector,
        encoded.counts,
        f"{encoder.device} {encoder.precision.value}",
        encoded.sentences,
    )


class BlockEncoder:
    """A Ray actor: the model loaded once (at its first shard), projecting
    shard after shard. Nodes need xlembed installed, not the model."""

    def __init__(self, config: Config, threads: int):
        torch.set_num_threads(threads)
        self.config, self.encoder, self.tmp, self.tables = config, None, None, None

    def load(self, model: ModelSource) -> Encoder:
        path = Path(model.path)
        if not (path.is_dir() and model_hash(path) == model.sha256):
            import ray

            self.tmp = tempfile.TemporaryDirectory(prefix="xlembed-model-")
            path = Path(self.tmp.name)
            for name, data in ray.get(model.shipped[0]).items():
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                (path / name).write_bytes(data)
        return Encoder(
            path, self.config.encode, *resolve_device_precision(self.config.encode)
        )  # as this node resolves them

    def project(self, task: BlockTask) -> BlockSums:
        if task.kill_marker and not os.path.exists(task.kill_marker):
            Path(task.kill_marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.encoder is None:
            import ray

            self.encoder, self.tables = self.load(task.model), ray.get(task.tables[0])
        return project_block(self.encoder, self.tables, task)


def model_files(model_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(model_dir)): p.read_bytes() for p in sorted(model_dir.rglob("*")) if p.is_file()}


class Totals:
    """The driver's running sums and counts, each returned shard added in as
    it arrives. On disk, for a driver that dies: every shard returned since
    the last checkpoint (written at once), and the checkpoint (the sums of
    all shards before, which replace their files): the driver's disk holds
    the sums and at most FOLD_EVERY shards."""

    def __init__(self, parts_dir: Path, n_zh: int, n_en: int, dim: int):
        self.dir = parts_dir
        self.sums = ProjectionSums(
            torch.zeros((n_zh, dim), dtype=SUM_DTYPE),
            torch.zeros(n_zh, dtype=torch.int64),  # [Z, d], [Z]
            torch.zeros((n_en, dim), dtype=SUM_DTYPE),
            torch.zeros(n_en, dtype=torch.int64),
            0,
        )  # [E, d], [E]
        self.counts = dict.fromkeys(ENCODE_COUNTS, 0)
        self.ran_on: set[str] = set()
        self.done: list[int] = []  # shards added, in the order they came
        self.unfolded: list[int] = []  # ... whose files the checkpoint does not replace yet
        self.bytes_returned = 0
        if self.checkpoint_path.exists():
            saved = load_file(str(self.checkpoint_path))
            with safe_open(str(self.checkpoint_path), "pt") as f:
                meta = json.loads(f.metadata()["totals"])
            self.sums = ProjectionSums(
                saved["zh_sum"], saved["zh_count"], saved["en_sum"], saved["en_count"], meta["links_without_vector"]
            )
            self.counts, self.done, self.ran_on = meta["counts"], meta["done"], set(meta.get("ran_on", ()))
        for path in sorted(parts_dir.glob("shard-*.safetensors")):
            k = int(path.stem.split("-")[1])
            if k not in self.done:
                self.add(self.read_block(k), save=False)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "totals.safetensors"

    def shard_path(self, k: int) -> Path:
        return self.dir / f"shard-{k:05d}.safetensors"

    def sentences_path(self, k: int) -> Path:
        """Shard k's sentence embeddings (kept until the end: the checkpoint holds only sums)."""
        return self.dir / f"sentences-{k:05d}.safetensors"

    def save_sentence_vectors(self, work: WorkDir, key: str, n_shards: int) -> bool:
        """Every shard's sentence embeddings, in corpus order, as the local encode
        writes them (one per line); False (and no file) where a shard's are missing."""
        work.sentence_vectors.unlink(missing_ok=True)
        if not all(self.sentences_path(k).exists() for k in range(n_shards)):
            return False
        vectors = torch.cat([load_file(str(self.sentences_path(k)))["vectors"] for k in range(n_shards)])  # [n, d]
        write_sentence_vectors(work, key, vectors, torch.arange(len(vectors)))  # one row per line
        return True

    def read_block(self, k: int) -> BlockSums:
        path = self.shard_path(k)
        t = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        counts = {name: int(meta[name]) for name in ENCODE_COUNTS if name in meta}
        return BlockSums(k, PartSums(t["zh_ids"].numpy(), t["zh_sum"], t["zh_count"]),
                         PartSums(t["en_ids"].numpy(), t["en_sum"], t["en_count"]),
                         int(t["links_without_vector"][0]), counts, meta.get("ran_on", ""))

    def save_block(self, shard: BlockSums) -> None:
        tensors = {"zh_ids": torch.tensor(shard.zh.ids), "zh_sum": shard.zh.sum, "zh_count": shard.zh.count,
                   "en_ids": torch.tensor(shard.en.ids), "en_sum": shard.en.sum, "en_count": shard.en.count}
        save_tensors(
            self.shard_path(shard.index),
            dict(tensors, links_without_vector=torch.tensor([shard.links_without_vector])),
            metadata=dict({k: str(v) for k, v in shard.encode_counts.items()}, ran_on=shard.ran_on),
        )
        self.bytes_returned += sum(t.nbytes for t in tensors.values())
        if shard.sentences is not None:
            save_tensors(self.sentences_path(shard.index), {"vectors": shard.sentences})
            self.bytes_returned += shard.sentences.nbytes

    def add(self, shard: BlockSums, save: bool = True) -> None:
        if save:
            self.save_block(shard)
        s = self.sums
        add_part(s.zh_sum, s.zh_count, shard.zh)
        add_part(s.en_sum, s.en_count, shard.en)
        self.sums = s._replace(links_without_vector=s.links_without_vector + shard.links_without_vector)
        for name, n in shard.encode_counts.items():
            self.counts[name] = self.counts.get(name, 0) + n
        self.ran_on |= {shard.ran_on} - {""}
        self.done.append(shard.index)
        self.unfolded.append(shard.index)
        if save and len(self.unfolded) >= FOLD_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the sums so far, then remove the shard files they hold."""
        s = self.sums
        meta = dict(
            done=self.done, counts=self.counts, links_without_vector=s.links_without_vector, ran_on=sorted(self.ran_on)
        )
        save_tensors(
            self.checkpoint_path,
            {"zh_sum": s.zh_sum, "zh_count": s.zh_count, "en_sum": s.en_sum, "en_count": s.en_count},
            metadata={"totals": json.dumps(meta)},
        )
        for k in self.unfolded:
            self.shard_path(k).unlink(missing_ok=True)
        self.unfolded = []

    def remove(self) -> None:
        remove_parts(self.dir)
        with contextlib.suppress(OSError):  # not empty: the fault test's marker
            self.dir.parent.rmdir()


class RayJob(NamedTuple):
    """What encode+project on Ray adds up, and how it went (for the records)."""

    totals: Totals
    executor: dict  # the executor's options, encoders, shards, bytes sent and returned


def block_tasks(work: WorkDir, bounds: list[int], done: list[int], model: ModelSource, tables: list,
                sent: list[int]) -> Iterator[BlockTask]:
    """The shards still to do, in order, read from the corpus as they are
    sent; `sent[0]` counts the bytes of pairs and links they carry (the
    model and the tables go once per node)."""
    kill_at = os.environ.get(KILL_WORKER_AT)
    files = [read_lines(path) for path in (work.corpus_zh, work.corpus_en, work.links)]
    for k in range(len(bounds) - 1):
        zh, en, links = (list(itertools.islice(f, bounds[k + 1] - bounds[k])) for f in files)
        if k in done:
            continue
        sent[0] += sum(len(line.encode()) + 1 for part in (zh, en, links) for line in part)
        marker = str(work.root / "ray" / f"killed-at-shard-{k}") if kill_at is not None and int(kill_at) == k else None
        yield BlockTask(k, model, tables, zh, en, links, marker)


def gather(ray, actors: list, tasks: Iterator[BlockTask], totals: Totals, work: WorkDir, task) -> None:
    """Keep every actor busy with the next shard; add each shard's sums as it returns."""
    pending: dict = {}
    idle = list(actors)
    while True:
        while idle and (shard := next(tasks, None)) is not None:
            encoder = idle.pop(0)
            pending[encoder.project.remote(shard)] = encoder
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=1)
        idle.append(pending.pop(ready[0]))
        try:
            totals.add(ray.get(ready[0]))
        except ray.exceptions.RayError as e:
            raise XlembedError(
                f"{work.root}: a shard failed {RETRIES + 1} times on Ray; the shards returned so far are kept "
                f"for the next run ({str(e).strip().splitlines()[0]})"
            )
        if os.environ.get(KILL_DRIVER_AFTER) == str(len(totals.done)):
            os.kill(os.getpid(), signal.SIGKILL)
        task.advance()


def run_blocks(ray, config: Config, work: WorkDir, key: str, setup: EncodeSetup, tables: ProjectionTables, n_pairs: int,
               dim: int, reporter: Reporter) -> RayJob:
    """Encode+project every shard not yet returned, on encoder actors (a dead
    worker's actor is restarted, and its shard retried up to RETRIES times:
    a shard that kills every worker fails the job)."""
    encoders = plan_encoders(ray, config.executor)
    bounds = block_bounds(n_pairs, config.executor.shards, encoders.count)
    totals = Totals(
        parts_directory(work, key, len(bounds) - 1), len(tables.vocab.zh_vocab), len(tables.vocab.en_vocab), dim
    )
    resumed, todo = len(totals.done), len(bounds) - 1 - len(totals.done)
    actor = ray.remote(num_cpus=encoders.cpus, num_gpus=encoders.gpus, max_restarts=-1, max_task_retries=RETRIES)(
        BlockEncoder
    )
    model = ModelSource(str(setup.model_dir), model_hash(setup.model_dir), [ray.put(model_files(setup.model_dir))])
    actors = [actor.remote(config, encoders.cpus) for _ in range(min(encoders.count, max(1, todo)))]
    sent = [0]
    tasks = block_tasks(work, bounds, totals.done, model, [ray.put(tables)], sent)
    with reporter.task(f"encode+project (ray, {len(actors)} encoders)", len(bounds) - 1, "shards") as task:
        task.advance(resumed)  # returned to an earlier driver
        gather(ray, actors, tasks, totals, work, task)
    for a in actors:
        ray.kill(a)
    return RayJob(totals, dict(section_dict(config.executor), encoders=len(actors), shards=len(bounds) - 1,
                               shards_resumed=resumed, bytes_sent=sent[0], bytes_returned=totals.bytes_returned))


def ran_on_record(record: dict, ran_on: set[str]) -> dict:
    """The encode record with the device and precision the workers resolved (not the driver's)."""
    if ran_on:  # each worker chose its own precision; what decided the driver's does not apply
        record = {k: v for k, v in record.items() if k != "precision_decided_by"}
    if len(ran_on) == 1:
        device, precision = next(iter(ran_on)).split(" ")
        return dict(record, options=dict(record["options"], device=device), precision_used=precision)
    return dict(record, ran_on=sorted(ran_on)) if ran_on else record


def encode_and_project(config: Config, work: WorkDir, executor: "RayExecutor", reporter: Reporter = SilentReporter(),
                       force: bool = False) -> tuple[dict, dict]:
    """The encode and project stages on Ray; returns their two records.
    Records and outputs are those of the local stages (same keys, so
    either executor reuses the other's finished stages), except that no
    vectors are kept. Up to date: skipped; vectors already encoded here:
    only the (cheap) local projection runs."""
    setup = encode_setup(config, work)
    key, inputs = project_key(config, work, setup.key)
    encode_done = up_to_date(work, "encode", setup.key)
    if not force and encode_done and (work.vectors_index.exists() or up_to_date(work, "project", key)):
        return dict(encode_done, skipped=True), project(config, work, reporter)
    records = {}

    def compute() -> dict:  # the project stage's, which writes the encode stage's record too
        start = time.perf_counter()
        tables = prepare_projection(work, config.project)
        n_pairs = sum(1 for _ in read_lines(require(work.links, "align")))
        require_same_counts(work.root, "line counts", {"corpus.en": sum(1 for _ in read_lines(work.corpus_en)),
                                                       "align.links": n_pairs}, "align")
        model_config = load_config(setup.model_dir)
        dim = model_config.hidden_size
        job = run_blocks(executor.ray, config, work, key, setup, tables, n_pairs, dim, reporter)
        remove_vectors(work)  # any from an earlier local encode are not these
        kept = job.totals.save_sentence_vectors(work, setup.key, job.executor["shards"])
        counts = {name: job.totals.counts.get(name, 0) for name in ENCODE_COUNTS}
        encoded = encode_record(config, work, setup, max_length_used(config.encode, model_config), dim, counts)
        records["encode"] = dict(
            stage="encode",
            key=setup.key,
            **ran_on_record(encoded, job.totals.ran_on),
            vectors_kept=False,
            sentence_vectors=kept,
            executor=job.executor,
            read=read_keys(work, STAGE_READS["encode"]),
            wrote=stamps(work, stage_outputs(work, "encode")),  # no vectors kept: the sentence embeddings, if any
            seconds=round(time.perf_counter() - start, 3),
        )
        write_json_atomic(work.record("encode"), records["encode"])
        projected = save_projection(work, config, tables.vocab, tables.lexicon, job.totals.sums, dim, inputs)
        job.totals.remove()
        return dict(projected, executor=job.executor)

    invalidate(work, "encode")  # recomputed in compute (run_stage then sees no stale encode record to refuse)
    projected = run_stage(work, "project", key, True, compute)  # up to date: returned above
    return records["encode"], projected


def parts_directory(work: WorkDir, key: str, n_shards: int) -> Path:
    """WORK/ray/KEY-SHARDS: the returned shards of this key cut this way;
    those of any other key or cut are not this job's and are removed."""
    parts_dir = work.root / "ray" / f"{key[:16]}-{n_shards}"
    for other in work.root.joinpath("ray").glob("*-*"):
        if other.is_dir() and other != parts_dir:
            remove_parts(other)
    parts_dir.mkdir(parents=True, exist_ok=True)
    return parts_dir


def remove_parts(parts_dir: Path) -> None:
    """A parts directory's files (ours by name: returned shards and the
    checkpoint), then the directory if nothing else is left in it."""
    for path in [*parts_dir.glob("shard-*.safetensors"), *parts_dir.glob("sentences-*.safetensors"),
                 parts_dir / "totals.safetensors"]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        parts_dir.rmdir()


class RayExecutor:
    """A Ray cluster for the length of one command: joined (or a local one
    started) at its first use, left when the command ends; one session
    whatever the stages ask of it."""

    def __init__(self, config: Config):
        self.config = config
        self._session = contextlib.ExitStack()
        self._ray = None

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self._session.__exit__(*exc)  # the exception, if any, reaches ray_cluster (close() would hide it)

    @property
    def ray(self):
        if self._ray is None:
            self._ray = self._session.enter_context(ray_cluster(self.config.executor))
        return self._ray

    def align_parts(self, parts: list[AlignPart]) -> Iterator[AlignedPart]:
        """Each part one task (retried if its worker dies), asking for a CPU
        per eflomal sampler (its threads), at most a node's CPUs."""
        ray = self.ray
        largest_node = max(int(node["Resources"].get("CPU", 1)) for node in ray.nodes() if node["Alive"])
        task = ray.remote(num_cpus=min(self.config.align.samplers, largest_node), max_retries=RETRIES)(align_part)
        refs = [task.remote(part._replace(scratch=None)) for part in parts]  # the system's temporary folder of the node
        for ref in refs:  # in order
            yield ray.get(ref)

    def stages(self, config: Config, work: WorkDir, reporter: Reporter, force: bool) -> Iterator[tuple[str, dict]]:
        # alignment first: the Ray workers project as they encode
        yield "align", align(config, work, reporter, force, self.align_parts)
        encoded, projected = encode_and_project(config, work, self, reporter, force)
        yield "encode", encoded
        yield "project", projected
