import pytest

from xlembed.align import format_links, grow_diag_final_and, parse_links, read_lexicon, symmetrize
from xlembed.errors import XlembedError

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
    from xlembed.layout import WorkDir

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
    assert lexicon["猫"] == [
        ("cat", 1, pytest.approx(1 / 3)),
        ("cats", 1, pytest.approx(1 / 3)),
        ("the", 1, pytest.approx(1 / 3)),
    ]
    assert lexicon["水"] == [("water", 1, 1.0)]
    symmetrize_and_count(work, "intersect")
    assert work.links.read_text().splitlines() == ["0-0 1-1 2-2", "0-1 1-3"]
    assert read_lexicon(work.lexicon)["猫"] == [
        ("cat", 1, 0.5),
        ("cats", 1, 0.5),
    ]  # 0-0 is in both directions of line 1


def test_alignment_in_parts_in_this_process_aligns_every_pair_and_leaves_no_temporary_files(tmp_path):
    """--align-shards with the local executor: parts one after another, from priors of a sample;
    every pair gets links within its sentences, and the work directory keeps no part's files."""
    from xlembed.align import align_lines
    from xlembed.config import AlignConfig

    zh = [f"{s} {v} {o} 。" for s in ("我", "你", "他") for v in ("喜欢", "读") for o in ("猫", "书", "茶")] * 4
    en = [f"{s} {v} {o} ." for s in ("i", "you", "he") for v in ("like", "read") for o in ("cats", "books", "tea")] * 4
    scratch = tmp_path / "work" / "tmp"
    scratch.parent.mkdir()
    parts = align_lines(
        zh, en, tmp_path / "fwd", tmp_path / "rev", AlignConfig(align_shards=3, prior_sample=20), scratch
    )
    assert parts == 3
    for path in (tmp_path / "fwd", tmp_path / "rev"):
        lines = path.read_text().splitlines()
        assert len(lines) == len(zh)
        assert all(int(i) < 4 and int(j) < 4 for line in lines for i, j in (link.split("-") for link in line.split()))
    assert not [p for p in scratch.parent.rglob("*") if p.name.startswith(("part-", "prior-"))]
