"""The dev suite: each variant of the method on the three dev sets and both
corpora, over several eflomal alignments (eflomal cannot be seeded), as
mean ± sd; and the word2vec and fastText baselines on the same Chinese side.

    python bench/devsuite.py --corpus tatoeba=data/tatoeba/cmn-eng.tsv \\
        --corpus mixed=../shared/data/parallel/mixed.tsv.gz --alignments 3 \\
        --root /tmp/devsuite [--variants "defaults;weighted"] [--baselines] [--json FILE]
    python bench/devsuite.py --markdown A.json [B.json ...]     # one table from earlier runs

A corpus may also be given as a work directory of an earlier run with the
default encoder options (e.g. the one `bench/scale.py --keep` left): its
tokenization and vectors are reused, and its alignment is alignment 0.
Everything built is kept under --root, so a second call only computes what
is missing. Within one alignment every variant sees the same links, so
differences between variants are the variants' own.

Scores: wordsim-297 and PKU-500 Spearman rho over covered pairs, MUSE
(zh->en, "train" 0-5000) P@1 by cosine over covered words, and coverage.
Prints one JSON object; a table goes to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from xlembed.align import align, symmetrize_and_count
from xlembed.config import Config, Symmetrization
from xlembed.embeddings import Embeddings
from xlembed.encode import VectorStore, encode
from xlembed.evaluate import lexicon_induction, read_dictionary, read_wordsim, spearman, word_similarity
from xlembed.layout import WorkDir
from xlembed.project import project
from xlembed.tokenize import tokenize
from xlembed.write import write

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared/data"
WORDSIM = {"wordsim-297": DATA / "wordsim/wordsim-297.txt", "pku-500": DATA / "wordsim/pku-500.txt"}
MUSE = DATA / "lexicon/muse-zh-en.0-5000.txt"
SETS: dict = {}  # read once in main
ALIGN_FILES = ("align.forward", "align.reverse", "align.links", "lexicon.tsv", "align.json")

# name -> options that differ from the defaults (any stage's, by name)
VARIANTS = {
    "defaults": {},
    "argmax per type": {"strategy": "argmax"},
    "weighted": {"strategy": "weighted"},
    "shrink 0": {"shrink": 0.0},
    "shrink 0.5": {"shrink": 0.5},
    "shrink 2": {"shrink": 2.0},
    "argmax per type, shrink 0 (0.2 defaults)": {"strategy": "argmax", "shrink": 0.0},
    "weighted, shrink 0": {"strategy": "weighted", "shrink": 0.0},
    "oov chars": {"oov": "chars"},
    "oov pinyin": {"oov": "pinyin"},
    "centred": {"postprocess": 0},
    "centred, top 2 directions removed": {"postprocess": 2},
    "samplers 3": {"samplers": 3},
    "layer -1": {"layer": "-1"},
    "layer -2": {"layer": "-2"},
    "standardised": {"standardise": "centre"},
    "scaled by each dimension's sd": {"standardise": "scale"},
    "sentence context -0.5": {"sentence_context": -0.5},
    "sentence context -1": {"sentence_context": -1.0},
    "sentence context 0.5": {"sentence_context": 0.5},
    "sentence context 1": {"sentence_context": 1.0},
    "sentence context 2": {"sentence_context": 2.0},
    "sentence context 4": {"sentence_context": 4.0},
    "sentence context 1000": {"sentence_context": 1000.0},
    "local context 1, window 5": {"sentence_context": 1.0, "context_window": 5},
    "local context 2, window 5": {"sentence_context": 2.0, "context_window": 5},
    "iterations 2": {"iterations": 2.0},
    "iterations 4": {"iterations": 4.0},
    "intersect": {"symmetrization": "intersect"},
    "grow-diag-final-and": {"symmetrization": "grow-diag-final-and"},
}
ENCODE_OPTIONS = {"layer", "sentence_context", "context_window"}
ALIGN_OPTIONS = {"symmetrization", "align_model", "iterations", "samplers", "null_prior"}
PROJECT_OPTIONS = {"strategy", "min_count", "stopwords"}
BENCH_OPTIONS = {"postprocess", "standardise"}  # applied here, to the written matrices


def postprocessed(matrix: Embeddings, remove: int) -> Embeddings:
    """Both matrices centred on the English rows' mean, then the `remove`
    top principal directions of the English rows projected out of both
    (all-but-the-top, Mu and Viswanath 2018): one map for both sides, so
    translation by cosine stays valid. [PAD] stays zero."""
    english = matrix.english_vectors.double()  # [E, d]
    mean = english.mean(0)  # [d]
    top = torch.linalg.svd(english - mean, full_matrices=False).Vh[:remove]  # [remove, d]

    def apply(x: torch.Tensor) -> torch.Tensor:
        x = x.double() - mean
        return (x - x @ top.T @ top).float()

    return mapped(matrix, apply)


def standardised(matrix: Embeddings, centre: bool) -> Embeddings:
    """Each dimension divided by its standard deviation over the English
    rows (and, with `centre`, their mean subtracted first): one diagonal
    map for both sides, so that a few high-variance ("rogue") dimensions
    no longer dominate cosine. [PAD] stays zero."""
    english = matrix.english_vectors.double()  # [E, d]
    mean = english.mean(0) if centre else torch.zeros(english.shape[1], dtype=torch.float64)  # [d]
    std = english.std(0)  # [d]

    def apply(x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - mean) / std).float()

    return mapped(matrix, apply)


def mapped(matrix: Embeddings, apply) -> Embeddings:
    """`apply` (rows [n, d] -> [n, d]) on the Chinese and the English rows
    alike; all-zero rows ([PAD]) stay zero."""
    vectors = apply(matrix.vectors)
    vectors[matrix.vectors.abs().sum(1) == 0] = 0
    return dataclasses.replace(matrix, vectors=vectors, english_vectors=apply(matrix.english_vectors))


def scores_of(matrix: Embeddings) -> dict:
    scores = {}
    for name, path in WORDSIM.items():
        ws = word_similarity(matrix, SETS[name])
        scores[name] = ws["rho"]
        scores[f"{name} covered"] = ws["covered"]
    li = lexicon_induction(matrix, SETS["muse"], csls_k=0)  # CSLS's radii cost ~40 s a matrix on the mixed corpus
    scores["muse P@1"] = li["cosine"]["p_at_1"]
    scores["muse covered"] = li["covered"]
    return scores


def with_sentence_context(source: WorkDir, target: WorkDir, beta: float, window: int = 0, block: int = 4096) -> None:
    """`source`'s vectors with beta x the mean vector of the words at most
    `window` positions away in the sentence (the word included; 0: the whole
    sentence) added to each word's vector (beta < 0 removes that much),
    written as `target`'s encoding (same index). Sentences `block` at a
    time; memory: the vectors twice, in float32."""
    store = VectorStore(source)
    vectors = torch.empty((int(store.shard_starts[-1]), store.shard(0).shape[1]))  # [R, d] float32
    for k in range(store.n_shards):
        vectors[store.shard_starts[k]:store.shard_starts[k + 1]] = store.shard(k).float()
    offsets, word_rows = store.sent_offsets, store.word_rows
    window = window or int(np.diff(offsets).max(initial=0))
    out = vectors.clone()  # [R, d]: the means read the unchanged vectors (duplicate sentences share rows)
    for s0 in range(0, len(offsets) - 1, block):
        s1 = min(s0 + block, len(offsets) - 1)
        a, b = int(offsets[s0]), int(offsets[s1])
        rows = torch.from_numpy(word_rows[a:b])  # [n] this block's word occurrences
        has = rows >= 0
        v = torch.zeros((b - a, vectors.shape[1]), dtype=torch.float64)  # [n, d]
        v[has] = vectors[rows[has]].double()
        sums = torch.cat([torch.zeros((1, v.shape[1]), dtype=torch.float64), v.cumsum(0)])  # [n + 1, d]
        counts = torch.cat([torch.zeros(1, dtype=torch.float64), has.double().cumsum(0)])  # [n + 1]
        lengths = torch.from_numpy(np.diff(offsets[s0:s1 + 1]))  # [sentences]
        first = torch.repeat_interleave(torch.from_numpy(offsets[s0:s1] - a), lengths)  # [n] the sentence's first word
        last = first + torch.repeat_interleave(lengths, lengths)  # [n] one past its last
        i = torch.arange(b - a)
        lo, hi = torch.maximum(i - window, first), torch.minimum(i + window + 1, last)
        means = (sums[hi] - sums[lo]) / (counts[hi] - counts[lo]).clamp(min=1).unsqueeze(1)  # [n, d]
        out[rows[has]] = vectors[rows[has]] + beta * means[has].float()
    target.vectors_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.vectors_index, target.vectors_index)
    for k in range(store.n_shards):
        save_file(
            {"vectors": out[store.shard_starts[k] : store.shard_starts[k + 1]].half().contiguous()},
            str(target.vectors_shard(k)),
        )
    shutil.copy(source.record("encode"), target.record("encode"))


def scored(matrix: Embeddings, label: str) -> dict:
    """scores_of(matrix), also printed to stderr after `label`."""
    scores = scores_of(matrix)
    print(
        f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if "covered" not in k),
        file=sys.stderr,
        flush=True,
    )
    return scores


def summary_lines(table: dict) -> str:
    """One line per variant of summary(): mean ± sd of each metric."""
    return "\n".join(f"{name}: " + ", ".join(f"{m} {scores[m]['mean']:.3f} ± {scores[m]['sd']:.3f}" for m in METRICS)
                     for name, scores in table.items())


def copy_inputs(source: WorkDir, target: WorkDir) -> None:
    target.root.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.en", "corpus.zh", "tokenize.json"):
        shutil.copy(source.root / name, target.root / name)


class Corpus:
    """One corpus's builds under root/NAME: tokenization, an encoding per
    encoder variant, alignments, and a scratch work directory to project
    and write in."""

    def __init__(self, name: str, source: Path, root: Path):
        self.name, self.root = name, root / name
        self.root.mkdir(parents=True, exist_ok=True)
        given = source.is_dir() and (source / "tokenize.json").exists()
        self.base = WorkDir(source if given else self.root / "base")
        if not given and not self.base.record("tokenize").exists():
            tokenize(Config().set(tsv=source).validate(("tokenize",)), self.base)
        self.given = given

    def encoded(self, encode_options: dict) -> WorkDir:
        if not encode_options and self.given:
            return self.base
        tag = "-".join(f"{k}{v}" for k, v in sorted(encode_options.items())) or "defaults"
        work = WorkDir(self.root / f"encode-{tag}")
        if not work.record("encode").exists():
            copy_inputs(self.base, work)
            if "sentence_context" in encode_options:  # derived from the default encoding
                print(f"[{self.name}] vectors {tag}", file=sys.stderr, flush=True)
                with_sentence_context(
                    self.encoded({}), work, encode_options["sentence_context"], encode_options.get("context_window", 0)
                )
            else:
                print(f"[{self.name}] encode {tag}", file=sys.stderr, flush=True)
                encode(Config().set(**encode_options).validate(("encode",)), work)
        return work

    def alignment(self, r: int, align_options: dict) -> Path:
        tag = "".join(f"{k}{v}-" for k, v in sorted(align_options.items()))
        folder = self.root / f"align-{tag}{r}"
        if (folder / "align.json").exists():
            return folder
        if set(align_options) == {"symmetrization"}:
            return self.resymmetrized(self.alignment(r, {}), align_options["symmetrization"], folder)
        folder.mkdir(exist_ok=True)
        if r == 0 and not align_options and self.given and self.base.record("align").exists():
            source = self.base
        else:
            source = WorkDir(self.root / "aligning")
            shutil.rmtree(source.root, ignore_errors=True)
            copy_inputs(self.base, source)
            print(f"[{self.name}] align {tag}{r}", file=sys.stderr, flush=True)
            align(Config().set(**align_options).validate(("align",)), source, force=True)
        for name in ALIGN_FILES:
            shutil.copy(source.root / name, folder / name)
        return folder

    def resymmetrized(self, source: Path, method: str, folder: Path) -> Path:
        """Alignment `source`'s two directions (the same eflomal run)
        symmetrised by `method` instead: its links, lexicon and record."""
        work = WorkDir(self.root / "aligning")
        shutil.rmtree(work.root, ignore_errors=True)
        copy_inputs(self.base, work)
        for name in ("align.forward", "align.reverse"):
            shutil.copy(source / name, work.root / name)
        print(f"[{self.name}] symmetrise {source.name} by {method}", file=sys.stderr, flush=True)
        _, n_links, pair_counts = symmetrize_and_count(work, Symmetrization(method))
        record = json.loads((source / "align.json").read_text())
        record["options"]["symmetrization"] = method
        record["counts"].update(
            links=n_links, lexicon_entries=sum(len(c) for c in pair_counts.values()), zh_words_aligned=len(pair_counts)
        )
        (work.root / "align.json").write_text(json.dumps(record, indent=2) + "\n")
        folder.mkdir(exist_ok=True)
        for name in ALIGN_FILES:
            shutil.copy(work.root / name, folder / name)
        return folder

    def scratch(self, encoded: WorkDir, alignment: Path) -> WorkDir:
        """A work directory with `encoded`'s vectors (linked) and `alignment`'s links."""
        work = WorkDir(self.root / "eval")
        shutil.rmtree(work.root, ignore_errors=True)
        copy_inputs(self.base, work)
        work.vectors_dir.symlink_to(encoded.vectors_dir.resolve())
        shutil.copy(encoded.record("encode"), work.record("encode"))
        for name in ALIGN_FILES:
            shutil.copy(alignment / name, work.root / name)
        return work


def run_variants(corpus: Corpus, variants: dict[str, dict], n_alignments: int) -> dict[str, list[dict]]:
    """Scores of each variant on each alignment (alignment r of a variant
    with align options of its own is a separate eflomal run)."""
    results: dict[str, list[dict]] = {name: [] for name in variants}

    def options_in(name: str, kinds: set[str]) -> tuple:
        return tuple(sorted((k, v) for k, v in variants[name].items() if k in kinds))

    groups: dict[tuple, list[str]] = {}  # (align options, encode options) -> variants
    for name in variants:
        groups.setdefault((options_in(name, ALIGN_OPTIONS), options_in(name, ENCODE_OPTIONS)), []).append(name)
    for r in range(n_alignments):
        for (align_options, encode_options), names in groups.items():
            work = corpus.scratch(corpus.encoded(dict(encode_options)), corpus.alignment(r, dict(align_options)))
            by_projection: dict[tuple, list[str]] = {}
            for name in names:
                by_projection.setdefault(options_in(name, PROJECT_OPTIONS), []).append(name)
            for projection, same in by_projection.items():
                project(Config().set(**dict(projection)).validate(("project",)), work, force=True)
                for name in same:
                    options = {k: v for k, v in variants[name].items()
                               if k not in ENCODE_OPTIONS | ALIGN_OPTIONS | PROJECT_OPTIONS | BENCH_OPTIONS}
                    out = corpus.root / "out"
                    write(Config().set(**options).validate(("write",)), work, out)
                    matrix = Embeddings.load(out)
                    if "postprocess" in variants[name]:
                        matrix = postprocessed(matrix, variants[name]["postprocess"])
                    if "standardise" in variants[name]:
                        matrix = standardised(matrix, centre=variants[name]["standardise"] == "centre")
                    results[name].append(scored(matrix, f"[{corpus.name}] alignment {r} {name}"))
    return results


def baselines(corpus: Corpus, runs: int) -> dict[str, list[dict]]:
    """word2vec skip-gram and fastText (gensim) on the corpus's tokenized
    Chinese side: what a user would do without xlembed (word similarity
    only: they have no English side)."""
    from gensim.models import FastText, Word2Vec

    sentences = [line.split(" ") for line in corpus.base.corpus_zh.read_text(encoding="utf-8").splitlines()]
    sets = {name: SETS[name] for name in WORDSIM}
    results: dict[str, list[dict]] = {"word2vec skip-gram": [], "fastText skip-gram": []}
    for seed in range(runs):
        for name, cls in (("word2vec skip-gram", Word2Vec), ("fastText skip-gram", FastText)):
            print(f"[{corpus.name}] baseline {name} seed {seed}", file=sys.stderr, flush=True)
            model = cls(sentences, vector_size=300, window=5, min_count=1, sg=1, epochs=10, seed=seed, workers=2)
            scores = {}
            for set_name, pairs in sets.items():
                # fastText composes unseen words from character n-grams: it covers every pair
                covered = [(a, b, s) for a, b, s in pairs if cls is FastText or (a in model.wv and b in model.wv)]
                scores[set_name] = spearman(
                    [float(model.wv.similarity(a, b)) for a, b, _ in covered], [s for _, _, s in covered]
                )
                scores[f"{set_name} covered"] = len(covered)
            results[name].append(scores)
    return results


def summary(results: dict[str, list[dict]]) -> dict:
    table = {}
    for name, runs in results.items():
        table[name] = {}
        for metric in runs[0]:
            values = [run[metric] for run in runs]
            table[name][metric] = dict(
                mean=round(statistics.fmean(values), 4),
                sd=round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                runs=[round(v, 4) for v in values],
            )
    return table


METRICS = ("muse P@1", "pku-500", "wordsim-297")


def markdown(results: list[dict]) -> str:
    """One table: a row per variant, a column per corpus x metric (mean ± sd
    over the alignments), and the mean over the cells a variant has; then
    the baselines."""
    corpora = {name: entry for result in results for name, entry in result["corpora"].items()}
    variants = list(dict.fromkeys(v for entry in corpora.values() for v in entry["variants"]))
    head = [f"{corpus}: {metric}" for corpus in corpora for metric in METRICS]
    lines = ["| variant | " + " | ".join(head) + " | mean of the cells |", "| --- " * (len(head) + 2) + "|"]
    for variant in variants:
        cells, means = [], []
        for entry in corpora.values():
            for metric in METRICS:
                score = entry["variants"].get(variant, {}).get(metric)
                cells.append(f"{score['mean']:.3f} ± {score['sd']:.3f}" if score else "—")
                if score:
                    means.append(score["mean"])
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {statistics.fmean(means):.3f} |")
    for corpus, entry in corpora.items():
        for baseline, scores in entry.get("baselines", {}).items():
            cells = [f"{scores[m]['mean']:.3f} ± {scores[m]['sd']:.3f} ({scores[m + ' covered']['mean']:.0f} pairs)"
                     if c == corpus and m in scores else "—" for c in corpora for m in METRICS]
            lines.append(f"| {baseline} on {corpus}'s Chinese side | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--markdown"]:  # bench/devsuite.py --markdown A.json [B.json ...]: the table of earlier runs
        print(markdown([json.loads(Path(p).read_text()) for p in sys.argv[2:]]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", action="append", required=True, help="NAME=TSV or NAME=WORK_DIR")
    parser.add_argument("--alignments", type=int, default=3)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--variants", help="names separated by semicolons (default: all): " + "; ".join(VARIANTS))
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    SETS.update({name: read_wordsim(path) for name, path in WORDSIM.items()}, muse=read_dictionary(MUSE))
    names = args.variants.split(";") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants: {unknown}")
    result = dict(
        alignments=args.alignments,
        sets={name: str(path) for name, path in (*WORDSIM.items(), ("muse", MUSE))},
        corpora={},
    )
    for spec in args.corpus:
        name, path = spec.split("=", 1)
        corpus = Corpus(name, Path(path), args.root)
        entry = dict(
            source=path, variants=summary(run_variants(corpus, {n: VARIANTS[n] for n in names}, args.alignments))
        )
        if args.baselines:
            entry["baselines"] = summary(baselines(corpus, args.baseline_runs))
        result["corpora"][name] = entry
    for variant in names:
        cells = [result["corpora"][c]["variants"][variant][m]["mean"] for c in result["corpora"] for m in METRICS]
        result.setdefault("mean_over_cells", {})[variant] = round(statistics.fmean(cells), 4)
    print(markdown([result]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
