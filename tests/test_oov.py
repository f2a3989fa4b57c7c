import math

import pytest
import torch

from xlembed.config import PAD, UNK
from xlembed.embeddings import format_vocab_tsv
from xlembed.errors import XlembedError
from xlembed.io import read_word_list
from xlembed.oov import Filler, fill_rows, pinyin_of, random_rows
from xlembed.project import ProjectedWord
from xlembed.write import build_matrix

# four projected words on a circle of radius 2 around the origin: the mean
# projected row is (0, 0) and every row is 2 away from it
WORDS = ["猫", "小猫", "狗", "丈浩", "账号"]
ROWS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0], [0.0, 0.0]], dtype=torch.float64)
FREQ = [1, 3, 1, 1, 1]


def filler():
    rows = ROWS.clone()
    rows[4] = torch.tensor([math.sqrt(2), math.sqrt(2)])  # 账号 at 45°, also 2 away
    return Filler(WORDS, rows - rows.mean(0), FREQ), rows - rows.mean(0)


def test_chars_composes_from_the_words_sharing_each_character():
    f, rows = filler()
    row, source = f.fill("猫咪", "chars")  # 咪 is in no projected word
    assert source == "chars"
    # 猫 is in 猫 (freq 1) and 小猫 (freq 3): their weighted mean, pushed out to the usual distance
    mean = (rows[0] * 1 + rows[1] * 3) / 4
    expected = f.centre + (mean - f.centre) * f.spread / (mean - f.centre).norm()
    torch.testing.assert_close(row, expected)
    assert (row - f.centre).norm().item() == pytest.approx(f.spread.item())


def test_pinyin_prefers_a_same_sound_variant_sharing_a_character():
    f, rows = filler()
    assert pinyin_of("帐号") == pinyin_of("账号") == pinyin_of("丈浩") == "zhàng hào"
    row, source = f.fill("帐号", "pinyin")
    assert source == "pinyin"
    torch.testing.assert_close(row, rows[4])  # 账号 only: 丈浩 sounds the same but shares no character
    assert f.fill("帐号", "chars")[1] == "chars"  # chars ignores sound: 号 is in 账号


def test_unreachable_words_fall_back_to_random():
    f, _ = filler()
    assert f.fill("🐱🐶", "chars") == (None, "random")
    assert f.fill("🐱🐶", "pinyin") == (None, "random")
    assert f.fill("猫咪", "random") == (None, "random")


