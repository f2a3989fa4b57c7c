"""The benchmarks' data splitting: no held-out pair's sentence is in the build
corpus (bench/splits.py), no test example is trained on (bench/tasks.py),
and the downstream benchmark's vocabulary comes from training text only."""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import downstream  # noqa: E402
import splits  # noqa: E402
import tasks  # noqa: E402


def test_held_out_sentences_are_not_in_the_build_corpus():
    rng = random.Random(0)
    english = [f"sentence {i}" for i in range(40)]
    chinese = [f"句子{i}" for i in range(40)]
    # the same English sentence in several pairs, and the same Chinese one, as in Tatoeba
    pairs = [splits.Pair(rng.choice(english), rng.choice(chinese)) for _ in range(300)]
    build, test = splits.split(pairs, 25, seed=3)
    assert len(test) == 25
    assert len({p.en for p in test}) == 25 and len({p.zh for p in test}) == 25
    test_en, test_zh = {p.en for p in test}, {p.zh for p in test}
    assert not any(p.en in test_en or p.zh in test_zh for p in build)
    assert build and all(p in pairs for p in build + test)
    assert splits.split(pairs, 25, seed=3) == (build, test)  # seeded


def test_no_test_example_is_trained_on(tmp_path):
    csv = tmp_path / "task.csv"
    rows = [("好吃", "1"), ("难吃", "0"), ("好吃", "1")] + [(f"评论{i}", str(i % 2)) for i in range(97)]
    csv.write_text("label,review\n" + "".join(f"{lab},{text}\n" for text, lab in rows), encoding="utf-8")
    task = tasks.read_task(csv, text="review", label="label")
    split = tasks.split_task(task, seed=0)
    assert len(split.train) + len(split.test) == 100 and 15 <= len(split.test) <= 25
    assert not {e.text for e in split.train} & {e.text for e in split.test}  # a repeated text goes wholly to one side
    assert tasks.split_task(task, seed=0) == split
    for n in (10, None):
        subset = tasks.labelled_subset(split.train, n, seed=1)
        assert all(e in split.train for e in subset) and len(subset) == (n or len(split.train))
    data = downstream.prepare(task, max_length=8)
    train_words = {w for words in data.train_tokens for w in words}
    assert set(data.vocab[2:]) == train_words and data.vocab[:2] == ["[PAD]", "[UNK]"]
    assert len(data.test_ids) == len(split.test)


def test_words_xlembed_refuses_in_a_vocabulary_are_unknown(tmp_path):
    # a private-use character (an emoji glyph in shopping reviews) is not printable: `xlembed write --vocab`
    # refuses it, so the task vocabulary leaves it out and the texts holding it read it as [UNK]
    csv = tmp_path / "task.csv"
    rows = [(f"好吃\ue411{i}", str(i % 2)) for i in range(40)]
    csv.write_text("label,review\n" + "".join(f"{lab},{text}\n" for text, lab in rows), encoding="utf-8")
    data = downstream.prepare(tasks.read_task(csv, text="review", label="label"), max_length=8)
    assert "\ue411" in {w for words in data.train_tokens for w in words}
    assert all(w.isprintable() and len(w.split()) == 1 for w in data.vocab)
    assert "\ue411" not in data.vocab and all(1 in ids for ids in data.train_ids)
