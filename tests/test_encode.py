import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from xlembed.config import Config, EncodeConfig, Layer, Precision
from xlembed.encode import VectorStore, encode, piece_plan, windows
from xlembed.errors import XlembedError
from xlembed.layout import WorkDir

SENTENCES = ["i like playing", "the cats are playing with the dog", "i like playing", "hello world !", "we read books"]


def reference_word_vectors(model_dir, words, layers):
    """One sentence alone, no padding: mean of each word's pieces."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states
    hidden = torch.stack([states[i] for i in layers]).mean(0)[0]
    word_ids = enc.word_ids(0)
    return torch.stack([hidden[[p for p, w in enumerate(word_ids) if w == j]].mean(0) for j in range(len(words))])


def encoded(tmp_path, model_dir, sentences=SENTENCES, **options):
    options.setdefault("precision", "fp32")  # the references are float32
    work = WorkDir(tmp_path / "work")
    work.root.mkdir(parents=True, exist_ok=True)
    work.corpus_en.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    record = encode(Config().set(model=model_dir, **options).validate(("encode",)), work)
    store = VectorStore(work)
    matrix = torch.cat([store.shard(k) for k in range(store.n_shards)]).float()
    return record, store, matrix


def test_word_pieces_map_to_their_words(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    ids, words_of_pieces, n_pieces = piece_plan(tokenizer, [["i", "like", "playing"], ["dogs", "played"]])
    assert tokenizer.convert_ids_to_tokens(ids[0].tolist()) == ["i", "like", "play", "##ing"]
    assert words_of_pieces[0].tolist() == [0, 1, 2, 2]
    assert words_of_pieces[1].tolist() == [0, 1, 1]  # play ##ed
    assert n_pieces[1].tolist() == [1, 2]


def test_the_plan_leaves_tokenizer_parallelism_and_the_cycle_collector_as_it_found_them(tiny_bert, monkeypatch):
    import gc
    import os

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    for setting in ("false", None):  # models.py's setting for the tokenize stage's forks; or none
        if setting is None:
            monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
        else:
            monkeypatch.setenv("TOKENIZERS_PARALLELISM", setting)
        piece_plan(tokenizer, [["i", "like", "playing"]] * 5)
        assert os.environ.get("TOKENIZERS_PARALLELISM") == setting
    from xlembed.encode import no_cycle_collection

    assert gc.isenabled()
    with no_cycle_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with no_cycle_collection():
            pass
        assert not gc.isenabled()  # left off, as it was
    finally:
        gc.enable()


def test_the_model_loads_beside_the_plan_and_a_broken_one_still_fails_in_one_line(tmp_path, tiny_bert):
    import shutil

    from xlembed.encode import Encoder

    opts = Config().set(device="cpu", precision="fp32").validate(("encode",)).encode
    encoder = Encoder(tiny_bert, opts, torch.device("cpu"), Precision.fp32)
    plan = encoder.plan(["a b", "a b", "c"])
    assert encoder.counts(plan)["unique_sentences"] == 2 and encoder.model.config.hidden_size == encoder.dim
    assert encoder.timing.load > 0
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    weights = next(p for p in broken.iterdir() if p.name.startswith(("model.", "pytorch_model")))
    weights.write_bytes(b"not weights")
    encoder = Encoder(broken, opts, torch.device("cpu"), Precision.fp32)
    with pytest.raises(XlembedError, match="cannot load the model"):
        encoder.model  # noqa: B018 - the error is raised where the model is first needed


def test_truncation_and_padding_in_tokenizer_json_are_ignored(tiny_bert, tmp_path):
    """MiniLM's tokenizer.json pads to 128 and truncates at 128: --max-length decides, not that."""
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    config = json.loads((model / "tokenizer.json").read_text())
    config["truncation"] = {"max_length": 3, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}
    config["padding"] = {
        "strategy": {"Fixed": 16},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    (model / "tokenizer.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    tokenizer.backend_tokenizer.enable_truncation(3)
    tokenizer.backend_tokenizer.enable_padding(length=16)
    ids, pieces, n_pieces = piece_plan(tokenizer, [["i", "like", "playing", "with", "the", "dog"]])
    assert pieces[0].tolist() == [0, 1, 2, 2, 3, 4, 5]
    assert (n_pieces[0] > 0).all()


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_vectors_are_the_mean_of_word_pieces_whatever_the_batching(tmp_path, tiny_bert, batch_size):
    _, store, matrix = encoded(tmp_path, tiny_bert, batch_size=batch_size, shard_rows=3, layer="-1")
    for s, sentence in enumerate(SENTENCES):
        expected = reference_word_vectors(tiny_bert, sentence.split(), [4])
        rows = store.rows_of(s)
        assert (rows >= 0).all()
        torch.testing.assert_close(matrix[torch.from_numpy(rows)], expected, atol=2e-3, rtol=2e-3)


def test_layer_choice(tmp_path, tiny_bert):
    _, store, matrix = encoded(tmp_path, tiny_bert, layer="mean-last4")
    expected = reference_word_vectors(tiny_bert, SENTENCES[1].split(), [1, 2, 3, 4])
    torch.testing.assert_close(matrix[torch.from_numpy(store.rows_of(1))], expected, atol=2e-3, rtol=2e-3)
    _, store, matrix = encoded(tmp_path, tiny_bert, layer="0")
    expected = reference_word_vectors(tiny_bert, SENTENCES[1].split(), [0])
    torch.testing.assert_close(matrix[torch.from_numpy(store.rows_of(1))], expected, atol=2e-3, rtol=2e-3)


def test_identical_sentences_are_encoded_once(tmp_path, tiny_bert):
    record, store, matrix = encoded(tmp_path, tiny_bert)
    assert record["counts"]["unique_sentences"] == 4
    assert record["counts"]["vector_rows"] == len(matrix) == sum(len(s.split()) for s in set(SENTENCES))
    assert store.rows_of(0).tolist() == store.rows_of(2).tolist()
    assert matrix.dtype == torch.float32 and store.shard(0).dtype == torch.float16


# --- sentences longer than the window ---------------------------------------------------------------


def test_windows_cover_every_word_once_with_context_on_both_sides():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n_pieces = rng.integers(1, 4, size=rng.integers(30, 400))  # words of 1-3 pieces
        n_pieces[rng.integers(len(n_pieces))] = 0  # a word the tokenizer dropped
        window = int(rng.integers(8, 60))
        spans = windows(n_pieces, window)
        ends = np.cumsum(n_pieces)
        begins = ends - n_pieces
        owner = np.full(len(n_pieces), -1)
        for k, (start, stop, owned) in enumerate(spans):
            assert stop - start <= window
            assert (begins[owned] >= start).all() and (ends[owned] <= stop).all()  # whole words
            assert (owner[owned] == -1).all()  # once
            owner[owned] = k
            interior = owned[(begins[owned] >= window) & (ends[owned] <= ends[-1] - window)]
            # away from the sentence's ends a word has about a quarter window of context each side
            assert ((begins[interior] - start >= window // 4 - 3) & (stop - ends[interior] >= window // 4 - 3)).all()
        assert ((owner >= 0) == (n_pieces > 0)).all()


def test_a_sentence_of_hundreds_of_words_gets_a_vector_for_every_word(tmp_path, tiny_bert):
    words = (["the", "cats", "are", "playing", "with", "the", "dog", "."] * 60)[
        :450
    ]  # 510 pieces; windows of 14 pieces
    long = " ".join(words)
    record, store, matrix = encoded(tmp_path, tiny_bert, sentences=[long, "i like playing"], max_length=16, layer="-1")
    assert (store.rows_of(0) >= 0).all() and len(store.rows_of(0)) == 450
    assert record["counts"]["words_truncated"] == 0 and record["counts"]["sentences_in_windows"] == 1
    # a word's vector is the one it gets in the window that owns it: encode that window alone
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    _, _, n_pieces = piece_plan(tokenizer, [words])
    assert (
        record["counts"]["windows"] == len(windows(n_pieces[0], 14)) + 1 == 73
    )  # a window every 7 pieces, and the short sentence
    ends = np.cumsum(n_pieces[0])
    for start, stop, owned in windows(n_pieces[0], 14)[3:6]:
        first, last = int(np.searchsorted(ends, start, side="right")), int(np.searchsorted(ends, stop, side="left"))
        expected = reference_word_vectors(tiny_bert, words[first : last + 1], [4])
        got = matrix[torch.from_numpy(store.rows_of(0)[owned])]
        torch.testing.assert_close(got, expected[owned - first], atol=2e-3, rtol=2e-3)


def test_a_short_sentence_gets_exactly_the_vectors_it_got_without_long_ones(tmp_path, tiny_bert):
    long = " ".join(["we", "read", "books", "and", "the", "cats", "are", "playing", "."] * 40)
    _, alone_store, alone = encoded(tmp_path / "a", tiny_bert, sentences=SENTENCES, batch_size=1)
    _, store, matrix = encoded(tmp_path / "b", tiny_bert, sentences=[long, *SENTENCES], batch_size=1)
    for s in range(len(SENTENCES)):
        assert torch.equal(
            matrix[torch.from_numpy(store.rows_of(s + 1))], alone[torch.from_numpy(alone_store.rows_of(s))]
        )


# --- precision ------------------------------------------------------------------------------------------


def test_precision_auto_reads_the_cpu_flags_and_measures_only_where_they_cannot_tell(monkeypatch):
    import xlembed.encode as enc

    amx = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert enc.cpu_has_native_bf16(amx) and enc.cpu_flags(amx) >= {"avx512_bf16", "amx_bf16"}
    assert not enc.cpu_has_native_bf16("flags\t\t: fpu avx512f avx512_bf16 avx512_fp16\n")  # no matrix units
    assert enc.cpu_flags("") == set()

    def never() -> float:
        raise AssertionError("measured although the flags decide")

    choose = enc.choose_cpu_precision
    assert choose(enc.cpu_flags(amx), never) == (Precision.bf16, "amx_bf16", None)
    assert choose({"avx2", "avx512f"}, never) == (Precision.fp32, "no avx512_bf16", None)
    assert choose(set(), never).precision == Precision.fp32  # flags unreadable: the safe choice
    # AVX512-BF16 without AMX: the measured speed-up decides, with a margin against noise
    assert choose({"avx512f", "avx512_bf16"}, lambda: 1.6) == (Precision.bf16, "matmul speed-up", 1.6)
    assert choose({"avx512f", "avx512_bf16"}, lambda: enc.BF16_MARGIN).precision == Precision.bf16
    assert choose({"avx512f", "avx512_bf16"}, lambda: 1.1) == (Precision.fp32, "matmul speed-up", 1.1)
    assert choose({"avx512f", "avx512_bf16"}, lambda: 140 / 208).precision == Precision.fp32  # a Xeon's, measured

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(enc, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(enc, "bf16_matmul_speedup", lambda: 2.0)
    assert enc.precision_choice(Precision.auto, cpu) == (Precision.bf16, "matmul speed-up", 2.0)
    assert enc.resolve_precision(Precision.auto, cpu) == Precision.bf16
    monkeypatch.setattr(enc, "bf16_matmul_speedup", lambda: 0.7)
    assert enc.resolve_precision(Precision.auto, cpu) == Precision.fp32
    monkeypatch.setattr(enc, "bf16_matmul_speedup", never)
    assert enc.precision_choice(Precision.auto, cuda) == (Precision.fp16, "cuda", None)
    assert enc.precision_choice(Precision.bf16, cpu) == (Precision.bf16, "asked", None)  # asked for: given
    assert enc.resolve_precision(Precision.fp32, cpu) == Precision.fp32


def test_the_bf16_speedup_is_a_positive_ratio_measured_once():
    import xlembed.encode as enc

    ratio = enc.bf16_matmul_speedup(rows=64, reps=1)
    assert ratio > 0 and enc.bf16_matmul_speedup(rows=64, reps=1) == ratio  # cached: one measurement a process


def test_bf16_vectors_agree_with_fp32_and_the_record_says_which_was_used(tmp_path, tiny_bert):
    fp32_record, store, fp32 = encoded(tmp_path / "a", tiny_bert, precision="fp32")
    bf16_record, _, bf16 = encoded(tmp_path / "b", tiny_bert, precision="bf16")
    assert fp32_record["precision_used"] == "fp32" and bf16_record["precision_used"] == "bf16"
    assert bf16_record["precision_decided_by"] == {"by": "asked", "bf16_speedup": None}
    assert not torch.equal(fp32, bf16)
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.99


def test_shards_bound_the_rows_held_at_once(tmp_path, tiny_bert):
    _, store, matrix = encoded(tmp_path, tiny_bert, batch_size=1, shard_rows=4)
    assert store.n_shards > 2
    assert all(len(store.shard(k)) <= 7 for k in range(store.n_shards))  # a shard closes once it reaches 4 rows


def test_layer_is_parsed_once_and_gives_its_indices():
    assert Layer.parse("-1").indices(6) == [6]
    assert Layer.parse(0).indices(6) == [0]  # TOML's layer = 0 is an integer
    assert Layer.parse("mean-last4").indices(6) == [3, 4, 5, 6]
    assert str(Layer.parse("-1")) == "-1" and str(EncodeConfig().layer) == "mean-last4"  # cache keys keep the text
    for bad in ("7", "-8"):
        with pytest.raises(XlembedError, match="encode.layer .* is out of range"):
            Layer.parse(bad).indices(6)
    with pytest.raises(XlembedError, match="needs at least 4 layers"):
        Layer.parse("mean-last4").indices(3)
    with pytest.raises(XlembedError, match="encode.layer must be an integer or 'mean-last4', got 'last'"):
        Layer.parse("last")


def test_batches_are_bounded_in_items_and_in_padded_pieces():
    from xlembed.encode import Item, batch_bounds

    items = [Item(0, 0, n, None) for n in (100, 90, 40, 40, 10, 10, 10, 5)]
    # widths with [CLS]/[SEP]: 102 -> 2 items fit 256 pieces; 42 -> 6 fit, but 3 at most; 12 -> the last 3
    assert batch_bounds(items, batch_size=3, batch_tokens=256, n_special=2) == [0, 2, 5, 8]
    assert batch_bounds([Item(0, 0, 500, None)], batch_size=3, batch_tokens=256, n_special=2) == [0, 1]  # never empty


def test_pooling_adds_each_words_pieces_in_order_and_divides_by_their_number():
    """make_batch + pool against a plain loop over every item's pieces (windows, a word longer than a window, words
    the tokenizer dropped), bit for bit: the pieces of a word are added first to last, as a sequential scatter would."""
    from xlembed.encode import PiecePlan, batch_bounds, make_batch, pool, row_plan

    rng = np.random.default_rng(1)
    n_pieces = [rng.integers(0, 4, size=n) for n in (3, 40, 7, 1, 25)]  # 0: a word the tokenizer dropped
    n_pieces[1][5] = 19  # longer than the window: a window of its own, its first 12 pieces
    n_pieces[3][0] = 2
    pieces = PiecePlan(
        [rng.integers(5, 100, size=int(n.sum())).astype(np.int32) for n in n_pieces],
        [np.repeat(np.arange(len(n)), n).astype(np.int32) for n in n_pieces],
        n_pieces,
    )
    window, d = 12, 8
    rows = row_plan(np.arange(len(n_pieces)), np.array([len(n) for n in n_pieces]), pieces, window)
    bounds = batch_bounds(rows.items, batch_size=3, batch_tokens=40, n_special=2)
    out = torch.full((rows.n_rows, d), float("nan"), dtype=torch.float16)
    expected = torch.full((rows.n_rows, d), float("nan"), dtype=torch.float16)
    for b, e in zip(bounds[:-1], bounds[1:]):
        items = rows.items[b:e]
        batch = make_batch(items, pieces, rows, prefix=[1], suffix=[2], pad_id=0)
        hidden = torch.randn((*batch.input_ids.shape, d))  # [B, T, d]
        pool(hidden, batch, out[first_row(items, rows) :][: batch.n_rows])
        for i, item in enumerate(items):
            words = pieces.words[item.sentence]
            owned = np.flatnonzero(n_pieces[item.sentence]) if item.owned is None else item.owned
            for j in owned:
                positions = [1 + p - item.start for p in range(item.start, min(item.stop, len(words))) if words[p] == j]
                total = torch.zeros(d)
                for p in positions:
                    total = total + hidden[i, p]
                expected[rows.unique_rows[item.sentence][j]] = total / len(positions)
        assert batch.input_ids[:, 0].eq(1).all()
    assert not expected.isnan().any()
    assert torch.equal(out, expected)


def test_a_sentences_items_add_up_to_its_pooled_sum():
    """pool_sentences: every piece of a sentence counted once over its windows, and its special tokens once."""
    from xlembed.encode import PiecePlan, batch_bounds, make_batch, pool_sentences, row_plan

    rng = np.random.default_rng(2)
    n_pieces = [rng.integers(0, 4, size=n) for n in (3, 40, 7, 1, 25, 0)]  # the last: no words at all
    pieces = PiecePlan(
        [rng.integers(5, 100, size=int(n.sum())).astype(np.int32) for n in n_pieces],
        [np.repeat(np.arange(len(n)), n).astype(np.int32) for n in n_pieces],
        n_pieces,
    )
    rows = row_plan(np.arange(len(n_pieces)), np.array([len(n) for n in n_pieces]), pieces, window=12)
    assert any(item.owned is not None for item in rows.items)  # windows
    sums, tokens = np.zeros(len(n_pieces)), np.zeros(len(n_pieces))
    bounds = batch_bounds(rows.items, batch_size=3, batch_tokens=40, n_special=2)
    for b, e in zip(bounds[:-1], bounds[1:]):
        items = rows.items[b:e]
        batch = make_batch(items, pieces, rows, prefix=[1], suffix=[2], pad_id=0)
        hidden = torch.full((*batch.input_ids.shape, 1), 1e6)  # [B, T, 1]: padding, never counted
        for i, item in enumerate(items):
            n = min(item.stop, len(pieces.ids[item.sentence])) - item.start
            hidden[i, 0], hidden[i, n + 1] = 1000.0, 2000.0  # [CLS], [SEP]
            hidden[i, 1 : n + 1, 0] = torch.arange(item.start, item.start + n) + 1.0  # piece p of the sentence: p + 1
        np.add.at(sums, batch.sentence_of.numpy(), pool_sentences(hidden, batch)[:, 0].numpy())
        np.add.at(tokens, batch.sentence_of.numpy(), batch.sentence_mask.sum(1).numpy())
    total = np.array([n.sum() for n in n_pieces])
    assert tokens.tolist() == (total + 2).tolist()
    assert sums.tolist() == (total * (total + 1) / 2 + 3000).tolist()


def first_row(items, rows) -> int:
    """The first row a batch of these items fills (its rows are consecutive)."""
    return min(
        int(r)
        for item in items
        for r in rows.unique_rows[item.sentence][slice(None) if item.owned is None else item.owned]
        if r >= 0
    )


def test_the_encode_record_splits_its_seconds_into_forward_and_host(tmp_path, tiny_bert, capsys):
    from cli._util import summarize

    record, _, _ = encoded(tmp_path, tiny_bert)
    timing = record["timing"]
    parts = ("forward", "load", "plan", "waiting", "shards", "other")
    assert set(timing) == {*parts, "host"}
    assert all(timing[k] >= 0 for k in timing) and timing["forward"] > 0 and timing["load"] > 0
    total = sum(timing[k] for k in parts)
    assert total <= record["seconds"] + 0.01  # the parts are the stage's own seconds, less its bookkeeping
    assert timing["host"] == pytest.approx(total - timing["forward"], abs=0.01)
    summarize("encode", record, quiet=False)
    line = capsys.readouterr().err.splitlines()[-1]
    assert (
        f"forward (model + pooling) {timing['forward']:.1f} s, host {timing['host']:.1f} s" in line and "plan" in line
    )
    assert line.endswith("; fp32: asked")  # the precision, and what chose it
    summarize("encode", dict(record, precision_used="bf16",
                             precision_decided_by={"by": "matmul speed-up", "bf16_speedup": 1.61}), quiet=False)
    assert capsys.readouterr().err.splitlines()[-1].endswith("; bf16: matmul speed-up 1.61x")
