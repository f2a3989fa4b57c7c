"""Embeddings.encode, and the exports read back by the real gensim, model2vec
and sentence-transformers, the latter two in a process where xlembed (and
jieba) cannot be imported."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from xlembed import load
from xlembed.cli.main import app
from xlembed.errors import XlembedError

from .test_use import hand_made  # noqa: F401  (fixture: 猫 near cat, 狗 near dog, 书 far)


def xlembed(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_encode_is_the_mean_of_known_word_rows(hand_made):
    e = load(hand_made)
    vectors = e.encode(["猫和狗。", "书", "鱼", ""])  # 和, 。 and 鱼 are not in the vocabulary
    assert vectors.shape == (4, 2)
    assert vectors[0].tolist() == pytest.approx([(1.0 + 0.9) / 2, (0.1 + 0.3) / 2])  # [UNK]'s row is left out
    assert vectors[1].tolist() == pytest.approx([-1.0, 0.2])
    assert vectors[2].tolist() == [0.0, 0.0] and vectors[3].tolist() == [0.0, 0.0]  # no known word: zeros
    assert e.encode("猫和狗。").tolist() == pytest.approx(vectors[0].tolist())  # one string: one vector [d]
    unit = e.encode(["猫和狗。", "鱼"], normalize=True)
    assert unit[0].norm().item() == pytest.approx(1.0) and unit[1].tolist() == [0.0, 0.0]


def test_encode_weights_frequent_words_less_with_sif(hand_made):
    e = load(hand_made)
    e.rows[2] = e.rows[2]._replace(freq=98)  # 猫 is most of the corpus's words
    e.rows[3] = e.rows[3]._replace(freq=1)
    total = sum(r.freq for r in e.rows)
    (w_cat, w_dog) = (0.01 / (0.01 + 98 / total), 0.01 / (0.01 + 1 / total))
    expected = (torch.tensor([1.0, 0.1]) * w_cat + torch.tensor([0.9, 0.3]) * w_dog) / (w_cat + w_dog)
    assert e.encode("猫狗", sif=0.01).tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert e.encode("猫狗", sif=0).tolist() == pytest.approx([0.95, 0.2])  # unweighted
    (w_cat, w_dog) = (0.03 / (0.03 + 98 / total), 0.03 / (0.03 + 1 / total))  # the default: a = 0.03
    expected = (torch.tensor([1.0, 0.1]) * w_cat + torch.tensor([0.9, 0.3]) * w_dog) / (w_cat + w_dog)
    assert e.encode("猫狗").tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    for bad in (-0.01, float("nan"), float("inf"), "0.1", True, torch.tensor(0.1), [0.1]):
        with pytest.raises(XlembedError, match=r"sif \(--sif\) must be 0 .no weighting. or a finite number above"):
            e.encode("猫", sif=bad)
    with pytest.raises(XlembedError, match="sentences must be strings; item 1 is NoneType"):
        e.encode(["猫", None])
    import numpy as np

    assert e.encode("猫狗", sif=np.float32(0.03)).tolist() == pytest.approx(e.encode("猫狗").tolist())  # numpy too
    with pytest.raises(XlembedError, match=r"row id -1 is not one of 0..5"):
        e.mean_rows([[2, -1]])
    with pytest.raises(XlembedError, match=r"row id 9 is not one of 0..5"):
        e.mean_rows([[9]])
    for bad, name in ((None, "NoneType"), (b"\xe7\x8c\xab", "bytes"), (3, "int")):
        with pytest.raises(XlembedError, match=f"sentences must be a string or a list of strings, got {name}"):
            e.encode(bad)


def test_encode_and_the_export_are_finite_for_any_finite_sif(hand_made, tmp_path):
    """A huge a weighs every word 1; a tiny one weighs words by 1 / p(word), not by 0 or NaN."""
    e = load(hand_made)
    e.rows[2] = e.rows[2]._replace(freq=98)  # 猫
    e.rows[3] = e.rows[3]._replace(freq=1)  # 狗
    assert e.encode("猫狗", sif=1e300).tolist() == pytest.approx(e.encode("猫狗", sif=0).tolist())
    w_cat, w_dog = 1 / 98, 1 / 1  # a / (a + p) -> a / p as a -> 0: proportional to 1 / freq
    expected = (torch.tensor([1.0, 0.1]) * w_cat + torch.tensor([0.9, 0.3]) * w_dog) / (w_cat + w_dog)
    assert e.encode("猫狗", sif=1e-300).tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    # the smallest float: its weights are subnormal numbers (few digits), but neither 0 nor NaN
    assert e.encode("猫狗", sif=5e-324).tolist() == pytest.approx(expected.tolist(), rel=1e-3)
    from safetensors.torch import load_file

    for a in (1e300, 1e-300):
        e.export(tmp_path / str(a), "model2vec", sif=a)
        rows = load_file(str(tmp_path / str(a) / "model.safetensors"))["embeddings"]
        assert bool(torch.isfinite(rows).all()) and rows[e.word_index["猫"]].abs().sum() > 0, a
    result = xlembed("export", hand_made, "--format", "model2vec", "--sif", "nan", "-o", tmp_path / "nan")
    assert result.exit_code == 2 and "sif (--sif) must be 0 (no weighting) or a finite number above" in result.output
    assert not (tmp_path / "nan").exists()


def test_word2vec_formats_leave_out_special_rows_unless_asked(hand_made, tmp_path):
    from gensim.models import KeyedVectors

    for fmt, name, read in (
        ("word2vec", "e.txt", lambda p: KeyedVectors.load_word2vec_format(p)),
        ("word2vec-bin", "e.bin", lambda p: KeyedVectors.load_word2vec_format(p, binary=True)),
        ("gensim", "e.kv", KeyedVectors.load),
    ):
        result = xlembed("export", hand_made, "--format", fmt, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        kv = read(str(tmp_path / name))
        assert kv.index_to_key == ["猫", "狗", "书"], fmt
        assert kv["狗"].tolist() == pytest.approx([0.9, 0.3])
        assert kv.most_similar("猫", topn=1)[0][0] == "狗"
        result = xlembed("export", hand_made, "--format", fmt, "-o", tmp_path / ("special-" + name), "--special")
        assert result.exit_code == 0, result.output
        assert read(str(tmp_path / ("special-" + name))).index_to_key == ["[PAD]", "[UNK]", "猫", "狗", "书"]
    result = xlembed("export", hand_made, "--format", "word2vec", "--lang", "en", "-o", tmp_path / "en.txt")
    assert KeyedVectors.load_word2vec_format(str(tmp_path / "en.txt")).index_to_key == ["cat", "dog", "book"]


def test_export_writes_beside_the_output_never_in_it(hand_made, tmp_path):
    (hand_made / "manifest.json").write_text(json.dumps({"kind": "xlembed output", "parameters": {}}))
    before = sorted(p.name for p in hand_made.iterdir())
    result = xlembed("export", hand_made, "--format", "word2vec")
    assert result.exit_code == 0, result.output
    assert (hand_made.parent / "hand.word2vec.txt").read_text("utf-8").startswith("3 2\n")
    result = xlembed("export", hand_made, "-o", hand_made / "e.txt")
    assert result.exit_code == 2 and "inside the xlembed output directory" in result.output
    assert sorted(p.name for p in hand_made.iterdir()) == before


def test_export_to_standard_output(hand_made):
    result = CliRunner().invoke(app, ["export", str(hand_made), "-o", "-"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "3 2" and lines[2].split()[0] == "狗" and len(lines) == 4
    result = xlembed("export", hand_made, "--format", "word2vec-bin", "-o", "-")
    assert result.exit_code == 2 and "text format" in result.output


LOAD_WITHOUT_XLEMBED = """
import sys, json
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("xlembed", "jieba"):
            raise ImportError("not installed here: " + name)
