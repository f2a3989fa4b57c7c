"""The Ray executor: encode+project and alignment parts as Ray tasks.

encode+project: the corpus is cut into shards of consecutive pairs. Each
shard (both sides and their links) goes to an encoder actor (one per GPU
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
import tempfile
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig

from .align import AlignedPart, AlignPart, align_part
from .config import Config, ExecutorConfig, section_dict
from .layout import WorkDir
from .encode import ENCODE_COUNTS, Encoder, encode_record, encode_setup, max_length_used, remove_vectors, resolve_precision
from .io import Reporter, SilentReporter, read_lines, require, save_tensors
from .errors import XlembedError
from .project import (Lexicon, ProjectionSums, choose_links, count_words, project, project_key, read_link_lexicon, save_projection,
                      sums_by_id, vocabularies)
from .records import invalidate, model_hash, up_to_date
from .io import write_json_atomic

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
        raise XlembedError("--executor ray needs the `ray` package: pip install 'xlembed[ray]'")
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
    try:
        if opts.ray_address:
            ray.init(address=opts.ray_address, **options)
        else:
            ray.init(num_cpus=os.cpu_count(), **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise XlembedError(f"--ray-address {opts.ray_address or '(local)'}: cannot start or join Ray: {str(e).splitlines()[0]}")
    try:
        yield ray
    finally:
        ray.shutdown()


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
    return Encoders(max(1, int(resources.get("CPU", 1)) // opts.worker_cpus), 0, opts.worker_cpus)


def shard_bounds(n_sentences: int, shards: int, encoders: int) -> list[int]:
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


class LinkTables(NamedTuple):
    """What every encoder needs to choose links: the lexicon and both
    vocabularies' ids (sent once, through Ray's object store)."""

    lexicon: Lexicon
    zh_ids: dict[str, int]
    en_ids: dict[str, int]


class ShardTask(NamedTuple):
    """What one encoder needs for one shard of consecutive pairs: both sides and their links."""

    index: int
    model: ModelSource
    tables: list  # [ObjectRef of LinkTables], in a list so that Ray hands over the reference
    zh_lines: list[str]
    en_lines: list[str]
    links_lines: list[str]
    kill_marker: str | None  # fault test only: die once at this shard


class ShardSums(NamedTuple):
    """One shard's projection: sums and counts of the word ids present in it."""

    index: int
    zh_ids: np.ndarray  # [u_zh]
    zh_sum: torch.Tensor  # [u_zh, d] float32
    zh_count: torch.Tensor  # [u_zh]
    en_ids: np.ndarray  # [u_en]
    en_sum: torch.Tensor  # [u_en, d] float32
    en_count: torch.Tensor  # [u_en]
    links_without_vector: int
    encode_counts: dict  # Encoder.counts of the shard


def project_shard(encoder: Encoder, tables: LinkTables, task: ShardTask) -> ShardSums:
    links = choose_links(task.zh_lines, task.en_lines, task.links_lines, tables.lexicon, tables.zh_ids, tables.en_ids)
    word_rows, vectors, counts = encoder.vectors(task.en_lines)  # [n_words], [n_rows, d]
    link_rows = word_rows[links.link_positions]
    zh_ids, zh_sum, zh_count = sums_by_id(vectors, links.link_words[link_rows >= 0], link_rows[link_rows >= 0])
    en_ids, en_sum, en_count = sums_by_id(vectors, links.en_words[word_rows >= 0], word_rows[word_rows >= 0])
    # float32 travels: sums_by_id sums in float32 (as the local project does within a shard), so nothing is lost
    return ShardSums(task.index, zh_ids, zh_sum.float(), zh_count, en_ids, en_sum.float(), en_count,
                     links_without_vector=int((link_rows < 0).sum()), encode_counts=counts)


