"""The Ray executor (`--executor ray`) on a local Ray started by the test
with 2 CPUs: the same rows as the local run, a killed worker retried, a
killed driver resumed, alignment in parts."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from xlembed.cli.main import app

ray = pytest.importorskip("ray")  # installed by `make test` (the `ray` extra)

PAIRS = [
    f"{s} {v} {o} .\t{zs}{zv}{zo}。"
    for s, zs in (("i", "我"), ("you", "你"), ("he", "他"), ("she", "她"), ("we", "我们"))
    for v, zv in (("like", "喜欢"), ("read", "读"), ("eat", "吃"), ("drink", "喝"))
    for o, zo in (("cats", "猫"), ("books", "书"), ("fish", "鱼"), ("tea", "茶"), ("water", "水"))
]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_bert):
    """A finished local run on a small corpus (with a repeated sentence and windows)."""
    root = tmp_path_factory.mktemp("local")
    corpus = root / "c.tsv"
    corpus.write_text(
        "\n".join(PAIRS * 3 + ["i like cats and books and tea and fish and water and books . " * 6 + "\t我喜欢猫。"])
        + "\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--tsv",
            str(corpus),
            "--model",
            str(tiny_bert),
            "--out",
            str(root / "out"),
            "--work",
            str(root / "work"),
            "--max-length",
            "24",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    return root


def rows(out: Path) -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]]:
    return (
        load_file(str(out / "embeddings.safetensors"))["embeddings"],
        (out / "vocab.txt").read_text().split("\n"),
        load_file(str(out / "english.safetensors"))["embeddings"],
        (out / "english_vocab.txt").read_text().split("\n"),
    )


def assert_same_rows(a: Path, b: Path) -> None:
    zh_a, vocab_a, en_a, en_vocab_a = rows(a)
    zh_b, vocab_b, en_b, en_vocab_b = rows(b)
    assert vocab_a == vocab_b and en_vocab_a == en_vocab_b
    for x, y in ((zh_a, zh_b), (en_a, en_b)):
        nonzero = x.norm(dim=1) > 0
        assert torch.equal(nonzero, y.norm(dim=1) > 0)
        assert torch.nn.functional.cosine_similarity(x[nonzero], y[nonzero], dim=1).min() >= 0.999


def assert_same_sentences(local_work: Path, work: Path) -> None:
    """The English model's sentence embeddings each line was given (WORK/sentences.safetensors)."""
    by_line = []
    for w in (local_work, work):
        kept = load_file(str(w / "sentences.safetensors"))
        by_line.append(kept["vectors"][kept["line_sentence"]].float())  # [n_lines, d]
    assert by_line[0].shape == by_line[1].shape
    assert torch.nn.functional.cosine_similarity(*by_line, dim=1).min() >= 0.999


def copy_without_records(local_run: Path, to: Path) -> Path:
    """The check from outside the project: a local run's work directory with
    every record but tokenize's and align's deleted."""
    shutil.copytree(local_run / "work", to)
    for record in to.glob("*.json"):
        if record.name not in ("tokenize.json", "align.json"):
            record.unlink()
    return to


def run_ray(tiny_bert, local_run: Path, work: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        app,
        [
            "run",
            "--tsv",
            str(local_run / "c.tsv"),
            "--model",
            str(tiny_bert),
            "--out",
            str(out),
            "--work",
            str(work),
            "--max-length",
            "24",
            "--executor",
            "ray",
            *extra,
        ],
    )


def test_ray_run_gives_the_local_rows_and_the_local_records(local_ray, local_run, tiny_bert, tmp_path):
    work = copy_without_records(local_run, tmp_path / "work")
    result = run_ray(tiny_bert, local_run, work, tmp_path / "out", "--shards", "5")
    assert result.exit_code == 0, result.output
    assert_same_rows(local_run / "out", tmp_path / "out")
    local_encode = json.loads((local_run / "work" / "encode.json").read_text())
    ray_encode = json.loads((work / "encode.json").read_text())
    assert ray_encode["key"] == local_encode["key"] and ray_encode["vectors_kept"] is False
    assert ray_encode["sentence_vectors"] is local_encode["sentence_vectors"] is True
    assert_same_sentences(local_run / "work", work)
    assert ray_encode["executor"]["shards"] == 5 and ray_encode["executor"]["encoders"] == 2
    for count in ("sentences", "words", "words_with_vector", "words_truncated", "sentences_in_windows"):
        assert ray_encode["counts"][count] == local_encode["counts"][count]
    assert ray_encode["counts"]["sentences_in_windows"] == 1  # the long sentence went through the windows
    assert (
        json.loads((work / "project.json").read_text())["key"]
        == json.loads((local_run / "work" / "project.json").read_text())["key"]
    )
    assert not (work / "vectors" / "index.safetensors").exists() and not (work / "ray").exists()

    # the executor is in no cache key: either executor reuses the other's finished stages
    again = run_ray(tiny_bert, local_run, local_run / "work", tmp_path / "out2")
    assert again.exit_code == 0 and again.output.count("up to date") == 4, again.output
    local = CliRunner().invoke(
        app,
        [
            "run",
            "--tsv",
            str(local_run / "c.tsv"),
            "--model",
            str(tiny_bert),
            "--out",
            str(tmp_path / "out3"),
            "--work",
            str(work),
            "--max-length",
            "24",
            "--strategy",
            "argmax",
        ],
    )
    assert local.exit_code == 0, local.output
    assert (
        "encode (" in local.output
    )  # another strategy needs the vectors, which the Ray run did not keep: encoded here


