"""Stage 4: project English contextual vectors onto Chinese words.

For each aligned pair of positions (zh word i, en word j) of a sentence the
vector of English occurrence j is added to the Chinese word's sum:

- strategy `argmax`: only links whose English word is the Chinese
  word's most probable translation (highest p(en|zh) in the lexicon), so
  the row is that English word's vector averaged over the contexts where
  the two are aligned;
- strategy `argmax-occurrence` (default): the same rule decided per occurrence: each
  occurrence of a Chinese word takes the vector of the English word, among
  those it is aligned to in that sentence, with the highest p(en|zh)
  (ties: the first in the sentence); so every aligned occurrence counts
  once, also where the word's best translation is not in the sentence;
- strategy `weighted`: every link, i.e. the average over all aligned
  English words, weighted by how often they are aligned.

English word vectors (mean over all occurrences of each English word type)
are accumulated in the same pass. Everything stored is a sum or a count per
word, so projections of corpus parts can be added up.
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import torch
from safetensors import safe_open

from .align import Translation, parse_links, read_lexicon
from .config import Config, plain, section_dict
from .encode import VectorStore
from .errors import XlembedError
from .io import (
    Reporter,
    SilentReporter,
    atomic_path,
    read_lines,
    release_freed_memory,
    require,
    require_same_counts,
    save_tensors,
)
from .layout import WorkDir
from .records import file_hash, fingerprint, run_stage, stage_key, valid_record
from .strategies import Lexicon, rule_for


def read_stopwords(path) -> set[str]:
    return {w for line in read_lines(path) for w in line.split()}


SUM_DTYPE = torch.float32  # the per-word sums: 4 bytes a value (float64 was 461 MB on the mixed corpus,
# the whole run's peak); each block is summed in float32 already, and ~200 block sums per word in float32
# cost ~1e-6 relative, against the shards' float16 (~1e-3)


class PartSums(NamedTuple):
    """Sums and counts of the word ids present in a part (a vector shard, a Ray shard)."""

    ids: np.ndarray  # [u]
    sum: torch.Tensor  # [u, d] SUM_DTYPE
    count: torch.Tensor  # [u] int64


def sums_by_id(vectors: torch.Tensor, ids: np.ndarray, rows: np.ndarray) -> PartSums:
    """For each id present in `ids`: the sum (SUM_DTYPE) and count of the
    vectors at `rows`. A sparse (id x row) count matrix times `vectors`
    [n, d]: memory beyond the vectors is the result."""
    present, local_id = np.unique(ids, return_inverse=True)  # [u], [m]
    occurrences = torch.sparse_coo_tensor(
        torch.stack([torch.from_numpy(local_id.reshape(-1)), torch.from_numpy(rows)]),
        torch.ones(len(ids)),
        (len(present), len(vectors)),
        check_invariants=False,
    ).coalesce()
    sums = torch.sparse.mm(occurrences, vectors.float()).to(SUM_DTYPE)  # [u, d]
    return PartSums(
        present, sums, torch.from_numpy(np.bincount(local_id.reshape(-1), minlength=len(present)).astype(np.int64))
    )


def add_part(sums: torch.Tensor, counts: torch.Tensor, part: PartSums) -> None:
    """Add a part's sums and counts into the totals `sums` [n_words, d] and `counts` [n_words]."""
    ids = torch.tensor(part.ids)  # a copy: Ray hands over read-only arrays
    sums.index_add_(0, ids, part.sum.to(sums.dtype))  # [u, d] into [n_words, d]
    counts.index_add_(0, ids, part.count)


class WordRows(NamedTuple):
    """One side's vector rows by word, sorted by row: what accumulate sums."""

    ids: np.ndarray  # [n] word id of each occurrence that has a vector
    rows: np.ndarray  # [n] ... the row of that vector in the vector store (ascending)
    n_words: int  # the side's vocabulary size


BLOCK_ROWS = 16384  # vector rows summed at once: the float32 copy of a block is 24 MiB at d = 384


