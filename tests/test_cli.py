import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer import rich_utils
from typer.testing import CliRunner

from xlembed.cli.main import app

SUBJECTS = [("i", "我"), ("you", "你"), ("he", "他"), ("she", "她"), ("we", "我们"), ("they", "他们")]
VERBS = [("like", "喜欢"), ("read", "读")]
OBJECTS = [("cats", "猫"), ("dogs", "狗"), ("books", "书"), ("water", "水"), ("tea", "茶"), ("fish", "鱼")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """72 pairs such as `i like cats .` / `我喜欢猫。`, as a TSV with an attribution column."""
    path = tmp_path_factory.mktemp("corpus") / "pairs.tsv"
    lines = [f"{s} {v} {o} .\t{zs}{zv}{zo}。\tCC-BY" for s, zs in SUBJECTS for v, zv in VERBS for o, zo in OBJECTS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def xlembed(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus, tiny_bert) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    result = xlembed("run", "--tsv", corpus, "--model", tiny_bert, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_output_contract(built, tiny_bert):
    vocab = (built / "vocab.txt").read_text("utf-8").splitlines()
    tensors = load_file(str(built / "embeddings.safetensors"))
    assert set(tensors) == {"embeddings", "projected"}
    emb, projected = tensors["embeddings"], tensors["projected"]
    assert emb.dtype == torch.float32 and projected.dtype == torch.uint8
    assert emb.shape == (len(vocab), 32) and projected.shape == (len(vocab),)
    assert vocab[:2] == ["[PAD]", "[UNK]"] and torch.count_nonzero(emb[0]) == 0
    assert {"猫", "喜欢", "我们", "。"} <= set(vocab)
    assert projected[:2].tolist() == [0, 0] and projected[2:].sum() > 0
    with safe_open(str(built / "embeddings.safetensors"), "pt") as f:
        meta = f.metadata()
    assert {"model", "layer", "strategy", "symmetrization", "seed", "oov_fill", "counts", "xlembed_version"} <= set(
        meta
    )
    assert meta["strategy"] == "argmax-occurrence" and meta["symmetrization"] == "union" and meta["seed"] == "0"
    english = load_file(str(built / "english.safetensors"))["embeddings"]
    english_vocab = (built / "english_vocab.txt").read_text("utf-8").splitlines()
    assert english.shape == (len(english_vocab), 32)
    assert {"cats", "like", "."} <= set(english_vocab)

    manifest = json.loads((built / "manifest.json").read_text("utf-8"))
    assert set(manifest["parameters"]) == {"tokenize", "encode", "align", "project", "write"}
    assert manifest["parameters"]["encode"]["model"] == str(tiny_bert.resolve())
    assert list(manifest["inputs"].values())[0] and len(list(manifest["inputs"].values())[0]) == 64  # sha256
    counts = manifest["counts"]
    assert counts["pairs_read"] == counts["pairs_kept"] == 72 and counts["pairs_dropped"] == 0
    assert counts["vocab_size"] == len(vocab)
    assert counts["projected_rows"] + counts["filled_rows"] + 2 == len(vocab)
    assert counts["projected_rows"] == int(projected.sum())
    assert counts["words_truncated"] == 0
    assert set(manifest["seconds"]) == {"tokenize", "encode", "align", "project", "write"}


def test_nothing_but_the_contract_is_left_beside_the_output(built):
    assert sorted(p.name for p in built.parent.iterdir()) == ["out", "out.work"]
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [
            "embeddings.safetensors",
            "vocab.txt",
            "vocab.tsv",
            "english.safetensors",
            "english_vocab.txt",
            "manifest.json",
        ]
    )


def test_write_is_seeded(built, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(built.with_name("out.work"), work)
    assert xlembed("project", "--work", work, "--min-count", 20, "-q").exit_code == 0  # leaves rare words unprojected
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = xlembed("write", "--work", work, "--out", tmp_path / name, "--seed", seed, "--distill", 0, "-q")
        assert result.exit_code == 0  # (--distill's batch order is seeded too: test_distill)
    a, b, c = (load_file(str(tmp_path / n / "embeddings.safetensors")) for n in "abc")
    assert (tmp_path / "a/embeddings.safetensors").read_bytes() == (tmp_path / "b/embeddings.safetensors").read_bytes()
    filled = a["projected"] == 0
    filled[:2] = False  # [PAD] and [UNK] do not depend on the seed
    assert filled.any()
    assert torch.equal(a["embeddings"][~filled], c["embeddings"][~filled])
    assert not torch.equal(a["embeddings"][filled], c["embeddings"][filled])


def test_stages_one_by_one_match_run(built, corpus, tiny_bert, tmp_path):
    work = tmp_path / "work"
    for args in (
        ["tokenize", "--tsv", corpus, "--model", tiny_bert],
        ["encode", "--model", tiny_bert],
        ["align"],
        ["project"],
    ):
        result = xlembed(*args, "--work", work, "-q")
        assert result.exit_code == 0, result.output
    assert xlembed("write", "--work", work, "--out", tmp_path / "out", "-q").exit_code == 0
    ours = load_file(str(tmp_path / "out/embeddings.safetensors"))
    assert (tmp_path / "out/vocab.txt").read_text() == (built / "vocab.txt").read_text()
    assert ours["embeddings"].shape == load_file(str(built / "embeddings.safetensors"))["embeddings"].shape


def test_config_file_sets_options_and_flags_override_it(corpus, tiny_bert, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[encode]\nlayer = "0"\nbatch-size = 7\n[write]\nseed = 5\n', encoding="utf-8")
    out = tmp_path / "out"
    result = xlembed("run", "--config", config, "--tsv", corpus, "--model", tiny_bert, "--out", out, "--seed", 9, "-q")
    assert result.exit_code == 0, result.output
    params = json.loads((out / "manifest.json").read_text())["parameters"]
    assert params["encode"]["layer"] == "0" and params["encode"]["batch_size"] == 7
    assert params["write"]["seed"] == 9


def test_unknown_config_key_is_an_error(tmp_path, corpus):
    (tmp_path / "c.toml").write_text("[encode]\nbatchsize = 7\n", encoding="utf-8")
    result = xlembed("run", "--config", tmp_path / "c.toml", "--tsv", corpus, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown option 'batchsize' in [encode]" in result.output


def test_help_lists_every_stage(monkeypatch):
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", 200)  # what is listed, not how it wraps (test_help.py: widths)
    result = xlembed("--help")
    for stage in ("tokenize", "encode", "align", "project", "write", "run"):
        assert stage in result.output
    assert "--batch-size" in xlembed("run", "--help").output


# --- bad input: exit code 2, one line naming the problem, nothing in --out ---

def bad_model(tmp_path, kind, tiny_bert):
    model = tmp_path / "model"
    model.mkdir()
    if kind == "t5":
        (model / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8, "num_layers": 1}))
    if kind == "no-weights":
        for f in tiny_bert.iterdir():
            if "model" not in f.name:
                (model / f.name).write_bytes(f.read_bytes())
    return model


CASES = {
    "different line counts": (
        lambda t, m: ["--en", t / "en3.txt", "--zh", t / "zh2.txt", "--model", m],
        r"en3.txt has 3 lines, .*zh2.txt has 2",
    ),
    "missing file": (lambda t, m: ["--tsv", t / "missing.tsv", "--model", m], r"missing.tsv: file does not exist"),
    "not UTF-8": (lambda t, m: ["--tsv", t / "latin1.tsv", "--model", m], r"latin1.tsv:2: not valid UTF-8"),
    "model missing": (
        lambda t, m: ["--tsv", t / "ok.tsv", "--model", t / "nowhere"],
        r"nowhere: model directory does not exist",
    ),
    "model not BERT-like": (
        lambda t, m: ["--tsv", t / "ok.tsv", "--model", bad_model(t, "t5", m)],
        r"model type 't5' is not a BERT-like encoder",
    ),
    "model without weights": (
        lambda t, m: ["--tsv", t / "ok.tsv", "--model", bad_model(t, "no-weights", m)],
        r"no model weights",
    ),
    "empty corpus": (
        lambda t, m: ["--tsv", t / "empty.tsv", "--model", m],
        r"no sentence pair left after tokenization",
    ),
}


def write_inputs(tmp_path):
    (tmp_path / "en3.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "zh2.txt").write_text("甲\n乙\n", encoding="utf-8")
    (tmp_path / "latin1.tsv").write_bytes("cat\t猫\n".encode() + "café\t咖啡\n".encode("latin-1", "replace"))
    (tmp_path / "ok.tsv").write_text("the cat\t猫\n", encoding="utf-8")
    (tmp_path / "empty.tsv").write_text("\t\n ...\t \n", encoding="utf-8")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_error(case, tmp_path, tiny_bert):
    write_inputs(tmp_path)
    make_args, message = CASES[case]
    result = xlembed("run", *make_args(tmp_path, tiny_bert), "--out", tmp_path / "out", "-q")
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert re.search(message, result.output), result.output
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(tmp_path, corpus):
    (tmp_path / "out").write_text("precious")
    result = xlembed("run", "--tsv", corpus, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 2 and "output path is a file" in result.output
    assert (tmp_path / "out").read_text() == "precious"


def test_output_dir_with_foreign_files_is_not_replaced(tmp_path, corpus):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("precious")
    result = xlembed("run", "--tsv", corpus, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 2 and "refusing to replace" in result.output
    assert (tmp_path / "out" / "notes.txt").read_text() == "precious"


def test_the_installed_command_prints_no_traceback(tmp_path):
    """The real console script: exit code 2 and a single line on stderr."""
    exe = Path(sys.executable).with_name("xlembed")
    proc = subprocess.run([str(exe), "run", "--tsv", str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.tsv'}: file does not exist"]