ZH_ROWS = [
    ProjectedWord("猫", 5, "cat", 0.8),
    ProjectedWord("小猫", 2, "kitten", 1.0),
    ProjectedWord("狗", 1, "dog", 1.0),
    ProjectedWord("吗", 1, "", 0.0),
]
ZH_SUM = torch.tensor([[10.0, 0.0], [0.0, 4.0], [-2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
ZH_COUNT = torch.tensor([5, 2, 1, 0])


def test_user_vocabulary_keeps_its_order_and_records_sources():
    vocab, rows, projected, info = build_matrix(
        ZH_ROWS, ZH_SUM, ZH_COUNT, 1, 1, 0, "chars", ["狗", "猫咪", UNK, "吗", "猫", "🐱"]
    )
    assert vocab == ["狗", "猫咪", UNK, "吗", "猫", "🐱"]
    assert [row.source for row in info] == [
        "projected",
        "chars",
        "special",
        "random",
        "projected",
        "random",
    ]  # no projected word holds 吗
    assert projected.tolist() == [1, 0, 0, 0, 1, 0]
    assert rows[0].tolist() == [-2.0, 0.0] and rows[4].tolist() == [2.0, 0.0]
    assert info[4][1:5] == (5, "projected", "cat", 0.8)
    assert info[1][1:5] == (0, "chars", "", 0.0)  # never in the corpus
    assert info[3].freq == 1  # 吗 was in the corpus, but never aligned: filled
    tsv = format_vocab_tsv(info).splitlines()
    assert tsv[0] == "word\tfreq\tsource\taligned_en\tp_en_given_zh\tpinyin"
    assert tsv[5] == "猫\t5\tprojected\tcat\t0.8\tmāo"
    assert tsv[3] == f"{UNK}\t0\tspecial\t\t0\t"


def test_default_vocabulary_and_random_fill_are_unchanged_by_the_strategy_choice():
    vocab, rows, projected, info = build_matrix(ZH_ROWS, ZH_SUM, ZH_COUNT, 1, 1, 0, "random")
    assert vocab == [PAD, UNK, "猫", "小猫", "狗", "吗"]
    assert [row.source for row in info] == ["special", "special", "projected", "projected", "projected", "random"]
    _, chars_rows, _, _ = build_matrix(ZH_ROWS, ZH_SUM, ZH_COUNT, 1, 1, 0, "chars")
    torch.testing.assert_close(rows[:5], chars_rows[:5])  # only the filled row differs


def test_bad_oov_strategy_and_vocabulary_files(tmp_path):
    with pytest.raises(ValueError, match="sound"):
        build_matrix(ZH_ROWS, ZH_SUM, ZH_COUNT, 1, 1, 0, "sound")
    (tmp_path / "v.txt").write_text("猫\n狗\n猫\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"v.txt:3: '猫' is already on line 1"):
        read_word_list(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("猫\n\n狗\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"v.txt:2: expected one word per line"):
        read_word_list(tmp_path / "v.txt")


MANY = ["猫咪", "🐱🐶", "帐号", "小狗", "猫", "号码", "浩", "🐶"]


@pytest.mark.parametrize("strategy", ["chars", "pinyin", "random"])
def test_filling_many_words_at_once_gives_each_word_its_own_row_bit_for_bit(strategy):
    # one batched compose over every word must equal composing each word alone (the former per-word path)
    f, _ = filler()
    f32 = Filler(WORDS, f.rows.float(), FREQ)  # write's rows are float32
    for fl in (f, f32):
        rows, sources = fl.fill_many(MANY, strategy)
        assert rows.dtype == torch.float64 and rows.shape == (len(MANY), 2)
        for i, word in enumerate(MANY):
            alone = fl.pinyin(word) if strategy == "pinyin" else None
            source = "pinyin" if alone is not None else "random"
            if alone is None and strategy != "random":
                alone = fl.chars(word)
                source = "chars" if alone is not None else "random"
            assert sources[i] == source, word
            if alone is None:
                assert rows[i].tolist() == [0.0, 0.0]
            else:
                assert torch.equal(rows[i], alone.double()), word
    assert f.fill_many(MANY, "pinyin")[1] == ["chars", "random", "pinyin", "chars", "chars", "chars", "chars", "random"]


def test_fill_rows_draws_random_rows_in_order_for_the_unreached_words_only():
    f, _ = filler()
    mean, std = torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    rows, sources = fill_rows(MANY, "chars", f, mean, std, seed=7)
    unreached = [i for i, s in enumerate(sources) if s == "random"]
    assert unreached == [1, 7]
    assert torch.equal(rows[unreached], random_rows(2, mean, std, 7))
    composed, has = f.compose([MANY[i] for i in range(len(MANY)) if i not in unreached])
    assert bool(has.all()) and torch.equal(rows[[i for i in range(len(MANY)) if i not in unreached]], composed)
    all_random, all_sources = fill_rows(MANY, "random", None, mean, std, seed=7)
    assert all_sources == ["random"] * len(MANY) and torch.equal(all_random, random_rows(len(MANY), mean, std, 7))


# --- context (à la carte) ----------------------------------------------------------------------------

CONTEXT_WORDS = ["猫", "狗", "鱼", "鸟", "马", "牛", "羊"]  # 7 projected words in d = 4: enough to fit a 4 x 4 map


def context_filler() -> Filler:
    rows = torch.randn((len(CONTEXT_WORDS), 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return Filler(CONTEXT_WORDS, rows, [7, 6, 5, 4, 3, 2, 1])


def test_context_sums_add_the_projected_rows_around_each_occurrence_within_its_sentence():
    from xlembed.oov import CONTEXT_WINDOW, context_sums

    f = context_filler()
    far = ["的"] * CONTEXT_WINDOW  # not projected: they count nothing, and push 牛 out of the window
    texts = [["甲", "猫", "狗"], ["鱼", "x", "甲"], ["甲"], ["马"], ["甲", *far, "牛"], ["乙", "乙"]]
    sums = context_sums(texts, ["甲", "乙", "猫"], f)
    r = dict(zip(CONTEXT_WORDS, f.rows))
    torch.testing.assert_close(sums.sum[0].double(), r["猫"] + r["狗"] + r["鱼"])  # 马: another sentence; 牛: too far
    assert sums.count.tolist() == [3, 0, 1] and sums.occurrences.tolist() == [4, 2, 1]  # 乙 beside 乙: no row
    torch.testing.assert_close(sums.sum[2].double(), r["狗"])  # 猫's context: 狗 (甲 has no row)


def test_context_sums_cut_a_very_long_line_into_pieces(monkeypatch):
    """A document on one line is read a piece of TOKENS_PER_BLOCK words at a time: memory stays
    bounded, and only the words beside a cut lose context across it."""
    import xlembed.oov as oov

    f = context_filler()
    line = ["猫", "甲", "狗", "x", "甲", "鱼"]
    whole = oov.context_sums([line], ["甲"], f)
    monkeypatch.setattr(oov, "TOKENS_PER_BLOCK", 3)  # pieces 猫 甲 狗 | x 甲 鱼
    cut = oov.context_sums([line], ["甲"], f)
    assert whole.count.tolist() == [6] and cut.count.tolist() == [3] and cut.occurrences.tolist() == [2]
    torch.testing.assert_close(cut.sum[0].double(), f.rows[0] + f.rows[1] + f.rows[2])


def test_context_fill_maps_the_company_a_word_keeps_and_mixes_in_its_characters():
    """甲 keeps 猫's company exactly, so it gets the row the fitted map gives 猫's contexts, at the
    compositions' distance from the centre; 猫甲 also has a character composition: the two averaged;
    丙 is in no text and has no known character: random."""
    from xlembed.oov import context_rows

    f = context_filler()
    texts = [[a, b] for a in CONTEXT_WORDS for b in CONTEXT_WORDS if a != b]  # every projected word beside the others
    texts += [["甲", b] for b in CONTEXT_WORDS if b != "猫"] + [["猫甲", "狗"], ["猫甲", "鱼"]]
    has, rows = context_rows(texts, ["甲", "丙", "猫", "猫甲"], f)  # rows of 甲, 猫, 猫甲
    assert has.tolist() == [True, False, True, True] and rows.shape == (3, 4)
    torch.testing.assert_close(rows[0], rows[1])  # the same company, the same row
    assert float((rows[0] - f.centre).norm()) == pytest.approx(float(f.spread))
    filled, sources = f.fill_many(["甲", "丙", "猫甲"], "context", texts)
    assert sources == ["context", "random", "context"]
    torch.testing.assert_close(filled[0], rows[0])
    composed, _ = f.compose(["猫甲"])
    torch.testing.assert_close(filled[2], (composed[0] + rows[2]) / 2)
    # with no text (extend: no corpus) `context` is `chars`; nothing to fill: nothing read
    assert f.fill_many(["甲", "丙", "猫甲"], "context")[1] == ["random", "random", "chars"]
    assert f.fill_many([], "context", iter(lambda: 1 / 0, None))[1] == []


def test_context_fill_needs_more_fitted_words_than_dimensions():
    from xlembed.oov import context_rows

    f = Filler(CONTEXT_WORDS[:4], context_filler().rows[:4], [1, 1, 1, 1])  # 4 words in d = 4: no map
    has, rows = context_rows([["甲", "猫", "狗"], ["猫", "鱼", "鸟"]], ["甲"], f)
    assert has.tolist() == [False] and rows.shape == (0, 4)


def test_write_reads_the_corpus_then_the_users_text_for_context(tmp_path):
    """build_matrix hands `texts` to the context fill (甲 gets a context row), and context_texts
    yields the corpus's segmented lines, then --context's lines segmented as tokenize does (.gz too)."""
    import gzip
    from types import SimpleNamespace

    from xlembed.layout import WorkDir
    from xlembed.write import context_texts

    f = context_filler()
    words = [ProjectedWord(w, n, "", 0.0) for w, n in zip(CONTEXT_WORDS, [7, 6, 5, 4, 3, 2, 1])]
    counts = torch.ones(len(CONTEXT_WORDS), dtype=torch.int64)
    texts = [[a, b] for a in CONTEXT_WORDS for b in CONTEXT_WORDS if a != b] + [["甲", "狗"]]
    _, _, _, info = build_matrix(words, f.rows, counts, 1, 1, 0, "context", [PAD, UNK, "甲", "乙"], 0.0, texts)
    assert [r.source for r in info] == ["special", "special", "context", "random"]
    work = WorkDir(tmp_path)
    work.corpus_zh.write_text("猫 狗\n鱼\n", encoding="utf-8")
    with gzip.open(tmp_path / "mine.txt.gz", "wt", encoding="utf-8") as out:
        out.write("我喜欢猫\r\n")
    opts = SimpleNamespace(context=tmp_path / "mine.txt.gz")
    read = list(context_texts(work, opts, {"user_dict": None, "hmm": True}))
    assert read == [["猫", "狗"], ["鱼"], ["我", "喜欢", "猫"]]


def test_the_users_text_is_segmented_by_workers_in_order_with_progress(tmp_path, monkeypatch):
    """--context's lines go through tokenize's worker processes (more than one chunk here), in
    input order, the same words as one process gives, and each line advances a 'context' task."""
    import os
    from types import SimpleNamespace

    import xlembed.write
    from xlembed.layout import WorkDir
    from xlembed.progress import CallbackReporter
    from xlembed.tokenize import CHUNK, recorded_splitter
    from xlembed.write import context_texts

    def tagging_splitter(*args):
        split = recorded_splitter(*args)
        return lambda text: split(text) + [f"pid={os.getpid()}"]

    monkeypatch.setattr(xlembed.write, "recorded_splitter", tagging_splitter)

    work = WorkDir(tmp_path)
    work.corpus_zh.write_text("猫 狗\n", encoding="utf-8")
    lines = [f"我喜欢第{i}只猫" if i % 2 else f"足球{i}很好看" for i in range(2 * CHUNK + 5)]
    (tmp_path / "mine.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    opts = SimpleNamespace(context=tmp_path / "mine.txt")
    seen = []
    reporter = CallbackReporter(lambda *event: seen.append(event))
    by_two = list(context_texts(work, opts, {"user_dict": None, "hmm": True, "workers": 2}, reporter))
    by_one = list(context_texts(work, opts, {"user_dict": None, "hmm": True, "workers": 1}))
    splitter_pids = {words.pop() for words in by_two[1:]}
    assert splitter_pids and f"pid={os.getpid()}" not in splitter_pids  # worker processes, not this one
    assert {words.pop() for words in by_one[1:]} == {f"pid={os.getpid()}"}
    assert by_two == by_one and len(by_two) == 1 + len(lines)
    assert by_two[1][0] == "足球" and by_two[2][:2] == ["我", "喜欢"]
    assert seen[-1] == ("context", len(lines), len(lines), "lines") and len(seen) == len(lines)
