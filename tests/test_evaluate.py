import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xlembed.cli.main import app
from xlembed.embeddings import Embeddings
from xlembed.errors import XlembedError
from xlembed.evaluate import lexicon_induction, rankdata, read_wordsim, spearman, word_similarity
from xlembed.io import save_tensors


def test_rankdata_averages_ties():
    assert rankdata(np.array([10, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6*4/(5*24)
    assert math.isnan(spearman([1], [1]))


def unit(angle_degrees):
    a = math.radians(angle_degrees)
    return [math.cos(a), math.sin(a)]


def matrix(vocab, rows, projected, english_vocab=("x",), english=((1.0, 0.0),)):
    return Embeddings(
        words=list(vocab),
        vectors=torch.tensor(rows),
        projected=torch.tensor(projected, dtype=torch.bool),
        english_words=list(english_vocab),
        english_vectors=torch.tensor(english),
    )


# a at 0°, b at 10°, c at 60°, d at 170° (d is a filled row)
WORDS = matrix(["[PAD]", "[UNK]", "a", "b", "c", "d"], [[0.0, 0.0], [1.0, 0.0], unit(0), unit(10), unit(60), unit(170)],
               [False, False, True, True, True, False])


def test_word_similarity_rho_coverage_and_filled_pairs():
    pairs = [("a", "b", 9.0), ("a", "c", 5.0), ("b", "c", 6.0), ("a", "d", 1.0), ("c", "d", 2.0), ("a", "zzz", 3.0)]
    r = word_similarity(WORDS, pairs)
    assert (r["pairs"], r["covered"]) == (6, 5)
    # cosines: ab .985, bc .766, ac .5, cd -.643, ad -.985: same order as the scores
    assert r["rho"] == pytest.approx(1.0)
    assert r["filled"]["covered"] == 2 and r["filled"]["rho"] == pytest.approx(1.0)
    assert r["projected"]["covered"] == 3 and r["projected"]["rho"] == pytest.approx(1.0)
    r = word_similarity(WORDS, [("a", "b", 1.0), ("a", "c", 2.0), ("b", "c", 3.0)])
    assert r["rho"] == pytest.approx(-0.5)


def test_read_wordsim_strips_words_and_names_bad_lines(tmp_path):
    (tmp_path / "ws.txt").write_text("钱\t 现金\t4.58\n", encoding="utf-8")
    assert read_wordsim(tmp_path / "ws.txt") == [("钱", "现金", 4.58)]
    (tmp_path / "bad.txt").write_text("钱\t现金\t4.5\n钱 现金 4\n", encoding="utf-8")
    with pytest.raises(XlembedError, match="bad.txt:2"):
        read_wordsim(tmp_path / "bad.txt")


# Chinese rows and English rows on the unit circle; "the" is a hub close to
# every query, which CSLS discounts.
LEXICON = matrix(
    ["[PAD]", "[UNK]", "猫", "狗", "书", "水"], [[0.0, 0.0], [1.0, 0.0], unit(0), unit(40), unit(90), unit(200)],
    [False, False, True, True, True, False],
    english_vocab=["cat", "the", "dog", "book", "water"], english=[unit(-12), unit(8), unit(52), unit(91), unit(200)])


def test_lexicon_induction_precision_at_k_and_coverage():
    gold = {"猫": {"cat"}, "狗": {"dog", "hound"}, "书": {"book"}, "水": {"water"}, "鱼": {"fish"}}
    r = lexicon_induction(LEXICON, gold, csls_k=0)
    # 猫 (0°): the 8° away, cat 12° -> miss; 狗 (40°): dog 12°, the 32° -> dog; 书: book;
    # 水 (a filled row) at water; 鱼 unknown
    assert (r["words"], r["covered"], r["covered_projected"]) == (5, 4, 3) and r["coverage"] == pytest.approx(0.8)
    assert r["cosine"]["p_at_1"] == pytest.approx(3 / 4) and r["cosine"]["p_at_1_all"] == pytest.approx(3 / 5)
    assert r["cosine"]["p_at_5"] == pytest.approx(1.0) and r["cosine"]["p_at_5_all"] == pytest.approx(4 / 5)
    assert "csls" not in r


def test_csls_discounts_hubs():
    r = lexicon_induction(LEXICON, {"猫": {"cat"}, "狗": {"dog"}, "书": {"book"}}, csls_k=2)
    assert r["cosine"]["p_at_1"] == pytest.approx(2 / 3)  # the hub "the" is 猫's nearest by cosine
    assert r["csls"]["p_at_1"] == pytest.approx(1.0) and r["csls_k"] == 2


def test_analogy_3cosadd_and_3cosmul():
    from xlembed.evaluate import analogy

    def at(degrees):
        return unit(degrees)
    m = matrix(
        ["[PAD]", "[UNK]", "男人", "女人", "国王", "女王", "猫"],
        [[0.0, 0.0], [1.0, 0.0], at(0), at(90), at(45), at(101), at(60)],
        [False, False, True, True, True, True, True],
    )
    questions = [("男人", "国王", "女人", "女王"),  # king - man + woman points at 100°: 女王
                 ("男人", "国王", "女人", "猫"),  # the same question with a wrong answer key: a miss
                 ("男人", "国王", "女人", "王后")]  # 王后 has no row: not covered
    r = analogy(m, questions)
    assert (r["questions"], r["covered"]) == (3, 2)
    assert r["three_cos_add"] == pytest.approx(0.5) and r["three_cos_mul"] == pytest.approx(0.5)


def test_evaluate_command_on_an_output_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    save_tensors(
        out / "embeddings.safetensors",
        {
            "embeddings": torch.tensor([[0.0, 0.0], [1.0, 0.0], unit(0), unit(10), unit(60)]),
            "projected": torch.tensor([0, 0, 1, 1, 1], dtype=torch.uint8),
        },
    )
    (out / "vocab.txt").write_text("[PAD]\n[UNK]\n猫\n狗\n书\n", encoding="utf-8")
    save_tensors(out / "english.safetensors", {"embeddings": torch.tensor([unit(1), unit(11), unit(61)])})
    (out / "english_vocab.txt").write_text("cat\ndog\nbook\n", encoding="utf-8")
    (tmp_path / "ws.txt").write_text("猫\t狗\t9\n猫\t书\t2\n狗\t书\t5\n猫\t鱼\t1\n", encoding="utf-8")
    (tmp_path / "dict.txt").write_text("猫\tcat\n狗\tdog\n狗\thound\n书\tbook\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", str(out), "--wordsim", str(tmp_path / "ws.txt"),
                                      "--dictionary", str(tmp_path / "dict.txt"), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "3/4" in result.output
    scores = json.loads((tmp_path / "r.json").read_text())
    assert scores["wordsim"][str(tmp_path / "ws.txt")]["rho"] == pytest.approx(1.0)
    assert (
        scores["lexicon_induction"]["cosine"]["p_at_1"] == pytest.approx(1.0)
        and scores["lexicon_induction"]["covered"] == 3
    )
    assert CliRunner().invoke(app, ["evaluate", str(out)]).exit_code == 2  # nothing asked


def test_dictionary_reads_tab_and_muse_space_formats(tmp_path):
    from xlembed.evaluate import read_dictionary

    (tmp_path / "d.txt").write_text("猫\tcat\n狗 dog\n狗 hound\n", encoding="utf-8")
    assert read_dictionary(tmp_path / "d.txt") == {"猫": {"cat"}, "狗": {"dog", "hound"}}
    (tmp_path / "bad.txt").write_text("猫\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"bad.txt:1: expected zh<TAB>en \(or zh en\)"):
        read_dictionary(tmp_path / "bad.txt")


def test_csls_radius_in_chunks_equals_the_whole_product():
    from xlembed.embeddings import csls_radius

    generator = torch.Generator().manual_seed(0)
    target = torch.nn.functional.normalize(torch.randn(7, 4, generator=generator), dim=1)
    source = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=1)
    whole = (target @ source.T).topk(3, dim=1).values.mean(1)
    assert torch.allclose(csls_radius(target, source, 3, chunk=2), whole)
    assert csls_radius(target[:0], source, 3).shape == (0,)
