"""Stage 3: word alignment with eflomal, symmetrised, and a lexical table.

eflomal aligns Chinese (source) to English (target) in both directions in one
call; both link files are written as `zhIndex-enIndex`. The symmetrised links
give the lexical table p(en | zh) = links(zh, en) / links(zh, *).
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import io
import math
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from .config import AlignConfig, Config, Symmetrization, section_dict
from .errors import XlembedError
from .io import (
    Reporter,
    SilentReporter,
    SilentTask,
    Task,
    atomic_path,
    own_temp_dir,
    read_lines,
    require,
    require_same_counts,
    temp_dir_prefix,
)
from .layout import WorkDir
from .records import file_hash, fingerprint, run_stage, stage_key

LinkSet = set[tuple[int, int]]  # one sentence's links (zh position, en position)
PROGRESS_EVERY = 4096  # sentence pairs between two progress updates of the symmetrize step
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def parse_links(line: str) -> LinkSet:
    return {(int(i), int(j)) for i, j in (pair.split("-")[:2] for pair in line.split())}


def format_links(links: LinkSet) -> str:
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def grow_diag_final_and(forward: LinkSet, reverse: LinkSet) -> LinkSet:
    """Koehn et al.'s heuristic: start from the intersection, grow into
    neighbouring (diagonals included) union links that cover a so-far
    unaligned word, then add union links whose two words are both unaligned."""
    union = forward | reverse
    links = forward & reverse
    aligned_zh = {i for i, _ in links}
    aligned_en = {j for _, j in links}
    grew = True
    while grew:
        grew = False
        for i, j in sorted(links):
            for di, dj in NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in links and (p[0] not in aligned_zh or p[1] not in aligned_en):
                    links.add(p)
                    aligned_zh.add(p[0])
                    aligned_en.add(p[1])
                    grew = True
    for direction in (forward, reverse):
        for i, j in sorted(direction):
            if i not in aligned_zh and j not in aligned_en:
                links.add((i, j))
                aligned_zh.add(i)
                aligned_en.add(j)
    return links


def symmetrize(forward: LinkSet, reverse: LinkSet, method: Symmetrization) -> LinkSet:
    method = Symmetrization(method)
    if method == Symmetrization.intersect:
        return forward & reverse
    if method == Symmetrization.union:
        return forward | reverse
    return grow_diag_final_and(forward, reverse)


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In a child, before exec: SIGKILL it when the process that started it
    dies (Linux prctl PR_SET_PDEATHSIG), so a killed xlembed orphans nothing."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1


class _ChildrenDieWithUs:
    """`subprocess` as eflomal's binding sees it, with every child started so
    that it dies with this process. Given `on_stderr`, the binding's binary
    (which it starts with `run`) runs without -q and its stderr lines go to
    `on_stderr`, never to the user."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def __init__(self, on_stderr: Callable[[str], None] | None = None):
        def wrap(function):
            def call(*args, **kwargs):
                kwargs.setdefault("preexec_fn", _die_with_parent)
                return function(*args, **kwargs)
            return call

        for name in ("Popen", "call", "check_call", "check_output"):
            setattr(self, name, wrap(getattr(subprocess, name)))
        self.on_stderr = on_stderr

    def run(self, args, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("preexec_fn", _die_with_parent)
        if self.on_stderr is None:
            return subprocess.run(args, check=check, **kwargs)
        code = _call_reading_stderr([arg for arg in args if arg != "-q"], self.on_stderr, **kwargs)
        if check and code:
            raise subprocess.CalledProcessError(code, args)
        return subprocess.CompletedProcess(args, code)


def _call_reading_stderr(args: list[str], on_line: Callable[[str], None], **kwargs) -> int:
    """`subprocess.call` with the child's stderr read through a pipe, line by
    line, in this thread (which waits for the child anyway); the child is
    killed if anything goes wrong here (a signal, a failing `on_line`)."""
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True, errors="replace", **kwargs) as child:
        try:
            for line in child.stderr:
                on_line(line.rstrip("\n"))
            return child.wait()
        except BaseException:
            child.kill()
            raise


class EflomalIterations(NamedTuple):
    """Sampling iterations of each model stage of one eflomal direction (a
    stage of 0 is skipped; each iteration runs every sampler once)."""

    ibm1: int
    hmm: int
    fertility: int


