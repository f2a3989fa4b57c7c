"""Trustworthy at the edges (issue 19): options and input files are checked
completely before any stage runs, and a failure is one line `error: …` with
exit code 2 that leaves every earlier output as it was."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xlembed.cli.main import app

from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)


def cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (
        result.exit_code,
        result.output,
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0]


def run_args(corpus, model, root: Path, *extra):
    return ["run", "--tsv", corpus, "--model", model, "--work", root / "work", "--out", root / "out", "-q", *extra]


# --- 3. option values: nothing non-finite or out of a C int reaches a stage -----------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--shrink", "nan", "--shrink must be a finite number, got nan"),
        ("--null-prior", "nan", "--null-prior must be a finite number"),
        ("--iterations", "nan", "--iterations must be a finite number"),
        ("--iterations", "inf", "--iterations must be a finite number, got inf"),
        ("--seed", "18446744073709551616", "--seed must be at most 4294967295"),
        ("--samplers", "1000000000", "--samplers must be at most 64"),
        ("--batch-size", str(2**40), "--batch-size must be at most 2147483647"),
    ],
)
def test_non_finite_and_huge_option_values_are_refused_before_any_stage(
    tmp_path, corpus, tiny_bert, flag, value, message
):
    result = cli(*run_args(corpus, tiny_bert, tmp_path, flag, value))
    assert message in one_line_error(result)
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_a_toml_nan_is_refused_naming_the_file_and_key(tmp_path, corpus, tiny_bert):
    (tmp_path / "c.toml").write_text("[write]\nshrink = nan\n")
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--config", tmp_path / "c.toml"))
    assert "c.toml: [write] shrink must be a finite number, got nan" in one_line_error(result)


# --- 3. input files: word lists, user dictionaries -------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        ("猫\t3\n狗\t2\n", r"vocab.txt:1: expected one word per line, found a tab"),
        ("猫\n狗\n猫\n", r"vocab.txt:3: '猫' is already on line 1"),
        ("猫\n狗 猪\n", r"vocab.txt:2: expected one word per line"),
    ],
)
def test_a_bad_vocabulary_is_refused_before_any_stage(tmp_path, corpus, tiny_bert, content, message):
    import re

    (tmp_path / "vocab.txt").write_text(content, encoding="utf-8")
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--vocab", tmp_path / "vocab.txt"))
    assert re.search(message, one_line_error(result))
    assert not (tmp_path / "work").exists()


def test_a_bad_vocabulary_never_replaces_a_good_output(tmp_path, built):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(built, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n猫\t3\n", encoding="utf-8")
    result = cli("write", "--work", built.with_name("out.work"), "--out", out, "--vocab", tmp_path / "vocab.txt", "-q")
    assert "vocab.txt:3: expected one word per line, found a tab" in one_line_error(result)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_extend_refuses_a_word_list_with_tabs(tmp_path, built):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(built, out)
    (tmp_path / "words.txt").write_text("新词\t5\n", encoding="utf-8")
    result = cli("extend", out, "--words", tmp_path / "words.txt")
    assert "words.txt:1: expected one word per line, found a tab" in one_line_error(result)
    assert cli("verify", out).exit_code == 0


def test_a_user_dictionary_with_invalid_utf8_names_its_line(tmp_path, corpus, tiny_bert):
    (tmp_path / "dict.txt").write_bytes("猫咪 3\n".encode() + b"\xff\xfe 2\n")
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--user-dict", tmp_path / "dict.txt"))
    assert "dict.txt:2: not valid UTF-8" in one_line_error(result)
    assert not (tmp_path / "work").exists()


def test_a_relative_user_dictionary_is_recorded_as_an_absolute_path(tmp_path, corpus, tiny_bert, monkeypatch):
    """write --oov context and Embeddings.tokenizer segment with it later, from any directory."""
    (tmp_path / "dict.txt").write_text("猫咪控 99999\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = cli("tokenize", "--tsv", corpus, "--model", tiny_bert, "--work", tmp_path / "work", "-q",
                 "--user-dict", "dict.txt")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "work" / "tokenize.json").read_text())
    assert record["options"]["user_dict"] == str(tmp_path.resolve() / "dict.txt")
    from xlembed.errors import XlembedError
    from xlembed.tokenize import recorded_splitter

    assert recorded_splitter(record["options"])("我喜欢猫咪控") == ["我", "喜欢", "猫咪控"]  # the dictionary's word
    (tmp_path / "dict.txt").rename(tmp_path / "moved.txt")
    with pytest.raises(XlembedError, match="dict.txt: the jieba user dictionary this build was tokenized with"):
        recorded_splitter(record["options"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_refused_before_tokenize(tmp_path, corpus, tiny_bert):
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--device", "cuda"))
    assert "--device cuda: no CUDA device is available" in one_line_error(result)
    assert not (tmp_path / "work").exists()


def test_executor_ray_without_ray_is_refused_before_tokenize(tmp_path, corpus, tiny_bert, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--executor", "ray"))
    assert "--executor ray needs the `ray` package" in one_line_error(result)
    assert not (tmp_path / "work").exists()


# --- 3. wrong columns: the Chinese side must be Chinese, the English side not -----------------------------


@pytest.mark.parametrize(
    "columns, message",
    [
        (["--en-column", "2", "--zh-column", "1"], "pairs.tsv: column 1 (--zh-column): does not look Chinese"),
        (["--zh-column", "3"], "pairs.tsv: column 3 (--zh-column): does not look Chinese"),
        (["--en-column", "2", "--zh-column", "2"], "--en-column and --zh-column must be different columns"),
    ],
)
def test_swapped_or_wrong_columns_are_a_one_line_error_naming_the_column(tmp_path, corpus, tiny_bert, columns, message):
    result = cli(*run_args(corpus, tiny_bert, tmp_path, *columns))
    assert message in one_line_error(result)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "corpus.zh").exists()


def test_english_side_full_of_chinese_is_refused_and_the_check_can_be_turned_off(tmp_path, tiny_bert):
    tsv = tmp_path / "mixed.tsv"
    tsv.write_text("".join(f"猫 {i}\t我喜欢猫{i}\n" for i in range(20)), encoding="utf-8")
    result = cli("tokenize", "--tsv", tsv, "--model", tiny_bert, "--work", tmp_path / "w", "-q")
    assert "mixed.tsv: column 1 (--en-column): does not look English" in one_line_error(result)
    result = cli("tokenize", "--tsv", tsv, "--model", tiny_bert, "--work", tmp_path / "w", "-q", "--no-check-languages")
    assert result.exit_code == 0, result.output


# --- 3. evaluate: nan scores, no coverage ------------------------------------------------------------------


def test_evaluate_refuses_a_nan_score_and_survives_a_dictionary_that_covers_nothing(tmp_path, built):
    (tmp_path / "sim.txt").write_text("猫\t狗\t3.5\n书\t水\tnan\n", encoding="utf-8")
    assert "sim.txt:2: the score must be a finite number, got nan" in one_line_error(
        cli("evaluate", built, "--wordsim", tmp_path / "sim.txt")
    )
    (tmp_path / "dict.txt").write_text("火星\tmars\n", encoding="utf-8")
    result = cli("evaluate", built, "--dictionary", tmp_path / "dict.txt", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "r.json").read_text())["lexicon_induction"]
    assert r["covered"] == 0 and r["csls_k"] == 10 and r["cosine"]["p_at_1"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in r.values())


# --- 5. long inputs: memory linear in a line's length; truncation and eflomal's limit counted ---------------


def quadratic_windows(n_pieces, window):
    """The earlier windows(), [n_words, K] matrices: the reference the linear one must equal."""
    import numpy as np

    ends = np.cumsum(n_pieces)
    begins = ends - n_pieces
    total, stride = int(ends[-1]), max(1, window // 2)
    spans = []
    for s in list(range(0, total - window, stride)) + [total - window]:
        start = int(begins[np.searchsorted(ends, s, side="right")])
        fitting = ends[(ends <= start + window) & (ends > start)]
        stop = int(fitting[-1]) if len(fitting) else start + window
        if not spans or spans[-1] != (start, stop):
            spans.append((start, stop))
    starts, stops = np.array([a for a, _ in spans]), np.array([b for _, b in spans])
    inside = (begins[:, None] >= starts[None, :]) & (ends[:, None] <= stops[None, :])
    distance = np.abs((begins + ends)[:, None] - (starts + stops)[None, :]).astype(np.float64)
    distance[~inside] = np.inf
    owner = distance.argmin(1)
    homeless = (n_pieces > 0) & ~inside.any(1)
    result = [(a, b, np.flatnonzero((owner == k) & (n_pieces > 0) & ~homeless)) for k, (a, b) in enumerate(spans)]
    result = [r for r in result if len(r[2])]
    return result + [(int(begins[j]), int(begins[j]) + window, np.array([j])) for j in np.flatnonzero(homeless)]


def test_windows_equal_the_quadratic_reference_with_memory_linear_in_the_line():
    import tracemalloc

    import numpy as np

    from xlembed.encode import windows

    rng = np.random.default_rng(0)
    for _ in range(300):
        n_pieces = rng.integers(
            0, rng.integers(2, 30), size=int(rng.integers(2, 200))
        )  # words of 0 pieces, and far too long ones
        n_pieces[0] = max(n_pieces[0], 1)
        window = int(rng.integers(2, 60))
        if n_pieces.sum() <= window:
            continue
        got, expected = windows(n_pieces, window), quadratic_windows(n_pieces, window)
        assert [(a, b, list(o)) for a, b, o in got] == [(a, b, list(o)) for a, b, o in expected]
    n_pieces = np.ones(100_000, dtype=np.int64)  # one English line of 100,000 words
    n_pieces[::7] = 2
    tracemalloc.start()
    spans = windows(n_pieces, 126)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(len(o) for _, _, o in spans) == 100_000
    assert peak < 40 * 2**20, peak  # the [n_words, K] matrices took GBs


def test_a_word_longer_than_the_window_is_counted_as_truncated(tmp_path, tiny_bert):
    from .test_encode import encoded

    huge = "playing" + "s" * 20  # play ##ing ##s x 20: 22 pieces, the window is 14
    record, store, _ = encoded(tmp_path, tiny_bert, sentences=[f"i like {huge} cats .", "i like cats ."], max_length=16)
    assert record["counts"]["words_truncated"] == 1
    assert (store.rows_of(0) >= 0).all()  # it still has a vector, from its first pieces


def test_pairs_too_long_for_eflomal_are_counted(tmp_path, tiny_bert):
    from xlembed.align import align
    from xlembed.config import Config
    from xlembed.layout import WorkDir

    work = WorkDir(tmp_path / "w")
    work.root.mkdir()
    zh = ["我 喜欢 猫", "他 读 书", "我们 喜欢 狗"] * 10 + [" ".join(["猫"] * 1100)]
    en = ["i like cats", "he reads books", "we like dogs"] * 10 + ["cats"]
    work.corpus_zh.write_text("".join(z + "\n" for z in zh), encoding="utf-8")
    work.corpus_en.write_text("".join(e + "\n" for e in en), encoding="utf-8")
    record = align(Config().set(samplers=1, iterations=0.2).validate(("align",)), work)
    assert record["counts"]["pairs_too_long_for_eflomal"] == 1
    assert record["counts"]["pairs"] == 31


# --- 7. signals, full disks, logs --------------------------------------------------------------------------


def test_ctrl_c_during_tokenize_with_workers_is_one_line_and_exit_130(tmp_path, tiny_bert):
    import os
    import signal
    import subprocess

    from .conftest import TATOEBA, start_paused

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(TATOEBA.read_text(encoding="utf-8-sig").splitlines(keepends=True)[:6000]), encoding="utf-8")
    # stopped inside the first progress step, with both workers running; then Ctrl-C, which the
    # terminal sends to the whole process group
    proc, said = start_paused(
        ["tokenize", "--tsv", tsv, "--model", tiny_bert, "--work", tmp_path / "w", "--workers", "2"],
        "xlembed.cli._util:LogTask.advance",
        "lambda result, self, n=1: self.done >= 1 and 1",
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert said == "1"
    os.killpg(proc.pid, signal.SIGINT)
    stderr = proc.communicate()[1]
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr, stderr
    assert not (tmp_path / "w" / "corpus.en").exists() and not (tmp_path / "w" / "tokenize.json").exists()


def test_keyboard_interrupt_in_a_command_is_error_interrupted(monkeypatch, tmp_path, built):
    import xlembed.outdir

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xlembed.outdir, "describe", interrupted)  # what `xlembed info` reads the output with
    result = cli("info", built)
    assert result.exit_code == 130 and result.output.strip() == "error: interrupted"


def test_a_full_standard_output_is_named_and_claims_no_previous_output(built):
    import subprocess
    import sys

    proc = subprocess.run(
        [str(Path(sys.executable).with_name("xlembed")), "info", str(built)],
        stdout=open("/dev/full", "w"),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: standard output: no space left on the device"


def test_a_full_disk_names_the_file_and_says_whether_a_previous_version_is_intact(tmp_path):
    import errno

    from xlembed.io import XlembedError, atomic_path

    for existed in (False, True):
        path = tmp_path / "f.json"
        if existed:
            path.write_text("old")
        with pytest.raises(XlembedError) as caught, atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        assert str(caught.value) == f"{path}: no space left on the device; " + (
            "the previous version is intact" if existed else "nothing was written"
        )
        assert [p.name for p in tmp_path.iterdir()] == (["f.json"] if existed else [])
        assert not existed or path.read_text() == "old"


def test_a_log_gets_a_progress_line_at_least_every_interval_while_a_step_runs(capsys, monkeypatch):
    import threading

    from xlembed.cli._util import LogTask

    now = [0.0]
    task = LogTask("align (eflomal, both directions)", None, "", interval=30, clock=lambda: now[0])
    now[0] = 29.0
    task.tick()
    assert capsys.readouterr().err == ""
    now[0] = 31.0
    task.tick()
    assert capsys.readouterr().err.strip() == "align (eflomal, both directions): 0, elapsed 0:00:31"
    # the heartbeat thread calls tick() on its own while the block runs (no advance at all)
    ticked = threading.Event()
    real = LogTask(task.description, None, "", interval=0.01)
    original = real.tick
    monkeypatch.setattr(real, "tick", lambda: (original(), ticked.set()))
    with real.heartbeat():
        ticked.wait()
    assert "align (eflomal, both directions): 0, elapsed" in capsys.readouterr().err


def test_encode_progress_counts_word_pieces(tmp_path, tiny_bert):
    import contextlib

    from xlembed.config import Config
    from xlembed.encode import encode
    from xlembed.layout import WorkDir

    class Recorder:
        tasks = []

        @contextlib.contextmanager
        def task(self, description, total, unit):
            steps = []
            self.tasks.append((description, total, unit, steps))

            class Task:
                def advance(self, n=1):
                    steps.append(n)

            yield Task()

    work = WorkDir(tmp_path / "w")
    work.root.mkdir()
    long = " ".join(["the cats are playing with the dog ."] * 6)
    work.corpus_en.write_text(f"{long}\ni like cats .\nhe reads books .\n" * 20, encoding="utf-8")
    recorder = Recorder()
    record = encode(Config().set(model=tiny_bert, batch_size=1).validate(("encode",)), work, recorder)
    ((description, total, unit, steps),) = recorder.tasks
    assert description == "encode" and unit == "word pieces"
    assert steps[0] == 0  # nothing resumed
    assert (
        sum(steps) == total and len(steps) == 4 and steps[1:] == [54, 5, 4]
    )  # a batch counts its pieces: 6 x 9, then 5 and 4
    assert record["counts"]["windows"] == 3  # three unique sentences, none windowed


# --- 1. xlembed touches only what it made -----------------------------------------------------------------


def dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_align_leaves_a_users_file_in_work_tmp_and_removes_only_its_own_temporaries(tmp_path, corpus, tiny_bert):
    import os

    work = tmp_path / "w"
    assert cli("tokenize", "--tsv", corpus, "--model", tiny_bert, "--work", work, "-q").exit_code == 0
    (work / "tmp").mkdir()
    (work / "tmp" / "thesis.txt").write_text("four years of work")
    (work / "tmp" / f"xlembed-{dead_pid()}-notes.txt").write_text("named like ours, but not ours")
    dead = dead_pid()
    stale = [work / f".corpus.en.{dead}.0badc0de.tmp", work / "tmp" / f"xlembed-{dead}-eflomal-abcd1234"]
    stale[0].write_text("half a corpus")
    stale[1].mkdir()
    (stale[1] / "big").write_text("eflomal's input")
    live = work / f".corpus.zh.{os.getpid()}.0badc0de.tmp"  # a process that still runs: not ours to remove
    live.write_text("in progress")
    result = cli("align", "--work", work, "--samplers", "1", "--iterations", "0.2", "-q")
    assert result.exit_code == 0, result.output
    assert (work / "tmp" / "thesis.txt").read_text() == "four years of work"
    assert not any(p.exists() for p in stale) and live.exists()
    assert sorted(p.name for p in (work / "tmp").iterdir() if not p.name.startswith("xlembed-")) == ["thesis.txt"]
    assert len([p for p in (work / "tmp").iterdir() if p.name.endswith("-notes.txt")]) == 1


def test_two_extends_of_one_output_both_keep_their_words(tmp_path, built):
    import shutil
    import subprocess
    import sys
    import time

    from .conftest import start_paused

    out = tmp_path / "out"
    shutil.copytree(built, out)
    for word in ("甲词", "乙词"):
        (tmp_path / f"{word}.txt").write_text(word + "\n", encoding="utf-8")
    # the first extend stops after computing its rows, before it saves; the second starts then
    first, said = start_paused(
        ["extend", out, "--words", tmp_path / "甲词.txt"],
        "xlembed.embeddings:Embeddings.extend",
        "lambda result, *args, **kwargs: 'extended'",
    )
    assert said == "extended"
    second = subprocess.Popen(
        [str(Path(sys.executable).with_name("xlembed")), "extend", str(out), "--words", str(tmp_path / "乙词.txt")],
        stderr=subprocess.PIPE,
        text=True,
    )

    def waiting_for_a_lock(pid: int) -> bool:
        return any(
            line.split()[2:3] == ["FLOCK"] and line.split()[1] == "->" and line.split()[5] == str(pid)
            for line in Path("/proc/locks").read_text().splitlines()
            if len(line.split()) > 5
        )

    while second.poll() is None and not waiting_for_a_lock(second.pid):
        time.sleep(0.01)  # until the second one waits for the first (or, without a lock, has finished)
    first.stdin.close()  # the first one goes on and saves
    assert first.wait() == 0
    assert second.wait() == 0, second.stderr.read()
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert {"甲词", "乙词"} <= set(vocab)
    assert cli("verify", out).exit_code == 0


def test_jieba_never_writes_its_cache_into_the_current_directory(tmp_path, monkeypatch):
    import xlembed.tokenize

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setattr(xlembed.tokenize, "SYSTEM_TEMP_DIRS", (str(not_a_dir / "tmp"),))  # no writable temp folder
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert xlembed.tokenize.chinese_splitter()("我喜欢猫") == ["我", "喜欢", "猫"]
    assert list(cwd.iterdir()) == []
    assert [p.name for p in (tmp_path / "cache" / "xlembed").iterdir()] == ["jieba.cache"]


# --- 4. paths are checked up front -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out, work, message",
    [
        (".", None, "--out is the current directory or holds it"),
        ("", None, "--out is the current directory or holds it"),
        ("..", None, "--out is the current directory or holds it"),
        ("same", "same", "--out and --work are the same directory"),
        ("o", "o/w", "--work is inside --out, which is replaced as a whole"),
        ("link", None, "--out is a symbolic link"),
        ("dangling", None, "--out is a symbolic link"),
    ],
)
def test_bad_out_and_work_paths_are_refused_before_any_stage(
    tmp_path, monkeypatch, corpus, tiny_bert, out, work, message
):
    cwd = tmp_path / "cwd"
    (cwd / "real").mkdir(parents=True)
    (cwd / "link").symlink_to(cwd / "real")
    (cwd / "dangling").symlink_to(cwd / "nowhere")
    monkeypatch.chdir(cwd)
    before = sorted(p.name for p in cwd.iterdir())
    args = ["run", "--tsv", corpus, "--model", tiny_bert, "--out", out, "-q"] + (["--work", work] if work else [])
    assert message in one_line_error(cli(*args))
    assert sorted(p.name for p in cwd.iterdir()) == before and (cwd / "link").is_symlink()


def test_a_named_pipe_or_stdin_pipe_is_refused_up_front(tmp_path, tiny_bert):
    import os

    os.mkfifo(tmp_path / "pairs.tsv")  # reading it twice would wait forever
    result = cli("run", "--tsv", tmp_path / "pairs.tsv", "--model", tiny_bert, "--out", tmp_path / "o", "-q")
    assert "pairs.tsv: not a regular file (a pipe or a device)" in one_line_error(result)
    assert not (tmp_path / "o.work").exists()


# --- 2. every artifact is checked where it is read ---------------------------------------------------------


@pytest.fixture
def work_copy(tmp_path, built):
    import shutil

    work, out = tmp_path / "work", tmp_path / "out"
    shutil.copytree(built.with_name("out.work"), work)
    shutil.copytree(built, out)
    return work, out


def keep_mtime(path: Path, change) -> None:
    """Change a file's bytes but not its size or mtime: damage the stamps cannot see."""
    import os

    st = path.stat()
    change(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_changed_shard_makes_encode_stale_not_a_nan_matrix(work_copy, tiny_bert):
    work, out = work_copy
    shard = work / "vectors" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-2000:] = b"\xff" * 2000
    shard.write_bytes(bytes(data))
    result = cli("project", "--work", work, "-q")
    assert (
        "shard-00000.safetensors: changed since `xlembed encode` wrote it; run `xlembed encode` again"
        in one_line_error(result)
    )
    record = json.loads((work / "encode.json").read_text())
    assert not cli("encode", "--work", work, "--model", tiny_bert, "-q").exception  # recomputed: not "up to date"
    assert json.loads((work / "encode.json").read_text())["wrote"] != record["wrote"]
    assert cli("project", "--work", work, "-q").exit_code == 0
    assert cli("write", "--work", work, "--out", out, "-q").exit_code == 0
    assert cli("verify", out).exit_code == 0 and bool(xlembed_load(out).vectors.isfinite().all())


