"""`Embeddings`: a built matrix, the one reader and writer of an output
directory (the way gensim's KeyedVectors or Model2Vec's StaticModel are).

    import xlembed
    e = xlembed.load("runs/demo")
    e.translate("猫", k=3)          # [('cat', 0.93), ('cats', 0.88), ('kitten', 0.84)]
    e.most_similar("医生", k=5)     # nearest Chinese words
    layer = e.to_torch()           # frozen nn.Embedding, padding_idx = [PAD]
    batch = e.tokenizer(["我喜欢猫。"])   # {"input_ids": [1, T], "attention_mask": [1, T]}, as Hugging Face's
    e.tokenizer.decode(batch["input_ids"][0])   # '我喜欢猫。'

A reader always sees one complete build: `load` opens the output directory
once and reads every file through that one handle. `write` and `extend`
build a new directory beside it and exchange the two atomically, so the
handle is either the old build or the new one, never a mix; if the old one
is removed while it is being read, the read starts again on the new one.
"""
from __future__ import annotations

import json
import numbers
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import torch

from .config import PAD, SENTENCE_SIF, UNK, Oov, sif_value
from .errors import XlembedError
from .io import XLEMBED_OUTPUT, save_tensors, sha256_file, staged_dir, write_json_atomic
from .layout import OutDir
from .oov import Filler, fill_rows, pinyin_of
from .outdir import _safetensors_metadata, _words, info_of, read_build, read_complete_build, verify  # noqa: F401
from .version import __version__

VOCAB_TSV_HEADER = "word\tfreq\tsource\taligned_en\tp_en_given_zh\tpinyin"


class VocabRow(NamedTuple):
    """One row's provenance, one line of vocab.tsv."""

    word: str
    freq: int  # corpus frequency (0: not in the corpus)
    source: str  # projected | chars | pinyin | random | special
    aligned_en: str  # the English word it was projected from ("" if none)
    p: float  # p(aligned_en | word)
    pinyin: str  # tone-marked, syllables separated by spaces ("" for specials)

    @classmethod
    def new(cls, word: str, freq: int, source: str, aligned_en: str = "", p: float = 0.0) -> "VocabRow":
        return cls(word, freq, source, aligned_en, p, "" if source == "special" else pinyin_of(word))


def format_vocab_tsv(rows: list[VocabRow]) -> str:
    return (
        VOCAB_TSV_HEADER
        + "\n"
        + "".join(f"{r.word}\t{r.freq}\t{r.source}\t{r.aligned_en}\t{r.p:.6g}\t{r.pinyin}\n" for r in rows)
    )


def parse_vocab_tsv(text: str) -> list[VocabRow]:
    rows = []
    for line in text.split("\n")[1:-1]:
        word, freq, source, en, p, sound = line.split("\t")
        rows.append(VocabRow(word, int(freq), source, en, float(p), sound))
    return rows


def _text(path: Path, files: dict[str, bytes]) -> str:
    try:
        return files[path.name].decode("utf-8")
    except UnicodeDecodeError as e:
        line = files[path.name][:e.start].count(b"\n") + 1
        raise XlembedError(f"{path}:{line}: not valid UTF-8; the output is damaged (`xlembed verify` tells more)")


def _word_file(path: Path, files: dict[str, bytes], rows: int) -> list[str]:
    """A vocabulary file of a build, checked against its matrix: one word per
    row, or the words would map to the wrong rows."""
    words = _words(_text(path, files))
    if len(words) != rows:
        raise XlembedError(f"{path}: {len(words):,} words for {rows:,} matrix rows; the output is damaged "
                           "(`xlembed verify` tells more)")
    return words


def _format_words(words: list[str]) -> str:
    return "".join(w + "\n" for w in words)


def _text_list(sentences) -> list[str]:
    """`sentences` as a list of strings, or a one-line error naming what is not one."""
    if isinstance(sentences, (bytes, bytearray)) or not hasattr(sentences, "__iter__"):
        raise XlembedError(f"sentences must be a string or a list of strings, got {type(sentences).__name__}")
    texts = list(sentences)
    not_text = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if not_text is not None:
        raise XlembedError(f"sentences must be strings; item {not_text} is {type(texts[not_text]).__name__}")
    return texts


