"""Using a built matrix: --vocab, extend, neighbors, info, export, and the Python API."""
import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from xlembed import load
from xlembed.cli.main import app
from xlembed.embeddings import ChineseTokenizer, VocabRow, format_vocab_tsv
from xlembed.io import save_tensors

from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)


def xlembed(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_write_with_a_user_vocabulary(built, tmp_path):
    (tmp_path / "v.txt").write_text("[PAD]\n狗\n足球\n[UNK]\n猫\n", encoding="utf-8")
    out = tmp_path / "out"
    result = xlembed(
        "write",
        "--work",
        built.with_name("out.work"),
        "--out",
        out,
        "--vocab",
        tmp_path / "v.txt",
        "--oov",
        "chars",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert (out / "vocab.txt").read_text("utf-8").splitlines() == ["[PAD]", "狗", "足球", "[UNK]", "猫"]
    rows = [line.split("\t") for line in (out / "vocab.tsv").read_text("utf-8").splitlines()[1:]]
    assert [r[2] for r in rows] == [
        "special",
        "projected",
        "random",
        "special",
        "projected",
    ]  # no projected word has 足 or 球
    assert rows[1][5] == "gǒu"
    m = load_file(str(out / "embeddings.safetensors"))
    assert m["embeddings"].shape[0] == 5 and m["projected"].tolist() == [0, 1, 0, 0, 1]
    assert xlembed("verify", out).exit_code == 0
    ours = load_file(str(built / "embeddings.safetensors"))["embeddings"]
    vocab = (built / "vocab.txt").read_text("utf-8").splitlines()
    assert torch.equal(m["embeddings"][4], ours[vocab.index("猫")])  # the same projected row


def test_write_refuses_a_vocabulary_changed_while_it_read_it(built, tmp_path, monkeypatch):
    """The manifest's write_inputs are hashed before write reads the files; a file that holds other
    bytes by the time the matrix is ready (even with its size and time kept), or a link pointed
    elsewhere, is an error naming the path as given, and nothing is written."""
    import importlib
    import os

    write_module = importlib.import_module("xlembed.write")
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("[PAD]\n[UNK]\n猫\n", encoding="utf-8")
    second.write_text("[PAD]\n[UNK]\n狗\n", encoding="utf-8")
    link = tmp_path / "v.txt"
    read = write_module.read_word_list

    def same_size_and_time(path):
        stat = first.stat()
        first.write_text("[PAD]\n[UNK]\n狗\n", encoding="utf-8")  # another process, while write works
        os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p or tar leave it

    def link_elsewhere(path):
        link.unlink()
        link.symlink_to(second)

    for given, change in ((first, same_size_and_time), (link, link_elsewhere)):
        first.write_text("[PAD]\n[UNK]\n猫\n", encoding="utf-8")
        if given == link:
            link.symlink_to(first)
        monkeypatch.setattr(write_module, "read_word_list", lambda path, *a: (read(path, *a), change(path))[0])
        out = tmp_path / "out"
        result = xlembed("write", "--work", built.with_name("out.work"), "--out", out, "--vocab", given)
        assert result.exit_code == 2 and not out.exists(), result.output
        assert f"{given.name}: changed while write was reading it" in " ".join(result.output.split())


def test_write_with_oov_context_reads_the_corpus_and_the_users_text(built, tmp_path, monkeypatch):
    """The tiny build projects fewer words than its 32 dimensions, too few to fit the map from
    contexts to rows: every word then gets what `chars` gives (tests/test_oov.py has the map)."""
    (tmp_path / "v.txt").write_text("[PAD]\n[UNK]\n猫\n猫咪\n足球\n", encoding="utf-8")
    (tmp_path / "reviews.txt").write_text("我喜欢猫咪。\n足球很好看\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["write", "--work", built.with_name("out.work"), "--out", out, "--vocab", tmp_path / "v.txt", "-q"]
    monkeypatch.setenv("XLEMBED_PROGRESS_INTERVAL", "0")  # a log line at every step
    monkeypatch.setattr("xlembed.skipgram.PAIRS_PER_STEP", 4)  # steps enough to train on two lines
    result = xlembed(*args[:-1], "--oov", "context", "--context", tmp_path / "reviews.txt")  # not quiet
    assert result.exit_code == 0, result.output
    assert any(line.startswith("context: 2/2 lines") for line in result.output.splitlines()), result.output
    assert "  filled rows by source: random 1, chars 1" in result.output.splitlines()  # the fallback shows
    rows = [line.split("\t") for line in (out / "vocab.tsv").read_text("utf-8").splitlines()[1:]]
    assert [r[2] for r in rows] == ["special", "special", "projected", "chars", "random"]
    assert xlembed("verify", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["write"]["context"] == str(tmp_path / "reviews.txt")
    assert manifest["write_inputs"] == {  # the user's texts by content, as the corpus is in "inputs"
        str(tmp_path / "v.txt"): hashlib.sha256((tmp_path / "v.txt").read_bytes()).hexdigest(),
        str(tmp_path / "reviews.txt"): hashlib.sha256((tmp_path / "reviews.txt").read_bytes()).hexdigest(),
    }
    trained = manifest["context_training"]  # --context-epochs 1, the default: every row trained on the text
    assert (trained["epochs"], trained["anchor"], trained["words"], len(trained["loss"])) == (1, 0.03, 7, 1)
    assert any(line.startswith("skip-gram: ") for line in result.output.splitlines()), result.output
    assert "2 rows trained on --context's text (7 words, 1 epoch(s) of skip-gram): loss " in result.output
    untrained = tmp_path / "untrained"
    result = xlembed(*args[:4], untrained, *args[5:], "--oov", "context", "--context", tmp_path / "reviews.txt",
                     "--context-epochs", "0")
    assert result.exit_code == 0 and "context_training" not in json.loads((untrained / "manifest.json").read_text())
    with_training, without = (load_file(str(d / "embeddings.safetensors"))["embeddings"] for d in (out, untrained))
    assert torch.equal(with_training[:3], without[:3])  # [PAD], [UNK], and 猫, which the text does not hold
    assert not torch.equal(with_training[3:], without[3:])  # 猫咪 and 足球, which it does
    (tmp_path / "empty.txt").write_text("\n猫咪\n", encoding="utf-8")
    (tmp_path / "foreign.txt").write_text("我们 明天 上午\n", encoding="utf-8")
    result = xlembed(*args[:4], tmp_path / "off", *args[5:], "--oov", "context", "--context-epochs", "0")
    assert result.exit_code == 0, result.output  # off without --context: nothing to refuse
    for extra, message in (
        (["--oov", "chars", "--context", tmp_path / "reviews.txt"], "--context is read by --oov context only"),
        (["--oov", "context", "--context", tmp_path / "none.txt"], "none.txt: context text does not exist"),
        (["--context-epochs", "2"], "give --context"),
        (["--oov", "context", "--context", tmp_path / "empty.txt"],
         "empty.txt: nothing to train the rows on: it has no line of two words or more (--context-epochs = 0"),
        (["--oov", "context", "--context", tmp_path / "foreign.txt"],
         "foreign.txt: nothing to train the rows on: none of its words is in the vocabulary"),
        (["--oov", "context", "--context", tmp_path / "reviews.txt", "--context-epochs", "0", "--context-anchor", "1"],
         "--context-epochs = 0 turns it off"),
    ):
        result = xlembed(*args[:4], tmp_path / "refused", *args[5:], *extra)
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "refused").exists()


def test_extend_appends_rows_atomically(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    before = load_file(str(out / "embeddings.safetensors"))
    (tmp_path / "w.txt").write_text("猫\n小猫\n🐱\n", encoding="utf-8")
    result = xlembed("extend", out, "--words", tmp_path / "w.txt", "--oov", "chars")
    assert result.exit_code == 0, result.output
    assert "added 2 rows" in result.output and "1 already present" in result.output
    after = load_file(str(out / "embeddings.safetensors"))
    n = before["embeddings"].shape[0]
    assert torch.equal(after["embeddings"][:n], before["embeddings"])
    assert after["embeddings"].shape[0] == n + 2 and after["projected"][n:].tolist() == [0, 0]
    assert (out / "vocab.txt").read_text("utf-8").splitlines()[-2:] == ["小猫", "🐱"]
    assert [line.split("\t")[2] for line in (out / "vocab.tsv").read_text("utf-8").splitlines()[-2:]] == [
        "chars",
        "random",
    ]
    assert xlembed("verify", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["vocab_size"] == n + 2 and manifest["extended"][0]["added"] == 2
    assert manifest["extended"][0]["filled_by"] == {"chars": 1, "random": 1}
    # the same extension of the same matrix gives the same bytes
    again = tmp_path / "again"
    shutil.copytree(built, again)
    xlembed("extend", again, "--words", tmp_path / "w.txt", "--oov", "chars")
    assert (again / "embeddings.safetensors").read_bytes() == (out / "embeddings.safetensors").read_bytes()


@pytest.fixture
def hand_made(tmp_path):
    """猫 next to cat, 狗 next to dog, 书 far from both."""
    out = tmp_path / "hand"
    out.mkdir()
    save_tensors(
        out / "embeddings.safetensors",
        {
            "embeddings": torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.1], [0.9, 0.3], [-1.0, 0.2]]),
            "projected": torch.tensor([0, 0, 1, 1, 0], dtype=torch.uint8),
        },
        {"model": "m", "layer": "-1", "seed": "0", "oov_fill": "random"},
    )
    (out / "vocab.txt").write_text("[PAD]\n[UNK]\n猫\n狗\n书\n", encoding="utf-8")
    save_tensors(out / "english.safetensors", {"embeddings": torch.tensor([[1.0, 0.0], [0.9, 0.35], [-1.0, 0.0]])})
    (out / "english_vocab.txt").write_text("cat\ndog\nbook\n", encoding="utf-8")
    (out / "vocab.tsv").write_text(
        format_vocab_tsv(
            [
                VocabRow.new(w, 1, s)
                for w, s in zip(
                    ["[PAD]", "[UNK]", "猫", "狗", "书"], ["special", "special", "projected", "projected", "random"]
                )
            ]
        ),
        encoding="utf-8",
    )
    (out / "manifest.json").write_text(json.dumps({"counts": {"projected_rows": 2, "filled_rows": 1, "special_rows": 2},
                                                   "parameters": {"tokenize": {"user_dict": None, "hmm": True}}}))
    return out


def test_neighbors_of_a_chinese_and_an_english_word(hand_made):
    e = load(hand_made)
    assert [w for w, _ in e.most_similar("猫", k=2)] == ["狗", "书"] and [w for w, _ in e.translate("猫", k=2)] == [
        "cat",
        "dog",
    ]
    assert bool(e.projected[e.index("猫")]) is True
    assert e.translate("book", k=1, lang="en")[0][0] == "书" and e.most_similar("book", k=1, lang="en")[0][0] == "dog"
    result = xlembed("neighbors", hand_made, "鱼")
    assert result.exit_code == 2 and "'鱼' is not in vocab.txt" in result.output


def test_info(hand_made):
    result = xlembed("info", hand_made, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["shape"] == [5, 2] and info["dtype"] == "F32" and info["english_shape"] == [3, 2]
    assert info["top_words"] == ["猫", "狗", "书"] and info["counts"]["projected_rows"] == 2
    assert "5 × 2 F32" in xlembed("info", hand_made).output


def test_export_word2vec_reads_back_in_gensim(hand_made, tmp_path):
    from gensim.models import KeyedVectors

    result = xlembed("export", hand_made, "--format", "word2vec", "-o", tmp_path / "e.txt")
    assert result.exit_code == 0, result.output
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "e.txt"), binary=False)
    assert kv.index_to_key == ["猫", "狗", "书"]  # [PAD] and [UNK] left out (--special keeps them)
    assert kv["狗"].tolist() == pytest.approx([0.9, 0.3])
    assert kv.most_similar("猫", topn=1)[0][0] == "狗"
    assert xlembed("export", hand_made, "--format", "glove").exit_code == 2


def test_python_api_embedding_and_tokenizer(hand_made):
    embedding, tokenizer = load(hand_made).to_torch(), load(hand_made).tokenizer
    assert isinstance(embedding, torch.nn.Embedding) and embedding.weight.shape == (5, 2)
    assert embedding.padding_idx == 0 and not embedding.weight.requires_grad
    assert load(hand_made).to_torch(freeze=False).weight.requires_grad
    rows, centred = load(hand_made).vectors.float(), load(hand_made).to_torch(centre=True).weight  # [5, 2]
    assert torch.equal(centred[0], torch.zeros(2))  # [PAD] stays zeros, out of the mean
    assert torch.allclose(centred[1:], rows[1:] - rows[1:].mean(0))
    assert torch.allclose(centred[1:].mean(0), torch.zeros(2), atol=1e-6)
    assert torch.equal(embedding.weight, rows)  # not centred unless asked
    assert tokenizer.tokenize("猫和狗。") == ["猫", "和", "狗", "。"]
    assert tokenizer.encode("猫和狗") == [2, 1, 3]  # 和 is unknown: [UNK]
    ids, mask = tokenizer.batch_encode(["猫和狗", "书"])
    assert ids.tolist() == [[2, 1, 3], [4, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert embedding(ids).shape == (2, 3, 2)
    assert isinstance(tokenizer, ChineseTokenizer) and len(tokenizer) == 5


def test_the_readme_example_runs(built, monkeypatch):
    """The README's API example, run as it is written (on a tiny build)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    code = readme.split("<!-- api-example -->")[1].split("```python")[1].split("```")[0]
    monkeypatch.chdir(built.parent)
    (built.parent / "runs").mkdir(exist_ok=True)
    if not (built.parent / "runs" / "demo").exists():
        (built.parent / "runs" / "demo").symlink_to(built)
    namespace = {}
    exec(code, namespace)
    assert namespace["logits"].shape == (2, 2)