def xlembed_load(out):
    import xlembed

    return xlembed.load(out)


def test_damage_the_stamps_cannot_see_is_still_caught(work_copy):
    from safetensors.torch import load_file, save_file

    work, _ = work_copy
    shard = work / "vectors" / "shard-00000.safetensors"

    def nan_rows(path):
        tensors = load_file(str(path))
        tensors["vectors"][:3] = float("nan")
        save_file(tensors, str(path))

    keep_mtime(shard, nan_rows)
    assert "shard-00000.safetensors: holds non-finite values" in one_line_error(
        cli("project", "--work", work, "--force", "-q")
    )
    keep_mtime(shard, lambda p: p.write_bytes(b"\xff" * 8 + p.read_bytes()[8:]))  # a header length past the end
    assert "shard-00000.safetensors: not a readable vector shard" in one_line_error(
        cli("project", "--work", work, "--force", "-q")
    )


@pytest.mark.parametrize(
    "name, damage, message",
    [
        (
            "lexicon.tsv",
            lambda p: p.write_text(p.read_text() + "猫\tcats\t3\n"),
            "lexicon.tsv: changed since `xlembed align`",
        ),
        (
            "align.links",
            lambda p: p.write_text("99-99\n" + p.read_text()),
            "align.links: changed since `xlembed align`",
        ),
        ("align.links", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "align.links: changed since"),
        (
            "vectors/shard-00000.safetensors",
            lambda p: p.unlink(),
            "shard-00000.safetensors: missing since `xlembed encode`",
        ),
    ],
)
def test_hand_edited_or_lost_work_files_are_named(work_copy, name, damage, message):
    work, _ = work_copy
    damage(work / name)
    assert message in one_line_error(cli("project", "--work", work, "-q"))
    if (work / name).exists():  # changed: write refuses too
        assert message in one_line_error(cli("write", "--work", work, "--out", work.parent / "o2", "-q"))
    else:  # deleted, as `xlembed work clean --vectors-only` does: the projection is whole, so write may run
        assert cli("write", "--work", work, "--out", work.parent / "o2", "-q").exit_code == 0


