"""The Python API as users of gensim, Model2Vec and Hugging Face expect it: the CLI's defaults, errors at
set time, progress, a small return from save, a callable tokenizer, and extended words that survive a rebuild."""

import shutil

import pytest
import torch

import xlembed

from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)
from .test_cli import xlembed as cli


def test_config_set_validates_each_value_at_once():
    with pytest.raises(xlembed.XlembedError, match="expected one of argmax, argmax-occurrence, weighted, got 'best'"):
        xlembed.Config().set(strategy="best")
    with pytest.raises(xlembed.XlembedError, match="encode.batch_size must be at least 1, got 0"):
        xlembed.Config().set(batch_size=0)
    with pytest.raises(xlembed.XlembedError, match="expected an integer"):
        xlembed.Config().set(samplers="six")
    config = xlembed.Config().set(
        strategy="weighted", layer="-1", tsv="not/yet/there.tsv"
    )  # files are checked by validate
    assert config.project.strategy is xlembed.Strategy.weighted and str(config.encode.layer) == "-1"


def test_library_errors_name_the_option_by_its_table_the_cli_by_its_flag(tmp_path, corpus):
    with pytest.raises(xlembed.XlembedError, match="^encode.layer must be an integer or 'mean-last4', got 'last'$"):
        xlembed.Config().set(layer="last")
    with pytest.raises(xlembed.XlembedError, match="^align.samplers must be at least 1"):
        xlembed.Config().set(samplers=0)
    config = xlembed.Config().set(tsv=corpus, layer=-1)  # TOML's layer = -1 is an integer
    assert config.encode.layer == xlembed.Config().set(layer="-1").encode.layer
    result = cli("encode", "--work", tmp_path / "work", "--layer", "last")
    assert result.exit_code == 2
    assert "--layer must be an integer or 'mean-last4', got 'last'" in result.output
    assert "encode.layer" not in result.output


def test_run_reports_progress_to_a_callback_or_as_the_cli_does(tmp_path, corpus, tiny_bert, monkeypatch, capsys):
    config = xlembed.Config().set(tsv=corpus, model=tiny_bert, samplers=1)
    seen = []
    xlembed.run(config, tmp_path / "w", tmp_path / "out", progress=lambda *step: seen.append(step))
    descriptions = {d for d, *_ in seen}
    assert {"tokenize", "encode", "project"} <= descriptions
    assert all(isinstance(done, int) and done >= 0 and isinstance(unit, str) for _, done, _, unit in seen)
    assert max(done for _, done, _, _ in seen) > 0
    done_by_task = {}
    for description, done, total, _ in seen:
        assert done >= done_by_task.get(description, 0) and (total is None or done <= total)
        done_by_task[description] = done
    monkeypatch.setenv(
        "XLEMBED_PROGRESS_INTERVAL", "0"
    )  # a line at every step (the log form: stderr is not a terminal)
    xlembed.run(config, tmp_path / "w2", tmp_path / "out2", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{d}: ") and "/s" in line for line in lines for d in descriptions), lines[:5]


def test_save_returns_the_directory_not_the_manifest(built, tmp_path):
    e = xlembed.load(built)
    assert e.save(tmp_path / "copy") == tmp_path / "copy"
    assert e.manifest["files"] and xlembed.Embeddings.verify(tmp_path / "copy") == []


def test_the_tokenizer_is_callable_and_decodes(built):
    tokenizer = xlembed.load(built).tokenizer
    batch = tokenizer(["我喜欢猫。", "他读书"])
    assert set(batch) == {"input_ids", "attention_mask"} and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"].sum(1).tolist() == [
        len(tokenizer.encode("我喜欢猫。")),
        len(tokenizer.encode("他读书")),
    ]
    assert tokenizer.decode(batch["input_ids"][0]) == "我喜欢猫。"
    assert tokenizer.batch_decode(batch["input_ids"]) == ["我喜欢猫。", "他读书"]
    assert tokenizer.decode(batch["input_ids"][1], skip_special_tokens=False).startswith("他读书[PAD]")
    assert tokenizer("猫")["input_ids"].tolist() == [[tokenizer.encode("猫")[0]]]


def test_words_added_with_extend_are_carried_forward_by_the_next_build(built, corpus, tiny_bert, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    (tmp_path / "new.txt").write_text("电脑\n猫\n", encoding="utf-8")
    assert cli("extend", out, "--words", tmp_path / "new.txt").exit_code == 0
    extended = xlembed.load(out)
    result = cli("run", "--tsv", corpus, "--model", tiny_bert, "--out", out, "--work", tmp_path / "w", "-q")
    assert result.exit_code == 0, result.output
    rebuilt = xlembed.load(out)
    assert "电脑" in rebuilt and len(rebuilt) == len(extended)
    assert rebuilt.manifest["extended"][-1]["carried_forward"] is True
    assert xlembed.Embeddings.verify(out) == []
