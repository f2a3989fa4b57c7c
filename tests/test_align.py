import contextlib
from pathlib import Path
from typing import NamedTuple

import pytest

from xlembed.align import format_links, grow_diag_final_and, parse_links, read_lexicon, symmetrize
from xlembed.errors import XlembedError

from .test_cli import corpus  # noqa: F401  (fixture: 72 pairs as a TSV)

# intersection {(0,0),(1,1)}; forward adds (3,3), reverse adds (0,3): far from
# the intersection, so only final-and can add them, and only (3,3) has both
# words unaligned.
FORWARD = {(0, 0), (1, 1), (3, 3)}
REVERSE = {(0, 0), (1, 1), (0, 3)}


def test_intersect_and_union():
    assert symmetrize(FORWARD, REVERSE, "intersect") == {(0, 0), (1, 1)}
    assert symmetrize(FORWARD, REVERSE, "union") == {(0, 0), (1, 1), (3, 3), (0, 3)}


def test_grow_diag_final_and_adds_only_links_of_unaligned_words():
    assert grow_diag_final_and(FORWARD, REVERSE) == {(0, 0), (1, 1), (3, 3)}


def test_grow_diag_grows_into_diagonal_neighbours():
    # (2,2) is a diagonal neighbour of (1,1) and covers unaligned words
    assert grow_diag_final_and({(0, 0), (1, 1), (2, 2)}, {(0, 0), (1, 1)}) == {(0, 0), (1, 1), (2, 2)}


def test_grow_diag_skips_neighbours_whose_words_are_both_aligned():
    # (0,1) neighbours (0,0) but zh 0 and en 1 are aligned already
    assert grow_diag_final_and({(0, 0), (1, 1), (0, 1)}, {(0, 0), (1, 1)}) == {(0, 0), (1, 1)}


def test_unknown_symmetrization_is_an_error():
    from xlembed.config import Config

    with pytest.raises(XlembedError, match="symmetrization"):
        Config().set(symmetrization="diagonal").validate(("align",))


def test_links_round_trip_in_pharaoh_format():
    assert parse_links("2-1 0-0 1-3") == {(0, 0), (1, 3), (2, 1)}
    assert format_links({(2, 1), (0, 0), (1, 3)}) == "0-0 1-3 2-1"
    assert parse_links("3-4-P") == {(3, 4)}  # gold files mark possible links with -P




def test_symmetrized_links_and_lexicon_from_both_directions(tmp_path):
    from xlembed.align import symmetrize_and_count
    from xlembed.layout import WorkDir

    work = WorkDir(tmp_path)
    work.corpus_zh.write_text("猫 喝 水\n猫 好\n", encoding="utf-8")
    work.corpus_en.write_text("cats drink water\nthe cat is good\n", encoding="utf-8")
    work.links_forward.write_text("0-0 1-1 2-2\n0-0 0-1 1-3\n", encoding="utf-8")
    work.links_reverse.write_text("0-0 1-1 2-2\n0-1 1-3\n", encoding="utf-8")

    class Counted:
        done = 0

        def advance(self, n: int = 1) -> None:
            self.done += n

    counted = Counted()
    pairs, links, _ = symmetrize_and_count(work, "union", counted)
    assert (pairs, links) == (2, 6) and counted.done == 2  # progress: every pair read, once
    assert work.links.read_text().splitlines() == ["0-0 1-1 2-2", "0-0 0-1 1-3"]
    lexicon = read_lexicon(work.lexicon)
    # 猫: cats 1, the 1, cat 1 -> p = 1/3 each, ties by word
    assert lexicon["猫"] == [
        ("cat", 1, pytest.approx(1 / 3)),
        ("cats", 1, pytest.approx(1 / 3)),
        ("the", 1, pytest.approx(1 / 3)),
    ]
    assert lexicon["水"] == [("water", 1, 1.0)]
    symmetrize_and_count(work, "intersect")
    assert work.links.read_text().splitlines() == ["0-0 1-1 2-2", "0-1 1-3"]
    assert read_lexicon(work.lexicon)["猫"] == [
        ("cat", 1, 0.5),
        ("cats", 1, 0.5),
    ]  # 0-0 is in both directions of line 1