def test_links_outside_their_pair_and_a_bad_lexicon_line_are_one_line_errors(tmp_path):
    from xlembed.align import read_lexicon
    from xlembed.io import XlembedError
    from xlembed.project import parse_checked_links

    with pytest.raises(XlembedError, match="link 99-99 is outside its pair of 3 Chinese and 4 English words"):
        parse_checked_links("0-0 99-99", 3, 4)
    (tmp_path / "lexicon.tsv").write_text("zh\ten\tcount\tp_en_given_zh\n猫\tcats\t3\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"lexicon.tsv:2: expected zh<TAB>en<TAB>count<TAB>p"):
        read_lexicon(tmp_path / "lexicon.tsv")


def test_a_truncated_record_is_named(work_copy):
    work, out = work_copy
    (work / "project.json").write_text('{"stage": "proj')
    assert "project.json: not a valid record (not valid JSON); run `xlembed project`" in one_line_error(
        cli("write", "--work", work, "--out", out, "-q")
    )


def edit_record(path: Path, change) -> None:
    record = json.loads(path.read_text())
    path.write_text(json.dumps(change(record)))


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda r: {k: v for k, v in r.items() if k != "counts"}, "no `counts`"),
        (lambda r: dict(r, counts=[]), "`counts` is a list"),
        (lambda r: dict(r, counts={}), "no `counts.words_truncated`"),
        (lambda r: dict(r, counts=dict(r["counts"], words_truncated="0")), "`counts.words_truncated` is a str"),
        (lambda r: dict(r, model_sha256=None), "no `model_sha256`"),
        (lambda r: dict(r, wrote={"vectors/index.safetensors": 3}), "`wrote` of vectors/index.safetensors is not"),
        (lambda r: [], "not a JSON object but list"),
    ],
)
def test_a_hand_edited_encode_record_is_one_line_naming_it(work_copy, change, problem):
    """An encode.json without counts (or with a field of the wrong type): write reads every record through
    one validating reader, so one line naming the file, exit 2, and the previous output as it was."""
    work, out = work_copy
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    edit_record(work / "encode.json", change)
    message = one_line_error(cli("write", "--work", work, "--out", out, "-q"))
    assert f"encode.json: not a valid record ({problem}" in message and "run `xlembed encode`" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert "encode.json: not a valid record" in one_line_error(cli("project", "--work", work, "-q"))


