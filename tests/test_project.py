import pytest
import torch

from xlembed.config import Config
from xlembed.layout import WorkDir
from xlembed.project import ProjectedWord, load_projection, project
from xlembed.write import build_matrix

from .conftest import write_fake_encoding

# Two sentence pairs with hand-made alignments and known English vectors.
#   0: 猫 喝 水 | cat drinks water        links 0-0 1-1 2-2
#   1: 猫 很 好 | the cat is good         links 0-0 0-1 2-3
#   2: 猫 水 | cat water                  links 0-0 1-1
ZH = ["猫 喝 水", "猫 很 好", "猫 水"]
EN = ["cat drinks water", "the cat is good", "cat water"]
LINKS = ["0-0 1-1 2-2", "0-0 0-1 2-3", "0-0 1-1"]
VECTORS = {
    (0, 0): [1.0, 0.0], (0, 1): [0.0, 1.0], (0, 2): [2.0, 2.0],
    (1, 0): [5.0, 5.0], (1, 1): [3.0, 1.0], (1, 2): [9.0, 9.0], (1, 3): [0.5, 0.25],
    (2, 0): [2.0, 0.0], (2, 1): [4.0, 4.0],
}
# lexicon of 猫: cat 3 links, the 1 link -> argmax = cat


def make_work(tmp_path, shard_rows=2) -> WorkDir:
    work = WorkDir(tmp_path / "work")
    work.root.mkdir(parents=True)
    work.corpus_zh.write_text("\n".join(ZH) + "\n", encoding="utf-8")
    work.corpus_en.write_text("\n".join(EN) + "\n", encoding="utf-8")
    work.links.write_text("\n".join(LINKS) + "\n", encoding="utf-8")
    work.lexicon.write_text(
        "zh\ten\tcount\tp_en_given_zh\n"
        "喝\tdrinks\t1\t1\n好\tgood\t1\t1\n水\twater\t2\t1\n猫\tcat\t3\t0.75\n猫\tthe\t1\t0.25\n", encoding="utf-8")
    write_fake_encoding(work, [s.split() for s in EN], VECTORS, shard_rows=shard_rows)
    return work


def rows_by_word(work):
    projection = load_projection(work)
    tensors, zh_rows = projection.tensors, projection.zh_words
    mean = tensors["zh_sum"].double() / tensors["zh_count"].clamp(min=1).unsqueeze(1)  # as write averages
    return {w: (mean[k].tolist(), int(tensors["zh_count"][k])) for k, (w, *_rest) in enumerate(zh_rows)}


@pytest.mark.parametrize("shard_rows", [1, 2, 100])
def test_argmax_averages_the_best_translation_over_its_contexts(tmp_path, shard_rows):
    work = make_work(tmp_path, shard_rows)
    project(Config().set(strategy="argmax").validate(("project",)), work)
    rows = rows_by_word(work)
    assert rows["猫"] == ([2.0, 1.0 / 3], 3)  # cat in sentences 0, 1, 2: (1,0) (3,1) (2,0)
    assert rows["水"] == ([3.0, 3.0], 2)  # water: (2,2) and (4,4)
    assert rows["好"] == ([0.5, 0.25], 1)
    assert rows["很"] == ([0.0, 0.0], 0)  # unaligned: no projected vector


def test_weighted_averages_every_aligned_english_word(tmp_path):
    work = make_work(tmp_path)
    project(Config().set(strategy="weighted").validate(("project",)), work)
    rows = rows_by_word(work)
    # cat (1,0) + the (5,5) + cat (3,1) + cat (2,0) over 4 links
    assert rows["猫"] == ([11.0 / 4, 6.0 / 4], 4)


def test_english_vectors_average_every_occurrence(tmp_path):
    work = make_work(tmp_path)
    project(Config().set().validate(("project",)), work)
    projection = load_projection(work)
    tensors, en_vocab = projection.tensors, projection.en_words
    en = dict(zip(en_vocab, (tensors["en_sum"].double() / tensors["en_count"].unsqueeze(1)).tolist()))
    assert en["cat"] == [2.0, 1.0 / 3]
    assert en["water"] == [3.0, 3.0]
    assert en_vocab[:2] == ["cat", "water"]  # most frequent first


def test_stopwords_leave_the_vocabulary(tmp_path):
    work = make_work(tmp_path)
    (tmp_path / "stop.txt").write_text("很\n喝\n", encoding="utf-8")
    project(Config().set(stopwords=tmp_path / "stop.txt").validate(("project",)), work)
    assert set(rows_by_word(work)) == {"猫", "水", "好"}


