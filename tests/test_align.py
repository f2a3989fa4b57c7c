import pytest

from xlembed.align import format_links, grow_diag_final_and, parse_links, read_lexicon, symmetrize
from xlembed.io import XlembedError

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
    from xlembed.config import WorkDir

    work = WorkDir(tmp_path)
    work.corpus_zh.write_text("猫 喝 水\n猫 好\n", encoding="utf-8")
    work.corpus_en.write_text("cats drink water\nthe cat is good\n", encoding="utf-8")
    work.links_forward.write_text("0-0 1-1 2-2\n0-0 0-1 1-3\n", encoding="utf-8")
    work.links_reverse.write_text("0-0 1-1 2-2\n0-1 1-3\n", encoding="utf-8")
    pairs, links, _ = symmetrize_and_count(work, "union")
    assert (pairs, links) == (2, 6)
    assert work.links.read_text().splitlines() == ["0-0 1-1 2-2", "0-0 0-1 1-3"]
    lexicon = read_lexicon(work.lexicon)
    # 猫: cats 1, the 1, cat 1 -> p = 1/3 each, ties by word
    assert lexicon["猫"] == [("cat", 1, pytest.approx(1 / 3)), ("cats", 1, pytest.approx(1 / 3)), ("the", 1, pytest.approx(1 / 3))]
    assert lexicon["水"] == [("water", 1, 1.0)]
    symmetrize_and_count(work, "intersect")
    assert work.links.read_text().splitlines() == ["0-0 1-1 2-2", "0-1 1-3"]
    assert read_lexicon(work.lexicon)["猫"] == [("cat", 1, 0.5), ("cats", 1, 0.5)]  # 0-0 is in both directions of line 1
