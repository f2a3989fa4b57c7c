import gzip

import pytest

from xlembed.config import Config
from xlembed.errors import XlembedError
from xlembed.layout import WorkDir
from xlembed.tokenize import chinese_splitter, english_splitter, tokenize


def run(tmp_path, model, **files):
    work = WorkDir(tmp_path / "work")
    record = tokenize(Config().set(model=model, **files).validate(("tokenize",)), work)
    return record, work.corpus_en.read_text("utf-8").splitlines(), work.corpus_zh.read_text("utf-8").splitlines()


def test_english_is_split_like_the_model_pre_tokenizes(tiny_bert):
    split = english_splitter(tiny_bert)
    assert split("Hello, World! I don't   like CATS.") == [
        "hello",
        ",",
        "world",
        "!",
        "i",
        "don",
        "'",
        "t",
        "like",
        "cats",
        ".",
    ]
    assert split("Café") == ["cafe"]  # the uncased model strips accents too


def test_chinese_is_nfkc_normalised_and_segmented_without_whitespace_tokens():
    split = chinese_splitter()
    assert split("我喜欢猫。") == ["我", "喜欢", "猫", "。"]
    assert split("ＡＢＣ　我\t喜欢") == ["ABC", "我", "喜欢"]  # full-width letters and space folded by NFKC


def test_jieba_user_dictionary(tmp_path):
    assert "喜欢猫" not in chinese_splitter()("我喜欢猫")
    (tmp_path / "dict.txt").write_text("喜欢猫 100000\n", encoding="utf-8")
    assert chinese_splitter(tmp_path / "dict.txt")("我喜欢猫") == ["我", "喜欢猫"]


def test_tsv_with_bom_crlf_and_third_column(tmp_path, tiny_bert):
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes("\ufeffHello.\t你好。\tCC-BY attribution\r\nI like cats.\t我喜欢猫。\tx\r\n".encode("utf-8"))
    record, en, zh = run(tmp_path, tiny_bert, tsv=tsv)
    assert en == ["hello .", "i like cats ."]
    assert zh == ["你好 。", "我 喜欢 猫 。"]
    assert record["counts"]["pairs_kept"] == 2 and record["counts"]["pairs_dropped"] == 0


def test_tsv_columns_are_selectable(tmp_path, tiny_bert):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id1\t猫\tcat\n", encoding="utf-8")
    _, en, zh = run(tmp_path, tiny_bert, tsv=tsv, en_column=3, zh_column=2)
    assert (en, zh) == (["cat"], ["猫"])


def test_empty_pairs_are_dropped_from_both_sides_and_the_rest_stay_paired(tmp_path, tiny_bert):
    (tmp_path / "en.txt").write_text("the cat .\n\n...\nthe dog .\n   \nwater\n", encoding="utf-8")
    (tmp_path / "zh.txt").write_text("猫。\n书\n点\n狗。\n水\n   \n", encoding="utf-8")
    record, en, zh = run(tmp_path, tiny_bert, en=tmp_path / "en.txt", zh=tmp_path / "zh.txt")
    assert en == ["the cat .", ". . .", "the dog ."]
    assert zh == ["猫 。", "点", "狗 。"]
    assert record["counts"]["dropped_empty_en"] == 2  # lines 2 and 5
    assert record["counts"]["dropped_empty_zh"] == 1  # line 6
    assert record["counts"]["pairs_dropped"] == 3


def test_gzip_input(tmp_path, tiny_bert):
    with gzip.open(tmp_path / "en.txt.gz", "wt", encoding="utf-8") as f:
        f.write("the cat\n")
    with gzip.open(tmp_path / "zh.txt.gz", "wt", encoding="utf-8") as f:
        f.write("猫\n")
    _, en, zh = run(tmp_path, tiny_bert, en=tmp_path / "en.txt.gz", zh=tmp_path / "zh.txt.gz")
    assert (en, zh) == (["the cat"], ["猫"])


def test_different_line_counts_name_both_counts(tmp_path, tiny_bert):
    (tmp_path / "en.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "zh.txt").write_text("甲\n乙\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"en.txt has 3 lines, .*zh.txt has 2"):
        run(tmp_path, tiny_bert, en=tmp_path / "en.txt", zh=tmp_path / "zh.txt")
    assert not (tmp_path / "work" / "corpus.en").exists()


