"""Stage 5: build the vocabulary, fill rows without a projected vector, and
write the output contract (see README) into a directory that replaces
`--out` as a whole, or not at all."""
from __future__ import annotations

import time
from itertools import groupby
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from .config import PAD, STAGES, UNK, Config, Oov, section_dict
from .embeddings import Embeddings, VocabRow
from .errors import XlembedError
from .io import (
    Reporter,
    SilentReporter,
    all_finite,
    check_output_dir,
    read_lines,
    read_word_list,
    release_freed_memory,
    sha256_file,
)
from .layout import WorkDir
from .models import model_name, resolve_model_dir
from .oov import Filler, fill_rows
from .project import ProjectedWord, load_projection
from .records import check_chain, model_hash, valid_record
from .skipgram import SkipGramTrainer, TextRecorder, trainable
from .tokenize import count_lines, recorded_splitter, split_rows, worker_count
from .version import __version__

UPSTREAM = STAGES[:-1]  # the stages whose records write reads


def shrink_to_chars(
    words: list[str], means: torch.Tensor, counts: torch.Tensor, filler: Filler, k: float
) -> torch.Tensor:
    """Projected rows [P, d] pulled toward their characters' composition
    from the other projected words (`Filler.compose`, leaving the word out)
    as if it were k more aligned contexts:

        row = (n * projected + k * chars) / (n + k)      # n: the word's aligned contexts

    A word aligned once is half its one (noisy) context and half what its
    characters mean; a word aligned hundreds of times barely moves. Words
    sharing no character with another projected word keep their row."""
    composed, has = filler.compose(words, leave_out=True)  # [P, d], [P]
    n = counts.to(means.dtype).unsqueeze(1)  # [P, 1]
    composed.mul_(k)
    composed[~has] = means[~has] * k  # rows without a composition: (n + k) row / (n + k)
    return composed.addcmul_(means, n).div_(n + k)  # in place: P x d is large


def projected_means(zh_sum: torch.Tensor, zh_count: torch.Tensor, projected_ids: list[int]) -> torch.Tensor:
    """[P, d] float32 (the output's dtype) the mean vector of each projected
    word, averaged in float64, 8,192 words at a time."""
    means = torch.empty((len(projected_ids), zh_sum.shape[1]), dtype=torch.float32)  # [P, d]
    for start in range(0, len(projected_ids), 8192):
        ids = projected_ids[start:start + 8192]
        means[start:start + len(ids)] = zh_sum[ids] / zh_count[ids].unsqueeze(1).double()
    return means


