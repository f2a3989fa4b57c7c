"""Cross-lingual sentence retrieval: Chinese sentences encoded with the
matrix (`Embeddings.encode`: the mean of their words' rows) against the
English sentences encoded by the English model itself, as it pools them
(mean pooling of the last layer for MiniLM). P@1 in both directions, on
pairs held out of the build corpus (bench/splits.py's heldout.tsv, or any
english<TAB>chinese file).

    python bench/retrieval.py --heldout /work/xl-bench/tatoeba/heldout.tsv \\
        --build default=/work/xl-bench/tatoeba/out --build layer-1=OUT2 \\
        [--sif 0.001 --sif 0.0001] [--random] [--segmenter jieba --segmenter export] [--json FILE]

Each build is scored with every --sif weighting (and none), with each
segmenter: `jieba` is xlembed's own tokenizer (as the build segmented:
`Embeddings.encode(segmentation="jieba")`), `export` the tokenizer the
model2vec export ships and `Embeddings.encode` uses by default since
2026-12-04 (the most probable segmentation by corpus frequency,
Embeddings.sentence_tokenizer), and
`wordpiece` greedy longest match over the vocabulary (what the export
shipped before 2026-12-03). --random adds each build's rows replaced by random
rows scaled as xlembed's random fill (per-dimension mean and sd of the
projected rows), a floor. The English model is the build's own (its
manifest), unless --model says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout  # noqa: E402

import xlembed  # noqa: E402
from xlembed.config import PAD, UNK  # noqa: E402
from xlembed.embeddings import Embeddings  # noqa: E402


class Score(NamedTuple):
    build: str
    rows: str  # matrix | random
    segmenter: str  # jieba | export | wordpiece
    sif: float | None
    zh_to_en: float
    en_to_zh: float
    no_known_word: int  # held-out Chinese sentences with no word in the vocabulary


def random_rows(e: Embeddings, seed: int = 0) -> Embeddings:
    """The same vocabulary with rows drawn as xlembed's random fill draws them:
    normal, scaled to the projected rows' per-dimension mean and sd."""
    base = e.vectors[e.projected].double()  # [P, d]
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(e.vectors.shape, generator=g, dtype=torch.float64) * base.std(0, unbiased=False) + base.mean(0)
    return Embeddings(
        words=e.words,
        vectors=rows.float(),
        projected=e.projected,
        english_words=e.english_words,
        english_vectors=e.english_vectors,
        rows=e.rows,
        manifest=e.manifest,
        metadata=e.metadata,
        path=e.path,
    )


def segmenter_tokenizer(e: Embeddings, segmenter: str):
    """The `tokenizers` tokenizer a segmenter other than jieba stands for."""
    from xlembed.hf_tokenizer import vocabulary_tokenizer

    return e.sentence_tokenizer if segmenter == "export" else vocabulary_tokenizer(e.words)


def tokenizer_encode(e: Embeddings, tokenizer, sentences: list[str], sif: float | None) -> torch.Tensor:
    """As Embeddings.encode, with `tokenizer` (longest match) in place of its segmentations."""
    return e.mean_rows([enc.ids for enc in tokenizer.encode_batch(sentences, add_special_tokens=False)], sif)


class Centering(NamedTuple):
    """Pairs of the build corpus (never test pairs) whose mean sentence vectors are subtracted from each side."""

    zh_texts: list[str]
    english_mean: torch.Tensor  # [d]


def segmentation_agreement(e: Embeddings, tokenizer, sentences: list[str]) -> dict:
    """How often `tokenizer` segments as jieba does, over the words
    each finds in the vocabulary: sentences whose known-word sequences are the
    same, and the share of jieba's known words (as a multiset) that it finds."""
    from collections import Counter

    same = found = total = 0
    for text, enc in zip(sentences, tokenizer.encode_batch(sentences, add_special_tokens=False)):
        ours = [w for w in e.tokenizer.tokenize(text) if w in e.word_index and w not in (PAD, UNK)]
        theirs = [w for w in enc.tokens if w not in (PAD, UNK)]
        same += ours == theirs
        found += sum((Counter(ours) & Counter(theirs)).values())
        total += len(ours)
    return dict(sentences_same=round(same / len(sentences), 4), jieba_words_found=round(found / max(total, 1), 4))