def test_a_killed_worker_is_retried_and_the_rows_are_the_same(local_ray, local_run, tiny_bert, tmp_path, monkeypatch):
    work = copy_without_records(local_run, tmp_path / "work")
    monkeypatch.setenv("XLEMBED_TEST_KILL_WORKER_AT_SHARD", "1")
    result = run_ray(tiny_bert, local_run, work, tmp_path / "out", "--shards", "4")
    assert result.exit_code == 0, result.output
    assert (work / "ray" / "killed-at-shard-1").exists()  # the worker did die, with SIGKILL, mid-shard
    assert_same_rows(local_run / "out", tmp_path / "out")


def test_alignment_in_parts_from_priors(local_ray, local_run, tiny_bert, tmp_path):
    """--align-shards: every pair gets links, from each part aligned apart (as Ray tasks here)."""
    work = tmp_path / "work"
    shutil.copytree(local_run / "work", work)
    result = CliRunner().invoke(app, ["align", "--work", str(work), "--align-shards", "3", "--prior-sample", "40",
                                      "--executor", "ray"])
    assert result.exit_code == 0, result.output
    record = json.loads((work / "align.json").read_text())
    assert record["counts"]["parts"] == 3
    zh = (work / "corpus.zh").read_text().splitlines()
    forward = (work / "align.forward").read_text().splitlines()
    assert len(forward) == len(zh)
    en = (work / "corpus.en").read_text().splitlines()
    for z, e, links in zip(zh, en, forward):
        for link in links.split():
            i, j = map(int, link.split("-"))
            assert i < len(z.split(" ")) and j < len(e.split(" "))
    # 我 is aligned to i in every part, with or without a part of its own
    lexicon = [line.split("\t") for line in (work / "lexicon.tsv").read_text().splitlines()[1:]]
    assert next(en for zh_word, en, _, _ in lexicon if zh_word == "我") == "i"


def test_a_killed_driver_leaves_a_work_directory_the_next_run_resumes(local_ray, local_run, tiny_bert, tmp_path):
    """The driver dies (SIGKILL) after 2 of 6 shards; the cluster lives on; the same command run
    again reuses those 2 shards and gives the same rows."""
    work = copy_without_records(local_run, tmp_path / "work")
    command = [
        sys.executable,
        "-m",
        "xlembed.cli",
        "run",
        "--tsv",
        str(local_run / "c.tsv"),
        "--model",
        str(tiny_bert),
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(work),
        "--max-length",
        "24",
        "--executor",
        "ray",
        "--shards",
        "6",
        "--ray-address",
        ray.get_runtime_context().gcs_address,
        "-q",
    ]
    killed = subprocess.run(
        command, env=dict(os.environ, XLEMBED_TEST_KILL_DRIVER_AFTER_SHARDS="2"), capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL
    assert len(list(work.glob("ray/*/shard-*.safetensors"))) == 2 and not (work / "project.json").exists()
    assert not (tmp_path / "out").exists()
    # run again, as a batch job's log sees it: progress lines for the whole cluster, in shards, with rate and ETA
    resumed = subprocess.run(command[:-1], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, XLEMBED_PROGRESS_INTERVAL="0"))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((work / "encode.json").read_text())["executor"]["shards_resumed"] == 2
    progress = [line for line in resumed.stderr.splitlines() if line.startswith("encode+project (ray, 2 encoders): ")]
    assert progress and all("/6 shards (" in line and "shards/s" in line and "eta" in line for line in progress), (
        resumed.stderr
    )
    assert_same_rows(local_run / "out", tmp_path / "out")
    assert_same_sentences(local_run / "work", work)  # the 2 shards' sentence embeddings kept across the restart


