"""`xlembed write --distill`: the matrix's rows trained so that a corpus
sentence's mean row is nearest the English model's own embedding of its
translation, anchored to the rows as built."""

import json

import torch
from safetensors.torch import load_file

from .test_cli import built, corpus, xlembed  # noqa: F401  (fixtures: a tiny-model build of a small corpus)


def test_distill_matrix_trains_the_rows_sentences_use_and_no_other():
    from xlembed.distill import MatrixDistillOptions, PackedIds, bag_of_rows, distill_matrix

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(12, 8, generator=generator)  # [V, d]; row 11 is in no sentence
    sentences = PackedIds.of([[0, 1], [1, 2, 3], [4], [5, 6], [7, 8, 9], [10, 0]])
    assert sentences.batch([1, 5])[0].tolist() == [1, 2, 3, 10, 0] and sentences.batch([1, 5])[1].tolist() == [0, 3]
    targets = torch.randn(6, 8, generator=generator)  # [n, d]
    start = rows.clone()

    def nearest() -> list[int]:
        means = torch.nn.functional.normalize(bag_of_rows(rows, *sentences.batch(list(range(6)))), dim=1)
        return (means @ torch.nn.functional.normalize(targets, dim=1).T).argmax(1).tolist()

    assert nearest() != list(range(6))
    done = distill_matrix(rows, sentences, targets, MatrixDistillOptions(epochs=200, anchor=0.0, batch_size=3))
    assert nearest() == list(range(6))  # each sentence's mean row is nearest its own target
    assert done.pairs == 6 and done.steps == 400 and done.loss_last < done.loss_first
    assert torch.equal(rows[11], start[11]) and not torch.equal(rows[:11], start[:11])

    anchored, free = start.clone(), start.clone()
    for matrix, anchor in ((anchored, 100.0), (free, 0.0)):
        distill_matrix(matrix, sentences, targets, MatrixDistillOptions(epochs=100, anchor=anchor, batch_size=3))
    assert (anchored - start).norm() < 0.5 * (free - start).norm()  # the anchor holds rows near where they were


def test_epoch_batches_cover_every_pair_once_and_leave_no_batch_of_one():
    from xlembed.distill import epoch_batches

    for n in (1, 2, 63, 64, 65, 128, 129, 193, 200):
        batches = epoch_batches(n, 64, torch.Generator().manual_seed(0))
        assert sorted(i for batch in batches for i in batch) == list(range(n)), n
        assert n == 1 or min(len(batch) for batch in batches) > 1, n
        assert len({id(batch) for batch in batches}) == len(batches), n
    assert [len(b) for b in epoch_batches(129, 64, torch.Generator().manual_seed(0))] == [64, 65]


