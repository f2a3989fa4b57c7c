import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from xlembed.config import Config, WorkDir
from xlembed.encode import VectorStore, encode, piece_plan
from xlembed.models import layer_indices
from xlembed.io import XlembedError

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
    work = WorkDir(tmp_path / "work")
    work.root.mkdir(parents=True, exist_ok=True)
    work.corpus_en.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    record = encode(Config().set(model=model_dir, **options).validate(("encode",)), work)
    store = VectorStore(work)
    matrix = torch.cat([store.shard(k) for k in range(store.n_shards)]).float()
    return record, store, matrix


def test_word_pieces_map_to_their_words(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    ids, words_of_pieces, has_vector, no_pieces = piece_plan(tokenizer, [["i", "like", "playing"], ["dogs", "played"]], 100)
    assert tokenizer.convert_ids_to_tokens(ids[0].tolist()) == ["i", "like", "play", "##ing"]
    assert words_of_pieces[0].tolist() == [0, 1, 2, 2]
    assert words_of_pieces[1].tolist() == [0, 1, 1]  # play ##ed
    assert has_vector[1].tolist() == [True, True]


def test_truncation_and_padding_in_tokenizer_json_are_ignored(tiny_bert, tmp_path):
    """MiniLM's tokenizer.json pads to 128 and truncates at 128: --max-length decides, not that."""
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    config = json.loads((model / "tokenizer.json").read_text())
    config["truncation"] = {"max_length": 3, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}
    config["padding"] = {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": None,
                         "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    (model / "tokenizer.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    tokenizer.backend_tokenizer.enable_truncation(3)
    tokenizer.backend_tokenizer.enable_padding(length=16)
    ids, pieces, has_vector, _ = piece_plan(tokenizer, [["i", "like", "playing", "with", "the", "dog"]], 100)
    assert pieces[0].tolist() == [0, 1, 2, 2, 3, 4, 5]
    assert has_vector[0].all()


def test_truncation_keeps_whole_words_only(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    # pieces: i like play ##ing i -> with room for 3 pieces, "playing" would be cut: no vector
    _, pieces, has_vector, _ = piece_plan(tokenizer, [["i", "like", "playing", "i"]], 3)
    assert has_vector[0].tolist() == [True, True, False, False]
    assert pieces[0].tolist() == [0, 1]


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


def test_words_past_max_length_get_no_vector_and_are_counted(tmp_path, tiny_bert):
    # [CLS] + 4 pieces + [SEP]: "the cats are playing" = the cat ##s are -> "playing" and the rest are cut
    record, store, _ = encoded(tmp_path, tiny_bert, sentences=["the cats are playing with the dog"], max_length=6)
    assert (store.rows_of(0) >= 0).tolist() == [True, True, True, False, False, False, False]
    assert record["counts"]["words_truncated"] == 4


def test_shards_bound_the_rows_held_at_once(tmp_path, tiny_bert):
    _, store, matrix = encoded(tmp_path, tiny_bert, batch_size=1, shard_rows=4)
    assert store.n_shards > 2
    assert all(len(store.shard(k)) <= 7 for k in range(store.n_shards))  # a shard closes once it reaches 4 rows


def test_layer_indices():
    assert layer_indices("-1", 6) == [6]
    assert layer_indices("0", 6) == [0]
    assert layer_indices("mean-last4", 6) == [3, 4, 5, 6]
    for bad in ("7", "-8", "last"):
        with pytest.raises(XlembedError, match="--layer"):
            layer_indices(bad, 6)
