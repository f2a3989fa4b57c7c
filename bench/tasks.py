"""Classification tasks for the downstream benchmarks: a CSV with a text
column and a label column, split into train and test with a fixed seed.

    from tasks import read_task, split_task, labelled_subset
    task = read_task(Path("../shared/data/downstream/waimai_10k.csv"), text="review", label="label")
    split = split_task(task, seed=0)                     # 20 % test, the rest train
    train_100 = labelled_subset(split.train, 100, seed)  # the first 100 of a seeded shuffle

The split depends only on the file and the seed, so every benchmark (the
matrix's classifiers, the fine-tuned transplant) sees the same test set; no
test example is in any training subset.
"""
from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import NamedTuple

TEST_FRACTION = 0.2
# ../shared/data beside the clone (as CI has it); XLEMBED_SHARED_DATA names another place (a git worktree's checkout)
SHARED_DATA = Path(os.environ.get("XLEMBED_SHARED_DATA", Path(__file__).resolve().parent.parent.parent / "shared/data"))
DOWNSTREAM = SHARED_DATA / "downstream"
DEV_TASKS = {  # name -> (file, text column, label column)
    "waimai": (DOWNSTREAM / "waimai_10k.csv", "review", "label"),
    "shopping_cats": (DOWNSTREAM / "shopping_cats.dev.csv", "review", "cat"),
}


class Example(NamedTuple):
    text: str
    label: int  # index into Task.labels


class Task(NamedTuple):
    name: str
    examples: list[Example]
    labels: list[str]  # label values as in the file, sorted


class Split(NamedTuple):
    train: list[Example]
    test: list[Example]
    labels: list[str]


def read_task(path: Path, text: str, label: str, name: str | None = None) -> Task:
    """Rows with an empty text are skipped; labels are indexed in sorted order."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [(r[text].strip(), r[label].strip()) for r in csv.DictReader(f) if r.get(text) and r[text].strip()]
    labels = sorted({lab for _, lab in rows})
    index = {lab: i for i, lab in enumerate(labels)}
    return Task(name or Path(path).stem, [Example(t, index[lab]) for t, lab in rows], labels)


def dev_task(name: str) -> Task:
    path, text, label = DEV_TASKS[name]
    return read_task(path, text, label, name)


def split_task(task: Task, seed: int = 0, test_fraction: float = TEST_FRACTION) -> Split:
    """A seeded shuffle; the last `test_fraction` is the test set. Texts that
    occur more than once go wholly to one side (no test text is trained on)."""
    texts = sorted({e.text for e in task.examples})
    random.Random(seed).shuffle(texts)
    test_texts = set(texts[len(texts) - round(len(texts) * test_fraction):])
    train = [e for e in task.examples if e.text not in test_texts]
    test = [e for e in task.examples if e.text in test_texts]
    return Split(train, test, task.labels)


def labelled_subset(train: list[Example], n: int | None, seed: int) -> list[Example]:
    """The first n examples of a seeded shuffle of the training set (all of it for None)."""
    order = list(train)
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]