def accumulate(store: VectorStore, sides: list[WordRows], dim: int, task) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per word id of each side: the sum (SUM_DTYPE) and count of the vectors
    at its rows, in one pass over the shards, a block of rows at a time, each
    added into the sums of the words present in it only: memory beyond the
    sums themselves is one shard and one block, however large the vocabulary
    or the corpus. Returns (sums [n_words, d], counts [n_words]) per side."""
    totals = [(torch.zeros((side.n_words, dim), dtype=SUM_DTYPE), torch.zeros(side.n_words, dtype=torch.int64))
              for side in sides]
    for k in range(store.n_shards):
        first, vectors = store.shard_starts[k], None
        for lo in range(first, store.shard_starts[k + 1], BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, store.shard_starts[k + 1])
            for side, (sums, counts) in zip(sides, totals):
                a, b = np.searchsorted(side.rows, (lo, hi))
                if b > a:
                    vectors = store.shard(k) if vectors is None else vectors  # [shard rows, d]
                    block = vectors[lo - first : hi - first]  # [hi - lo, d]
                    add_part(sums, counts, sums_by_id(block, side.ids[a:b], side.rows[a:b] - lo))
        del vectors
        release_freed_memory()  # each shard's temporaries differ in size: see encode
        task.advance()
    return totals


def read_link_lexicon(work: WorkDir, opts) -> Lexicon:
    lexicon = read_lexicon(require(work.lexicon, "align"))
    best = {zh: translations[0] for zh, translations in lexicon.items()}  # highest p first
    p_en = ({zh: {t.en: t.p for t in translations} for zh, translations in lexicon.items()}
            if rule_for(opts.strategy).needs_p_en else {})
    return Lexicon(best, p_en, frozenset(read_stopwords(opts.stopwords) if opts.stopwords else ()))


class Vocabularies(NamedTuple):
    """Both sides' words sorted by corpus frequency (then by word); a word's id is its position."""

    zh_vocab: list[str]
    zh_freq: dict[str, int]
    en_vocab: list[str]
    en_freq: dict[str, int]

    def ids(self) -> tuple[dict[str, int], dict[str, int]]:
        return {w: i for i, w in enumerate(self.zh_vocab)}, {w: i for i, w in enumerate(self.en_vocab)}


def count_words(zh_lines: Iterable[str], en_lines: Iterable[str], stopwords: frozenset[str]) -> tuple[Counter, Counter]:
    """Word frequencies of some pairs (additive over parts of a corpus); stopwords not counted."""
    zh_counts, en_counts = Counter(), Counter()
    for zh_line, en_line in zip(zh_lines, en_lines):
        zh_counts.update(zh_line.split(" "))
        en_counts.update(en_line.split(" "))
    for w in stopwords:
        zh_counts.pop(w, None)
    return zh_counts, en_counts


def vocabularies(zh_counts: Counter, en_counts: Counter) -> Vocabularies:
    def by_frequency(counts: Counter) -> list[str]:
        return sorted(counts, key=lambda w: (-counts[w], w))

    return Vocabularies(by_frequency(zh_counts), dict(zh_counts), by_frequency(en_counts), dict(en_counts))


class ProjectionTables(NamedTuple):
    """What choosing links needs, read once (and sent once to every Ray encoder)."""

    strategy: str  # a name in strategies.STRATEGIES
    lexicon: Lexicon
    vocab: Vocabularies
    zh_ids: dict[str, int]
    en_ids: dict[str, int]


def prepare_projection(work: WorkDir, opts) -> ProjectionTables:
    """The lexicon and both vocabularies (a streaming pass over the corpus)."""
    lexicon = read_link_lexicon(work, opts)
    corpus_zh, corpus_en = require(work.corpus_zh, "tokenize"), work.corpus_en
    vocab = vocabularies(*count_words(read_lines(corpus_zh), read_lines(corpus_en), lexicon.stopwords))
    return ProjectionTables(plain(opts.strategy), lexicon, vocab, *vocab.ids())


class ChosenLinks(NamedTuple):
    """The projection of some sentences, vectors aside: which English word
    occurrence each Chinese word occurrence takes its vector from, and every
    English word occurrence's word id. Occurrences are numbered sentence by
    sentence, as the encode stage's index numbers them."""

    sent_offsets: np.ndarray  # [n_sentences + 1] first English word occurrence of each sentence
    en_words: np.ndarray  # [n_en_words] English word id of each occurrence
    link_words: np.ndarray  # [n_links] Chinese word id of each chosen link
    link_positions: np.ndarray  # [n_links] the English occurrence whose vector it takes (ascending)


def parse_checked_links(line: str, n_zh: int, n_en: int) -> set[tuple[int, int]]:
    """A line of align.links whose links all fall inside its pair (a damaged file is one line, not an IndexError)."""
    try:
        links = parse_links(line)
    except ValueError:
        raise XlembedError(f"align.links: '{line[:40]}' is not a line of zhIndex-enIndex links; "
                           "run `xlembed align --force`")
    bad = next(((i, j) for i, j in links if not (0 <= i < n_zh and 0 <= j < n_en)), None)
    if bad is not None:
        raise XlembedError(f"align.links: link {bad[0]}-{bad[1]} is outside its pair of {n_zh} Chinese and "
                           f"{n_en} English words; run `xlembed align --force`")
    return links


