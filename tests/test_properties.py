"""Property-based edges (issue 19): whatever option values, vocabularies and
small corpora a user gives, a command ends in exactly one of two ways, a
one-line `error: …` with exit code 2, or an output that verifies and loads,
and an earlier output in --out is intact either way. Few examples, a tiny
model, in-process: cheap enough for every `make test`."""

import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import xlembed
from xlembed.cli.main import app

from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def check_outcome(result, out: Path, before: dict) -> str:
    """The three allowed outcomes; returns which."""
    if result.exit_code == 0:
        e = xlembed.load(out)
        assert e.vectors.shape[0] == len(e.words) and bool(e.vectors.isfinite().all())
        assert xlembed.embeddings.verify(out) == []
        return "output"
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert snapshot(out) == before  # the previous output, untouched
    return "error"


numbers = st.one_of(
    st.integers(-5, 5),
    st.integers(min_value=2**31 - 2, max_value=2**70),
    st.integers(max_value=-(2**40)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "x", "", "0x10"]),
)
word_chars = st.sampled_from(list("猫狗书水茶鱼我你他的了 \t\u3000\x00\u200bab,") + ["[PAD]", "[UNK]", "\ufeff"])
vocabularies = st.lists(st.lists(word_chars, min_size=0, max_size=3).map("".join), min_size=0, max_size=8)


@settings(max_examples=30, **SETTINGS)
@given(
    option=st.sampled_from(["--min-freq", "--seed", "--shrink"]),
    value=numbers,
    oov=st.sampled_from([None, "random", "chars", "pinyin", "context", "bogus"]),
    vocab=st.one_of(st.none(), vocabularies),
)
def test_write_options_and_vocabularies(tmp_path_factory, built, option, value, oov, vocab):
    root = tmp_path_factory.mktemp("prop-write")
    out = root / "out"
    shutil.copytree(built, out)
    before = snapshot(out)
    args = ["write", "--work", str(built.with_name("out.work")), "--out", str(out), "-q", option, str(value)]
    if oov is not None:
        args += ["--oov", oov]
    if vocab is not None:
        (root / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
        args += ["--vocab", str(root / "vocab.txt")]
    check_outcome(CliRunner().invoke(app, args), out, before)


@settings(max_examples=12, **SETTINGS)
@given(
    option=st.sampled_from(
        [
            "--iterations",
            "--samplers",
            "--null-prior",
            "--align-model",
            "--batch-size",
            "--max-length",
            "--min-count",
            "--workers",
            "--shard-rows",
            "--en-column",
        ]
    ),
    value=numbers,
)
def test_run_option_values(tmp_path_factory, built, corpus, tiny_bert, option, value):  # noqa: F811
    root = tmp_path_factory.mktemp("prop-run")
    out = root / "out"
    shutil.copytree(built, out)
    before = snapshot(out)
    options = {
        "--samplers": "1",
        "--iterations": "0.2",
        option: str(value),
    }  # cheap eflomal unless the drawn value says
    args = [
        "run",
        "--tsv",
        str(corpus),
        "--model",
        str(tiny_bert),
        "--work",
        str(root / "work"),
        "--out",
        str(out),
        "-q",
        *[item for pair in options.items() for item in pair],
    ]
    check_outcome(CliRunner().invoke(app, args), out, before)


sentence_en = st.lists(
    st.sampled_from(["i", "like", "cats", "dogs", "the", "book", ".", "?", "🐱", "x" * 40, "\x00", "猫"]),
    min_size=0,
    max_size=8,
).map(" ".join)
sentence_zh = st.lists(
    st.sampled_from(["我", "喜欢", "猫", "狗", "书", "。", "？", "a", "\u3000", "\x00", "🐱"]), min_size=0, max_size=8
).map("".join)


@settings(max_examples=6, **SETTINGS)
@given(pairs=st.lists(st.tuples(sentence_en, sentence_zh), min_size=0, max_size=30))
def test_small_corpora(tmp_path_factory, built, tiny_bert, pairs):
    root = tmp_path_factory.mktemp("prop-corpus")
    out = root / "out"
    shutil.copytree(built, out)
    before = snapshot(out)
    (root / "c.tsv").write_text("".join(f"{e}\t{z}\n" for e, z in pairs), encoding="utf-8")
    args = [
        "run",
        "--tsv",
        str(root / "c.tsv"),
        "--model",
        str(tiny_bert),
        "--work",
        str(root / "work"),
        "--out",
        str(out),
        "-q",
        "--samplers",
        "1",
        "--iterations",
        "0.2",
    ]
    check_outcome(CliRunner().invoke(app, args), out, before)
