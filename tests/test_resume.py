"""Never lose work: up-to-date stages are skipped, an interrupted encode
resumes from its last shard, outputs are never half-written, and `verify`
catches tampering."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xlembed.cli.main import app
from xlembed.config import Config
from xlembed.layout import WorkDir
from xlembed.run import run

from .conftest import TATOEBA, make_tiny_bert, start_paused

XLEMBED = str(Path(sys.executable).with_name("xlembed"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # big enough that encoding a few thousand sentences takes seconds
    return make_tiny_bert(tmp_path_factory.mktemp("model"), layers=4, hidden=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    lines = [line for line in TATOEBA.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    path = tmp_path_factory.mktemp("data") / "pairs.tsv"
    path.write_text("\n".join(lines[::10]) + "\n", encoding="utf-8")  # 2,916 pairs
    return path


def run_args(corpus, model, work, out):
    return [XLEMBED, "run", "--tsv", str(corpus), "--model", str(model), "--work", str(work), "--out", str(out),
            "--batch-size", "8", "--shard-rows", "2000", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, model):
    """An uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    subprocess.run(run_args(corpus, model, root / "work", root / "out"), check=True)
    return root


def kill_at(args, target, condition) -> str:
    """Run `args` (xlembed's arguments) until `condition` holds after a call
    of `target` (see conftest.start_paused), then SIGKILL it."""
    proc, said = start_paused(args, target, condition)
    assert said is not None, f"{target} never reached {condition}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return said


def completed_shards(work: Path) -> int:
    try:
        return len(json.loads((work / "vectors" / "progress.json").read_text())["shard_starts"]) - 1
    except (OSError, ValueError):
        return 0


def test_sigkill_during_encode_then_rerun_resumes_and_matches(tmp_path, reference, corpus, model):
    # the same alignment as the reference run (eflomal cannot be seeded), no vectors yet
    work = tmp_path / "work"
    shutil.copytree(reference / "work", work)
    shutil.rmtree(work / "vectors")
    for stage in ("encode", "project"):
        (work / f"{stage}.json").unlink()
    out = tmp_path / "out"

    # killed right after the third shard's progress.json is in place
    kill_at(run_args(corpus, model, work, out)[1:], "xlembed.encode:write_json_atomic",
            "lambda result, path, data: 'progress.json' in str(path) and len(data['shard_starts']) - 1 >= 3 and 1")
    assert not out.exists()  # nothing half-written
    done = completed_shards(work)
    assert done == 3
    first_shard = (work / "vectors" / "shard-00000.safetensors").stat().st_mtime_ns

    subprocess.run(run_args(corpus, model, work, out), check=True)
    record = json.loads((work / "encode.json").read_text())
    assert record["resumed_at_shard"] >= done
    assert (work / "vectors" / "shard-00000.safetensors").stat().st_mtime_ns == first_shard  # reused, not recomputed
    assert not (work / "vectors" / "progress.json").exists()
    for name in ("embeddings.safetensors", "vocab.txt", "english.safetensors", "english_vocab.txt"):
        assert (out / name).read_bytes() == (reference / "out" / name).read_bytes(), name


def test_sigkill_during_write_leaves_a_complete_output(tmp_path, reference):
    out, expected = tmp_path / "out", tmp_path / "expected"
    shutil.copytree(reference / "out", out)
    previous = (out / "embeddings.safetensors").read_bytes()
    write = [XLEMBED, "write", "--work", str(reference / "work"), "--seed", "1", "-q", "--out"]
    subprocess.run(write + [str(expected)], check=True)
    new = (expected / "embeddings.safetensors").read_bytes()
    assert new != previous

    # killed with the new build whole in its staging directory, before it replaces the old one
    kill_at(write[1:] + [str(out)], "xlembed.io:_fsync", "lambda result, path: str(path).endswith('.partial') and 1")
    assert any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    assert (out / "embeddings.safetensors").read_bytes() in (previous, new)  # the old result or the new one, whole
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0
    subprocess.run(write + [str(out)], check=True)
    assert (out / "embeddings.safetensors").read_bytes() == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expected", "out"]  # the killed write's leftovers are gone


def stages_run(corpus, model, work, out, force=False, **changes):
    config = Config().set(tsv=corpus, model=model, shard_rows=2000, **changes)
    ran = {}
    run(
        config,
        WorkDir(work),
        out,
        on_stage=lambda stage, record: ran.setdefault(stage, not record.get("skipped")),
        force=force,
    )
    return {stage for stage, computed in ran.items() if computed}


def test_up_to_date_stages_are_skipped_and_changes_recompute_what_depends_on_them(tmp_path, corpus, model):
    work, out = tmp_path / "work", tmp_path / "out"
    everything = {"tokenize", "encode", "align", "project", "write"}
    assert stages_run(corpus, model, work, out) == everything
    assert stages_run(corpus, model, work, out) == {"write"}
    assert stages_run(corpus, model, work, out, strategy="weighted") == {"project", "write"}
    assert stages_run(corpus, model, work, out, strategy="weighted", layer="-2") == {"encode", "project", "write"}
    assert stages_run(corpus, model, work, out, strategy="weighted", layer="-2", symmetrization="intersect") == {
        "align",
        "project",
        "write",
    }
    assert (
        stages_run(corpus, model, work, out, strategy="weighted", layer="-2", symmetrization="intersect", force=True)
        == everything
    )


def test_a_single_stage_run_with_other_options_is_noticed_by_run(tmp_path, corpus, model):
    work, out = tmp_path / "work", tmp_path / "out"
    stages_run(corpus, model, work, out)
    result = CliRunner().invoke(app, ["project", "--work", str(work), "--strategy", "weighted", "-q"])
    assert result.exit_code == 0
    assert stages_run(corpus, model, work, out) == {"project", "write"}  # back to argmax
    changed_input = tmp_path / "more.tsv"
    changed_input.write_text(corpus.read_text(encoding="utf-8") + "One more.\t再来一个。\n", encoding="utf-8")
    assert stages_run(changed_input, model, work, out) == {"tokenize", "encode", "align", "project", "write"}


def test_verify_catches_tampering(tmp_path, reference):
    out = tmp_path / "out"
    shutil.copytree(reference / "out", out)
    verify = lambda: CliRunner().invoke(app, ["verify", str(out)])  # noqa: E731
    assert verify().exit_code == 0
    # a changed byte: the checksum no longer matches
    with open(out / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("多\n")
    result = verify()
    assert result.exit_code == 1 and "vocab.txt: checksum differs" in result.output
    # consistent checksums but one line too many: rows and lines disagree
    manifest = json.loads((out / "manifest.json").read_text())
    from xlembed.io import sha256_file
    manifest["files"]["vocab.txt"] = sha256_file(out / "vocab.txt")
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = verify()
    assert result.exit_code == 1 and "rows, but vocab.txt has" in result.output
    os.remove(out / "english.safetensors")
    assert "english.safetensors: missing" in verify().output