def build_matrix(zh_words: list[ProjectedWord], zh_sum: torch.Tensor, zh_count: torch.Tensor, min_count: int,
                 min_freq: int, seed: int, oov: Oov = Oov.random, vocab: list[str] | None = None,
                 shrink: float = 0.0, texts: Iterable[list[str]] | None = None,
                 tune: Callable[[list[str], torch.Tensor], None] | None = None,
                 ) -> tuple[list[str], torch.Tensor, torch.Tensor, list[VocabRow]]:
    """Vocabulary, rows [V, d] float32, projected [V] uint8 and where each row came from.

    The vocabulary is `vocab` as given, or [PAD], [UNK], then every corpus
    word with frequency >= min_freq, most frequent first. [PAD] is zeros,
    [UNK] the mean projected row; words with >= min_count aligned contexts
    get their projected row (pulled toward their characters by `shrink`,
    see shrink_to_chars), the others a row from the `oov` strategy (random
    rows drawn in vocabulary order with `seed`, scaled to the
    per-dimension mean and std of the projected rows); `texts`, segmented
    sentences, are what `context` reads; `tune(words, rows)` trains the
    projected rows in place before anything is filled from them (--distill)."""
    oov = Oov(oov)
    projected_ids = [k for k, w in enumerate(zh_words) if zh_count[k] >= min_count and w.word not in (PAD, UNK)]
    if not projected_ids:
        raise XlembedError(
            "no Chinese word got a projected vector: the corpus is too small, or project.min_count too high"
        )
    means = projected_means(zh_sum, zh_count, projected_ids)  # [P, d]
    del zh_sum
    release_freed_memory()
    projected_words = [zh_words[k].word for k in projected_ids]
    freqs = [zh_words[k].freq for k in projected_ids]
    filler = None if oov == Oov.random and not shrink else Filler(projected_words, means, freqs)
    if shrink:
        means = shrink_to_chars(projected_words, means, zh_count[projected_ids], filler, shrink)
    if tune is not None:
        tune(projected_words, means)
        filler = None if filler is None else Filler(projected_words, means, freqs)  # fills come from the trained rows
    mean, std = means.mean(0, dtype=torch.float64), means.std(0, unbiased=False).double()  # [d]
    projected_index = {word: i for i, word in enumerate(projected_words)}
    in_corpus = {w.word: w for w in zh_words}
    if vocab is None:
        vocab = [PAD, UNK] + [w.word for w in zh_words if w.freq >= min_freq and w.word not in (PAD, UNK)]

    rows = torch.zeros((len(vocab), means.shape[1]), dtype=torch.float32)  # [V, d]
    sources, to_fill = [], []
    for i, word in enumerate(vocab):
        if word in (PAD, UNK):
            sources.append("special")
            if word == UNK:
                rows[i] = mean
        elif word in projected_index:
            sources.append("projected")
            rows[i] = means[projected_index[word]]
        else:
            sources.append(None)  # set below
            to_fill.append(i)
    filled, filled_sources = fill_rows([vocab[i] for i in to_fill], oov.value, filler, mean, std, seed, texts)
    rows[to_fill] = filled.float()
    for i, source in zip(to_fill, filled_sources):
        sources[i] = source
    provenance = [VocabRow.new(w, in_corpus[w].freq, s, in_corpus[w].aligned_en, in_corpus[w].p) if w in in_corpus
                  else VocabRow.new(w, 0, s) for w, s in zip(vocab, sources)]
    projected = torch.tensor([r.source == "projected" for r in provenance], dtype=torch.uint8)
    return vocab, rows, projected, provenance


def context_texts(work: WorkDir, opts, tokenize_options: dict, reporter: Reporter = SilentReporter(),
                  recorder: TextRecorder | None = None) -> Iterator[list[str]]:
    """What --oov context reads: the corpus's segmented Chinese side, then
    --context's lines segmented as the corpus was (jieba's options, and its
    worker processes, as tokenize's), with a progress bar; `recorder` keeps
    --context's for the training on it."""
    for line in read_lines(work.corpus_zh):
        yield line.split()
    if opts.context is not None:
        split = recorded_splitter(tokenize_options)
        lines = ((line,) for line in read_lines(opts.context))
        workers = worker_count(tokenize_options.get("workers", 0))
        segmented = (words for (words,) in split_rows(lines, (split,), workers))
        with reporter.task("context", count_lines(opts.context), "lines") as task:
            for words in segmented if recorder is None else recorder.record(segmented):
                task.advance()
                yield words


def train_on_context(vocab: list[str], rows: torch.Tensor, texts: Iterator[list[str]], recorder: TextRecorder,
                     opts, reporter: Reporter) -> tuple[torch.Tensor, dict]:
    """--context-epochs: rows [V, d] trained on --context's text (skipgram.py), with what was done."""
    for _ in texts:  # the fill reads the text only where a word needs one
        pass
    text = recorder.text(vocab, (PAD, UNK))
    nothing = trainable(text, len(vocab))
    if nothing is not None:
        raise XlembedError(f"{opts.context}: nothing to train the rows on: {nothing} "
                           "(write.context_epochs = 0 keeps the fill and skips the training)")
    trainer = SkipGramTrainer(opts.context_epochs, opts.context_anchor, opts.seed, reporter)
    trained = torch.tensor([w not in (PAD, UNK) for w in vocab])  # [V]
    return trainer.train(rows, trained, text), trainer.record


