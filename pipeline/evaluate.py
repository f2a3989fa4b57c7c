"""Alignment quality against hand-aligned gold pairs (AER, Och & Ney 2003).

The gold pairs are aligned together with a tokenized corpus (eflomal needs
the bulk to learn from), and only the gold part is scored. The gold Chinese
is already segmented and is used as it is (no jieba); the gold English is
PTB-tokenized and cased: it is lowercased and -LRB-/-RRB- become brackets.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .align import Links, parse_links, run_eflomal, symmetrize
from .config import SYMMETRIZATIONS, AlignOptions, WorkDir
from .io import Reporter, SilentReporter, XlembedError, read_lines, require

PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def alignment_scores(predicted: list[Links], sure: list[Links], possible: list[Links]) -> dict:
    """AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|); possible links include the sure ones."""
    a = sum(len(p) for p in predicted)
    s = sum(len(x) for x in sure)
    a_s = sum(len(p & x) for p, x in zip(predicted, sure))
    a_p = sum(len(p & (x | y)) for p, x, y in zip(predicted, sure, possible))
    return dict(
        aer=1 - (a_s + a_p) / (a + s) if a + s else 0.0,
        precision=a_p / a if a else 0.0,
        recall=a_s / s if s else 0.0,
        links=a,
    )


def read_gold(gold_dir: Path) -> tuple[list[str], list[str], list[Links], list[Links]]:
    """train.zh, train.en and train.align of a gold directory: sentences and
    sure/possible links (`zhIndex-enIndex`, `-P` marks a possible link)."""
    gold_dir = Path(gold_dir)
    zh = list(read_lines(gold_dir / "train.zh"))
    en = [" ".join(PTB_BRACKETS.get(w, w).lower() for w in line.split()) for line in read_lines(gold_dir / "train.en")]
    sure, possible = [], []
    for line in read_lines(gold_dir / "train.align"):
        pairs = line.split()
        sure.append(parse_links(" ".join(p for p in pairs if not p.endswith("-P"))))
        possible.append(parse_links(" ".join(p for p in pairs if p.endswith("-P"))))
    if not len(zh) == len(en) == len(sure):
        raise XlembedError(f"{gold_dir}: train.zh, train.en and train.align differ in line count ({len(zh)}, {len(en)}, {len(sure)})")
    return [" ".join(line.split()) for line in zh], en, sure, possible


def evaluate_alignment(gold_dir: Path, work: WorkDir, opts: AlignOptions, reporter: Reporter = SilentReporter()) -> dict:
    """Align gold + the work dir's tokenized corpus once with eflomal, and
    score the gold part under every symmetrization (and each direction)."""
    start = time.perf_counter()
    gold_zh, gold_en, sure, possible = read_gold(gold_dir)
    zh = gold_zh + list(read_lines(require(work.corpus_zh, "tokenize")))
    en = gold_en + list(read_lines(require(work.corpus_en, "tokenize")))
    n = len(gold_zh)
    with tempfile.TemporaryDirectory() as tmp:
        forward, reverse = Path(tmp) / "fwd", Path(tmp) / "rev"
        with reporter.task("align gold + corpus (eflomal)", None, "") as task:
            run_eflomal(zh, en, forward, reverse, opts)
            task.advance()
        fwd = [parse_links(line) for _, line in zip(range(n), read_lines(forward))]
        rev = [parse_links(line) for _, line in zip(range(n), read_lines(reverse))]
    scores = {method: alignment_scores([symmetrize(f, r, method) for f, r in zip(fwd, rev)], sure, possible)
              for method in SYMMETRIZATIONS}
    scores["forward"] = alignment_scores(fwd, sure, possible)
    scores["reverse"] = alignment_scores(rev, sure, possible)
    return dict(gold_pairs=n, corpus_pairs=len(zh) - n, scores=scores, seconds=round(time.perf_counter() - start, 3))