sys.meta_path.insert(0, Refuse())
try:
    import xlembed
    sys.exit("xlembed is importable")
except ImportError:
    pass
from model2vec import StaticModel
from sentence_transformers import SentenceTransformer
sentences = json.loads(sys.argv[2])
m = StaticModel.from_pretrained(sys.argv[1])
st = SentenceTransformer(sys.argv[1], device="cpu")
print(json.dumps(dict(model2vec=m.encode(sentences).tolist(), st=st.encode(sentences).tolist(),
                      tokens=[[m.tokenizer.id_to_token(i) for i in m.tokenizer.encode(s, add_special_tokens=False).ids]
                              for s in sentences])))
"""


def test_model2vec_export_loads_without_xlembed(hand_made, tmp_path):
    target = tmp_path / "m2v"
    result = xlembed("export", hand_made, "--format", "model2vec", "-o", target)
    assert result.exit_code == 0, result.output
    sentences = ["猫和狗。", "书", "鱼", "猫" * 600 + "狗" * 100]  # the last: 700 tokens, none cut at 512
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_XLEMBED, str(target), json.dumps(sentences)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["tokens"][0] == ["猫", "[UNK]", "狗", "[UNK]"]  # segmented inside their tokenizer
    ours = load(hand_made).encode(sentences)
    for name in ("model2vec", "st"):
        theirs = torch.tensor(loaded[name])
        cosine = torch.nn.functional.cosine_similarity(theirs[[0, 1, 3]], ours[[0, 1, 3]])
        assert cosine.tolist() == pytest.approx([1.0] * 3, abs=1e-5), name  # the same direction as Embeddings.encode
        assert theirs[2].abs().sum() == 0  # nothing known
    # a second export replaces its own earlier one; a foreign directory is refused
    assert xlembed("export", hand_made, "--format", "model2vec", "-o", target).exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = xlembed("export", hand_made, "--format", "model2vec", "-o", tmp_path / "mine")
    assert result.exit_code == 2 and "refusing to replace it" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_the_model2vec_export_segments_by_corpus_frequency():
    """The export's tokenizer cuts as jieba would (研究 / 生命, the most probable cut by the build's
    frequencies), where longest match takes 研究生 / 命; an output without vocabulary rows: longest match."""
    from types import SimpleNamespace

    from xlembed.embeddings import VocabRow
    from xlembed.export import export_tokenizer

    words = ["[PAD]", "[UNK]", "研究", "研究生", "生命", "命", "的", "起源"]
    freqs = [0, 0, 500, 20, 300, 5, 5000, 50]
    built = SimpleNamespace(rows=[VocabRow.new(w, f, "projected") for w, f in zip(words, freqs)])
    assert export_tokenizer(built, words).encode("研究生命的起源").tokens == ["研究", "生命", "的", "起源"]
    assert export_tokenizer(built, words + ["新"]).encode("新的").tokens == ["新", "的"]  # a word with no row
    no_rows = SimpleNamespace(rows=[])
    assert export_tokenizer(no_rows, words).encode("研究生命的起源").tokens == ["研究生", "命", "的", "起源"]


def test_encode_cuts_as_the_model2vec_export_does_unless_asked_for_jieba():
    """A word the build never saw (图书馆) is cut into words it did (图书 / 馆) by the corpus-frequency
    cut that encode shares with the model2vec export; jieba keeps it whole, and it is left out."""
    from xlembed.embeddings import Embeddings, VocabRow

    words = ["[PAD]", "[UNK]", "图书", "馆", "研究", "生命"]
    vectors = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
    e = Embeddings(words=words, vectors=vectors, projected=torch.tensor([False, False, True, True, True, True]),
                   english_words=[], english_vectors=torch.zeros(0, 2),
                   rows=[VocabRow.new(w, f, "projected") for w, f in zip(words, [0, 0, 40, 3, 50, 50])],
                   manifest={"parameters": {"tokenize": {"user_dict": None, "hmm": True}}}, metadata={})
    assert e.sentence_tokenizer.encode("图书馆", add_special_tokens=False).tokens == ["图书", "馆"]
    assert e.encode("图书馆", sif=0).tolist() == [0.5, 0.5]
    assert e.encode("图书馆", segmentation="jieba").tolist() == [0.0, 0.0]  # jieba: one word, with no row
    assert e.encode("研究生命", segmentation="jieba").tolist() == e.encode("研究生命").tolist() == [1.0, 1.0]
    with pytest.raises(Exception, match="segmentation must be 'frequency' or 'jieba'"):
        e.encode("猫", segmentation="longest")
