"""`xlembed transplant`: the tiny BERT's layers with Chinese input rows and a
Chinese tokenizer, loaded by the real transformers and sentence-transformers
in a process where xlembed cannot be imported."""

import json
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from xlembed.cli.main import app

from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)

SENTENCE = "我们喜欢猫。"

# run in a fresh interpreter: xlembed is made unimportable first (a meta-path finder refusing it, ahead of
# the editable install's own finder), then the directory is loaded with the real libraries
LOADER = r"""
import importlib.abc, json, sys

class NoXlembed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "xlembed" or name.startswith("xlembed."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoXlembed())
try:
    import xlembed  # noqa: F401
    xlembed_importable = True
except ModuleNotFoundError:
    xlembed_importable = False

import torch
from transformers import AutoModel, AutoTokenizer

directory, sentence = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(directory)
model = AutoModel.from_pretrained(directory).eval()
encoded = tokenizer([sentence], return_tensors="pt")
with torch.no_grad():
    hidden = model(**encoded).last_hidden_state[0]  # [t, d]
result = dict(xlembed_importable=xlembed_importable, tokens=tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]),
              vocab_size=model.config.vocab_size, rows={t: model.get_input_embeddings().weight[i].tolist()
                                                        for t, i in tokenizer.get_vocab().items()},
              mean_pooled=hidden.mean(0).tolist(), xlembed_loaded=any(m.startswith("xlembed") for m in sys.modules))
if len(sys.argv) > 3:
    from sentence_transformers import SentenceTransformer

    result["sentence_transformers"] = SentenceTransformer(directory, device="cpu").encode([sentence])[0].tolist()
print(json.dumps(result))
"""