def test_records_from_xlembed_0_4_are_refused_by_write_and_recomputed_by_run(work_copy, corpus, tiny_bert):
    """Records without `read` and `wrote` (xlembed 0.4 wrote none) cannot be checked: a later stage refuses
    them in one line naming the file; `run` recomputes them (0.4's keys do not match anyway)."""
    work, out = work_copy
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for stage in ("tokenize", "encode", "align", "project"):
        edit_record(work / f"{stage}.json", lambda r: {k: v for k, v in r.items() if k not in ("read", "wrote")})
    message = one_line_error(cli("write", "--work", work, "--out", out, "-q"))
    assert "not a valid record (no `read` (written by xlembed 0.4 or earlier))" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    result = cli("run", "--tsv", corpus, "--model", tiny_bert, "--work", work, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert all("wrote" in json.loads((work / f"{s}.json").read_text()) for s in ("tokenize", "encode", "project"))
    assert cli("verify", out).exit_code == 0


def test_a_work_directory_tokenized_from_another_corpus_is_stale_not_mixed(work_copy, tiny_bert, tmp_path):
    work, out = work_copy
    (tmp_path / "other.tsv").write_text(
        "".join(f"we read books {i} .\t我们读书{i}。\n" for i in range(30)), encoding="utf-8"
    )
    assert cli("tokenize", "--tsv", tmp_path / "other.tsv", "--model", tiny_bert, "--work", work, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    message = one_line_error(cli("write", "--work", work, "--out", out, "-q"))
    assert "computed from an earlier `xlembed tokenize` output" in message
    assert one_line_error(cli("project", "--work", work, "-q")).endswith("(or `xlembed run`)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_failing_stage_leaves_its_previous_outputs_and_record(work_copy, monkeypatch):
    import xlembed.align

    work, _ = work_copy
    before = {name: (work / name).read_bytes() for name in ("align.json", "align.links", "lexicon.tsv")}

    def crash(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(xlembed.align, "run_eflomal", crash)
    assert cli("align", "--work", work, "--force", "-q").exit_code == 2
    assert {name: (work / name).read_bytes() for name in before} == before
    record = json.loads((work / "align.json").read_text())
    from xlembed.layout import WorkDir as Work
    from xlembed.records import up_to_date

    assert up_to_date(Work(work), "align", record["key"]) is not None  # the old alignment still counts: no realignment


def test_load_checks_rows_against_vocabulary_and_utf8(work_copy):
    import xlembed
    from xlembed.io import XlembedError

    _, out = work_copy
    vocab = out / "vocab.txt"
    lines = vocab.read_text(encoding="utf-8").splitlines(keepends=True)
    vocab.write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(XlembedError, match=rf"vocab.txt: {len(lines) - 1:,} words for {len(lines):,} matrix rows"):
        xlembed.load(out)
    vocab.write_bytes("".join(lines[:3]).encode() + b"\xff\n" + "".join(lines[4:]).encode())
    with pytest.raises(XlembedError, match=r"vocab.txt:4: not valid UTF-8"):
        xlembed.load(out)
    assert cli("verify", out).exit_code == 1


def test_verify_survives_a_manifest_that_is_a_list(work_copy):
    _, out = work_copy
    (out / "manifest.json").write_text("[]")
    result = cli("verify", out)
    assert result.exit_code == 1 and "manifest.json: not an xlembed manifest" in result.output


# --- 6. Ray never hangs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: cannot reach the cluster"),
        (["--worker-cpus", "100000"], "--worker-cpus 100000: the local Ray has"),
        (["--ray-address", "nonsense"], "--ray-address nonsense: expected auto, HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_ray_options_that_cannot_work_are_refused_before_any_stage(tmp_path, corpus, tiny_bert, extra, message):
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--executor", "ray", *extra))
    assert message in one_line_error(result)
    assert not (tmp_path / "work").exists()


def test_ray_address_auto_is_bounded_like_any_address(tmp_path, corpus, tiny_bert, monkeypatch):
    """`--ray-address auto` resolved (RAY_ADDRESS, else the last `ray start`) to a cluster that is not
    there: one line naming the option, exit 2, before any stage (Ray itself retries for minutes)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    result = cli(*run_args(corpus, tiny_bert, tmp_path, "--executor", "ray", "--ray-address", "auto"))
    assert "--ray-address auto: cannot reach the cluster at 127.0.0.1:1" in one_line_error(result)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("address", ["auto", "HOST:PORT"])
def test_a_ray_address_that_accepts_but_never_answers_is_refused_in_bounded_time(tmp_path, corpus, tiny_bert,
                                                                                  monkeypatch, address):
    """A port that takes the connection and then says nothing (Ray's client would wait and retry for
    minutes): joining is bounded (RAY_JOIN_SECONDS, made short here), then one line naming the option."""
    import importlib
    import socket

    pytest.importorskip("ray")
    silent = socket.create_server(("", 0), backlog=16)  # listens; never accepts, never answers
    try:
        where = f"127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("RAY_ADDRESS", where)
        monkeypatch.setattr(importlib.import_module("xlembed.run"), "RAY_JOIN_SECONDS", 1.0)
        given = where if address == "HOST:PORT" else "auto"
        result = cli(*run_args(corpus, tiny_bert, tmp_path, "--executor", "ray", "--ray-address", given))
        assert f"--ray-address {given}: no answer from a Ray cluster within 1 s" in one_line_error(result)
        assert not (tmp_path / "work").exists()
    finally:
        silent.close()


def test_an_encoder_no_node_can_hold_is_a_one_line_error():
    from xlembed.cluster import plan_encoders
    from xlembed.config import ExecutorConfig
    from xlembed.io import XlembedError

    class TwoSmallNodes:
        def cluster_resources(self):
            return {"CPU": 8.0}

        def nodes(self):
            return [{"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": True, "Resources": {"CPU": 4.0}}]

    with pytest.raises(
        XlembedError,
        match=r"executor.worker_cpus 6: no node of the Ray cluster has that many CPUs \(the largest has 4\)",
    ):
        plan_encoders(TwoSmallNodes(), ExecutorConfig(worker_cpus=6))
    assert plan_encoders(TwoSmallNodes(), ExecutorConfig(worker_cpus=4)).count == 2


def test_an_out_that_is_a_mount_point_is_refused_before_any_stage(tmp_path, corpus, tiny_bert, monkeypatch):
    """--out on a mount point cannot be swapped for a new build: one line, before tokenize (no work directory)."""
    import os.path

    out = tmp_path / "out"
    out.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == out or real(p))
    message = one_line_error(cli(*run_args(corpus, tiny_bert, tmp_path)))
    assert f"{out}: --out is a mount point, which cannot be replaced" in message
    assert not (tmp_path / "work").exists() and list(out.iterdir()) == []


def test_sigterm_during_a_local_run_is_one_line_and_keeps_the_previous_output(work_copy, corpus, tiny_bert):
    """SIGTERM (a batch system's time limit) mid-run, here after align: `error: terminated`, exit 143, no
    traceback, the previous output as it was. Event-driven: the command stops itself after align."""
    import signal
    import subprocess

    from tests.conftest import start_paused, wait_for_exit

    work, out = work_copy
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["run", "--tsv", corpus, "--model", tiny_bert, "--work", work, "--out", out, "--force", "-q"]
    proc, said = start_paused(args, "xlembed.align:align", "lambda result, *a, **k: 'aligned'", stderr=subprocess.PIPE)
    assert said == "aligned", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert wait_for_exit(proc.pid), "still running after SIGTERM"  # a guard against a hang only
    stderr = proc.stderr.read()
    assert proc.wait() == 143 and stderr.strip().splitlines() == ["error: terminated"], stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.fixture(scope="module")
def warning_bert(tmp_path_factory) -> Path:
    """A tiny BERT that makes transformers warn through both its channels: a config whose special token ids
    lie outside the vocabulary ("bos_token_id must be `None` or an integer within the vocabulary", logging),
    and a checkpoint without the pooler's weights (a load report of missing weights)."""
    from safetensors.torch import load_file, save_file

    from tests.conftest import make_tiny_bert

    model = make_tiny_bert(tmp_path_factory.mktemp("warning-bert"), layers=4)
    weights = {k: v for k, v in load_file(str(model / "model.safetensors")).items() if "pooler" not in k}
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(config, bos_token_id=100_000, pad_token_id=-1)))
    return model


def test_transformers_warnings_never_reach_stderr(warning_bert, corpus, tmp_path):
    """With transformers made as talkative as it gets (TRANSFORMERS_VERBOSITY=info, every Python warning
    shown), a run that succeeds prints nothing, one that fails prints only its one line, and a transplant
    (which resizes the vocabulary below the special token ids) only its summary."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRANSFORMERS_VERBOSITY="info", PYTHONWARNINGS="always")

    def xlembed(*args):
        return subprocess.run([sys.executable, "-m", "xlembed.cli", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=600)

    args = ["run", "--tsv", corpus, "--model", warning_bert, "--work", tmp_path / "w", "-q"]
    done = xlembed(*args, "--out", tmp_path / "o")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    failed = xlembed(*args, "--out", tmp_path / "o2", "--layer", "99")
    assert failed.returncode == 2 and failed.stderr.splitlines() == [
        "error: --layer 99 is out of range: the model has 4 layers (0 = embeddings, -1 = last)"
    ], failed.stderr
    transplanted = xlembed("transplant", tmp_path / "o", "-o", tmp_path / "zh-model", "--work", tmp_path / "w")
    lines = transplanted.stderr.splitlines()
    assert transplanted.returncode == 0 and len(lines) == 1 and lines[0].startswith("✔ wrote "), transplanted.stderr


def test_loading_a_model_leaves_the_callers_transformers_verbosity_as_it_was(warning_bert):
    """xlembed silences transformers only while it loads: a program that set its own verbosity keeps it."""
    from transformers.utils import logging as hf_logging

    from xlembed.models import check_model

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        check_model(warning_bert)
        assert hf_logging.get_verbosity() == hf_logging.WARNING
    finally:
        hf_logging.set_verbosity(before)


def test_export_never_renames_over_a_device_pipe_or_link(built, tmp_path):
    """`export -o /dev/full` used to say "wrote 300 rows" and put a regular file in the device's place (the
    atomic rename): a path that is not a regular file is refused in one line and left as it was. Tested with
    a named pipe and a symbolic link (never a real device: a regression would replace it)."""
    import os

    fifo, real, link = tmp_path / "fifo", tmp_path / "real.txt", tmp_path / "link.txt"
    os.mkfifo(fifo)
    real.write_text("mine\n")
    link.symlink_to(real)
    for target, kind in ((fifo, "a device, pipe or socket"), (link, "a symbolic link")):
        assert f"{target}: is {kind}, not a regular file" in one_line_error(cli("export", built, "-o", target))
    assert fifo.is_fifo() and link.is_symlink() and real.read_text() == "mine\n"


def test_export_never_writes_among_a_work_directorys_files_nor_through_a_directory_link(work_copy, tmp_path):
    """`export -o WORK/corpus.en` replaced a stage's file (exit 0); a model2vec export to a link to a
    directory put a directory in the link's place and then failed on `rmtree`. Both: one line, nothing changed."""
    work, out = work_copy
    corpus = (work / "corpus.en").read_bytes()
    message = one_line_error(cli("export", out, "-o", work / "corpus.en"))
    assert f"{work / 'corpus.en'}: inside the xlembed work directory {work}" in message
    assert (work / "corpus.en").read_bytes() == corpus
    (tmp_path / "models").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "models")
    message = one_line_error(cli("export", out, "--format", "model2vec", "-o", tmp_path / "link"))
    assert f"{tmp_path / 'link'}: is a symbolic link" in message
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "models").iterdir()) == []