def test_alignment_in_parts_in_this_process_aligns_every_pair_and_leaves_no_temporary_files(tmp_path):
    """--align-shards with the local executor: parts one after another, from priors of a sample;
    every pair gets links within its sentences, and the work directory keeps no part's files."""
    from xlembed.align import align_lines
    from xlembed.config import AlignConfig

    zh = [f"{s} {v} {o} 。" for s in ("我", "你", "他") for v in ("喜欢", "读") for o in ("猫", "书", "茶")] * 4
    en = [f"{s} {v} {o} ." for s in ("i", "you", "he") for v in ("like", "read") for o in ("cats", "books", "tea")] * 4
    scratch = tmp_path / "work" / "tmp"
    scratch.parent.mkdir()
    parts = align_lines(
        zh, en, tmp_path / "fwd", tmp_path / "rev", AlignConfig(align_shards=3, prior_sample=20), scratch
    )
    assert parts == 3
    for path in (tmp_path / "fwd", tmp_path / "rev"):
        lines = path.read_text().splitlines()
        assert len(lines) == len(zh)
        assert all(int(i) < 4 and int(j) < 4 for line in lines for i, j in (link.split("-") for link in line.split()))
    assert not [p for p in scratch.parent.rglob("*") if p.name.startswith(("part-", "prior-"))]


# --- progress: eflomal's sampling iterations, to a total known up front -----------------------------------

TINY_ZH = [f"{s} {v} {o} 。" for s in ("我", "你", "他") for v in ("喜欢", "读") for o in ("猫", "书", "茶")] * 4
TINY_EN = [f"{s} {v} {o} ." for s in ("i", "you", "he") for v in ("like", "read") for o in ("cats", "books", "tea")] * 4


@pytest.mark.parametrize("model, rel", [(1, 1.0), (2, 0.3), (2, 0.001), (3, 1.0), (3, 0.05), (3, 0.001)])
def test_iteration_counts_are_eflomals_own(tmp_path, capfd, model, rel):
    """eflomal_iterations gives what eflomal runs when left to its own rule (it says so on stderr)."""
    import re

    import eflomal

    from xlembed.align import eflomal_iterations
    from xlembed.config import AlignConfig

    eflomal.Aligner(model=model, n_samplers=1, rel_iterations=rel).align(
        TINY_ZH, TINY_EN, links_filename_fwd=str(tmp_path / "f"), links_filename_rev=str(tmp_path / "r"), quiet=False
    )
    printed = re.findall(r"Aligning with model (\d) \((\d+) iterations\)", capfd.readouterr().err)
    ours = eflomal_iterations(len(TINY_ZH), AlignConfig(align_model=model, iterations=rel))
    expected = [(str(m), str(n)) for m, n in enumerate(ours, start=1) if n]
    assert sorted(printed) == sorted(expected * 2)  # both directions


class Recorder:
    """A reporter that keeps each task's total, unit and steps."""

    def __init__(self):
        self.tasks = []

    @contextlib.contextmanager
    def task(self, description, total, unit):
        task = RecordedTask(description, total, unit, [])
        self.tasks.append(task)
        yield task


class RecordedTask(NamedTuple):
    description: str
    total: int | None
    unit: str
    steps: list

    def advance(self, n=1):
        self.steps.append(n)