class ShardEncoder:
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
        opts = self.config.encode
        device = torch.device("cuda" if torch.cuda.is_available() and opts.device.value != "cpu" else "cpu")
        return Encoder(path, opts, device, resolve_precision(opts.precision, device))

    def project(self, task: ShardTask) -> ShardSums:
        if task.kill_marker and not os.path.exists(task.kill_marker):
            Path(task.kill_marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.encoder is None:
            import ray

            self.encoder, self.tables = self.load(task.model), ray.get(task.tables[0])
        return project_shard(self.encoder, self.tables, task)


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
        self.sums = ProjectionSums(torch.zeros((n_zh, dim), dtype=torch.float64), torch.zeros(n_zh, dtype=torch.int64),  # [Z, d], [Z]
                                   torch.zeros((n_en, dim), dtype=torch.float64), torch.zeros(n_en, dtype=torch.int64), 0)  # [E, d], [E]
        self.counts = dict.fromkeys(ENCODE_COUNTS, 0)
        self.done: list[int] = []  # shards added, in the order they came
        self.unfolded: list[int] = []  # ... whose files the checkpoint does not replace yet
        self.bytes_returned = 0
        if self.checkpoint_path.exists():
            saved = load_file(str(self.checkpoint_path))
            with safe_open(str(self.checkpoint_path), "pt") as f:
                meta = json.loads(f.metadata()["totals"])
            self.sums = ProjectionSums(saved["zh_sum"], saved["zh_count"], saved["en_sum"], saved["en_count"], meta["links_without_vector"])
            self.counts, self.done = meta["counts"], meta["done"]
        for path in sorted(parts_dir.glob("shard-*.safetensors")):
            k = int(path.stem.split("-")[1])
            if k not in self.done:
                self.add(self.read_shard(k), save=False)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "totals.safetensors"

    def shard_path(self, k: int) -> Path:
        return self.dir / f"shard-{k:05d}.safetensors"

    def read_shard(self, k: int) -> ShardSums:
        path = self.shard_path(k)
        t = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            counts = {name: int(v) for name, v in f.metadata().items()}
        return ShardSums(k, t["zh_ids"].numpy(), t["zh_sum"], t["zh_count"], t["en_ids"].numpy(), t["en_sum"], t["en_count"],
                         int(t["links_without_vector"][0]), counts)

    def add(self, shard: ShardSums, save: bool = True) -> None:
        if save:
            save_tensors(self.shard_path(shard.index),
                         {"zh_ids": torch.tensor(shard.zh_ids), "zh_sum": shard.zh_sum, "zh_count": shard.zh_count,
                          "en_ids": torch.tensor(shard.en_ids), "en_sum": shard.en_sum, "en_count": shard.en_count,
                          "links_without_vector": torch.tensor([shard.links_without_vector])},
                         metadata={k: str(v) for k, v in shard.encode_counts.items()})
            self.bytes_returned += sum(t.nbytes for t in (shard.zh_ids, shard.zh_sum, shard.zh_count, shard.en_ids, shard.en_sum, shard.en_count))
        s = self.sums
        zh_ids, en_ids = torch.tensor(shard.zh_ids), torch.tensor(shard.en_ids)  # copies: Ray hands over read-only arrays
        s.zh_sum.index_add_(0, zh_ids, shard.zh_sum.double())
        s.zh_count.index_add_(0, zh_ids, shard.zh_count)
        s.en_sum.index_add_(0, en_ids, shard.en_sum.double())
        s.en_count.index_add_(0, en_ids, shard.en_count)
        self.sums = s._replace(links_without_vector=s.links_without_vector + shard.links_without_vector)
        for name, n in shard.encode_counts.items():
            self.counts[name] = self.counts.get(name, 0) + n
        self.done.append(shard.index)
        self.unfolded.append(shard.index)
        if save and len(self.unfolded) >= FOLD_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the sums so far, then remove the shard files they hold."""
        s = self.sums
        meta = dict(done=self.done, counts=self.counts, links_without_vector=s.links_without_vector)
        save_tensors(self.checkpoint_path, {"zh_sum": s.zh_sum, "zh_count": s.zh_count, "en_sum": s.en_sum, "en_count": s.en_count},
                     metadata={"totals": json.dumps(meta)})
        for k in self.unfolded:
            self.shard_path(k).unlink(missing_ok=True)
        self.unfolded = []

    def remove(self) -> None:
        remove_parts(self.dir)


def encode_and_project(config: Config, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> tuple[dict, dict]:
    """The encode and project stages on Ray; returns their two records.
    Records and outputs are those of the local stages (same keys, so
    either executor reuses the other's finished stages), except that no
    vectors are kept. Up to date: skipped; vectors already encoded here:
    only the (cheap) local projection runs."""
    setup = encode_setup(config, work)
    key, inputs = project_key(config, work, setup.key)
    encode_done = up_to_date(work, "encode", setup.key)
    if not force and (record := up_to_date(work, "project", key)) and encode_done:
        return dict(encode_done, skipped=True), dict(record, skipped=True)
    if not force and encode_done and work.vectors_index.exists():
        return dict(encode_done, skipped=True), project(config, work, reporter, force)

    start = time.perf_counter()
    invalidate(work, "project")
    invalidate(work, "encode")
    lexicon = read_link_lexicon(work, config.project)
    corpus_zh, corpus_en, corpus_links = require(work.corpus_zh, "tokenize"), work.corpus_en, require(work.links, "align")
    vocab = vocabularies(*count_words(read_lines(corpus_zh), read_lines(corpus_en), lexicon.stopwords))
    n_pairs = sum(1 for _ in read_lines(corpus_links))
    if n_pairs != sum(1 for _ in read_lines(corpus_en)):
        raise XlembedError(f"{work.root}: corpus.en and the links disagree on the number of sentences; rerun the earlier stages")
    model_config = AutoConfig.from_pretrained(setup.model_dir)
    dim = model_config.hidden_size
    with ray_cluster(config.executor) as ray:
        encoders = plan_encoders(ray, config.executor)
        bounds = shard_bounds(n_pairs, config.executor.shards, encoders.count)
        totals = Totals(parts_directory(work, key, len(bounds) - 1), len(vocab.zh_vocab), len(vocab.en_vocab), dim)
        todo = [k for k in range(len(bounds) - 1) if k not in totals.done]
        resumed = len(totals.done)
        kill_at = os.environ.get(KILL_WORKER_AT)
        # a dead worker's actor is restarted, and its shard retried up to RETRIES times (a shard that kills every worker fails the job)
        actor = ray.remote(num_cpus=encoders.cpus, num_gpus=encoders.gpus, max_restarts=-1, max_task_retries=RETRIES)(ShardEncoder)
        model = ModelSource(str(setup.model_dir), model_hash(setup.model_dir), [ray.put(model_files(setup.model_dir))])
        tables = [ray.put(LinkTables(lexicon, *vocab.ids()))]
        actors = [actor.remote(config, encoders.cpus) for _ in range(min(encoders.count, max(1, len(todo))))]
        sent = 0  # what the shard tasks carry: their pairs and links (the model and the tables go once per node)

        def shard_tasks() -> Iterator[ShardTask]:
            """The shards still to do, in order, read from the corpus as they are sent."""
            nonlocal sent
            files = [read_lines(path) for path in (corpus_zh, corpus_en, corpus_links)]
            for k in range(len(bounds) - 1):
                zh, en, links = (list(itertools.islice(f, bounds[k + 1] - bounds[k])) for f in files)
                if k in totals.done:
                    continue
                sent += sum(len(line.encode()) + 1 for part in (zh, en, links) for line in part)
                marker = str(work.root / "ray" / f"killed-at-shard-{k}") if kill_at is not None and int(kill_at) == k else None
                yield ShardTask(k, model, tables, zh, en, links, marker)

        pending: dict = {}
        with reporter.task(f"encode+project (ray, {len(actors)} encoders)", len(bounds) - 1, "shards") as task:
            task.advance(resumed)  # returned to an earlier driver
            idle, waiting = list(actors), shard_tasks()
            while True:
                while idle and (shard := next(waiting, None)) is not None:
                    encoder = idle.pop(0)
                    pending[encoder.project.remote(shard)] = encoder
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                idle.append(pending.pop(ready[0]))
                try:
                    totals.add(ray.get(ready[0]))
                except ray.exceptions.RayError as e:
                    raise XlembedError(f"{work.root}: a shard failed {RETRIES + 1} times on Ray; the shards returned so far are kept "
                                       f"for the next run ({str(e).strip().splitlines()[0]})")
                if os.environ.get(KILL_DRIVER_AFTER) == str(len(totals.done)):
                    os.kill(os.getpid(), signal.SIGKILL)
                task.advance()
        for a in actors:
            ray.kill(a)

    remove_vectors(work)  # any from an earlier local encode are not these
    seconds = round(time.perf_counter() - start, 3)
    executor = dict(section_dict(config.executor), encoders=len(actors), shards=len(bounds) - 1, shards_resumed=resumed,
                    bytes_sent=sent, bytes_returned=totals.bytes_returned)
    # one record each, as the local stages write them; the seconds are the two stages' together
    counts = {name: totals.counts.get(name, 0) for name in ENCODE_COUNTS}
    encode_rec = dict(stage="encode", key=setup.key,
                      **encode_record(config, work, setup, max_length_used(config.encode, model_config), dim, counts),
                      vectors_kept=False, executor=executor, seconds=seconds)
    write_json_atomic(work.record("encode"), encode_rec)
    project_rec = dict(stage="project", key=key, **save_projection(work, config, vocab, lexicon, totals.sums, dim, inputs),
                       executor=executor, seconds=seconds)
    write_json_atomic(work.record("project"), project_rec)
    totals.remove()
    with contextlib.suppress(OSError):  # not empty: the fault test's marker
        totals.dir.parent.rmdir()
    return encode_rec, project_rec


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
    for path in [*parts_dir.glob("shard-*.safetensors"), parts_dir / "totals.safetensors"]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        parts_dir.rmdir()


def ray_parts_runner(config: Config):
    """align's parts_runner on Ray: each part one task (retried if its
    worker dies), asking for a CPU per eflomal sampler (its threads), at
    most a node's CPUs."""

    def run(parts: list[AlignPart]) -> Iterator[AlignedPart]:
        with ray_cluster(config.executor) as ray:
            largest_node = max(int(node["Resources"].get("CPU", 1)) for node in ray.nodes() if node["Alive"])
            task = ray.remote(num_cpus=min(config.align.samplers, largest_node), max_retries=RETRIES)(align_part)
            refs = [task.remote(part._replace(scratch=None)) for part in parts]  # the system's temporary folder of the node
            for ref in refs:  # in order
                yield ray.get(ref)

    return run