def test_the_drivers_totals_fold_returned_shards_into_a_checkpoint_and_read_back_the_same(tmp_path, monkeypatch):
    """What a resumed driver starts from: the checkpoint plus the shards returned after it."""
    import numpy as np

    from xlembed import cluster
    from xlembed.project import PartSums

    monkeypatch.setattr(cluster, "FOLD_EVERY", 2)
    rng = np.random.default_rng(0)

    def shard(k: int) -> cluster.BlockSums:
        zh_ids, en_ids = np.array([k, k + 1]), np.array([0, k + 2])
        return cluster.BlockSums(
            k,
            PartSums(zh_ids, torch.tensor(rng.normal(size=(2, 3)), dtype=torch.float32), torch.tensor([1, 2])),
            PartSums(en_ids, torch.tensor(rng.normal(size=(2, 3)), dtype=torch.float32), torch.tensor([3, 1])),
            k,
            {"words": 10 + k},
            "cpu fp32",
        )

    totals = cluster.Totals(tmp_path, 6, 6, 3)
    shards = [shard(k) for k in (2, 0, 3)]
    for s in shards:
        totals.add(s)
    # shards 2 and 0 folded into the checkpoint (their files gone); shard 3 as a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00003.safetensors", "totals.safetensors"]
    expected_zh = torch.zeros(6, 3, dtype=cluster.SUM_DTYPE)  # the same additions in the same order
    for s in shards:
        expected_zh.index_add_(0, torch.tensor(s.zh.ids), s.zh.sum.to(cluster.SUM_DTYPE))
    resumed = cluster.Totals(tmp_path, 6, 6, 3)
    assert sorted(resumed.done) == [0, 2, 3]
    for t in (totals, resumed):
        assert torch.equal(t.sums.zh_sum, expected_zh)
        assert t.sums.zh_count.tolist() == [1, 2, 1, 3, 2, 0] and t.sums.en_count.tolist() == [9, 0, 1, 0, 1, 1]
        assert t.sums.links_without_vector == 5 and t.counts["words"] == 35
        assert t.ran_on == {"cpu fp32"}


def test_sigterm_during_a_ray_run_is_one_line_and_keeps_the_previous_output(local_run, tiny_bert, tmp_path):
    """SIGTERM while the driver gathers shards from the local Ray it started: `error: terminated`,
    exit 143, the Ray session left (not Ray's own untidy exit), the previous output as it was.
    Event-driven: the driver stops itself after its first returned shard; the timeout only guards a hang."""
    from tests.conftest import start_paused, wait_for_exit

    work = copy_without_records(local_run, tmp_path / "work")
    out = tmp_path / "out"
    shutil.copytree(local_run / "out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["run", "--tsv", local_run / "c.tsv", "--model", tiny_bert, "--out", out, "--work", work,
            "--max-length", "24", "--executor", "ray", "--shards", "4", "--worker-cpus", "1", "-q"]
    proc, said = start_paused(args, "xlembed.cluster:Totals.add", "lambda result, *a, **k: 'added'",
                              stderr=subprocess.PIPE)
    assert said == "added", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert wait_for_exit(proc.pid, limit=300), "still running after SIGTERM"  # a guard against a hang only
    stderr = proc.stderr.read()
    assert proc.wait() == 143, stderr
    assert stderr.strip().splitlines() == ["error: terminated"], stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(list(work.glob("ray/*/shard-*.safetensors"))) >= 1  # the returned shard, kept for the next run


def test_a_worker_size_no_node_of_a_joined_cluster_has_is_refused_before_any_stage(local_ray, local_run, tiny_bert,
                                                                                    tmp_path):
    """--ray-address of a 2-CPU cluster with --worker-cpus 64: one line naming --worker-cpus and what the
    cluster has, exit 2, before tokenize (not when encode starts, after align)."""
    result = CliRunner().invoke(app, [
        "run", "--tsv", str(local_run / "c.tsv"), "--model", str(tiny_bert), "--out", str(tmp_path / "out"),
        "--work", str(tmp_path / "work"), "--executor", "ray", "--ray-address",
        ray.get_runtime_context().gcs_address, "--worker-cpus", "64", "-q"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --worker-cpus 64: no node of the Ray cluster at ")
    assert "the largest of its 1 nodes has 2, and none a GPU" in lines[0] and "use --worker-cpus 2 or less" in lines[0]
    assert not (tmp_path / "work").exists()