def english_matrix(en_words: list[str], en_sum: torch.Tensor, en_count: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    keep = (en_count > 0).nonzero().squeeze(1)
    return [en_words[k] for k in keep.tolist()], (en_sum[keep] / en_count[keep].unsqueeze(1).to(en_sum.dtype)).float()


def require_finite(work: WorkDir, **matrices: torch.Tensor) -> None:
    """Never written: a matrix with NaN rows loads and misleads."""
    for name, matrix in matrices.items():
        if not all_finite(matrix):
            raise XlembedError(f"{work.projection}: the {name} rows hold non-finite values; "
                               "run `xlembed project --force`")


def output_metadata(records: dict, opts) -> dict[str, str]:
    """embeddings.safetensors' metadata: what the rows are (model, layer, rules, seed)."""
    encode_options = records["encode"]["options"]
    return dict(model=model_name(encode_options["model"]), model_sha256=records["encode"]["model_sha256"],
                layer=str(encode_options["layer"]), strategy=records["project"]["options"]["strategy"],
                symmetrization=records["align"]["options"]["symmetrization"],
                seed=str(opts.seed), oov_fill=opts.oov.value, xlembed_version=__version__)


def write(config: Config, work: WorkDir, out: Path, computed: tuple[str, ...] = (),
          reporter: Reporter = SilentReporter()) -> dict:
    """Write embeddings.safetensors, vocab.txt, vocab.tsv, english.safetensors,
    english_vocab.txt and manifest.json into `out`; return the manifest.
    `computed`: the upstream stages this command computed; the others are
    listed as reused (their seconds are those of the command that ran them)."""
    start = time.perf_counter()
    opts = config.write
    check_output_dir(out)
    check_chain(work, "project")  # and through it every record the matrix comes from: current, outputs intact
    write_inputs = input_hashes(opts)  # before they are read, checked again before anything is saved
    records = {stage: valid_record(work, stage) for stage in UPSTREAM}  # each with what build_manifest reads
    projection = load_projection(work)
    user_vocab = read_word_list(opts.vocab) if opts.vocab is not None else None
    distiller = ProjectedRowsDistiller(work, records["encode"], opts, reporter) if opts.distill else None
    recorder = TextRecorder() if opts.context is not None and opts.context_epochs else None
    texts = (context_texts(work, opts, records["tokenize"]["options"], reporter, recorder)
             if opts.oov == Oov.context else None)
    # the sums (vocabulary x dimension) are handed over and dropped as soon as they are averaged
    english_words, english = english_matrix(
        projection.en_words, projection.tensors.pop("en_sum"), projection.tensors["en_count"]
    )
    release_freed_memory()
    vocab, vectors, projected, provenance = build_matrix(
        projection.zh_words,
        projection.tensors.pop("zh_sum"),
        projection.tensors["zh_count"],
        projection.min_count,
        opts.min_freq,
        opts.seed,
        opts.oov,
        user_vocab,
        opts.shrink,
        texts,
        distiller,
    )
    trained_on_context = None
    if recorder is not None:
        vectors, trained_on_context = train_on_context(vocab, vectors, texts, recorder, opts, reporter)
    require_finite(work, vectors=vectors, english=english)
    embeddings = Embeddings(words=vocab, vectors=vectors, projected=projected.bool(), english_words=english_words,
                            english_vectors=english, rows=provenance, metadata=output_metadata(records, opts))
    check_unchanged(opts, write_inputs)
    embeddings.manifest = build_manifest(records, opts, computed, write_inputs, round(time.perf_counter() - start, 3))
    if distiller is not None:
        embeddings.manifest["distill"] = distiller.record
    if trained_on_context is not None:
        embeddings.manifest["context_training"] = trained_on_context
    embeddings = carry_forward(embeddings, out)
    embeddings.save(out)
    return embeddings.manifest


NO_KEPT = ("its encode kept no sentence embeddings (sentences.safetensors); --distill (3 by default) needs one "
           "or the other: run `xlembed encode --force`, or write with --distill 0")


class ProjectedRowsDistiller:
    """--distill, as build_matrix's `tune`: trains the projected rows on the
    build corpus (distill.py) towards the model that encoded it: the
    sentence embeddings its encode stage kept, else the model itself,
    checked to be that model; `record` is what was done, for the manifest."""

    def __init__(self, work: WorkDir, encode_record: dict, opts, reporter: Reporter):
        from .distill import Teacher

        self.work, self.opts, self.reporter, self.record = work, opts, reporter, None
        self.teacher = Teacher(None, encode_record["key"])
        if encode_record.get("sentence_vectors") and work.sentence_vectors.exists():
            return  # checked against the encode key when read
        # an encode from before xlembed kept them (or the file was removed): the model runs again, if it is here
        model = encode_record["options"]["model"]
        if model and not Path(model).is_dir():
            raise XlembedError(f"{model}: the model the corpus was encoded with is not here, and {NO_KEPT}")
        model_dir = resolve_model_dir(model)
        if model_hash(model_dir) != encode_record["model_sha256"]:
            raise XlembedError(f"{model_dir}: not the model the corpus was encoded with (its files changed "
                               f"since `xlembed encode`), and {NO_KEPT}")
        self.teacher = Teacher(model_dir, encode_record["key"])

    def __call__(self, words: list[str], rows: torch.Tensor) -> None:
        from .distill import MatrixDistillOptions, distill_vectors

        options = MatrixDistillOptions(epochs=self.opts.distill, anchor=self.opts.distill_anchor, seed=self.opts.seed)
        self.record = distill_vectors(rows, words, self.work, self.teacher, options, self.reporter)


def input_paths(opts) -> list[Path]:
    """write's own input files (--vocab, --context), as given."""
    return [Path(p) for p in (opts.vocab, opts.context) if p is not None]


def input_hashes(opts) -> dict[str, str]:
    """write's own input files by resolved path and content hash, read now (no cache: check_unchanged
    compares two such readings)."""
    return {str(p.resolve()): sha256_file(p) for p in input_paths(opts)}


def check_unchanged(opts, write_inputs: dict[str, str]) -> None:
    """One line naming the path as given, before anything is saved, where --vocab or --context now holds
    other bytes (or, through a link, is another file) than when write began reading it."""
    for given in input_paths(opts):
        if write_inputs.get(str(given.resolve())) != sha256_file(given):
            raise XlembedError(f"{given}: changed while write was reading it; nothing was written, run write again")


def build_manifest(records: dict[str, dict], opts, computed: tuple[str, ...], write_inputs: dict[str, str],
                   write_seconds: float) -> dict:
    """The manifest from the upstream stages' records: parameters, inputs
    (write's own as hashed before it read them), the model by name and hash,
    counts, seconds, and the stages reused."""
    tokenized = records["tokenize"]["counts"]
    counts = dict(
        pairs_read=tokenized["pairs_read"],
        pairs_dropped=tokenized["pairs_dropped"],
        pairs_kept=tokenized["pairs_kept"],
        words_truncated=records["encode"]["counts"]["words_truncated"],
    )
    seconds = {stage: records[stage]["seconds"] for stage in UPSTREAM} | {"write": write_seconds}
    return dict(
        xlembed_version=__version__,
        parameters={stage: records[stage]["options"] for stage in UPSTREAM} | {"write": section_dict(opts)},
        inputs=records["tokenize"]["inputs"],
        write_inputs=write_inputs,
        model=dict(name=model_name(records["encode"]["options"]["model"]), sha256=records["encode"]["model_sha256"]),
        model_sha256=records["encode"]["model_sha256"],
        counts=counts,
        stage_counts={stage: records[stage]["counts"] for stage in UPSTREAM},
        seconds=seconds,
        reused=[stage for stage in UPSTREAM if stage not in computed],
    )


def extended_words(out: Path) -> list[tuple[str, str]]:
    """The words `xlembed extend` added to the output at `out`, in order,
    each with the fill it got ([] when there is no readable output)."""
    try:
        previous = Embeddings.load(out)
    except (XlembedError, OSError, ValueError):
        return []
    entries = previous.manifest.get("extended") or []
    tail = previous.words[len(previous.words) - sum(e.get("added", 0) for e in entries):]
    words: list[tuple[str, str]] = []
    for entry in entries:
        words += [(w, entry["oov"]) for w in tail[len(words):len(words) + entry.get("added", 0)]]
    return words


def carry_forward(embeddings: Embeddings, out: Path) -> Embeddings:
    """Rows that `extend` added to the output being replaced are added to the
    new build too (filled again, the same way, from its rows), so a rebuild
    never drops them silently; the manifest's `extended` says so."""
    for oov, group in groupby(extended_words(out), key=lambda pair: pair[1]):
        words = [w for w, _ in group]
        embeddings, added = embeddings.extend(words, oov)
        embeddings.manifest["extended"][-1].update(carried_forward=True, words=len(words))
    return embeddings
