"""Variants of the projection rule that the options do not offer, scored as
bench/devsuite.py scores a variant (same corpora, alignments and dev sets;
everything else at its default). Each is a research probe, not a feature:

- `agreement-first`: argmax-occurrence, but at each occurrence the links both
  eflomal directions agree on come before the union's other links;
- `agreement-votes`: the same, the choice scored by p(en|zh) x (directions
  that hold the link: 1 or 2);
- `intersection-p`: the choice by p(en|zh) counted over the intersection's
  links (ties and words it never links: the union's p);
- `bidirectional-A`: the choice by p(en|zh) x p(zh|en)^A (union counts),
  which lowers English function words that the union links everywhere;
- `english-prior-K`: each Chinese row pulled toward the English type rows
  (the mean over all contexts) of the words it took vectors from, as if K
  more contexts: row = (n mean + K prior) / (n + K).

    python bench/projection_variants.py --corpus tatoeba=runs/demo.work \\
        --root /tmp/ds --variants "default;agreement-first;bidirectional-0.25" [--alignments 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devsuite  # its corpora, alignments, scores and dev sets
from lexicon_ceiling import bidirectional, link_counts

from xlembed.align import parse_links
from xlembed.config import Config
from xlembed.embeddings import Embeddings
from xlembed.evaluate import read_dictionary, read_wordsim
from xlembed.io import read_json, read_lines, write_json_atomic
from xlembed.layout import WorkDir
from xlembed.project import ProjectionSums, link_plan, load_projection, project, save_projection
from xlembed.strategies import Rule, argmax_occurrence, register
from xlembed.write import write

STATE: dict = {}  # the work directory being projected, its two directions' link lines, a rescored p(en|zh)


def agreement_rule(variant: str) -> Rule:
    """argmax-occurrence over the union, each occurrence's choice scored with
    the two directions (read from the work directory, a line per sentence)."""

    def choose(links, zh, en, lexicon):
        forward, reverse = next(STATE["directions"])
        fwd, rev = parse_links(forward), parse_links(reverse)
        chosen: dict[int, tuple[int, object]] = {}
        for i, j in sorted(fwd | rev):
            p = lexicon.p_en[zh[i]].get(en[j], 0.0)
            votes = ((i, j) in fwd) + ((i, j) in rev)
            score = (votes == 2, p) if variant == "agreement-first" else votes * p
            if i not in chosen or score > chosen[i][1]:
                chosen[i] = (j, score)
        return [(i, j) for i, (j, _) in chosen.items()]

    return Rule(choose, needs_p_en=True)


def rescored_p_en(work: WorkDir, variant: str, union_p: dict) -> dict:
    """p(en|zh) of the intersection-p and bidirectional variants."""
    link_set = "intersect" if variant == "intersection-p" else "union"
    counts, en_total = link_counts(work.root, work.root, (link_set,))
    counts, en_total = counts[link_set], en_total[link_set]
    if variant == "intersection-p":  # the union's p only breaks ties (and stands in where the intersection has nothing)
        return {zh: {en: counts[zh][en] / max(1, sum(counts[zh].values())) + 1e-6 * p for en, p in ps.items()}
                for zh, ps in union_p.items()}
    a = float(variant.split("-", 1)[1])
    return {
        zh: {en: bidirectional(n, sum(c.values()), en_total[en], a) for en, n in c.items()} for zh, c in counts.items()
    }


def rescored_rule(variant: str) -> Rule:
    """argmax-occurrence by a rescored p(en|zh)."""

    def choose(links, zh, en, lexicon):
        if "p_en" not in STATE:
            STATE["p_en"] = rescored_p_en(STATE["work"], variant, lexicon.p_en)
        return argmax_occurrence(links, zh, en, lexicon._replace(p_en=STATE["p_en"]))

    return Rule(choose, needs_p_en=True)


def register_variant(variant: str) -> bool:
    """Register `variant`'s rule under its name; False for variants that are not a rule."""
    if variant.startswith("agreement-"):
        register(variant, agreement_rule(variant))
    elif variant.startswith(("intersection-p", "bidirectional-")):
        register(variant, rescored_rule(variant))
    else:
        return False
    return True


def with_english_prior(work: WorkDir, k: float) -> None:
    """Rewrite the projection with each Chinese row pulled toward the mean
    English type row of the links it took (see the module's docstring)."""
    plan = link_plan(work, Config().project)
    tensors = load_projection(work).tensors
    n_zh, n_en = len(tensors["zh_count"]), len(tensors["en_count"])
    en_of_link = plan.links.en_words[plan.links.link_positions]
    links = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([plan.links.link_words, en_of_link])),
        torch.ones(len(en_of_link), dtype=torch.float64),
        (n_zh, n_en),
    ).coalesce()  # [Z, E] counts
    en_mean = tensors["en_sum"] / tensors["en_count"].clamp(min=1).unsqueeze(1).double()  # [E, d]
    prior_sum = torch.sparse.mm(links, en_mean)  # [Z, d]: n x the prior
    n = tensors["zh_count"].double().unsqueeze(1)  # [Z, 1]
    zh_sum = (
        (tensors["zh_sum"] + k * prior_sum / n.clamp(min=1)) * n / (n + k)
    )  # sum / n = (n mean + k prior) / (n + k)
    sums = ProjectionSums(zh_sum, tensors["zh_count"], tensors["en_sum"], tensors["en_count"], links_without_vector=0)
    record = read_json(work.record("project"))
    write_json_atomic(
        work.record("project"),
        dict(
            record,
            **save_projection(work, Config(), plan.vocab, plan.lexicon, sums, zh_sum.shape[1], inputs=record["inputs"]),
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True, help="NAME=TSV or NAME=WORK_DIR, as devsuite takes it")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument(
        "--variants",
        default="default;agreement-first;agreement-votes;intersection-p;bidirectional-0.25;english-prior-1",
    )
    parser.add_argument("--alignments", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    devsuite.SETS.update(
        {name: read_wordsim(path) for name, path in devsuite.WORDSIM.items()}, muse=read_dictionary(devsuite.MUSE)
    )
    name, source = args.corpus.split("=", 1)
    corpus = devsuite.Corpus(name, Path(source), args.root)
    variants = args.variants.split(";")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.alignments):
        work = corpus.scratch(corpus.encoded({}), corpus.alignment(r, {}))
        for variant in variants:
            config = Config()
            if register_variant(variant):
                config.project.strategy = variant  # a registered rule's name (not a CLI option)
            STATE.clear()
            STATE.update(work=work, directions=zip(read_lines(work.links_forward), read_lines(work.links_reverse)))
            project(config, work, force=True)
            if variant.startswith("english-prior-"):
                with_english_prior(work, float(variant.rsplit("-", 1)[1]))
            write(Config(), work, corpus.root / "out")
            results[variant].append(
                devsuite.scored(Embeddings.load(corpus.root / "out"), f"[{name}] alignment {r} {variant}")
            )
    table = devsuite.summary(results)
    print(devsuite.summary_lines(table))
    if args.json:
        args.json.write_text(
            json.dumps({"corpus": args.corpus, "alignments": args.alignments, "variants": table}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