def score_build(
    name: str,
    e: Embeddings,
    pairs,
    english: torch.Tensor,
    sifs: list[float | None],
    segmenters: list[str],
    rows: str,
    centering: Centering | None = None,
) -> list[Score]:
    zh_texts = [p.zh for p in pairs]
    scores = []
    for segmenter in segmenters:
        tokenizer = segmenter_tokenizer(e, segmenter) if segmenter == "wordpiece" else None
        for sif in sifs:
            if tokenizer is None:
                segmentation = "jieba" if segmenter == "jieba" else "frequency"
                encode = lambda t: e.encode(t, sif=sif, segmentation=segmentation)  # noqa: E731
            else:
                encode = lambda t: tokenizer_encode(e, tokenizer, t, sif)  # noqa: E731
            zh = encode(zh_texts)
            label = rows
            if centering is not None:
                known = zh.abs().sum(1) > 0
                zh[known] -= encode(centering.zh_texts).mean(0)
                english, label = english - centering.english_mean, rows + "-centred"
            r = precision_at_1(zh, english)
            scores.append(
                Score(
                    name,
                    label,
                    segmenter,
                    sif,
                    round(r.zh_to_en, 4),
                    round(r.en_to_zh, 4),
                    int((zh.abs().sum(1) == 0).sum()),
                )
            )
            print(
                f"{name:>12} {label:>7} {segmenter:>9} sif={sif!s:>7}  "
                f"zh->en {r.zh_to_en:.3f}  en->zh {r.en_to_zh:.3f}",
                file=sys.stderr,
            )
            if centering is not None:
                english = english + centering.english_mean
    return scores


def cached_english(model: Path, pairs, heldout: Path, cache: Path | None) -> torch.Tensor:
    """The English sentence vectors, kept in `cache` keyed by the model and the pairs' English side."""
    import hashlib

    key = hashlib.sha256(("\n".join([str(model)] + [p.en for p in pairs])).encode()).hexdigest()[:16]
    path = cache / f"english-{heldout.stem}-{key}.pt" if cache else None
    if path and path.exists():
        return torch.load(path)
    vectors = english_sentence_vectors(model, [p.en for p in pairs])
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(vectors, path)
    return vectors


def english_model(e: Embeddings, model: Path | None) -> Path:
    from xlembed.models import resolve_model_dir

    return resolve_model_dir(model or e.metadata.get("model"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--heldout", type=Path, required=True, help="english<TAB>chinese test pairs, held out of every build"
    )
    parser.add_argument("--build", action="append", required=True, help="NAME=OUT_DIR (repeatable)")
    parser.add_argument("--model", type=Path, help="English model directory (default: the builds' own)")
    parser.add_argument(
        "--sif",
        action="append",
        type=float,
        default=[],
        help="SIF weighting a (repeatable); no weighting is always scored",
    )
    parser.add_argument("--segmenter", action="append", choices=["jieba", "export", "wordpiece"], help="default: jieba")
    parser.add_argument("--random", action="store_true", help="also score random rows of each build's shape")
    parser.add_argument(
        "--center-on",
        type=Path,
        help="also score with each side centred: the mean sentence vectors of "
        "--center-pairs pairs of this TSV (the build corpus, not the test pairs) subtracted",
    )
    parser.add_argument("--center-pairs", type=int, default=500)
    parser.add_argument("--cache", type=Path, help="directory keeping the English sentence vectors between runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pairs = read_heldout(args.heldout)
    builds = dict(b.split("=", 1) for b in args.build)
    sifs = [0.0, *args.sif]  # 0: no weighting
    english_cache: dict[Path, torch.Tensor] = {}
    scores: list[Score] = []
    agreement: dict[str, dict] = {}
    for name, out in builds.items():
        e = xlembed.load(out)
        model = english_model(e, args.model)
        if model not in english_cache:
            english_cache[model] = cached_english(model, pairs, args.heldout, args.cache)
        english = english_cache[model]
        scores += score_build(name, e, pairs, english, sifs, args.segmenter or ["jieba"], "matrix")
        for segmenter in [s for s in dict.fromkeys(args.segmenter or []) if s != "jieba"]:
            tokenizer = segmenter_tokenizer(e, segmenter)
            agreement[f"{name}/{segmenter}"] = segmentation_agreement(e, tokenizer, [p.zh for p in pairs])
            print(f"{name:>12} {segmenter} vs jieba: {agreement[f'{name}/{segmenter}']}", file=sys.stderr)
        if args.center_on:
            import random as _random

            build = read_heldout(args.center_on)
            _random.Random(0).shuffle(build)
            build = build[: args.center_pairs]
            assert not {p.en for p in build} & {p.en for p in pairs}, "centering pairs overlap the test pairs"
            mean = cached_english(model, build, args.center_on, args.cache).mean(0)
            scores += score_build(
                name,
                e,
                pairs,
                english,
                sifs,
                args.segmenter or ["jieba"],
                "matrix",
                Centering([p.zh for p in build], mean),
            )
        if args.random:
            scores += score_build(name, random_rows(e), pairs, english, [None], ["jieba"], "random")
    result = dict(
        heldout=str(args.heldout),
        pairs=len(pairs),
        builds=builds,
        segmentation_agreement=agreement,
        scores=[s._asdict() for s in scores],
    )
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