def test_transplant_never_writes_inside_an_output_or_work_directory_nor_over_a_link(work_copy, tmp_path):
    """`transplant -o OUT/zh` wrote into the build (exit 0), and every later `write`/`run` to OUT failed on
    the foreign folder; a link to a directory was replaced by one (then `rmtree` failed). Now one line each,
    nothing written; staged_dir itself refuses a link for every directory xlembed replaces."""
    from xlembed.io import XlembedError, staged_dir

    work, out = work_copy
    before = sorted(p.name for p in out.iterdir())
    for dest, message in ((out / "zh", f"{out / 'zh'}: inside the xlembed output directory {out}; transplant"),
                          (work / "zh", f"{work / 'zh'}: inside the xlembed work directory {work}; transplant")):
        assert message in one_line_error(cli("transplant", out, "-o", dest, "--work", work))
        assert not dest.exists()
    (tmp_path / "models").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "models")
    assert "link: is a symbolic link" in one_line_error(cli("transplant", out, "-o", tmp_path / "link", "--work", work))
    with pytest.raises(XlembedError, match="link: is a symbolic link"), staged_dir(tmp_path / "link"):
        pass
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "models").iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == before


def test_ray_shutdown_after_an_error_writes_nothing_to_the_stderr_descriptor():
    """Ray's C++ core writes straight to file descriptor 2 while it shuts down after a
    signal (`task_manager.cc: Failed to push error to driver …`), and its threads may still
    write after ray.shutdown() has returned (seen before `error: terminated` in a SIGTERM run):
    after the error the descriptor stays silenced, and Python's sys.stderr still reaches the
    terminal through a copy of it."""
    import subprocess
    import sys

    code = ("import logging, os, sys\n"
            "from xlembed.cluster import silence_stderr_descriptor\n"
            "logging.getLogger('app').addHandler(logging.StreamHandler())  # holds sys.stderr as it is now\n"
            "print('before', file=sys.stderr)\n"
            "silence_stderr_descriptor()\n"
            "os.write(2, b'core worker line\\n')\n"
            "print('error: terminated', file=sys.stderr)\n"
            "logging.getLogger('app').error('logged after')\n"
            "os.write(2, b'core worker line, later\\n')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "before\nerror: terminated\nlogged after\n"
