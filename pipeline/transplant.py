"""A Chinese model from the English one: the English model's Transformer
layers kept, its input word embeddings replaced by Chinese rows, its
tokenizer by one over the Chinese vocabulary (hf_tokenizer: greedy longest
match, as close to jieba as a tokenizer.json can be).

Rows live in the model's *input* space, not in the contextual space of the
matrix: each Chinese word's row is the mean, over its aligned occurrences,
of the static input vector of the English word the projection rule chose
there (the mean of that word's word-piece rows in the model's input
embedding matrix). So all a transplant needs from the corpus is how often
each (Chinese word, English word) link was chosen, which is additive over
corpus parts; it is counted from the work directory's alignments with the
project stage's own link choice, and needs no forward pass. Words without
links get rows as the build's --oov and --shrink say (write.build_matrix),
in that space; [CLS], [SEP], [PAD], [UNK] and [MASK] take the English
model's own rows.

    transplant(Path("runs/demo"), Path("runs/demo-zh-model"))
    AutoModel.from_pretrained("runs/demo-zh-model")   # no xlembed needed
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .config import PAD, UNK, Oov, Strategy
from .distill import DistillOptions, corpus_pairs, distill_rows, sentence_limit, sentence_pooling
from .errors import XlembedError
from .export import check_target
from .io import (
    Reporter,
    SilentReporter,
    all_finite,
    read_json,
    refuse_link,
    require,
    staged_dir,
    write_json_atomic,
)
from .layout import WorkDir
from .project import ProjectedWord, link_plan
from .records import valid_record

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
SPECIALS = (PAD, UNK, CLS, SEP, MASK)  # the first ids of a transplant's vocabulary, in this order
TRANSPLANT = "xlembed transplant"  # xlembed_transplant.json's "kind": what makes a directory ours to replace
MARKER = "xlembed_transplant.json"
ROW_SOURCES = ("static", "matrix")  # input rows from link counts, or the build's own rows (e.g. built with --layer 0)


class LinkRule(NamedTuple):
    """How the build chose links (its project options)."""

    strategy: Strategy
    stopwords: Path | None


class LinkCounts(NamedTuple):
    """How often each (Chinese word, English word) link was chosen: sparse,
    and additive over corpus parts."""

    zh_words: list[ProjectedWord]  # [Z] the corpus's Chinese words (frequency, best translation)
    en_words: list[str]  # [E]
    zh_ids: np.ndarray  # [K] int64, into zh_words
    en_ids: np.ndarray  # [K] int64, into en_words
    counts: np.ndarray  # [K] int64 how often that link was chosen


def chosen_link_counts(work: WorkDir, rule: LinkRule) -> LinkCounts:
    """Count the links the project stage's rule chooses, per word pair."""
    plan = link_plan(work, rule)
    links, vocab, best = plan.links, plan.vocab, plan.lexicon.best
    n_en = len(vocab.en_vocab)
    keys = links.link_words * n_en + links.en_words[links.link_positions]  # [n_links] zh id * E + en id
    pairs, counts = np.unique(keys, return_counts=True)
    zh_words = [
        ProjectedWord(w, vocab.zh_freq[w], best[w].en if w in best else "", best[w].p if w in best else 0.0)
        for w in vocab.zh_vocab
    ]
    return LinkCounts(zh_words, vocab.en_vocab, pairs // n_en, pairs % n_en, counts)


def static_word_vectors(embedding: torch.Tensor, tokenizer, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word's static input vector: the mean of its word pieces' rows of
    `embedding` [W, d]. Returns vectors [N, d] float64 and whether the word
    has any piece [N] bool."""
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]  # N lists of piece ids
    n_pieces = torch.tensor([len(ids) for ids in pieces], dtype=torch.int64)  # [N]
    owner = torch.repeat_interleave(torch.arange(len(words)), n_pieces)  # [P]
    flat = torch.tensor([p for ids in pieces for p in ids], dtype=torch.int64)  # [P]
    # a sparse [N, W] count of each word's pieces times the rows: no [P, d] copy of the rows (on the mixed
    # corpus's 55k English words that copy, in float64, was most of transplant's peak)
    piece_counts = torch.sparse_coo_tensor(
        torch.stack([owner, flat]), torch.ones(len(flat), dtype=torch.float64), (len(words), len(embedding)),
        check_invariants=True,  # piece ids inside the embedding (a tokenizer larger than its model is an error)
    )
    sums = torch.sparse.mm(piece_counts, embedding.double())  # [N, W] @ [W, d] -> [N, d]
    return sums.div_(n_pieces.clamp(min=1).double().unsqueeze(1)), n_pieces > 0


def chinese_sums(
    links: LinkCounts, en_vectors: torch.Tensor, en_has: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per Chinese word: the sum (float64) and count of its chosen links'
    English static vectors (links to English words without pieces left out)."""
    keep = en_has[torch.from_numpy(links.en_ids)].numpy()  # [K]
    zh, en, n = (torch.from_numpy(a[keep]) for a in (links.zh_ids, links.en_ids, links.counts))
    counts_matrix = torch.sparse_coo_tensor(
        torch.stack([zh, en]), n.double(), (len(links.zh_words), len(en_vectors)), check_invariants=False
    )
    sums = torch.sparse.mm(counts_matrix, en_vectors)  # [Z, E] @ [E, d] -> [Z, d]
    return sums, torch.zeros(len(links.zh_words), dtype=torch.int64).index_add_(0, zh, n)


class TransplantRows(NamedTuple):
    tokens: list[str]  # [V] the tokenizer's vocabulary: SPECIALS, then the build's words
    freqs: list[int]  # [V] corpus frequencies (0 for specials): the tokenizer's word probabilities
    rows: torch.Tensor  # [V, d] float32 input embedding rows
    sources: list[str]  # [V] special / projected / random / chars / pinyin / matrix


def special_rows(english_tokenizer, embedding: torch.Tensor) -> torch.Tensor:
    """[CLS] [SEP] [PAD] [UNK] [MASK]'s rows [5, d]: the English model's own
    (the mean row where it has no such token)."""
    rows = []
    for role, fallback in zip(("pad", "unk", "cls", "sep", "mask"), ("pad", "unk", "bos", "eos", "mask")):
        token = getattr(english_tokenizer, f"{role}_token", None) or getattr(
            english_tokenizer, f"{fallback}_token", None
        )
        token_id = english_tokenizer.convert_tokens_to_ids(token) if token is not None else None
        rows.append(embedding[token_id] if token_id is not None else embedding.mean(0))
    return torch.stack(rows)


def static_rows(
    work: WorkDir, words: list[str], manifest: dict, tokenizer, embedding: torch.Tensor
) -> tuple[torch.Tensor, list[str]]:
    """The build's words' rows [N, d] in the input space of `embedding`, and
    where each came from, by the build's own link rule and write options."""
    from .write import build_matrix

    project, write = manifest["parameters"]["project"], manifest["parameters"]["write"]
    stopwords = Path(project["stopwords"]) if project.get("stopwords") else None
    links = chosen_link_counts(work, LinkRule(Strategy(project["strategy"]), stopwords))
    # the English words' vectors [E, d] float64 are dropped as soon as the Chinese sums are made
    zh_sum, zh_count = chinese_sums(links, *static_word_vectors(embedding, tokenizer, links.en_words))
    _, rows, _, provenance = build_matrix(
        links.zh_words,
        zh_sum,
        zh_count,
        int(project["min_count"]),
        1,
        int(write["seed"]),
        Oov(write["oov"]),
        words,
        float(write.get("shrink") or 0.0),
    )
    return rows, [r.source for r in provenance]


def transplant_rows(out: Path, work: WorkDir, model_dir: Path, row_source: str = "static") -> TransplantRows:
    """The transplant's vocabulary and input rows for the build in `out`."""
    from .embeddings import Embeddings
    from .models import load_encoder, load_tokenizer

    built = Embeddings.load(out)
    english_tokenizer = load_tokenizer(model_dir)
    embedding = load_encoder(model_dir).get_input_embeddings().weight.detach()  # [W, d]
    words = [w for w in built.words if w not in SPECIALS]
    freq = {r.word: r.freq for r in built.rows}
    if row_source == "matrix":
        if built.vectors.shape[1] != embedding.shape[1]:
            raise XlembedError(
                f"{out}: its rows have {built.vectors.shape[1]} dimensions, the model's input {embedding.shape[1]}"
            )
        index = built.index
        rows, sources = (
            torch.stack([built.vectors[index(w)] for w in words]) if words else embedding[:0],
            ["matrix"] * len(words),
        )
    else:
        manifest = built.manifest
        del built  # only its words, their frequencies and its manifest are needed (its rows: 0.5 GB on mixed)
        check_same_corpus(out, manifest, work)
        rows, sources = static_rows(work, words, manifest, english_tokenizer, embedding)
    all_rows = torch.cat([special_rows(english_tokenizer, embedding).float(), rows.float()])  # [V, d]
    return TransplantRows(
        list(SPECIALS) + words,
        [0] * len(SPECIALS) + [freq.get(w, 0) for w in words],
        all_rows,
        ["special"] * len(SPECIALS) + sources,
    )


def check_same_corpus(out: Path, manifest: dict, work: WorkDir) -> None:
    tokenized = valid_record(work, "tokenize")
    if manifest.get("inputs") and tokenized.get("inputs") != manifest["inputs"]:
        raise XlembedError(
            f"{work.root}: not the work directory of {out} (another corpus); pass the build's own with --work"
        )


def chinese_tokenizer(tokens: list[str], freqs: list[int], model_max_length: int):
    """A transformers fast tokenizer over `tokens` (SPECIALS first) that
    segments as jieba would (the most probable segmentation by corpus
    frequency) and adds [CLS] … [SEP]."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from .hf_tokenizer import vocabulary_tokenizer

    backend = vocabulary_tokenizer(tokens, unk_token=UNK, freqs=freqs)
    ids = {t: i for i, t in enumerate(tokens)}
    backend.post_processor = TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=model_max_length,
    )


def copy_sentence_transformers_files(model_dir: Path, dest: Path) -> list[str]:
    """modules.json and its modules' folders (pooling, normalisation), the
    Transformer module's own config; nothing for a plain transformers model."""
    if not (model_dir / "modules.json").exists():
        return []
    copied = []
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, dest / name)
            copied.append(name)
    for module in json.loads((model_dir / "modules.json").read_text(encoding="utf-8")):
        folder = model_dir / module.get("path", "")
        if module.get("path") and folder.is_dir():
            shutil.copytree(folder, dest / module["path"])
            copied.append(module["path"])
    return copied


class TransplantedModel(NamedTuple):
    model: object  # the English model with the Chinese input rows (transformers' PreTrainedModel)
    tokenizer: object  # the Chinese tokenizer (transformers' PreTrainedTokenizerFast)


def transplanted_model(model_dir: Path, chinese: TransplantRows) -> TransplantedModel:
    """The English model with its input embeddings replaced by `chinese`'s
    rows and `vocab_size` updated, and the Chinese tokenizer, in memory."""
    from .models import load_encoder, load_tokenizer, quiet_library

    model = load_encoder(model_dir)
    with quiet_library():  # a special token id beyond the new vocabulary: transformers warns at resize and save
        model.resize_token_embeddings(len(chinese.tokens))
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(chinese.rows)  # [V, d]
        model.config.vocab_size, model.config.pad_token_id = len(chinese.tokens), chinese.tokens.index(PAD)
        english_tokenizer = load_tokenizer(model_dir)
    max_length = min(english_tokenizer.model_max_length, model.config.max_position_embeddings)
    return TransplantedModel(model, chinese_tokenizer(chinese.tokens, chinese.freqs, max_length))


def save_model(dest: Path, model_dir: Path, transplanted: TransplantedModel) -> dict:
    """The transplanted model, its tokenizer, and sentence-transformers'
    files of `model_dir`, into the (empty) directory `dest`."""
    from .models import quiet_library

    with quiet_library():
        transplanted.model.save_pretrained(str(dest), safe_serialization=True)
        transplanted.tokenizer.save_pretrained(str(dest))
    portable_tokenizer_config(dest / "tokenizer_config.json")
    umask = os.umask(0)
    os.umask(umask)
    for path in dest.iterdir():  # save_pretrained writes some files 0600 (through temporary files)
        if path.is_file():
            path.chmod(0o666 & ~umask)
    return dict(sentence_transformers=copy_sentence_transformers_files(model_dir, dest))


def portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class every transformers version knows (4.x has
    no TokenizersBackend; in 5.x PreTrainedTokenizerFast is that class)."""
    config = read_json(path)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json_atomic(path, config)


def check_transplant_dir(dest: Path) -> None:
    """Refuse a file, or a non-empty directory that is not an earlier transplant."""
    dest = Path(dest)
    refuse_link(dest)  # up front, before the rows are computed (staged_dir checks it again)
    if dest.exists() and not dest.is_dir():
        raise XlembedError(f"{dest}: output path is a file, expected a directory")
    if dest.is_dir() and any(dest.iterdir()):
        try:
            ours = read_json(dest / MARKER).get("kind") == TRANSPLANT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise XlembedError(
                f"{dest}: directory is not empty and is not an xlembed transplant; refusing to replace it"
            )


def transplant(
    out: Path,
    dest: Path,
    model: Path | None = None,
    work: Path | None = None,
    row_source: str = "static",
    reporter: Reporter = SilentReporter(),
    distill: DistillOptions = DistillOptions(epochs=0),
) -> dict:
    """Write the transplanted model of the build in `out` to `dest`
    (replaced as a whole, or not at all). `model`: the build's encode model
    by default; `work`: OUT.work beside OUT by default; `distill.epochs` > 0:
    then train the Chinese rows on the build corpus (distill.py). Returns
    the record written to dest/xlembed_transplant.json."""
    from .models import resolve_model_dir
    from .run import default_work_dir

    out, dest = Path(out), Path(dest)
    if row_source not in ROW_SOURCES:
        raise XlembedError(f"--rows must be one of {', '.join(ROW_SOURCES)}, got '{row_source}'")
    if not 0 <= distill.epochs < math.inf:
        raise XlembedError(f"--distill must be a finite number of epochs, 0 or more, got {distill.epochs}")
    if not 0 <= distill.layers_lr < math.inf:
        raise XlembedError(f"--distill-layers-lr must be a finite number, 0 or more, got {distill.layers_lr}")
    if distill.layers_lr > 0 and distill.epochs == 0:
        raise XlembedError("--distill-layers-lr trains the layers during --distill only: give --distill EPOCHS too")
    check_target(dest, "transplant")  # never inside an output (a rebuild would fail on it) or a work directory
    check_transplant_dir(dest)
    manifest = read_json(require(out / "manifest.json", "write"))
    recorded = manifest.get("parameters", {}).get("encode", {}).get("model")
    if model is None and recorded and not Path(recorded).is_dir():
        raise XlembedError(f"{recorded}: the model {out} was encoded with is not here; pass --model DIR")
    model_dir = resolve_model_dir(model if model is not None else recorded)
    work_dir = WorkDir(Path(work) if work is not None else default_work_dir(out))
    if distill.epochs > 0:
        check_same_corpus(out, manifest, work_dir)  # up front: the pairs distilled on are the build's own
    with reporter.task("transplant rows", None, "steps"):
        chinese = transplant_rows(out, work_dir, model_dir, row_source)
    transplanted = transplanted_model(model_dir, chinese)
    record = dict(
        kind=TRANSPLANT,
        build=str(out.resolve()),
        model=str(model_dir),
        rows=row_source,
        vocab_size=len(chinese.tokens),
        dim=int(chinese.rows.shape[1]),
        row_sources={s: chinese.sources.count(s) for s in dict.fromkeys(chinese.sources)},
    )
    if distill.epochs > 0:
        record["distill"] = distilled(transplanted, model_dir, work_dir, distill, reporter)
    with staged_dir(dest, check=check_transplant_dir) as stage:
        record |= save_model(stage, model_dir, transplanted)
        write_json_atomic(stage / MARKER, record)
    return record


def distilled(transplanted: TransplantedModel, model_dir: Path, work: WorkDir, options: DistillOptions,
              reporter: Reporter) -> dict:
    """Train the transplant's Chinese rows on the build corpus (in place); what was done, for the record."""
    from .models import load_encoder, load_tokenizer

    pooling, teacher = sentence_pooling(model_dir), load_encoder(model_dir)
    # the limit actually used, once, in the options trained with and recorded
    options = options._replace(max_length=sentence_limit(options.max_length, transplanted.model, teacher))
    result = distill_rows(transplanted.model, transplanted.tokenizer, teacher, load_tokenizer(model_dir),
                          corpus_pairs(work), options, pooling, reporter)
    if not all(all_finite(p) for p in transplanted.model.parameters()):
        raise XlembedError("--distill: the training diverged (non-finite weights); lower --distill-layers-lr")
    return dict(options._asdict(), pooling=pooling, pairs=result.pairs, steps=result.steps, loss="cosine distance",
                loss_first=round(result.loss_first, 6), loss_last=round(result.loss_last, 6))