@dataclass(eq=False)
class Embeddings:
    """A Chinese word-embedding matrix and the English word vectors in the same space."""

    words: list[str]  # [V] row i is the vector of words[i]
    vectors: torch.Tensor  # [V, d] float32
    projected: torch.Tensor  # [V] bool: projected from English (else filled, or [PAD]/[UNK])
    english_words: list[str]  # [E]
    english_vectors: torch.Tensor  # [E, d] float32
    rows: list[VocabRow] = field(default_factory=list)  # [V] where each row came from
    manifest: dict = field(default_factory=dict)  # parameters, inputs, counts, seconds, checksums
    metadata: dict = field(default_factory=dict)  # embeddings.safetensors' metadata (model, layer, strategy, ...)
    path: Path | None = None  # the directory it was loaded from

    # --- reading and writing ---------------------------------------------------------------

    @classmethod
    def load(cls, out: Path | str) -> "Embeddings":
        """Load an output directory of `xlembed run` or `xlembed write` (one complete build)."""
        from safetensors.torch import load as load_tensors

        o, files = read_complete_build(out)
        try:
            tensors = load_tensors(files[o.embeddings.name])
            english = load_tensors(files[o.english.name])["embeddings"]
            manifest = json.loads(files[o.manifest.name]) if o.manifest.name in files else {}
        except Exception as e:  # safetensors and json raise several kinds
            raise XlembedError(f"{o.root}: cannot read the matrices: {str(e).splitlines()[0]}")
        words = _word_file(o.vocab, files, len(tensors["embeddings"]))
        english_words = _word_file(o.english_vocab, files, len(english))
        projected = tensors["projected"].bool()
        if o.vocab_tsv.name in files:
            rows = parse_vocab_tsv(_text(o.vocab_tsv, files))
        else:  # a matrix made elsewhere: provenance from the flags alone
            rows = [VocabRow.new(w, 0, "special" if w in (PAD, UNK) else "projected" if p else "random")
                    for w, p in zip(words, projected.tolist())]
        return cls(
            words=words,
            vectors=tensors["embeddings"],
            projected=projected,
            english_words=english_words,
            english_vectors=english,
            rows=rows,
            manifest=manifest,
            metadata=_safetensors_metadata(files[o.embeddings.name]),
            path=o.root,
        )

    def save(self, out: Path | str) -> Path:
        """Write the output contract into `out`, replacing it as a whole and
        atomically (only an earlier xlembed output is ever replaced); the
        manifest (`self.manifest` after this) gets the files' checksums.
        Returns the output directory, as gensim's and Model2Vec's save return
        nothing large."""
        o_final = OutDir(Path(out))
        counts = self.counts()
        metadata = dict(
            self.metadata, counts=json.dumps(counts), xlembed_version=self.metadata.get("xlembed_version", __version__)
        )
        with staged_dir(o_final.root) as stage:
            o = OutDir(stage)
            save_tensors(
                o.embeddings,
                {"embeddings": self.vectors.float(), "projected": self.projected.to(torch.uint8)},
                metadata,
            )
            o.vocab.write_text(_format_words(self.words), encoding="utf-8")
            o.vocab_tsv.write_text(format_vocab_tsv(self.rows), encoding="utf-8")
            save_tensors(o.english, {"embeddings": self.english_vectors.float()},
                         {k: metadata[k] for k in ("model", "layer") if k in metadata})
            o.english_vocab.write_text(_format_words(self.english_words), encoding="utf-8")
            manifest = dict(self.manifest, kind=XLEMBED_OUTPUT, counts=counts,
                            files={p.name: sha256_file(p) for p in o.files})
            manifest.setdefault("xlembed_version", __version__)
            write_json_atomic(o.manifest, manifest)
        self.manifest, self.metadata, self.path = manifest, metadata, o_final.root
        return o_final.root

    @staticmethod
    def verify(out: Path | str) -> list[str]:
        """Every problem of an output directory, one line each (empty when all
        is well), as `xlembed verify` reports them; see `verify` below."""
        return verify(out)

    def counts(self) -> dict:
        """The manifest's counts, brought up to date with the rows."""
        sources = [r.source for r in self.rows]
        counts = dict(self.manifest.get("counts", {}))
        counts.update(
            vocab_size=len(self.words),
            projected_rows=sources.count("projected"),
            filled_rows=sum(sources.count(s.value) for s in Oov),
            filled_by={s.value: sources.count(s.value) for s in Oov},
            special_rows=sources.count("special"),
            english_vocab_size=len(self.english_words),
            dim=int(self.vectors.shape[1]),
        )
        return counts

    # --- lookups ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.word_index

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self.index(word)]

    @cached_property
    def word_index(self) -> dict[str, int]:
        """word -> its row"""
        return {w: i for i, w in enumerate(self.words)}

    @cached_property
    def english_index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.english_words)}

    def index(self, word: str, lang: str = "zh") -> int:
        index = self.word_index if lang == "zh" else self.english_index
        if word not in index:
            raise XlembedError(f"'{word}' is not in {'vocab.txt' if lang == 'zh' else 'english_vocab.txt'}"
                               + (f" of {self.path}" if self.path else ""))
        return index[word]

    @cached_property
    def unit_vectors(self) -> torch.Tensor:
        """[V, d] rows scaled to length 1 (cosine = dot product)."""
        return torch.nn.functional.normalize(self.vectors.float(), dim=1)

    @cached_property
    def english_unit_vectors(self) -> torch.Tensor:
        """[E, d]"""
        return torch.nn.functional.normalize(self.english_vectors.float(), dim=1)

    def _side(self, lang: str) -> tuple[list[str], torch.Tensor]:
        if lang not in ("zh", "en"):
            raise XlembedError(f"lang must be zh or en, got '{lang}'")
        return (self.words, self.unit_vectors) if lang == "zh" else (self.english_words, self.english_unit_vectors)

    def _nearest(
        self, query: torch.Tensor, lang: str, k: int, skip: set[str], scores: torch.Tensor | None = None
    ) -> list[tuple[str, float]]:
        words, unit = self._side(lang)
        cosine = unit @ query  # [N]
        ranking = (cosine if scores is None else scores).argsort(descending=True).tolist()
        found = []
        for j in ranking:
            if words[j] in skip:
                continue
            found.append((words[j], round(float(cosine[j]), 4)))
            if len(found) == k:
                break
        return found

    def most_similar(self, word: str, k: int = 10, lang: str = "zh") -> list[tuple[str, float]]:
        """The `k` nearest words of `word` in its own language (cosine), as (word, cosine) pairs."""
        _check_k(k)
        words, unit = self._side(lang)
        return self._nearest(unit[self.index(word, lang)], lang, k, {word, PAD, UNK})

    def translate(self, word: str, k: int = 10, csls: int = 0, lang: str = "zh") -> list[tuple[str, float]]:
        """The `k` nearest words of `word` in the other language, as (word,
        cosine) pairs; with `csls` > 0 ranked by CSLS with that many
        neighbours (Conneau et al. 2018), which tempers hub words."""
        _check_k(k)
        _, unit = self._side(lang)
        query = unit[self.index(word, lang)]
        other = "en" if lang == "zh" else "zh"
        scores = None
        if csls:
            _, target = self._side(other)
            cosine = target @ query  # [N]
            r_query = cosine.topk(min(csls, len(cosine))).values.mean()
            scores = 2 * cosine - r_query - self.csls_radius(other, csls)
        return self._nearest(query, other, k, {PAD, UNK}, scores)

    def csls_radius(self, lang: str, k: int) -> torch.Tensor:
        """[N] for each word of `lang`: the mean cosine to its k nearest words
        of the other language (projected Chinese rows only), CSLS's r term."""
        cache = self.__dict__.setdefault("_csls_radius", {})
        if (lang, k) not in cache:
            source = self.english_unit_vectors if lang == "zh" else self.unit_vectors[self.projected]
            _, target = self._side(lang)
            cache[(lang, k)] = csls_radius(target, source, k)
        return cache[(lang, k)]

    # --- uses -----------------------------------------------------------------------------------

    def to_torch(self, freeze: bool = True, centre: bool = False) -> torch.nn.Embedding:
        """The matrix as an nn.Embedding (frozen by default; padding_idx = the [PAD] row).
        `centre`: every row but [PAD] less their mean row, which a Transformer over a frozen
        input layer learns better from (bench/RESULTS.md, "Centred rows"); the rows then
        leave the English model's space."""
        pad = self.word_index.get(PAD)
        rows = self.vectors.float().clone()  # [V, d]
        return torch.nn.Embedding.from_pretrained(centred_(rows, pad) if centre else rows, freeze=freeze,
                                                  padding_idx=pad)

    @cached_property
    def tokenizer(self) -> "ChineseTokenizer":
        """Segments Chinese exactly as the build did and maps words to row ids."""
        return ChineseTokenizer(self.words, self.manifest.get("parameters", {}).get("tokenize", {}))

    @cached_property
    def sentence_tokenizer(self):
        """The `tokenizers` tokenizer that `encode` and the model2vec export
        cut sentences with: the most probable segmentation over this
        vocabulary by the build's corpus frequencies (jieba's way of cutting,
        with only the words that have rows), so that a word the build never
        saw is cut into words it did. Ids are row ids; one past the last row
        is [UNK] when the vocabulary has none."""
        from .export import export_tokenizer

        return export_tokenizer(self, self.words if UNK in self.word_index else self.words + [UNK])

    def encode(self, sentences: str | list[str], sif: float | None = None, normalize: bool = False,
               segmentation: str = "frequency") -> torch.Tensor:
        """Sentence vectors [n, d] (or [d] for one string), in the English
        model's space: the mean of the rows of each sentence's words. Words
        outside the vocabulary, [PAD] and [UNK] are left out; a sentence with
        no known word is a zero vector.

        segmentation: 'frequency' cuts with `sentence_tokenizer`, as the
        model2vec export does (so both give the same vectors); 'jieba' with
        `tokenizer`, as the build segmented its corpus (held-out Tatoeba
        retrieval P@1 zh->en 0.746 against jieba's 0.719: bench/RESULTS.md).
        sif: weight each word a / (a + p(word)) with a = sif and p the word's
        share of the corpus's words (vocab.tsv's freq), as SIF (Arora et al.
        2017) and Model2Vec do; words with no corpus frequency weigh 1. None:
        `default_sif()`; 0: every word weighs 1.
        normalize: scale each sentence vector to length 1 (zero rows stay 0)."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else _text_list(sentences)
        out = self.mean_rows(self._sentence_word_ids(texts, segmentation), sif)  # [n, d]
        if normalize:
            out = torch.nn.functional.normalize(out, dim=1)
        return out[0] if single else out

    def _sentence_word_ids(self, texts: list[str], segmentation: str) -> list[list[int | None]]:
        """Each text's row ids (None: a word with no row), cut as `segmentation` says."""
        if segmentation == "frequency":
            return [found.ids for found in self.sentence_tokenizer.encode_batch(texts, add_special_tokens=False)]
        if segmentation == "jieba":
            return [[self.word_index.get(w) for w in self.tokenizer.tokenize(text)] for text in texts]
        raise XlembedError(f"segmentation must be 'frequency' or 'jieba', got {segmentation!r}")

    def mean_rows(self, sentence_ids: list[list[int | None]], sif: float | None = None) -> torch.Tensor:
        """[n, d] float32: each sentence's mean of the rows at its ids, words
        weighted as `word_weights(sif)` says (None, [PAD], [UNK] and the
        tokenizers' one-past-the-end [UNK] left out; no id left: zeros). What
        `encode` does once the sentences are cut; for a cut of one's own."""
        bad = next((j for found in sentence_ids for j in found
                    if j is not None and not (isinstance(j, numbers.Integral) and 0 <= j <= len(self.words))), None)
        if bad is not None:
            raise XlembedError(f"row id {bad!r} is not one of 0..{len(self.words)} (the last: a tokenizer's [UNK])")
        weights = self.word_weights(sif)  # [V] float64
        skip = {self.word_index.get(PAD), self.word_index.get(UNK), len(self.words)}
        out = torch.zeros((len(sentence_ids), self.vectors.shape[1]), dtype=torch.float32)  # [n, d]
        for i, found in enumerate(sentence_ids):
            ids = [j for j in found if j is not None and j not in skip]
            if ids:
                w = weights[ids].unsqueeze(1)  # [t, 1] float64
                w = w / w.max()  # in (0, 1]: no overflow or underflow, whatever a is
                out[i] = ((self.vectors[ids].double() * w).sum(0) / w.sum()).float()
        return out

    def default_sif(self) -> float:
        """SIF's a for sentence vectors when none is given: 0 (no weighting)
        for rows trained on sentences (`write --distill`: trained for the
        plain mean; zh->en P@1 0.901 unweighted against 0.871 at 0.03 on a
        dev split), else config.SENTENCE_SIF, 0.03 (chosen on the same dev
        split for rows as projected: 0.719 -> 0.765). bench/RESULTS.md."""
        return 0.0 if self.manifest.get("distill") else SENTENCE_SIF

    def sif_for(self, sif: float | None) -> float:
        """SIF's a as given (checked), or `default_sif()` for None."""
        return self.default_sif() if sif is None else sif_value(sif)

    def word_weights(self, sif: float | None = None) -> torch.Tensor:
        """[V] float64 SIF's a / (a + p(word)), a = sif (None: `default_sif()`); 1 for every word with sif 0.
        float64 so that any finite a gives finite weights that are not all 0."""
        sif = self.sif_for(sif)
        if sif == 0:
            return torch.ones(len(self.words), dtype=torch.float64)
        freq = torch.tensor([float(r.freq) for r in self.rows] if self.rows else [0.0] * len(self.words),
                            dtype=torch.float64)  # [V]
        total = freq.sum().clamp(min=1.0)
        return torch.where(freq > 0, sif / (sif + freq / total), torch.ones_like(freq))

    def to_word2vec(self, target: Path | str, lang: str = "zh", binary: bool = False, special: bool = False) -> int:
        """Write the matrix in word2vec format (text: `V d` header, then `word
        v1 … vd`; `binary`: word2vec's binary format), without [PAD] and
        [UNK] unless `special`; returns the number of rows."""
        from .export import Format, export

        target = Path(target)
        if target.is_dir():
            raise XlembedError(f"{target}: is a directory; give a file name")
        return export(self, Format.word2vec_bin if binary else Format.word2vec, target, lang, special)

    def export(self, target: Path | str, format: str = "word2vec", lang: str = "zh", special: bool = False,
               sif: float | None = None) -> int:
        """Write the matrix for other tools: word2vec, word2vec-bin, gensim
        (KeyedVectors) or model2vec (a directory for model2vec and
        sentence-transformers); see xlembed.export. Returns the rows written."""
        from .export import export

        return export(self, format, Path(target), lang, special, sif)

    def extend(self, words: list[str], oov: Oov | str | None = None) -> tuple["Embeddings", list[VocabRow]]:
        """A new Embeddings with rows appended for the `words` it lacks,
        filled by `oov` (default: the strategy it was built with) from its
        projected rows (`context` has no corpus to read here: it fills as
        `chars`); random rows are seeded by its seed and row count.
        Returns it and the new rows' provenance."""
        oov = Oov(oov or self.metadata.get("oov_fill", "random"))
        new_words = list(dict.fromkeys(w for w in words if w not in self.word_index))
        projected_ids = self.projected.nonzero().squeeze(1).tolist()
        if not projected_ids:
            raise XlembedError("the matrix has no projected rows to build new rows from")
        base = self.vectors[projected_ids].double()
        freq = [self.rows[i].freq if self.rows else 1 for i in projected_ids]
        filler = Filler([self.words[i] for i in projected_ids], base, freq)
        seed = int(self.metadata.get("seed", 0)) * 1_000_003 + len(
            self.words
        )  # another stream than write's, still reproducible
        new_rows, sources = fill_rows(new_words, oov.value, filler, base.mean(0), base.std(0, unbiased=False), seed)
        added = [VocabRow.new(w, 0, source) for w, source in zip(new_words, sources)]
        manifest = dict(self.manifest)
        filled_by = dict(Counter(sources))  # what the rows really are: `context` here gives `chars`
        manifest["extended"] = list(manifest.get("extended", [])) + [
            dict(oov=oov.value, added=len(new_words), filled_by=filled_by)
        ]
        extended = Embeddings(
            words=self.words + new_words,
            vectors=torch.cat([self.vectors, new_rows.float()]),
            projected=torch.cat([self.projected, torch.zeros(len(new_words), dtype=torch.bool)]),
            english_words=self.english_words,
            english_vectors=self.english_vectors,
            rows=self.rows + added,
            manifest=manifest,
            metadata=dict(self.metadata),
        )
        return extended, added

    def info(self, top: int = 10) -> dict:
        """Shape, model, settings, row sources and the most frequent words."""
        dtype = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}.get(
            self.vectors.dtype, str(self.vectors.dtype)
        )
        return info_of(
            self.path, list(self.vectors.shape), dtype, list(self.english_vectors.shape), self.metadata, self.manifest,
            self.words, top,
        )


