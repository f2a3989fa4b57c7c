"""How good a matrix is, and how good the alignment under it is.

- Word similarity: Spearman's rho between cosine similarity and human
  scores, over the pairs whose two words have rows (coverage always given),
  and separately over the pairs that touch a filled (not projected) row.
- Bilingual lexicon induction: for each Chinese word with a projected row
  and a gold translation in the English vocabulary, are the nearest English
  words (cosine, or CSLS) among its translations? precision@1 and @5.
- Alignment: AER (Och & Ney 2003) against hand-aligned gold pairs, which
  are aligned together with a tokenized corpus (eflomal needs the bulk to
  learn from); only the gold part is scored. The gold Chinese is already
  segmented and is used as it is (no jieba); the gold English is
  PTB-tokenized and cased: it is lowercased and -LRB-/-RRB- become brackets.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .align import LinkSet, align_lines, align_progress, parse_links, symmetrize
from .config import AlignConfig, Symmetrization
from .embeddings import Embeddings
from .errors import XlembedError
from .io import Reporter, SilentReporter, read_lines, require
from .layout import WorkDir

PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def alignment_scores(predicted: list[LinkSet], sure: list[LinkSet], possible: list[LinkSet]) -> dict:
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


def read_gold(gold_dir: Path) -> tuple[list[str], list[str], list[LinkSet], list[LinkSet]]:
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
        raise XlembedError(
            f"{gold_dir}: train.zh, train.en and train.align differ in line count ({len(zh)}, {len(en)}, {len(sure)})"
        )
    return [" ".join(line.split()) for line in zh], en, sure, possible


def evaluate_alignment(gold_dir: Path, work: WorkDir, opts: AlignConfig, reporter: Reporter = SilentReporter()) -> dict:
    """Align gold + the work dir's tokenized corpus once with eflomal (as
    the align stage would: in --align-shards parts, the gold pairs in the
    first), and score the gold part under every symmetrization (and each
    direction)."""
    start = time.perf_counter()
    gold_zh, gold_en, sure, possible = read_gold(gold_dir)
    zh = gold_zh + list(read_lines(require(work.corpus_zh, "tokenize")))
    en = gold_en + list(read_lines(require(work.corpus_en, "tokenize")))
    n = len(gold_zh)
    with tempfile.TemporaryDirectory(dir=work.root) as tmp:
        forward, reverse = Path(tmp) / "fwd", Path(tmp) / "rev"
        progress = align_progress(len(zh), opts)
        with reporter.task("align gold + corpus (eflomal)", progress.total, progress.unit) as task:
            align_lines(zh, en, forward, reverse, opts, work.scratch, task=task)  # in parts too, with --align-shards
        fwd = [parse_links(line) for _, line in zip(range(n), read_lines(forward))]
        rev = [parse_links(line) for _, line in zip(range(n), read_lines(reverse))]
    scores = {method.value: alignment_scores([symmetrize(f, r, method) for f, r in zip(fwd, rev)], sure, possible)
              for method in Symmetrization}
    scores["forward"] = alignment_scores(fwd, sure, possible)
    scores["reverse"] = alignment_scores(rev, sure, possible)
    return dict(gold_pairs=n, corpus_pairs=len(zh) - n, scores=scores, seconds=round(time.perf_counter() - start, 3))


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, tie_group, tie_size = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie_group, weights=ranks) / tie_size)[tie_group]


def spearman(a, b) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = rankdata(np.asarray(a, dtype=float)), rankdata(np.asarray(b, dtype=float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def read_wordsim(path: Path) -> list[tuple[str, str, float]]:
    """`word1<TAB>word2<TAB>score` lines; words are stripped of spaces."""
    pairs = []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        try:
            pairs.append((cols[0].strip(), cols[1].strip(), float(cols[2])))
        except (IndexError, ValueError):
            raise XlembedError(f"{path}:{lineno}: expected word1<TAB>word2<TAB>score")
        if not math.isfinite(pairs[-1][2]):
            raise XlembedError(f"{path}:{lineno}: the score must be a finite number, got {cols[2].strip()}")
    return pairs


def word_similarity(matrix: Embeddings, pairs: list[tuple[str, str, float]]) -> dict:
    """rho over covered pairs, and over the covered pairs that touch a filled row."""
    index = matrix.word_index
    covered = [(index[a], index[b], score) for a, b, score in pairs if a in index and b in index]
    result = dict(pairs=len(pairs), covered=len(covered))
    if not covered:
        return result | dict(
            rho=float("nan"), filled=dict(covered=0, rho=float("nan")), projected=dict(covered=0, rho=float("nan"))
        )
    ia = torch.tensor([a for a, _, _ in covered])
    ib = torch.tensor([b for _, b, _ in covered])
    cosine = (matrix.unit_vectors[ia] * matrix.unit_vectors[ib]).sum(1).numpy()
    scores = np.array([s for _, _, s in covered])
    touches_filled = (~matrix.projected[ia] | ~matrix.projected[ib]).numpy()
    return result | dict(
        rho=spearman(cosine, scores),
        filled=dict(covered=int(touches_filled.sum()), rho=spearman(cosine[touches_filled], scores[touches_filled])),
        projected=dict(
            covered=int((~touches_filled).sum()), rho=spearman(cosine[~touches_filled], scores[~touches_filled])
        ),
    )


def read_dictionary(path: Path) -> dict[str, set[str]]:
    """`zh<TAB>en` lines, or `zh en` (MUSE's format: one space); several
    lines per Chinese word allowed."""
    dictionary: dict[str, set[str]] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t") if "\t" in line else line.split(" ", 1)
        if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
            raise XlembedError(f"{path}:{lineno}: expected zh<TAB>en (or zh en)")
        dictionary.setdefault(cols[0].strip(), set()).add(cols[1].strip().lower())
    return dictionary


def lexicon_induction(
    matrix: Embeddings, dictionary: dict[str, set[str]], csls_k: int = 10, ks: tuple[int, ...] = (1, 5, 10)
) -> dict:
    """Bilingual lexicon induction the MUSE way: for each Chinese word of the
    dictionary that has a row and a translation in the English vocabulary
    (the covered words), are the k nearest English words among its
    translations? P@k by cosine and, with `csls_k` > 0, by CSLS with that
    many neighbours (Conneau et al. 2018), over the covered words and over
    all dictionary words (an uncovered word counts as a miss)."""
    english_index = matrix.english_index
    queries = [(matrix.word_index[zh], {english_index[e] for e in en if e in english_index})
               for zh, en in dictionary.items() if zh in matrix.word_index]
    queries = [(i, gold) for i, gold in queries if gold]
    n, words = len(queries), len(dictionary)
    result = dict(words=words, covered=n, coverage=n / words if words else float("nan"),
                  covered_projected=sum(bool(matrix.projected[i]) for i, _ in queries))
    methods = ["cosine"] + (["csls"] if csls_k else [])
    result["csls_k"] = csls_k
    if not queries:
        return result | {m: {f"p_at_{k}{suffix}": float("nan") for k in ks for suffix in ("", "_all")} for m in methods}
    query_ids = torch.tensor([i for i, _ in queries])
    top: dict[str, list[list[int]]] = {method: [] for method in methods}
    for start in range(0, n, 1024):  # 1024 queries at a time: memory 1024 x E, whatever the dictionary
        cosine = matrix.unit_vectors[query_ids[start:start + 1024]] @ matrix.english_unit_vectors.T  # [q, E]
        for method in methods:
            scores = cosine
            if method == "csls":
                r_query = cosine.topk(min(csls_k, cosine.shape[1]), dim=1).values.mean(1)  # [q]
                scores = 2 * cosine - r_query.unsqueeze(1) - matrix.csls_radius("en", csls_k).unsqueeze(0)  # [q, E]
            top[method] += scores.topk(min(max(ks), scores.shape[1]), dim=1).indices.tolist()  # [q, K]
    for method in methods:
        result[method] = {}
        for k in ks:
            hits = sum(bool(set(t[:k]) & gold) for t, (_, gold) in zip(top[method], queries))
            result[method][f"p_at_{k}"] = hits / n
            result[method][f"p_at_{k}_all"] = hits / words
    return result


def read_analogies(path: Path) -> list[tuple[str, str, str, str]]:
    """`a b c d` per line (a is to b as c is to d), as in word2vec's
    questions-words.txt; `:` lines name sections and are skipped."""
    questions = []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.startswith(":") or line.startswith("#"):
            continue
        words = line.split()
        if len(words) != 4:
            raise XlembedError(f"{path}:{lineno}: expected four words: a b c d (a is to b as c is to d)")
        questions.append(tuple(words))
    return questions


def analogy(matrix: Embeddings, questions: list[tuple[str, str, str, str]]) -> dict:
    """Accuracy of 3CosAdd (argmax cos(x, b - a + c)) and 3CosMul (argmax
    cos'(x, b) cos'(x, c) / (cos'(x, a) + 0.001), cos' = (cos + 1) / 2; Levy
    and Goldberg 2014) over the questions whose four words have rows; a, b
    and c are never the answer. Special rows are never answers either."""
    index = matrix.word_index
    covered = [tuple(index[w] for w in q) for q in questions if all(w in index for w in q)]
    result = dict(questions=len(questions), covered=len(covered))
    if not covered:
        return result | dict(three_cos_add=float("nan"), three_cos_mul=float("nan"))
    unit = matrix.unit_vectors  # [V, d]
    a, b, c, d = (torch.tensor(column) for column in zip(*covered))  # [Q] each
    excluded = torch.zeros((len(covered), len(unit)), dtype=torch.bool)  # [Q, V]
    rows = torch.arange(len(covered))
    for column in (a, b, c):
        excluded[rows, column] = True
    excluded[:, [i for w, i in index.items() if w in ("[PAD]", "[UNK]")]] = True
    cos_a, cos_b, cos_c = unit[a] @ unit.T, unit[b] @ unit.T, unit[c] @ unit.T  # [Q, V] each
    add = (cos_b - cos_a + cos_c).masked_fill(excluded, -float("inf"))
    mul = ((cos_b + 1) / 2 * (cos_c + 1) / 2 / ((cos_a + 1) / 2 + 1e-3)).masked_fill(excluded, -float("inf"))
    return result | dict(three_cos_add=float((add.argmax(1) == d).double().mean()),
                         three_cos_mul=float((mul.argmax(1) == d).double().mean()))


def evaluate(out: Path, wordsim: list[Path] = (), dictionary: Path | None = None, csls_k: int = 10,
             analogies: Path | None = None) -> dict:
    """Scores of an output directory on word-similarity files, a bilingual
    dictionary and an analogy file."""
    matrix = Embeddings.load(out)
    result = dict(out=str(out), vocab_size=len(matrix.words), projected_rows=int(matrix.projected.sum()), wordsim={})
    for path in wordsim:
        result["wordsim"][str(path)] = word_similarity(matrix, read_wordsim(path))
    if dictionary is not None:
        result["lexicon_induction"] = lexicon_induction(matrix, read_dictionary(dictionary), csls_k)
    if analogies is not None:
        result["analogy"] = analogy(matrix, read_analogies(analogies))
    return result
