from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xlembed.io import write_json_atomic
from xlembed.layout import WorkDir

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TATOEBA = REPO / "data" / "tatoeba" / "cmn-eng.tsv"

# a WordPiece vocabulary small enough to reason about: "playing" -> play ##ing
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", "'",
              "i", "you", "he", "she", "we", "they", "a", "the", "is", "are", "like", "likes",
              "cat", "cats", "dog", "dogs", "book", "books", "read", "school", "go", "to",
              "play", "##ing", "##s", "##ed", "water", "drink", "tea", "good", "hello", "world",
              "run", "eat", "fish", "my", "his", "her", "t", "don", "do", "not"]


def make_tiny_bert(directory: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(TINY_VOCAB)}, do_lower_case=True).save_pretrained(
        str(directory)
    )
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), layers=4)


def write_fake_encoding(
    work: WorkDir, sentences_en: list[list[str]], vectors: dict[tuple[int, int], list[float]], shard_rows: int = 2
):
    """Encode-stage artifacts with known vectors: word j of sentence s gets
    vectors[(s, j)] (or no vector when missing); rows spread over shards of
    `shard_rows` rows."""
    dim = len(next(iter(vectors.values())))
    sent_offsets = np.zeros(len(sentences_en) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sentences_en], out=sent_offsets[1:])
    word_rows, rows = [], []
    for s, words in enumerate(sentences_en):
        for j in range(len(words)):
            if (s, j) in vectors:
                word_rows.append(len(rows))
                rows.append(vectors[(s, j)])
            else:
                word_rows.append(-1)
    work.vectors_dir.mkdir(parents=True, exist_ok=True)
    matrix = torch.tensor(rows, dtype=torch.float16)
    starts = list(range(0, len(rows), shard_rows)) + [len(rows)]
    for k in range(len(starts) - 1):
        save_file({"vectors": matrix[starts[k]:starts[k + 1]].contiguous()}, str(work.vectors_shard(k)))
    save_file({"sent_offsets": torch.from_numpy(sent_offsets), "word_rows": torch.tensor(word_rows, dtype=torch.int64),
               "shard_starts": torch.tensor(starts, dtype=torch.int64)}, str(work.vectors_index))
    write_json_atomic(work.record("encode"), {"stage": "encode", "key": "fake", "dim": dim, "model_sha256": "fake",
                                              "counts": {"words_truncated": 0}, "options": {"model": "fake"},
                                              "read": {}, "wrote": {}, "seconds": 0})


# --- event-driven kills: a command that stops itself at a chosen point ----------------------------

PAUSE_AT = """
import functools, importlib, signal, sys, threading
# Ctrl-C as at a terminal: a shell that starts a job in the background (`make test &`, nohup)
# hands it SIGINT ignored, and Python then keeps it ignored in every child
signal.signal(signal.SIGINT, signal.default_int_handler)
module, name, condition = importlib.import_module(sys.argv[1]), sys.argv[2], eval(sys.argv[3])
*path, name = name.split(".")  # a function, or Class.method
owner = functools.reduce(getattr, path, module)
original = getattr(owner, name)

def paused(*args, **kwargs):
    result = original(*args, **kwargs)
    said = condition(result, *args, **kwargs)
    if said:
        sys.__stdout__.write(f"paused {said}\\n")
        sys.__stdout__.flush()
        sys.stdin.readline()  # until the test kills this process, or closes its stdin to let it go on
    return result

setattr(owner, name, paused)
sys.argv = ["xlembed", *sys.argv[4:]]
from xlembed.cli.main import entry
entry()
"""


def start_paused(args: list, target: str, condition: str, **popen):
    """Start `xlembed ARGS` with `target` ("module:function" or
    "module:Class.method") wrapped so that,
    the first time `condition` (Python: a lambda of the result and the
    call's arguments) is true after a call, the process prints "paused
    VALUE" on stdout and stops there until killed, or until its stdin is
    closed. Returns (process, VALUE),
    VALUE None when the command ended without pausing. Event-driven: no
    polling, no deadline, however busy the machine."""
    import subprocess
    import sys

    module, name = target.split(":")
    popen.setdefault("stderr", subprocess.DEVNULL)
    popen.setdefault("stdin", subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AT, module, name, condition, *map(str, args)],
                            stdout=subprocess.PIPE, text=True, **popen)
    line = proc.stdout.readline()
    if not line.startswith("paused "):
        proc.wait()
        return proc, None
    return proc, line.removeprefix("paused ").strip()


def wait_for_exit(pid: int, limit: float = 600) -> bool:
    """Wait until process `pid` (any process, not only a child) has ended:
    woken by the kernel (pidfd), not by polling. False if it still runs
    after `limit` seconds (a generous bound against a hang, not a timing)."""
    import os
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], limit)[0])
    finally:
        os.close(fd)