def english_embeddings(model_dir, sentences: list[str]) -> torch.Tensor:
    """The tiny BERT's mean-pooled last layer, as its own tokenizer splits each sentence."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(str(model_dir)), AutoModel.from_pretrained(str(model_dir)).eval()
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state  # [n, t, d]
    mask = encoded["attention_mask"].unsqueeze(-1).float()  # [n, t, 1]
    return (hidden * mask).sum(1) / mask.sum(1)


def own_rank_share(out, work, tiny_bert) -> float:
    """The share of corpus pairs whose Chinese mean row is nearest its own English embedding."""
    vocab = (out / "vocab.txt").read_text("utf-8").splitlines()
    rows = load_file(str(out / "embeddings.safetensors"))["embeddings"]
    index = {w: i for i, w in enumerate(vocab)}
    zh = (work / "corpus.zh").read_text("utf-8").splitlines()
    en = (work / "corpus.en").read_text("utf-8").splitlines()
    means = torch.stack([rows[[index[w] for w in line.split()]].mean(0) for line in zh])  # [n, d]
    cosines = torch.nn.functional.normalize(means, dim=1) @ torch.nn.functional.normalize(
        english_embeddings(tiny_bert, en), dim=1).T
    return (cosines.argmax(1) == torch.arange(len(zh))).float().mean().item()


def test_write_distill(built, tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    """The projected rows are trained, then the other rows are filled from them: a word the corpus never
    shows gets the row `extend` would give it, and [UNK] is the mean of the trained rows."""
    from xlembed import load
    from xlembed.config import SENTENCE_SIF

    work = built.with_name("out.work")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join((built / "vocab.txt").read_text("utf-8").splitlines() + ["猫茶"]) + "\n", "utf-8")
    plain, trained, again, corpus_vocab = (tmp_path / name for name in ("plain", "trained", "again", "corpus"))
    assert xlembed("write", "--work", work, "--out", plain, "--vocab", vocab, "--oov", "chars", "--distill", "0",
                   "-q").exit_code == 0
    for out in (trained, again):
        result = xlembed("write", "--work", work, "--out", out, "--vocab", vocab, "--oov", "chars", "--distill", "30")
        assert result.exit_code == 0, result.output
    assert "rows distilled over 72 sentence pairs, 60 steps" in " ".join(result.output.split())
    manifest = json.loads((trained / "manifest.json").read_text("utf-8"))
    record = manifest["distill"]
    assert json.loads(xlembed("info", trained, "--json").stdout)["distill"] == record
    assert json.loads(xlembed("info", plain, "--json").stdout)["distill"] is None
    from xlembed.cli._util import out as table_console

    monkeypatch.setattr(table_console, "width", 200)  # what the table says, not how it wraps
    assert "30 epochs over 72 sentence pairs" in xlembed("info", trained).stdout
    assert record["pairs"] == 72 and record["steps"] == 60 and record["anchor"] == 10.0 and record["epochs"] == 30
    assert record["targets"] == "encode" and "max_length" not in record  # the encode stage's sentence embeddings
    assert manifest["parameters"]["write"]["distill"] == 30
    assert own_rank_share(trained, work, tiny_bert) > own_rank_share(plain, work, tiny_bert)
    rows = {out: load_file(str(out / "embeddings.safetensors"))["embeddings"] for out in (plain, trained, again)}
    assert torch.equal(rows[trained], rows[again])  # seeded: the same rows twice
    projected = load_file(str(trained / "embeddings.safetensors"))["projected"].bool()
    assert torch.allclose(rows[trained][1], rows[trained][projected].mean(0), atol=1e-6)  # [UNK]: the mean trained row
    assert xlembed("write", "--work", work, "--out", corpus_vocab, "--distill", "30", "-q").exit_code == 0
    extended, _ = load(corpus_vocab).extend(["猫茶"], "chars")
    assert not torch.equal(rows[trained][-1], rows[plain][-1])
    assert torch.allclose(rows[trained][-1], extended.vectors[-1].float())  # filled from the trained rows

    distilled, as_projected = load(trained), load(plain)  # sentence vectors: rows trained for the mean
    assert distilled.default_sif() == 0 and as_projected.default_sif() == SENTENCE_SIF > 0
    sentences = ["我们喜欢猫。", "他们读书。"]
    assert torch.equal(distilled.encode(sentences), distilled.encode(sentences, sif=0))
    assert not torch.equal(distilled.encode(sentences), distilled.encode(sentences, sif=SENTENCE_SIF))
    for bad in ("-1", "nan", "101"):
        result = xlembed("write", "--work", work, "--out", tmp_path / "no", "--distill", bad)
        assert result.exit_code == 2 and not (tmp_path / "no").exists(), (bad, result.output)
    result = xlembed("write", "--work", work, "--out", tmp_path / "no", "--distill", "1", "--distill-anchor", "1001")
    assert result.exit_code == 2 and not (tmp_path / "no").exists()
    result = xlembed("write", "--work", work, "--out", tmp_path / "no", "--distill", "0", "--distill-anchor", "5")
    assert result.exit_code == 2 and not (tmp_path / "no").exists()
    assert "--distill-anchor weighs --distill's training only" in " ".join(result.output.split())


def test_encode_keeps_the_english_models_own_sentence_embeddings(built, tiny_bert):  # noqa: F811
    """WORK/sentences.safetensors: each corpus line's embedding as the model pools it (mean of the last layer)."""
    work = built.with_name("out.work")
    kept = load_file(str(work / "sentences.safetensors"))
    lines = (work / "corpus.en").read_text("utf-8").splitlines()
    vectors = kept["vectors"][kept["line_sentence"]].float()  # [n_lines, d]
    expected = english_embeddings(tiny_bert, lines)
    assert vectors.shape == expected.shape == (72, 32)
    assert torch.nn.functional.cosine_similarity(vectors, expected).min() > 0.99
    assert json.loads((work / "encode.json").read_text("utf-8"))["sentence_vectors"] is True


def test_write_distill_needs_the_model_only_without_kept_sentence_embeddings(corpus, tiny_bert, tmp_path):  # noqa: F811
    import shutil

    model = shutil.copytree(tiny_bert, tmp_path / "model")
    out, work = tmp_path / "out", tmp_path / "out.work"
    assert xlembed("run", "--tsv", corpus, "--model", model, "--out", out, "-q").exit_code == 0
    config = model / "config.json"
    config.write_text(config.read_text("utf-8").replace("{", '{"changed": 1, ', 1), "utf-8")
    assert xlembed("write", "--work", work, "--out", tmp_path / "kept", "--distill", "1", "-q").exit_code == 0
    assert json.loads((tmp_path / "kept" / "manifest.json").read_text("utf-8"))["distill"]["targets"] == "encode"
    (work / "sentences.safetensors").unlink()  # as an encode before xlembed kept them: the model's second pass
    result = xlembed("write", "--work", work, "--out", tmp_path / "d", "--distill", "1")
    assert result.exit_code == 2 and not (tmp_path / "d").exists()
    said = " ".join(result.output.split())
    assert "not the model the corpus was encoded with" in said and "or write with --distill 0" in said
    assert xlembed("write", "--work", work, "--out", tmp_path / "d", "--distill", "0", "-q").exit_code == 0
    shutil.rmtree(model)
    shutil.copytree(tiny_bert, model)  # the model as encoded: the teacher computes the targets
    result = xlembed("write", "--work", work, "--out", tmp_path / "t", "--distill", "1")
    assert result.exit_code == 0 and "the model ran again for the targets" in " ".join(result.output.split())
    record = json.loads((tmp_path / "t" / "manifest.json").read_text("utf-8"))["distill"]
    assert record["targets"] == "teacher" and record["max_length"] == 64  # the tiny model's positions, not 256


def test_a_distillation_whose_loss_rose_is_reported_with_a_warning():
    from xlembed.cli._util import distilled_text

    record = dict(pairs=72, steps=30, loss_first=0.045, loss_last=1.07, layers_lr=1.0)
    assert "warning: the loss rose" in distilled_text(record) and "--distill-layers-lr" in distilled_text(record)
    assert "--distill-layers-lr" not in distilled_text(record | dict(layers_lr=0.0))  # write's rows: no such option
    assert "warning" not in distilled_text(record | dict(loss_last=0.03))
    assert "warning" not in distilled_text(record | dict(loss_first=0.041879, loss_last=0.041882))  # 0.04188 both