def centred_(rows: torch.Tensor, pad: int | None) -> torch.Tensor:
    """In place, and returned: rows [V, d] less the mean of every row but
    the [PAD] row `pad` (None: none), which is left as it is."""
    words = torch.ones(len(rows), dtype=torch.bool)  # [V] every row but [PAD]
    if pad is not None:
        words[pad] = False
    rows[words] -= rows[words].mean(0)
    return rows


def _check_k(k: int) -> None:
    if k < 1:
        raise XlembedError(f"k must be at least 1, got {k}")


def csls_radius(target: torch.Tensor, source: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """[N] mean cosine of each target row to its k nearest source rows (CSLS's r_T),
    `chunk` target rows at a time: memory chunk x len(source), not N x len(source)."""
    return torch.cat([(target[start:start + chunk] @ source.T).topk(min(k, len(source)), dim=1).values.mean(1)
                      for start in range(0, len(target), chunk)]) if len(target) else torch.zeros(0)




class ChineseTokenizer:
    """Segments Chinese as a build did (NFKC, control characters as spaces,
    jieba with its user dictionary and HMM setting) and maps words to row ids:
    unknown words to [UNK], padding with [PAD]."""

    def __init__(self, vocab: list[str], tokenize_options: dict | None = None):
        """tokenize_options: the build's tokenize parameters (user_dict, hmm); none: jieba's defaults."""
        from .tokenize import recorded_splitter

        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.pad_id = self.ids.get(PAD)
        self.unk_id = self.ids.get(UNK)
        self.split = recorded_splitter(tokenize_options or {})

    def tokenize(self, text: str) -> list[str]:
        return self.split(text)

    def encode(self, text: str) -> list[int]:
        """Row ids of the words of `text`; unknown words become [UNK] (or are
        left out when the vocabulary has no [UNK])."""
        ids = (self.ids.get(w, self.unk_id) for w in self.split(text))
        return [i for i in ids if i is not None]

    def batch_encode(self, texts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, T] padded with [PAD], mask [B, T] True at words)."""
        if self.pad_id is None:
            raise XlembedError("the vocabulary has no [PAD] row to pad with")
        encoded = [self.encode(t)[:max_length] for t in texts]
        width = max((len(e) for e in encoded), default=0)
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.bool)
        for i, e in enumerate(encoded):
            ids[i, :len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, :len(e)] = True
        return ids, mask

    def __call__(self, texts: str | list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """As a Hugging Face tokenizer with return_tensors="pt": {"input_ids":
        [B, T], "attention_mask": [B, T] (1 at words)}; a string is a batch of one."""
        ids, mask = self.batch_encode([texts] if isinstance(texts, str) else list(texts), max_length)
        return {"input_ids": ids, "attention_mask": mask.long()}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The text of row ids (a list or a 1-D tensor): the words joined
        (Chinese has no spaces between words); [PAD] left out unless
        `skip_special_tokens` is False; unknown words stay [UNK]."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.vocab[i] for i in ids if not (skip_special_tokens and i == self.pad_id))

    def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
        """`decode` of each row of a [B, T] batch."""
        return [self.decode(row, skip_special_tokens) for row in ids]

    def __len__(self) -> int:
        return len(self.vocab)


def load(out: Path | str) -> Embeddings:
    """Load an output directory: `xlembed.load("runs/demo")`."""
    return Embeddings.load(out)