def test_invalid_utf8_names_file_and_line(tmp_path, tiny_bert):
    (tmp_path / "en.txt").write_bytes(b"the cat\nthe \xff dog\n")
    (tmp_path / "zh.txt").write_text("猫\n狗\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"en.txt:2: not valid UTF-8"):
        run(tmp_path, tiny_bert, en=tmp_path / "en.txt", zh=tmp_path / "zh.txt")


def test_tsv_with_too_few_columns_names_the_line(tmp_path, tiny_bert):
    (tmp_path / "c.tsv").write_text("cat\t猫\ndog only\n", encoding="utf-8")
    with pytest.raises(XlembedError, match=r"c.tsv:2: has 1 tab-separated column"):
        run(tmp_path, tiny_bert, tsv=tmp_path / "c.tsv")


def test_missing_file_and_empty_corpus(tmp_path, tiny_bert):
    with pytest.raises(XlembedError, match="nope.tsv: file does not exist"):
        run(tmp_path, tiny_bert, tsv=tmp_path / "nope.tsv")
    (tmp_path / "c.tsv").write_text("...\t\n\t\n", encoding="utf-8")
    with pytest.raises(XlembedError, match="no sentence pair left"):
        run(tmp_path, tiny_bert, tsv=tmp_path / "c.tsv")


def test_parallel_tokenization_gives_identical_output_and_errors(tmp_path, tiny_bert):
    from .conftest import TATOEBA

    lines = TATOEBA.read_text(encoding="utf-8-sig").splitlines()[:7000]
    lines[100] = "\t"  # an empty pair, dropped
    lines[5000] = "Zero\u200bwidth\tand 中\x00文"
    (tmp_path / "c.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, outputs = [], []
    for workers in (1, 3):
        work = WorkDir(tmp_path / f"w{workers}")
        records.append(
            tokenize(
                Config().set(tsv=tmp_path / "c.tsv", model=tiny_bert, workers=workers).validate(("tokenize",)), work
            )
        )
        outputs.append((work.corpus_en.read_bytes(), work.corpus_zh.read_bytes()))
    assert outputs[0] == outputs[1]
    assert records[0]["counts"] == records[1]["counts"] and records[0]["counts"]["pairs_read"] == 7000
    assert records[0]["key"] == records[1]["key"]  # the number of workers is not part of the cache key
    (tmp_path / "bad.tsv").write_bytes("\n".join(lines[:6000]).encode() + b"\ncaf\xe9\t\xe5\x92\x96\n")
    with pytest.raises(XlembedError, match=r"bad.tsv:6001: not valid UTF-8"):
        tokenize(
            Config().set(tsv=tmp_path / "bad.tsv", model=tiny_bert, workers=2).validate(("tokenize",)),
            WorkDir(tmp_path / "bad"),
        )


def test_count_lines_counts_a_last_line_without_a_newline(tmp_path):
    from xlembed.io import read_lines
    from xlembed.tokenize import count_lines

    for text in (b"", b"a\n", b"a\nb", b"a\nb\n", b"a\r\n\nb"):
        (tmp_path / "t.txt").write_bytes(text)
        assert count_lines(tmp_path / "t.txt") == len(list(read_lines(tmp_path / "t.txt"))), text


def test_a_worker_process_that_dies_is_a_one_line_error_not_a_hang():
    """split_rows' workers: one killed mid-chunk (as by the out-of-memory killer) ends the
    split with an XlembedError (multiprocessing.Pool would wait for its chunk forever)."""
    import os
    import signal

    from xlembed.errors import XlembedError
    from xlembed.tokenize import CHUNK, split_rows

    def split(text):
        if text == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        return text.split()

    rows = [("a b",)] * (CHUNK + 5) + [("die",)] + [("c",)] * 10
    assert list(split_rows(rows[:CHUNK + 5] + rows[-10:], (split,), 2))[-1] == (["c"],)  # no death: all rows
    with pytest.raises(XlembedError, match="worker process died"):
        list(split_rows(rows, (split,), 2))
