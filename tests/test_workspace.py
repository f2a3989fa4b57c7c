"""Work directories: seen and cleaned with `xlembed work`, never holding someone else's file removed,
and no folder of one `.lock` left by a command that failed."""

import json
import shutil

import pytest

from .test_cli import built, corpus, xlembed  # noqa: F401  (fixtures: a tiny-model build of a small corpus)


@pytest.fixture
def work(built, tmp_path):
    """A copy of a finished work directory (the fixture's own is shared)."""
    copy = tmp_path / "out.work"
    shutil.copytree(built.with_name(built.name + ".work"), copy)
    return copy


def test_a_failed_command_leaves_no_folder_holding_only_a_lock(tmp_path):
    result = xlembed("encode", "--work", tmp_path / "new")
    assert result.exit_code == 2 and "tokenize" in result.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a directory the user made stays
    assert xlembed("encode", "--work", tmp_path / "mine").exit_code == 2
    assert (tmp_path / "mine").is_dir()


def test_work_list_finds_work_directories_and_their_stages(work, tmp_path):
    (tmp_path / "notes").mkdir()
    result = xlembed("work", "list", "--json", tmp_path)
    assert result.exit_code == 0, result.output
    [found] = json.loads(result.stdout)
    assert found["path"] == str(work) and found["stages"] == ["tokenize", "encode", "align", "project"]
    assert found["bytes"] == sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) and found["others"] == []
    result = xlembed("work", "list", tmp_path)
    assert result.exit_code == 0 and str(work) in result.stdout.splitlines()[1]


def test_work_clean_removes_only_what_xlembed_wrote(work):
    (work / "notes.txt").write_text("precious")
    (work / "vectors" / "mine.txt").write_text("precious too")
    result = xlembed("work", "clean", work)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "vectors"]
    assert "kept what xlembed did not write: notes.txt" in result.output
    assert [p.name for p in (work / "vectors").iterdir()] == ["mine.txt"]


def test_work_clean_removes_the_directory_once_empty_and_dry_run_removes_nothing(work):
    before = sorted(p.name for p in work.iterdir())
    result = xlembed("work", "clean", "--dry-run", work)
    assert (
        result.exit_code == 0 and "would remove" in result.output and sorted(p.name for p in work.iterdir()) == before
    )
    assert xlembed("work", "clean", work).exit_code == 0
    assert not work.exists()


def test_clean_vectors_only_keeps_what_write_needs(work, tmp_path):
    assert xlembed("work", "clean", "--vectors-only", work).exit_code == 0
    assert not (work / "vectors").exists() and (work / "projection.safetensors").exists()
    result = xlembed("write", "--work", work, "--out", tmp_path / "again", "--oov", "chars", "-q")
    assert result.exit_code == 0, result.output


def test_clean_refuses_a_directory_that_is_not_a_work_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "corpus.en").write_text("mine")
    result = xlembed("work", "clean", tmp_path / "d")
    assert result.exit_code == 2 and "not an xlembed work directory" in result.output
    assert (tmp_path / "d" / "corpus.en").read_text() == "mine"