def test_projection_statistics_are_additive(tmp_path):
    """Projecting two halves and adding sums and counts gives the whole."""
    whole = make_work(tmp_path / "whole")
    project(Config().set().validate(("project",)), whole)
    t_whole, zh_whole = load_projection(whole).tensors, load_projection(whole).zh_words
    sums, counts = {}, {}
    for part, idx in (("a", [0]), ("b", [1, 2])):
        work = WorkDir(tmp_path / part / "work")
        work.root.mkdir(parents=True)
        work.corpus_zh.write_text("".join(ZH[i] + "\n" for i in idx), encoding="utf-8")
        work.corpus_en.write_text("".join(EN[i] + "\n" for i in idx), encoding="utf-8")
        work.links.write_text("".join(LINKS[i] + "\n" for i in idx), encoding="utf-8")
        work.lexicon.write_bytes(whole.lexicon.read_bytes())  # the same argmax choices
        vec = {(n, j): VECTORS[(i, j)] for n, i in enumerate(idx) for j in range(len(EN[i].split()))}
        write_fake_encoding(work, [EN[i].split() for i in idx], vec)
        project(Config().set().validate(("project",)), work)
        t, zh_rows = load_projection(work).tensors, load_projection(work).zh_words
        for k, (w, *_rest) in enumerate(zh_rows):
            sums[w] = sums.get(w, 0) + t["zh_sum"][k]
            counts[w] = counts.get(w, 0) + int(t["zh_count"][k])
    for k, (w, *_rest) in enumerate(zh_whole):
        assert torch.equal(sums[w], t_whole["zh_sum"][k])
        assert counts[w] == int(t_whole["zh_count"][k])


def test_build_matrix_rows_specials_and_min_count():
    zh_rows = [
        ProjectedWord("猫", 3, "cat", 0.75),
        ProjectedWord("水", 2, "water", 1.0),
        ProjectedWord("很", 1, "", 0.0),
        ProjectedWord("好", 1, "good", 1.0),
    ]
    zh_sum = torch.tensor([[6.0, 2.0], [6.0, 6.0], [0.0, 0.0], [0.5, 0.25]], dtype=torch.float64)
    zh_count = torch.tensor([3, 2, 0, 1])
    vocab, rows, projected, _ = build_matrix(zh_rows, zh_sum, zh_count, min_count=1, min_freq=1, seed=0)
    assert vocab == ["[PAD]", "[UNK]", "猫", "水", "很", "好"]
    assert projected.tolist() == [0, 0, 1, 1, 0, 1]
    assert rows[0].tolist() == [0.0, 0.0]
    assert rows[2].tolist() == [2.0, pytest.approx(2.0 / 3)]
    assert rows[1].tolist() == pytest.approx([(2 + 3 + 0.5) / 3, (2 / 3 + 3 + 0.25) / 3])  # [UNK] = mean projected row
    # min_count 2 drops 好's single context; min_freq 2 drops the rare words
    vocab, rows, projected, _ = build_matrix(zh_rows, zh_sum, zh_count, min_count=2, min_freq=2, seed=0)
    assert vocab == ["[PAD]", "[UNK]", "猫", "水"]
    assert projected.tolist() == [0, 0, 1, 1]


def test_filled_rows_follow_the_projected_rows_mean_and_spread():
    generator = torch.Generator().manual_seed(1)
    n_projected, n_filled = 3000, 3000
    projected_rows = torch.randn((n_projected, 4), generator=generator, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 0.5, 3.0]
    ) + torch.tensor([5.0, -1.0, 0.0, 2.0])
    zh_rows = [ProjectedWord(f"w{k}", 1, "", 0.0) for k in range(n_projected + n_filled)]
    zh_sum = torch.cat([projected_rows, torch.zeros((n_filled, 4), dtype=torch.float64)])
    zh_count = torch.cat([torch.ones(n_projected, dtype=torch.int64), torch.zeros(n_filled, dtype=torch.int64)])
    _, rows, projected, _ = build_matrix(zh_rows, zh_sum, zh_count, min_count=1, min_freq=1, seed=0)
    filled = rows[2:][projected[2:] == 0].double()
    assert len(filled) == n_filled
    torch.testing.assert_close(filled.mean(0), projected_rows.mean(0), atol=0.15, rtol=0)
    torch.testing.assert_close(filled.std(0), projected_rows.std(0), atol=0, rtol=0.06)
    _, again, _, _ = build_matrix(zh_rows, zh_sum, zh_count, min_count=1, min_freq=1, seed=0)
    assert torch.equal(rows, again)