def xlembed(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def load_elsewhere(directory: Path, sentence_transformers: bool = False) -> dict:
    args = [sys.executable, "-c", LOADER, str(directory), SENTENCE] + (["st"] if sentence_transformers else [])
    done = subprocess.run(args, capture_output=True, text=True, cwd=directory.parent)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["xlembed_importable"] and not result["xlembed_loaded"]
    return result


@pytest.fixture(scope="module")
def unshrunk(built, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny build written again without --shrink: projected rows are plain means."""
    out = tmp_path_factory.mktemp("unshrunk") / "out"
    result = xlembed("write", "--work", built.with_name("out.work"), "--out", out, "--shrink", "0", "-q")
    assert result.exit_code == 0, result.output
    return out


def expected_rows(work: Path, model_dir: Path) -> dict[str, torch.Tensor]:
    """Each Chinese word's row, computed here from the alignment files: per
    occurrence, the aligned English word with the highest p(en|zh); its
    static vector the mean of its word pieces' input rows."""
    from transformers import AutoTokenizer

    p = defaultdict(dict)
    for line in (work / "lexicon.tsv").read_text("utf-8").splitlines()[1:]:
        zh, en, _, prob = line.split("\t")
        p[zh][en] = float(prob)
    chosen = defaultdict(Counter)
    lines = zip(*((work / name).read_text("utf-8").splitlines() for name in ("corpus.zh", "corpus.en", "align.links")))
    for zh_line, en_line, links_line in lines:
        zh, en = zh_line.split(" "), en_line.split(" ")
        best = {}
        for i, j in sorted(tuple(map(int, link.split("-"))) for link in links_line.split()):
            if i not in best or p[zh[i]].get(en[j], 0.0) > p[zh[i]].get(en[best[i]], 0.0):
                best[i] = j
        for i, j in best.items():
            chosen[zh[i]][en[j]] += 1
    embedding = load_file(str(model_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def static(word):
        return embedding[tokenizer(word, add_special_tokens=False)["input_ids"]].double().mean(0)

    return {zh: sum(n * static(en) for en, n in counts.items()) / sum(counts.values()) for zh, counts in chosen.items()}


def test_rows_and_tokenizer_without_xlembed(built, unshrunk, tiny_bert, tmp_path):  # noqa: F811
    work = built.with_name("out.work")
    dest = tmp_path / "zh-model"
    result = xlembed("transplant", unshrunk, "-o", dest, "--work", work)
    assert result.exit_code == 0, result.output
    loaded = load_elsewhere(dest)
    vocab = set((unshrunk / "vocab.txt").read_text("utf-8").splitlines())
    # greedy longest match over the vocabulary: 我们, not 我 + 们; [CLS] … [SEP] added
    assert loaded["tokens"] == ["[CLS]", "我们", "喜欢", "猫", "。", "[SEP]"]
    assert set(loaded["tokens"][1:-1]) <= vocab
    assert loaded["vocab_size"] == len(vocab) + 3  # [CLS], [SEP], [MASK] added to [PAD], [UNK] and the words
    expected = expected_rows(work, tiny_bert)
    assert {"猫", "我们", "喜欢", "。"} <= expected.keys()
    for word, row in expected.items():
        assert torch.allclose(torch.tensor(loaded["rows"][word]), row.float(), atol=1e-5), word
    english = load_file(str(tiny_bert / "model.safetensors"))["embeddings.word_embeddings.weight"]
    for token in (
        "[CLS]",
        "[SEP]",
        "[PAD]",
        "[UNK]",
        "[MASK]",
    ):  # the tiny BERT's own rows (its vocabulary starts with them)
        assert torch.equal(
            torch.tensor(loaded["rows"][token]), english[["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].index(token)]
        )
    record = json.loads((dest / "xlembed_transplant.json").read_text("utf-8"))
    assert record["model"] == str(tiny_bert.resolve()) and record["row_sources"]["special"] == 5


@pytest.fixture
def tiny_sentence_transformer(tiny_bert, tmp_path) -> Path:
    """The tiny BERT as a sentence-transformers model: mean pooling, then normalisation."""
    model = shutil.copytree(tiny_bert, tmp_path / "tiny-st")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (model / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 64, "do_lower_case": False}), encoding="utf-8"
    )
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}), encoding="utf-8"
    )
    return model


def test_sentence_transformers_pools_as_the_english_model(built, tiny_sentence_transformer, tmp_path):  # noqa: F811
    dest = tmp_path / "zh-st"
    result = xlembed("transplant", built, "-o", dest, "--model", tiny_sentence_transformer)
    assert result.exit_code == 0, result.output
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling"} <= {p.name for p in dest.iterdir()}
    loaded = load_elsewhere(dest, sentence_transformers=True)
    pooled = torch.nn.functional.normalize(
        torch.tensor(loaded["mean_pooled"]), dim=0
    )  # mean over [CLS] … [SEP], normalised
    assert torch.allclose(torch.tensor(loaded["sentence_transformers"]), pooled, atol=1e-5)


def test_matrix_rows(built, tmp_path):  # noqa: F811
    """--rows matrix: the build's own rows are the input rows."""
    dest = tmp_path / "zh-matrix"
    assert xlembed("transplant", built, "-o", dest, "--rows", "matrix").exit_code == 0
    rows = load_file(str(dest / "model.safetensors"))["embeddings.word_embeddings.weight"]
    from tokenizers import Tokenizer

    cat = Tokenizer.from_file(str(dest / "tokenizer.json")).token_to_id("猫")
    built_rows = load_file(str(built / "embeddings.safetensors"))["embeddings"]
    built_words = (built / "vocab.txt").read_text("utf-8").splitlines()
    assert torch.equal(rows[cat], built_rows[built_words.index("猫")])


def test_refuses_and_replaces(built, tmp_path):  # noqa: F811
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    result = xlembed("transplant", built, "-o", mine)
    assert result.exit_code == 2 and "not an xlembed transplant" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    dest = tmp_path / "zh"
    assert xlembed("transplant", built, "-o", dest).exit_code == 0
    assert xlembed("transplant", built, "-o", dest).exit_code == 0  # an earlier transplant is replaced
    result = xlembed("transplant", built, "-o", tmp_path / "other", "--rows", "contextual")
    assert result.exit_code == 2 and "--rows must be one of" in result.output
    result = xlembed("transplant", built, "-o", tmp_path / "other", "--work", tmp_path / "nowhere")
    assert result.exit_code == 2 and "tokenize.json: missing" in result.output
    assert not (tmp_path / "other").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_most_probable_segmentation():
    """With frequencies the tokenizer cuts as jieba does (研究 / 生命), where longest match takes 研究生 / 命."""
    from xlembed.hf_tokenizer import vocabulary_tokenizer

    words = ["[PAD]", "[UNK]", "研究", "研究生", "生命", "命", "的", "起源", "研", "究", "生"]
    freqs = [0, 0, 500, 20, 300, 5, 5000, 50, 1, 1, 10]
    assert vocabulary_tokenizer(words).encode("研究生命的起源").tokens == ["研究生", "命", "的", "起源"]
    assert vocabulary_tokenizer(words, freqs=freqs).encode("研究生命的起源").tokens == ["研究", "生命", "的", "起源"]
    assert vocabulary_tokenizer(words, freqs=freqs).encode("研究生X").ids == [3, 1]  # an unknown character: [UNK]


def test_chinese_text_and_corpus_pairs(tmp_path):
    """Tokenized lines back to text: CJK words joined, Latin/digit words kept apart; pairs distinct."""
    from xlembed.distill import SentencePair, chinese_text, corpus_pairs
    from xlembed.layout import WorkDir

    assert chinese_text(["我们", "喜欢", "iPhone", "6", "和", "猫", "。"]) == "我们喜欢iPhone 6和猫。"
    work = WorkDir(tmp_path)
    work.corpus_en.write_text("i like cats .\ni like cats .\nhi\n\n", encoding="utf-8")
    work.corpus_zh.write_text("我 喜欢 猫 。\n我 喜欢 猫 。\n你好\n好\n", encoding="utf-8")
    assert corpus_pairs(work) == [SentencePair("i like cats .", "我喜欢猫。"), SentencePair("hi", "你好")]


def test_sentence_pooling(tiny_bert, tiny_sentence_transformer, tmp_path):
    from xlembed.distill import sentence_pooling

    assert sentence_pooling(tiny_bert) == "mean" and sentence_pooling(tiny_sentence_transformer) == "mean"
    (tiny_sentence_transformer / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True}), encoding="utf-8"
    )
    assert sentence_pooling(tiny_sentence_transformer) == "cls"