def choose_links(zh_lines: Iterable[str], en_lines: Iterable[str], links_lines: Iterable[str],
                 tables: ProjectionTables) -> ChosenLinks:
    """One streaming pass over a block of sentences and their links, by the tables' strategy."""
    choose, lexicon, zh_ids, en_ids = rule_for(tables.strategy).choose, tables.lexicon, tables.zh_ids, tables.en_ids
    en_words, link_words, link_positions, sent_offsets = array("q"), array("q"), array("q"), array("q", [0])
    for zh_line, en_line, links_line in zip(zh_lines, en_lines, links_lines):
        zh, en = zh_line.split(" "), en_line.split(" ")
        offset = len(en_words)
        en_words.extend([en_ids[w] for w in en])
        sent_offsets.append(len(en_words))
        for i, j in choose(sorted(parse_checked_links(links_line, len(zh), len(en))), zh, en, lexicon):
            if zh[i] not in lexicon.stopwords:
                link_words.append(zh_ids[zh[i]])
                link_positions.append(offset + j)
    return ChosenLinks(
        *(np.frombuffer(a, dtype=np.int64) for a in (sent_offsets, en_words, link_words, link_positions))
    )


class LinkRows(NamedTuple):
    """A block's vector rows by word: what the sums add up (each side sorted by row)."""

    zh_ids: np.ndarray  # [n] Chinese word id of each chosen link whose English word has a vector
    zh_rows: np.ndarray  # [n] ... the row of that vector (ascending)
    en_ids: np.ndarray  # [m] English word id of each occurrence with a vector
    en_rows: np.ndarray  # [m] ... its row (ascending)
    links_without_vector: int