def test_align_progress_counts_eflomals_iterations_to_their_total(tmp_path):
    from xlembed.align import align, align_progress, eflomal_iterations
    from xlembed.config import Config
    from xlembed.layout import WorkDir

    work = WorkDir(tmp_path)
    work.corpus_zh.write_text("".join(z + "\n" for z in TINY_ZH), encoding="utf-8")
    work.corpus_en.write_text("".join(e + "\n" for e in TINY_EN), encoding="utf-8")
    config = Config().set(samplers=1, iterations=0.2).validate(("align",))
    reporter = Recorder()
    align(config, work, reporter)
    task, symmetrized = reporter.tasks  # eflomal's iterations, then the symmetrize step's pairs
    assert (symmetrized.total, symmetrized.unit, sum(symmetrized.steps)) == (72, "pairs", 72)
    iterations = eflomal_iterations(72, config.align)  # 5000 x 0.2 / sqrt(72) = 117.9: (29, 29, 118)
    assert iterations == (29, 29, 118)
    assert (task.total, task.unit) == (2 * (29 + 29 + 118), "iterations") == align_progress(72, config.align)
    assert sorted(task.steps) == [29, 29, 29, 29, 118, 118]  # each stage of each direction, as it ends
    assert sum(task.steps) == task.total


def test_an_eflomal_killed_mid_run_is_an_error_and_replaces_no_links(tmp_path):
    """The OOM killer's way: the binary dies (here at its first stage's end); its half
    links files replace nothing, and the error says so, not a raw traceback."""
    import os
    import signal

    from xlembed.align import run_eflomal
    from xlembed.config import AlignConfig

    def eflomal_children() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == os.getpid() and "(eflomal)" in stat.read_text():
                    found.append(int(stat.parent.name))
        return found

    class Killer:
        def advance(self, n=1):
            for pid in eflomal_children():
                os.kill(pid, signal.SIGKILL)

    (tmp_path / "fwd").write_text("previous\n")
    with pytest.raises(XlembedError, match=r"eflomal failed \(killed by signal 9\)"):
        run_eflomal(TINY_ZH, TINY_EN, tmp_path / "fwd", tmp_path / "rev", AlignConfig(samplers=1), tmp_path / "s",
                    task=Killer())
    assert (tmp_path / "fwd").read_text() == "previous\n" and not (tmp_path / "rev").exists()
    assert not eflomal_children() and not list((tmp_path / "s").iterdir())  # nor its temporary files


def test_a_log_shows_aligns_iterations_with_rate_and_eta_and_none_of_eflomals_lines(tmp_path, corpus, tiny_bert):
    import os
    import re
    import subprocess
    import sys

    from xlembed.align import align_progress
    from xlembed.config import AlignConfig

    def xlembed(*args, interval="0"):  # stderr not a terminal: a log; every advance gives a line
        return subprocess.run([str(Path(sys.executable).with_name("xlembed")), *map(str, args)], capture_output=True,
                              text=True, env=dict(os.environ, XLEMBED_PROGRESS_INTERVAL=interval), timeout=300)

    work = tmp_path / "w"
    assert xlembed("tokenize", "--tsv", corpus, "--model", tiny_bert, "--work", work, "-q").returncode == 0
    pairs = len((work / "corpus.zh").read_text(encoding="utf-8").splitlines())
    total = align_progress(pairs, AlignConfig(samplers=1, iterations=0.2)).total
    proc = xlembed("align", "--work", work, "--samplers", "1", "--iterations", "0.2")
    assert proc.returncode == 0, proc.stderr
    prefix = "align (eflomal, both directions): "
    lines = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
    shape = re.compile(r"[\d,]+/" + f"{total:,}" + r" iterations \(\d+%\), [\d.,]+ iterations/s, "
                       r"elapsed \d+:\d\d:\d\d, eta \d+:\d\d:\d\d")
    assert len(lines) == 6 and all(shape.fullmatch(line[len(prefix):]) for line in lines), proc.stderr
    assert lines[-1].startswith(f"{prefix}{total:,}/{total:,} iterations (100%), ")
    assert not any(said in proc.stderr for said in ("Aligning with model", "Final argmax", "Done:", "eflomal -m"))
    step = "align: symmetrize links, lexicon: "  # the step after eflomal has its own progress
    symmetrized = [line for line in proc.stderr.splitlines() if line.startswith(step)]
    assert symmetrized and symmetrized[-1].startswith(f"{step}{pairs:,}/{pairs:,} pairs (100%), "), proc.stderr
    quiet = xlembed("align", "--work", work, "--samplers", "1", "--iterations", "0.2", "--force", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