def distillation_error(directory: Path, model_dir: Path, work: Path) -> float:
    """The loss (mean cosine distance) between the transplant's embeddings of the corpus's
    Chinese sentences and the English model's of their translations (eval mode)."""
    from transformers import AutoModel, AutoTokenizer

    from xlembed.distill import corpus_pairs, cosine_distance, padded, pool
    from xlembed.layout import WorkDir

    pairs = corpus_pairs(WorkDir(work))
    encoded = []
    for where, texts in ((directory, [p.zh for p in pairs]), (model_dir, [p.en for p in pairs])):
        tokenizer, model = AutoTokenizer.from_pretrained(str(where)), AutoModel.from_pretrained(str(where)).eval()
        with torch.no_grad():
            encoded.append(pool(model, *padded(tokenizer(texts)["input_ids"], tokenizer.pad_token_id), "mean"))
    return cosine_distance(*encoded).item()


def test_distill_trains_only_the_rows_towards_the_english_embeddings(built, tiny_bert, tmp_path):  # noqa: F811
    work = built.with_name("out.work")
    plain, trained, again = tmp_path / "plain", tmp_path / "trained", tmp_path / "again"
    assert xlembed("transplant", built, "-o", plain, "-q").exit_code == 0
    for dest in (trained, again):
        result = xlembed("transplant", built, "-o", dest, "--distill", "30")
        assert result.exit_code == 0, result.output
    record = json.loads((trained / "xlembed_transplant.json").read_text("utf-8"))["distill"]
    assert record["pairs"] == 72 and record["steps"] == 30 * 2 and record["epochs"] == 30  # 72 pairs, batches of 64
    assert record["loss"] == "cosine distance" and record["loss_first"] <= 2  # 1 - cos, not a squared error
    assert "rows distilled over 72 sentence pairs, 60 steps" in " ".join(result.output.split())
    before, after = distillation_error(plain, tiny_bert, work), distillation_error(trained, tiny_bert, work)
    assert after < 0.5 * before
    weights = {d: load_file(str(d / "model.safetensors")) for d in (plain, trained, again)}
    english = load_file(str(tiny_bert / "model.safetensors"))
    rows = "embeddings.word_embeddings.weight"
    assert not torch.equal(weights[plain][rows], weights[trained][rows])
    assert torch.equal(weights[trained][rows], weights[again][rows])  # seeded: the same rows twice
    for name, tensor in weights[trained].items():  # every other parameter is the English model's
        if name != rows and name in english:
            assert torch.equal(tensor, english[name]), name
    for bad in ("-1", "inf", "nan"):
        result = xlembed("transplant", built, "-o", tmp_path / "no", "--distill", bad)
        assert result.exit_code == 2 and not (tmp_path / "no").exists(), (bad, result.output)
    result = xlembed("transplant", built, "-o", tmp_path / "no", "--rows", "matrix", "--distill", "1",
                     "--work", tmp_path / "nowhere")  # the corpus to distill on: checked before anything is done
    assert result.exit_code == 2 and "tokenize.json: missing" in result.output and not (tmp_path / "no").exists()


def test_distill_layers_lr_trains_the_layers_too(built, tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    work = built.with_name("out.work")
    layers = tmp_path / "layers"
    monkeypatch.setenv("XLEMBED_PROGRESS_INTERVAL", "0")  # a log line at every step
    result = xlembed("transplant", built, "-o", layers, "--distill", "30", "--distill-layers-lr", "1e-3")
    assert result.exit_code == 0, result.output
    assert any(line.startswith("distil: Chinese rows and layers:") for line in result.output.splitlines())
    assert "rows and layers distilled over 72 sentence pairs" in " ".join(result.output.split())
    record = json.loads((layers / "xlembed_transplant.json").read_text("utf-8"))["distill"]
    assert record["layers_lr"] == 1e-3 and record["max_length"] == 64  # the tiny model's positions, not 128
    english = load_file(str(tiny_bert / "model.safetensors"))
    trained = load_file(str(layers / "model.safetensors"))
    moved = [name for name, tensor in trained.items() if name in english and not torch.equal(tensor, english[name])]
    assert "encoder.layer.0.attention.self.query.weight" in moved and len(moved) > 10
    plain = tmp_path / "plain"
    assert xlembed("transplant", built, "-o", plain, "-q").exit_code == 0
    assert distillation_error(layers, tiny_bert, work) < 0.5 * distillation_error(plain, tiny_bert, work)
    for bad in ("-1", "nan", "2"):
        result = xlembed("transplant", built, "-o", tmp_path / "no", "--distill", "1", "--distill-layers-lr", bad)
        assert result.exit_code == 2 and not (tmp_path / "no").exists(), (bad, result.output)
    result = xlembed("transplant", built, "-o", tmp_path / "no", "--distill-layers-lr", "1e-3")  # without --distill
    assert result.exit_code == 2 and not (tmp_path / "no").exists()
    assert "--distill-layers-lr trains the layers during --distill only" in " ".join(result.output.split())