def by_row(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(rows, kind="stable")
    return ids[order], rows[order]


def link_rows(links: ChosenLinks, word_rows: np.ndarray) -> LinkRows:
    """`word_rows` [n_en_words]: each English occurrence's vector row (-1: none)."""
    rows = word_rows[links.link_positions]  # [n_links]
    has_vector = word_rows >= 0
    return LinkRows(*by_row(links.link_words[rows >= 0], rows[rows >= 0]),
                    *by_row(links.en_words[has_vector], word_rows[has_vector]), int((rows < 0).sum()))


class LinkPlan(NamedTuple):
    """The whole corpus's links and tables (the local project)."""

    links: ChosenLinks
    tables: ProjectionTables

    @property
    def vocab(self) -> Vocabularies:
        return self.tables.vocab

    @property
    def lexicon(self) -> Lexicon:
        return self.tables.lexicon


def link_plan(work: WorkDir, opts) -> LinkPlan:
    tables = prepare_projection(work, opts)
    lines = (read_lines(work.corpus_zh), read_lines(work.corpus_en), read_lines(require(work.links, "align")))
    return LinkPlan(choose_links(*lines, tables), tables)


class ProjectionSums(NamedTuple):
    """What project accumulates: sums and counts per word id (additive: the
    sums of corpus parts add up to the whole corpus's)."""

    zh_sum: torch.Tensor  # [Z, d] SUM_DTYPE
    zh_count: torch.Tensor  # [Z] int64
    en_sum: torch.Tensor  # [E, d] SUM_DTYPE
    en_count: torch.Tensor  # [E] int64
    links_without_vector: int


def project_key(config: Config, work: WorkDir, encode_key: str | None) -> tuple[str, dict]:
    """The project stage's key, and its inputs by content (eflomal is not
    deterministic: the key depends on what it wrote, not on its key)."""
    inputs = {str(p): file_hash(require(p, "align")) for p in (work.links, work.lexicon, work.corpus_zh)}
    return stage_key(
        "project", encode=encode_key, inputs=list(inputs.values()), config=fingerprint(config.project)
    ), inputs


def save_projection(
    work: WorkDir, config: Config, vocab: Vocabularies, lexicon: Lexicon, sums: ProjectionSums, dim: int, inputs: dict
) -> dict:
    """Write projection.safetensors and its two vocabularies; return the record's content."""
    opts, best = config.project, lexicon.best
    save_tensors(work.projection,
                 {"zh_sum": sums.zh_sum, "zh_count": sums.zh_count,
                  "zh_freq": torch.tensor([vocab.zh_freq[w] for w in vocab.zh_vocab], dtype=torch.int64),
                  "en_sum": sums.en_sum, "en_count": sums.en_count},
                 metadata={"strategy": plain(opts.strategy), "min_count": str(opts.min_count), "dim": str(dim)})
    no_translation = Translation("", 0, 0.0)
    write_projected_words(
        work.projection_zh_vocab,
        [
            ProjectedWord(w, vocab.zh_freq[w], best.get(w, no_translation).en, best.get(w, no_translation).p)
            for w in vocab.zh_vocab
        ],
    )
    with atomic_path(work.projection_en_vocab) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("word\tfreq\n")
        f.writelines(f"{w}\t{vocab.en_freq[w]}\n" for w in vocab.en_vocab)
    return dict(
        options=section_dict(opts),
        inputs=inputs,
        counts=dict(
            zh_types=len(vocab.zh_vocab),
            zh_projected=int((sums.zh_count >= opts.min_count).sum()),
            en_types=len(vocab.en_vocab),
            links_used=int(sums.zh_count.sum()),
            links_without_vector=sums.links_without_vector,
            stopwords_dropped=len(lexicon.stopwords & best.keys()),
        ),
    )


def project(config: Config, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """Write per-word vector sums and counts for Chinese (projected) and
    English words; return the record (counts; `skipped` when up to date)."""
    encode_record = valid_record(work, "encode")
    key, inputs = project_key(config, work, encode_record.get("key"))

    def compute() -> dict:
        store = VectorStore(work)
        plan = link_plan(work, config.project)
        sentences = {"corpus and links": len(plan.links.sent_offsets) - 1, "vectors": len(store.sent_offsets) - 1}
        require_same_counts(work.root, "sentence counts", sentences, "encode")
        words = {"corpus.en": len(plan.links.en_words), "vectors": len(store.word_rows)}
        require_same_counts(work.root, "English word counts", words, "encode")
        rows, dim = link_rows(plan.links, store.word_rows), encode_record["dim"]
        # once the links' rows are known, only the vocabularies and the best translations are needed:
        # the links, p(en|zh) and the word ids go (hundreds of MB of Python objects on a large corpus)
        vocab, lexicon = plan.vocab, plan.lexicon._replace(p_en={})
        del plan
        release_freed_memory(collect=True)
        sides = [WordRows(rows.zh_ids, rows.zh_rows, len(vocab.zh_vocab)),
                 WordRows(rows.en_ids, rows.en_rows, len(vocab.en_vocab))]
        with reporter.task("project", store.n_shards, "shards") as task:
            (zh_sum, zh_count), (en_sum, en_count) = accumulate(store, sides, dim, task)
        sums = ProjectionSums(zh_sum, zh_count, en_sum, en_count, links_without_vector=rows.links_without_vector)
        return save_projection(work, config, vocab, lexicon, sums, dim, inputs)

    return run_stage(work, "project", key, force, compute)


class ProjectedWord(NamedTuple):
    """One line of projection.zh.tsv: a Chinese word of the corpus."""

    word: str
    freq: int  # corpus frequency
    aligned_en: str  # its most probable English translation ("" if never aligned)
    p: float  # p(aligned_en | word)


def write_projected_words(path: Path, words: list[ProjectedWord]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("word\tfreq\taligned_en\tp_en_given_zh\n")
        f.writelines(f"{w.word}\t{w.freq}\t{w.aligned_en}\t{w.p:.6g}\n" for w in words)


def read_projected_words(path: Path) -> list[ProjectedWord]:
    words = []
    for lineno, line in enumerate(read_lines(path)):
        if lineno:
            word, freq, en, p = line.split("\t")
            words.append(ProjectedWord(word, int(freq), en, float(p)))
    return words


@dataclass
class Projection:
    """What project wrote: per-word sums and counts, and the two vocabularies."""

    tensors: dict[str, torch.Tensor]  # zh_sum [Z, d], zh_count [Z], zh_freq [Z], en_sum [E, d], en_count [E]
    # (the sums float32; float64 in a projection written before 0.5)
    zh_words: list[ProjectedWord]
    en_words: list[str]
    min_count: int


def load_projection(work: WorkDir) -> Projection:
    with safe_open(str(require(work.projection, "project")), "pt") as f:
        min_count = int(f.metadata()["min_count"])
        # each tensor a copy of its own: views into the file's one mapping would keep all of
        # it (the sums) in memory for as long as any of them, e.g. a count, lives
        tensors = {name: f.get_tensor(name).clone() for name in f.keys()}
    en_words = [line.split("\t")[0] for lineno, line in enumerate(read_lines(work.projection_en_vocab)) if lineno]
    return Projection(tensors, read_projected_words(work.projection_zh_vocab), en_words, min_count)
