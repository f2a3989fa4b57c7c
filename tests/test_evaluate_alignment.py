import json

import pytest
from typer.testing import CliRunner

from xlembed.cli.main import app
from xlembed.evaluate import alignment_scores, read_gold


def test_aer_precision_recall_on_hand_made_links():
    predicted = [{(0, 0), (1, 1), (2, 2)}, {(0, 1)}]
    sure = [{(0, 0), (1, 1)}, set()]
    possible = [{(2, 3)}, {(0, 1)}]
    scores = alignment_scores(predicted, sure, possible)
    # |A| = 4, |S| = 2, |A∩S| = 2, |A∩P| = 3 (possible includes sure)
    assert scores["aer"] == pytest.approx(1 - (2 + 3) / (4 + 2))
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(2 / 2)
    assert alignment_scores(sure, sure, possible)["aer"] == 0.0


def write_gold(directory):
    directory.mkdir()
    (directory / "train.zh").write_text("我 喜欢 猫\n他 读 书\n", encoding="utf-8")
    (directory / "train.en").write_text("I like Cats -LRB- sic -RRB-\nHe reads books\n", encoding="utf-8")
    (directory / "train.align").write_text("0-0 1-1 2-2 2-3-P\n0-0 1-1 2-2\n", encoding="utf-8")


def test_read_gold_keeps_segmentation_and_maps_ptb_brackets(tmp_path):
    write_gold(tmp_path / "gold")
    zh, en, sure, possible = read_gold(tmp_path / "gold")
    assert zh == ["我 喜欢 猫", "他 读 书"]
    assert en[0] == "i like cats ( sic )"
    assert sure[0] == {(0, 0), (1, 1), (2, 2)} and possible[0] == {(2, 3)}


def test_evaluate_alignment_command(tmp_path, tiny_bert, monkeypatch):
    from xlembed.cli._util import out

    monkeypatch.setattr(out, "width", 200)  # the table's content; a narrow terminal folds it (tested below)
    write_gold(tmp_path / "gold")
    pairs = [f"{e} like {o} .\t{z}喜欢{zo}。" for e, z in (("i", "我"), ("he", "他"), ("we", "我们"))
             for o, zo in (("cats", "猫"), ("books", "书"), ("tea", "茶"))] * 4
    (tmp_path / "c.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    runner = CliRunner()
    assert (
        runner.invoke(
            app,
            [
                "tokenize",
                "--tsv",
                str(tmp_path / "c.tsv"),
                "--model",
                str(tiny_bert),
                "--work",
                str(tmp_path / "w"),
                "-q",
            ],
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["evaluate-alignment", "--gold", str(tmp_path / "gold"), "--work", str(tmp_path / "w"),
                                 "--json", str(tmp_path / "s.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert "grow-diag-final-and" in result.output and "AER" in result.output
    monkeypatch.setattr(out, "width", 30)
    narrow = runner.invoke(app, ["evaluate-alignment", "--gold", str(tmp_path / "gold"), "--work", str(tmp_path / "w"),
                                 "-q"])
    assert narrow.exit_code == 0 and "…" not in narrow.output, narrow.output  # folded at 30 columns, never cut
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["gold_pairs"] == 2 and scores["corpus_pairs"] == 36
    for s in scores["scores"].values():
        assert 0.0 <= s["aer"] <= 1.0
    # the intersection is a subset of the union: never more links, never lower precision
    assert (
        scores["scores"]["intersect"]["links"]
        <= scores["scores"]["grow-diag-final-and"]["links"]
        <= scores["scores"]["union"]["links"]
    )