def test_argmax_occurrence_takes_the_most_probable_aligned_word_at_each_occurrence(tmp_path):
    # sentence 3: 猫 is aligned to "the" alone: argmax (per type) skips it,
    # argmax-occurrence takes "the" there; in sentence 1 (cat and the both
    # aligned) it takes cat, the more probable one
    work = make_work(tmp_path)
    zh, en, links = ZH + ["猫"], EN + ["the"], LINKS + ["0-0"]
    work.corpus_zh.write_text("\n".join(zh) + "\n", encoding="utf-8")
    work.corpus_en.write_text("\n".join(en) + "\n", encoding="utf-8")
    work.links.write_text("\n".join(links) + "\n", encoding="utf-8")
    write_fake_encoding(work, [s.split() for s in en], VECTORS | {(3, 0): [7.0, 7.0]}, shard_rows=2)

    project(Config().set(strategy="argmax").validate(("project",)), work)
    assert rows_by_word(work)["猫"] == ([2.0, 1.0 / 3], 3)  # cat (1,0) (3,1) (2,0)
    project(Config().set(strategy="argmax-occurrence").validate(("project",)), work, force=True)
    rows = rows_by_word(work)
    assert rows["猫"] == ([13.0 / 4, 2.0], 4)  # cat (1,0) (3,1) (2,0) and the (7,7)
    assert rows["水"] == ([3.0, 3.0], 2)  # one link per occurrence: as argmax
    project(Config().set(strategy="weighted").validate(("project",)), work, force=True)
    assert rows_by_word(work)["猫"] == ([18.0 / 5, 13.0 / 5], 5)  # and (5,5), the in sentence 1


class FixedComposition:
    """A stand-in for oov.Filler: 猫's characters compose to (10, 0); 狗 has none."""

    def compose(self, words, leave_out=False):
        assert leave_out
        has = torch.tensor(["猫" in w for w in words])
        return torch.tensor([[10.0, 0.0]] * len(words), dtype=torch.float64) * has.unsqueeze(1), has


def test_shrink_pulls_rows_toward_their_characters_by_how_often_they_were_aligned():
    from xlembed.write import shrink_to_chars

    means = torch.zeros((3, 2), dtype=torch.float64)
    counts = torch.tensor([1, 3, 1])
    rows = shrink_to_chars(["猫", "小猫", "狗"], means, counts, FixedComposition(), k=1.0)
    assert rows.tolist() == [[5.0, 0.0], [2.5, 0.0], [0.0, 0.0]]  # (n * 0 + 1 * 10) / (n + 1); 狗 unchanged
    assert shrink_to_chars(["猫"], means[:1], counts[:1], FixedComposition(), k=3.0).tolist() == [[7.5, 0.0]]


def test_build_matrix_shrink_moves_a_word_aligned_once_more_than_one_aligned_often():
    words = [
        ProjectedWord("猫", 1, "cat", 1.0),
        ProjectedWord("小猫", 9, "kitten", 1.0),
        ProjectedWord("狗", 9, "dog", 1.0),
    ]
    zh_sum = torch.tensor([[1.0, 0.0], [0.0, 9.0], [-9.0, -9.0]], dtype=torch.float64)
    zh_count = torch.tensor([1, 9, 9])
    vocab, plain, _, _ = build_matrix(words, zh_sum, zh_count, min_count=1, min_freq=1, seed=0)
    _, shrunk, _, _ = build_matrix(words, zh_sum, zh_count, min_count=1, min_freq=1, seed=0, shrink=1.0)
    moved = dict(zip(vocab, (shrunk - plain).norm(dim=1).tolist()))
    assert moved["猫"] > 3 * moved["小猫"] > 0
    assert moved["狗"] == 0  # shares no character with another projected word: its own row


def test_every_strategy_has_its_own_rule_and_a_registered_rule_is_used(tmp_path, monkeypatch):
    from xlembed import strategies
    from xlembed.config import Strategy

    rules = [strategies.rule_for(s).choose for s in Strategy]
    assert len(set(rules)) == len(Strategy)  # no member falls through to another's rule
    monkeypatch.setitem(
        strategies.STRATEGIES, "first-link-only", strategies.Rule(lambda links, zh, en, lexicon: links[:1], False)
    )
    work = make_work(tmp_path)
    config = Config()
    config.project.strategy = "first-link-only"  # a research variant's name: not a CLI option
    project(config, work)
    rows = rows_by_word(work)
    assert rows["猫"] == ([8.0 / 3, 5.0 / 3], 3) and rows["喝"] == ([0.0, 0.0], 0)  # 0-0 only: cat, the (5,5), cat
    with pytest.raises(Exception, match="no rule is registered for 'nothing'"):
        strategies.rule_for("nothing")
