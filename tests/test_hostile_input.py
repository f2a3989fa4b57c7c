"""Hostile input: every case ends in a counted skip (kept in manifest.json)
or a one-line error naming the file (and line) with exit code 2; never a
traceback, never a partial output, and kept pairs stay paired."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xlembed.io
from xlembed.config import Config
from xlembed.errors import XlembedError
from xlembed.layout import WorkDir
from xlembed.tokenize import tokenize

XLEMBED = str(Path(sys.executable).with_name("xlembed"))
MARKER = re.compile(r"^m(\d+)m$")

# characters a real corpus throws at us; none of them can form or join a marker
JUNK = list("abcxyz ABC 猫狗书。，！？!?.,;:'\"()-–—…0123456789 貓愛學 éü ١٢ ｂｃ") + [
    "\x00", "\r", "\x0b", "\x0c", "\x1f", "\x7f", "\ufeff", "\u200b", "\u200d", "\u2028", "\u00a0", "\u3000",
    "🐱", "👨\u200d👩\u200d👧", "e\u0301", "\ufffd"]
junk = st.lists(st.sampled_from(JUNK), max_size=12).map("".join)
blank = st.sampled_from(["", " ", "\t", "\u3000", "\r", "\x00"])


@st.composite
def corpora(draw):
    """Pairs that carry a marker `m<i>m` on both sides, amid junk, with
    junk-only and blank lines between them."""
    en, zh, ids = [], [], []
    for i in range(draw(st.integers(1, 12))):
        for _ in range(draw(st.integers(0, 2))):  # lines without a marker
            en.append(draw(st.one_of(blank, junk)))
            zh.append(draw(st.one_of(blank, junk)))
        en.append(f"{draw(junk)} m{i}m {draw(junk)}")
        zh.append(f"{draw(junk)} m{i}m {draw(junk)}")
        ids.append(str(i))
    return en, zh, ids


def markers(line: str) -> list[str]:
    return [m.group(1) for w in line.split(" ") if (m := MARKER.match(w))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpus=corpora())
def test_kept_pairs_stay_paired(tmp_path_factory, tiny_bert, corpus):
    en, zh, ids = corpus
    d = tmp_path_factory.mktemp("hostile")
    (d / "en.txt").write_bytes(("\n".join(en) + "\n").encode("utf-8"))
    (d / "zh.txt").write_bytes(("\n".join(zh) + "\n").encode("utf-8"))
    work = WorkDir(d / "work")
    config = Config().set(en=d / "en.txt", zh=d / "zh.txt", model=tiny_bert, check_languages=False)
    record = tokenize(config.validate(("tokenize",)), work)
    out_en = work.corpus_en.read_text("utf-8").split("\n")[:-1]
    out_zh = work.corpus_zh.read_text("utf-8").split("\n")[:-1]
    assert len(out_en) == len(out_zh) == record["counts"]["pairs_kept"]
    assert record["counts"]["pairs_kept"] + record["counts"]["pairs_dropped"] == len(en)
    for e, z in zip(out_en, out_zh):
        assert markers(e) == markers(z)  # the same pair, or both without a marker
        assert "" not in e.split(" ") and "" not in z.split(" ")  # no empty or whitespace tokens
        assert e.isprintable() and z.isprintable()
    assert [m for line in out_en for m in markers(line)] == ids  # every marked pair kept, in order


# --- the CLI on fixed cases -------------------------------------------------

SKIPPED_BUT_FINE = [
    "hello .\t你好。",
    "\t",                                   # empty pair
    "   \t\u3000",                          # whitespace only
    "the cat\x00 sat\t猫\x00坐下",           # NUL bytes
    "one\rtwo\t一\r二",                      # lone CR inside a line
    ("word " * 2000) + "\t" + ("词" * 2000),  # far beyond the model's max length
    "!!! ...\t。。。！",                       # punctuation only
    "123 456\t123",                          # digits only
    "我喜欢猫\tI like cats",                  # the sides swapped
    "I love 🐱!\t我愛貓🐱！",                  # traditional characters, emoji
    "the dog .\t狗。",
]


def test_a_corpus_full_of_oddities_builds_and_counts_its_skips(tmp_path, tiny_bert):
    tsv = tmp_path / "odd.tsv"
    tsv.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(SKIPPED_BUT_FINE).encode("utf-8") + b"\r\n")
    out = tmp_path / "out"
    proc = subprocess.run([XLEMBED, "run", "--tsv", str(tsv), "--model", str(tiny_bert), "--out", str(out), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pairs_read"] == len(SKIPPED_BUT_FINE)
    assert manifest["counts"]["pairs_dropped"] == 2
    assert manifest["stage_counts"]["tokenize"]["dropped_empty_en"] == 2
    assert manifest["counts"]["words_truncated"] == 0  # the long line is encoded as overlapping windows
    assert manifest["stage_counts"]["encode"]["sentences_in_windows"] == 1
    vocab = (out / "vocab.txt").read_text("utf-8").split("\n")[:-1]
    assert all(w.isprintable() and w.strip() == w and w for w in vocab)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


ERRORS = {
    "mismatched line counts": (
        lambda d: ["--en", write(d / "en", b"a\nb\n"), "--zh", write(d / "zh", "甲\n".encode())],
        r"line counts differ: .*en has 2 lines, .*zh has 1",
    ),
    "invalid UTF-8 mid-file": (
        lambda d: ["--tsv", write(d / "c.tsv", "a\t甲\n".encode() * 3 + b"b\xc3\x28\t\xe4\xb9\x99\n")],
        r"c.tsv:4: not valid UTF-8",
    ),
    "TSV with too few columns": (
        lambda d: ["--tsv", write(d / "c.tsv", "a\t甲\nb 乙\n".encode())],
        r"c.tsv:2: has 1 tab-separated column",
    ),
    "empty file": (lambda d: ["--tsv", write(d / "c.tsv", b"")], r"c.tsv: empty file"),
    "directory instead of a file": (lambda d: ["--tsv", d], r": is a directory, expected a file"),
    "truncated gzip": (
        lambda d: ["--tsv", write(d / "c.tsv.gz", b"\x1f\x8b\x08\x00garbage")],
        r"c.tsv.gz:1: cannot read",
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_a_one_line_error_without_traceback(case, tmp_path, tiny_bert):
    d = tmp_path / "in"
    d.mkdir()
    args, message = ERRORS[case]
    out = tmp_path / "out"
    proc = subprocess.run([XLEMBED, "run", *map(str, args(d)), "--model", str(tiny_bert), "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, COLUMNS="300"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()


def test_unreadable_file(tmp_path, tiny_bert, monkeypatch):
    (tmp_path / "c.tsv").write_text("a\t甲\n", encoding="utf-8")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(xlembed.io, "open", denied, raising=False)  # root can read anything: simulate
    with pytest.raises(XlembedError, match=r"c.tsv: file is not readable"):
        tokenize(Config().set(tsv=tmp_path / "c.tsv", model=tiny_bert).validate(("tokenize",)), WorkDir(tmp_path / "w"))
