"""write --context-epochs: the rows trained on the user's text by skip-gram (pipeline/skipgram.py)."""
import pytest
import torch

from xlembed.config import PAD, UNK
from xlembed.progress import CallbackReporter
from xlembed.skipgram import SkipGramTrainer, TextRecorder, pairs_at

VOCAB = [PAD, UNK, "猫", "狗", "鱼", "鸟", "书"]


def recorded(sentences: list[list[str]]):
    recorder = TextRecorder()
    passed = list(recorder.record(iter(sentences)))
    assert passed == sentences  # the fill reads the same sentences
    return recorder.text(VOCAB, (PAD, UNK))


def test_recorded_text_takes_vocabulary_rows_and_gives_other_words_ids_past_them():
    text = recorded([["猫", "喜欢", "鱼"], ["[UNK]", "猫"], []])
    assert text.ids.tolist() == [2, 7, 4, 8, 2]  # 喜欢 and a literal [UNK] are words of the text only
    assert text.sentence.tolist() == [0, 0, 0, 1, 1]
    assert text.counts.tolist() == [0, 0, 2, 0, 1, 0, 0, 1, 1]


def test_pairs_are_the_words_within_the_window_in_the_same_sentence():
    text = recorded([["猫", "狗", "鱼"], ["鸟", "书"]])
    word, context = pairs_at(text, torch.arange(5), window=1)
    assert sorted(zip(word.tolist(), context.tolist())) == sorted(
        [(2, 3), (3, 2), (3, 4), (4, 3), (5, 6), (6, 5)]  # never 鱼-鸟 across the sentences
    )
    word, context = pairs_at(text, torch.tensor([0]), window=5)
    assert sorted(context.tolist()) == [3, 4]


@pytest.fixture(autouse=True)
def small_steps(monkeypatch):
    """Steps of 256 pairs: a few thousand words then make enough steps to train."""
    import xlembed.skipgram

    monkeypatch.setattr(xlembed.skipgram, "PAIRS_PER_STEP", 256)


def rows_and_text():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn((len(VOCAB), 16), generator=g) + 3.0  # a shared offset, as the matrix's rows have
    rows[0] = 0
    # 猫 and 狗 keep the same company (我 喜欢), 鱼 and 鸟 another (他 吃); 书 is never in the text
    text = recorded([["我", "喜欢", ["猫", "狗"][i % 2]] if i % 4 < 2 else ["他", "吃", ["鱼", "鸟"][i % 2]]
                     for i in range(1000)])
    return rows, text


def cosine(rows, a, b):
    return float(torch.nn.functional.cosine_similarity(rows[a] - rows[1:].mean(0), rows[b] - rows[1:].mean(0), dim=0))


def test_training_brings_words_in_the_same_company_closer_and_keeps_the_others():
    rows, text = rows_and_text()
    trained = torch.tensor([w not in (PAD, UNK) for w in VOCAB])
    trainer = SkipGramTrainer(epochs=10, anchor=0.1, seed=0)
    out = trainer.train(rows, trained, text)
    assert cosine(out, 2, 3) > cosine(rows, 2, 3) + 0.2 and cosine(out, 4, 5) > cosine(rows, 4, 5) + 0.2
    assert cosine(out, 2, 4) - cosine(rows, 2, 4) < 0.05  # 猫 and 鱼, in different company: no closer
    assert torch.equal(out[[0, 1, 6]], rows[[0, 1, 6]])  # [PAD], [UNK] (not trained) and 书 (not in the text)
    assert trainer.record["epochs"] == 10 and len(trainer.record["loss"]) == 10 and trainer.record["words"] == 3000
    assert trainer.record["loss"][-1] < trainer.record["loss"][0]
    assert trainer.record["pairs"] == 6000 and trainer.record["rows"] == 4  # per epoch: 3 words, 6 pairs a sentence
    again = SkipGramTrainer(epochs=10, anchor=0.1, seed=0).train(rows, trained, text)
    assert torch.equal(out, again)  # the seed decides the order and the noise words


def test_pairs_are_taken_a_few_positions_at_a_time_all_of_them_once_an_epoch(monkeypatch):
    import xlembed.skipgram

    monkeypatch.setattr(xlembed.skipgram, "POSITIONS_AT_ONCE", 1000)
    rows, text = rows_and_text()
    seen = []
    trainer = SkipGramTrainer(epochs=2, anchor=0.1, seed=0, reporter=CallbackReporter(lambda *e: seen.append(e)))
    trainer.train(rows, torch.tensor([w not in (PAD, UNK) for w in VOCAB]), text)
    assert trainer.record["pairs"] == 6000
    # the bar moves at every step (2,000 pairs a piece, 256 a step), not once a piece, and ends at every word twice
    assert len(seen) >= 2 * 3 * 8 and seen[-1] == ("skip-gram", 6000, 6000, "words")
    assert all(later[1] >= earlier[1] for earlier, later in zip(seen, seen[1:]))


def test_a_strong_anchor_holds_the_rows_where_they_were():
    rows, text = rows_and_text()
    trained = torch.tensor([w not in (PAD, UNK) for w in VOCAB])
    loose = SkipGramTrainer(epochs=10, anchor=0.1, seed=0)
    loose.train(rows, trained, text)
    held = SkipGramTrainer(epochs=10, anchor=1000.0, seed=0)
    out = held.train(rows, trained, text)
    assert held.record["moved"] < loose.record["moved"] / 5
    assert (out - rows).norm(dim=1).max() < 0.2 * (rows[2:] - rows[2:].mean(0)).norm(dim=1).mean()


def test_a_row_without_pairs_is_left_bit_for_bit_and_not_counted():
    rows, _ = rows_and_text()
    text = recorded([["书"]] * 50 + [["我", "喜欢", ["猫", "狗"][i % 2]] for i in range(300)])  # 书: one-word lines
    trainer = SkipGramTrainer(epochs=2, anchor=0.03, seed=0)
    out = trainer.train(rows, torch.tensor([w not in (PAD, UNK) for w in VOCAB]), text)
    assert torch.equal(out[6], rows[6]) and not torch.equal(out[2], rows[2])
    assert trainer.record["rows"] == 2  # 猫 and 狗


def test_trainable_says_why_a_text_gives_nothing_to_learn():
    from xlembed.skipgram import trainable

    assert trainable(recorded([["猫"], [], ["狗"]]), len(VOCAB)) == "it has no line of two words or more"
    assert trainable(recorded([["我", "喜欢"]]), len(VOCAB)) == "none of its words is in the vocabulary"
    assert trainable(recorded([["我", "猫"]]), len(VOCAB)) is None