def eflomal_iterations(n_sentences: int, opts: AlignConfig) -> EflomalIterations:
    """eflomal's own rule (its binding's `align` given no counts) for
    `rel_iterations` and the corpus size; passed to it explicitly, so that
    the progress total is what runs. tests/test_align.py checks the rule
    against what eflomal itself prints."""
    iters = max(2, int(round(opts.iterations * 5000 / math.sqrt(max(1, n_sentences)))))
    quarter = max(1, iters // 4)
    if opts.align_model == 1:
        return EflomalIterations(iters, 0, 0)
    if opts.align_model == 2:
        return EflomalIterations(max(2, quarter), iters, 0)
    return EflomalIterations(max(2, quarter), quarter, iters)


def eflomal_progress_total(iterations: EflomalIterations) -> int:
    """Iterations of one run: both directions, every stage."""
    return 2 * sum(iterations)


_STAGE_START = re.compile(r"Aligning with model (\d+) ")
_EFLOMAL_INFO = ("Read texts", "Vocabulary sizes", "Created alignment", "Randomized alignment", "Done:",
                 "Final argmax", "Writing alignment", "Computing scores")


class _EflomalStages:
    """Progress from eflomal's stderr: it prints a line when a direction starts
    a model stage and after its final argmax iteration, none per iteration.
    The two directions run at once and their lines interleave without
    saying which is which, so a stage's iterations count as done when a
    direction starts the next stage (whose number says which stage ended) or
    prints its final argmax (the last stage ended). Other lines are kept for
    an error message."""

    def __init__(self, iterations: EflomalIterations, task):
        self.iterations = dict(enumerate(iterations, start=1))  # model -> its iterations
        self.stages = [model for model, n in self.iterations.items() if n]
        self.task = task
        self.unexpected: collections.deque[str] = collections.deque(maxlen=10)

    def line(self, text: str) -> None:
        started = _STAGE_START.match(text)
        if started and int(started.group(1)) in self.stages[1:]:
            ended = self.stages[self.stages.index(int(started.group(1))) - 1]
            self.task.advance(self.iterations[ended])
        elif text.startswith("Final argmax") and self.stages:
            self.task.advance(self.iterations[self.stages[-1]])
        elif text.strip() and not text.startswith(_EFLOMAL_INFO):
            self.unexpected.append(text)


_EFLOMAL_LOCK = threading.Lock()  # eflomal's module globals are patched for the length of one call


@contextlib.contextmanager
def _eflomal_patched(eflomal, scratch: Path, children: _ChildrenDieWithUs) -> Iterator[None]:
    """eflomal's temporary files in `scratch`, its binary run by `children`."""
    temp_file = functools.partial(tempfile.NamedTemporaryFile, dir=scratch)
    with _EFLOMAL_LOCK:
        saved = eflomal.NamedTemporaryFile, eflomal.cython.NamedTemporaryFile, eflomal.cython.subprocess
        eflomal.NamedTemporaryFile = eflomal.cython.NamedTemporaryFile = temp_file
        eflomal.cython.subprocess = children
        try:
            yield
        finally:
            eflomal.NamedTemporaryFile, eflomal.cython.NamedTemporaryFile, eflomal.cython.subprocess = saved


def run_eflomal(
    zh_lines, en_lines, forward: Path, reverse: Path, opts: AlignConfig, scratch: Path, priors: Path | None = None,
    task=None,
) -> None:
    """Align with the eflomal package (Chinese = source): both directions in
    one call, links written as zhIndex-enIndex, starting from `priors` (an
    eflomal priors file) if given. Its temporary files go to a directory of
    this process under `scratch` (nothing else there is touched), its binary
    dies with this process. `task` (if given) advances by the iterations
    done, to eflomal_progress_total in all."""
    import eflomal
    import eflomal.cython

    with own_temp_dir(scratch, "eflomal-") as own:
        _run_eflomal(eflomal, zh_lines, en_lines, forward, reverse, opts, own, priors, task)
    with contextlib.suppress(OSError):
        scratch.rmdir()  # only if empty: a user's file there stays, and so does the directory


def _run_eflomal(eflomal, zh_lines, en_lines, forward: Path, reverse: Path, opts: AlignConfig, scratch: Path,
                 priors: Path | None, task) -> None:
    iterations = eflomal_iterations(len(zh_lines), opts)
    stages = _EflomalStages(iterations, task) if task is not None else None
    children = _ChildrenDieWithUs(stages.line if stages else None)
    aligner = eflomal.Aligner(model=opts.align_model, n_samplers=opts.samplers, n_iterations=tuple(iterations),
                              rel_iterations=opts.iterations, null_prior=opts.null_prior)
    with atomic_path(forward) as fwd_tmp, atomic_path(reverse) as rev_tmp, \
            _eflomal_patched(eflomal, scratch, children), \
            open(priors, encoding="utf-8") if priors else contextlib.nullcontext() as priors_file:
        try:
            aligner.align(zh_lines, en_lines, links_filename_fwd=str(fwd_tmp), links_filename_rev=str(rev_tmp),
                          priors_input=priors_file, quiet=True)  # its -q: dropped by `children` for `stages`
        except subprocess.CalledProcessError as e:  # the links files are incomplete: they replace nothing
            how = f"killed by signal {-e.returncode}" if e.returncode < 0 else f"exit status {e.returncode}"
            said = ("; ".join(stages.unexpected) or "no message") if stages else "see its messages above"
            raise XlembedError(f"eflomal failed ({how}): {said}") from e


class AlignPart(NamedTuple):
    """One part of a corpus aligned apart (--align-shards), from shared priors."""

    zh: list[str]
    en: list[str]
    priors: str  # an eflomal priors file's text
    opts: AlignConfig
    scratch: str | None  # where its temporary files go (the work directory's tmp/); None: the system's temporary folder


class AlignedPart(NamedTuple):
    forward: str  # one line of zhIndex-enIndex links per pair
    reverse: str


def align_part(part: AlignPart) -> AlignedPart:
    """Align one part in a temporary directory of its own (on whichever node runs it)."""
    if part.scratch:
        Path(part.scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_dir_prefix() + "part-", dir=part.scratch) as tmp:
        tmp = Path(tmp)
        (tmp / "priors").write_text(part.priors, encoding="utf-8")
        run_eflomal(part.zh, part.en, tmp / "fwd", tmp / "rev", part.opts, tmp / "scratch", priors=tmp / "priors")
        return AlignedPart((tmp / "fwd").read_text(encoding="utf-8"), (tmp / "rev").read_text(encoding="utf-8"))


def in_this_process(parts: Iterable[AlignPart]) -> Iterator[AlignedPart]:
    """The local executor: one part after another."""
    return map(align_part, parts)


PartsRunner = Callable[[list[AlignPart]], Iterator[AlignedPart]]  # aligns parts, yielding them in order


def estimate_priors(zh: list[str], en: list[str], opts: AlignConfig, scratch: Path) -> str:
    """eflomal priors (lexical, fertility and jump counts) from aligning
    `opts.prior_sample` pairs spread evenly over the corpus, as text."""
    import eflomal

    picked = np.unique(np.linspace(0, len(zh) - 1, min(opts.prior_sample, len(zh))).astype(np.int64)).tolist()
    sample_zh, sample_en = [zh[i] for i in picked], [en[i] for i in picked]
    with own_temp_dir(scratch, "prior-") as tmp:
        fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
        run_eflomal(sample_zh, sample_en, fwd, rev, opts, scratch)
        # calculate_priors takes (source, target, forward, reverse) lines as its own eflomal-makepriors reads them
        priors = eflomal.calculate_priors(sample_zh, sample_en, read_lines(fwd), read_lines(rev))
    text = io.StringIO()
    eflomal.write_priors(text, *priors)
    return text.getvalue()


def n_align_parts(n_pairs: int, opts: AlignConfig) -> int:
    """How many parts the corpus is aligned in: --align-shards, at most one per pair."""
    return min(opts.align_shards, max(1, n_pairs))


class AlignProgress(NamedTuple):
    """What align_lines' `task` counts to."""

    total: int
    unit: str


def align_progress(n_pairs: int, opts: AlignConfig) -> AlignProgress:
    """One eflomal run: its sampling iterations (both directions, every model
    stage); in parts: the parts."""
    n_parts = n_align_parts(n_pairs, opts)
    if n_parts == 1:
        return AlignProgress(eflomal_progress_total(eflomal_iterations(n_pairs, opts)), "iterations")
    return AlignProgress(n_parts, "parts")


def align_lines(zh: list[str], en: list[str], forward: Path, reverse: Path, opts: AlignConfig, scratch: Path,
                parts_runner: PartsRunner = in_this_process, task=None) -> int:
    """Align `zh` with `en` into `forward` and `reverse`: the whole corpus in
    one eflomal run, or (--align-shards > 1) in contiguous parts that all
    start from priors estimated on a sample, each part aligned by
    `parts_runner` (in this process, or as Ray tasks). `task` advances to
    align_progress's total. Returns the parts."""
    n_parts = n_align_parts(len(zh), opts)
    if n_parts == 1:
        run_eflomal(zh, en, forward, reverse, opts, scratch, task=task)
        return 1
    priors = estimate_priors(zh, en, opts, scratch)
    bounds = np.linspace(0, len(zh), n_parts + 1).astype(np.int64).tolist()
    parts = [
        AlignPart(zh[a:b], en[a:b], priors, opts, str(scratch)) for a, b in zip(bounds[:-1], bounds[1:])
    ]  # cleared by the next run
    with atomic_path(forward) as fwd_tmp, atomic_path(reverse) as rev_tmp, \
            open(fwd_tmp, "w", encoding="utf-8") as fwd, open(rev_tmp, "w", encoding="utf-8") as rev:
        for aligned in parts_runner(parts):  # in order
            fwd.write(aligned.forward)
            rev.write(aligned.reverse)
            if task is not None:
                task.advance()
    return n_parts


def symmetrize_and_count(work: WorkDir, method: Symmetrization,
                         task: Task = SilentTask()) -> tuple[int, int, dict[str, Counter]]:
    """From the two directions' link files, write the symmetrised links and
    the lexical table, line by line (memory stays flat in the corpus size),
    advancing `task` by the sentence pairs read.
    Returns (pairs, links, links per (zh word, en word))."""
    pair_counts: dict[str, Counter] = {}
    n_pairs = n_links = 0
    with atomic_path(work.links) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for zh_line, en_line, fwd, rev in zip(read_lines(work.corpus_zh), read_lines(work.corpus_en),
                                              read_lines(work.links_forward), read_lines(work.links_reverse)):
            links = symmetrize(parse_links(fwd), parse_links(rev), method)
            out.write(format_links(links) + "\n")
            zh, en = zh_line.split(" "), en_line.split(" ")
            for i, j in links:
                pair_counts.setdefault(zh[i], Counter())[en[j]] += 1
            n_pairs += 1
            n_links += len(links)
            if n_pairs % PROGRESS_EVERY == 0:
                task.advance(PROGRESS_EVERY)
    task.advance(n_pairs % PROGRESS_EVERY)
    with atomic_path(work.lexicon) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("zh\ten\tcount\tp_en_given_zh\n")
        for zh in sorted(pair_counts):
            total = sum(pair_counts[zh].values())
            for en, count in sorted(pair_counts[zh].items(), key=lambda kv: (-kv[1], kv[0])):
                f.write(f"{zh}\t{en}\t{count}\t{count / total:.6g}\n")
    return n_pairs, n_links, pair_counts


EFLOMAL_MAX_TOKENS = 1024  # eflomal leaves a pair with this many tokens or more on a side without a link


def count_too_long(zh: list[str], en: list[str]) -> int:
    """Pairs eflomal cannot align (no links): counted in the record and shown
    in the summary, never silent."""
    return sum(1 for z, e in zip(zh, en)
               if z.count(" ") + 1 >= EFLOMAL_MAX_TOKENS or e.count(" ") + 1 >= EFLOMAL_MAX_TOKENS)


class Translation(NamedTuple):
    """One line of lexicon.tsv: an English word aligned to a Chinese word."""

    en: str
    count: int  # links between the two
    p: float  # p(en | zh)


def read_lexicon(path: Path) -> dict[str, list[Translation]]:
    """zh word -> its translations, most probable first."""
    lexicon: dict[str, list[Translation]] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if lineno == 1:
            continue  # header
        try:
            zh, en, count, p = line.split("\t")
            translation = Translation(sys.intern(en), int(count), float(p))
        except ValueError:
            raise XlembedError(f"{path}:{lineno}: expected zh<TAB>en<TAB>count<TAB>p; run `xlembed align --force`")
        lexicon.setdefault(sys.intern(zh), []).append(translation)  # one copy of each word
    return lexicon


def align(config: Config, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False,
          parts_runner: PartsRunner = in_this_process) -> dict:
    """Align `corpus.zh` with `corpus.en`; write the symmetrised links and the
    lexical table; return the record (counts; `skipped` when up to date).
    The parts of align_parts > 1 run by `parts_runner` (the executor's)."""
    opts = config.align
    inputs = {str(p): file_hash(require(p, "tokenize")) for p in (work.corpus_zh, work.corpus_en)}
    key = stage_key("align", inputs=list(inputs.values()), config=fingerprint(opts))

    def compute() -> dict:
        start = time.perf_counter()
        zh, en = list(read_lines(work.corpus_zh)), list(read_lines(work.corpus_en))
        require_same_counts(work.root, "line counts", {"corpus.zh": len(zh), "corpus.en": len(en)}, "tokenize")
        parts = n_align_parts(len(zh), opts)
        too_long = count_too_long(zh, en)
        progress = align_progress(len(zh), opts)
        with reporter.task(
            "align (eflomal, both directions)" if parts == 1 else f"align ({parts} parts, priors from a sample)",
            progress.total,
            progress.unit,
        ) as task:
            align_lines(zh, en, work.links_forward, work.links_reverse, opts, work.scratch, parts_runner, task)
        eflomal_seconds = time.perf_counter() - start
        with reporter.task("align: symmetrize links, lexicon", len(zh), "pairs") as task:
            n_pairs, n_links, pair_counts = symmetrize_and_count(work, opts.symmetrization, task)
        return dict(
            options=section_dict(opts),
            inputs=inputs,
            counts=dict(pairs=n_pairs, links=n_links, lexicon_entries=sum(len(c) for c in pair_counts.values()),
                        zh_words_aligned=len(pair_counts), parts=parts, pairs_too_long_for_eflomal=too_long),
            eflomal_seconds=round(eflomal_seconds, 3),
        )

    return run_stage(work, "align", key, force, compute)
