"""Stage 3: word alignment with eflomal, symmetrised, and a lexical table.

eflomal aligns Chinese (source) to English (target) in both directions in one
call; both link files are written as `zhIndex-enIndex`. The symmetrised links
give the lexical table p(en | zh) = links(zh, en) / links(zh, *).
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from .config import SYMMETRIZATIONS, AlignOptions, WorkDir
from .io import Reporter, SilentReporter, XlembedError, atomic_path, read_lines, require, write_json_atomic
from .records import file_hash, invalidate, stage_key, up_to_date

Links = set[tuple[int, int]]
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def parse_links(line: str) -> Links:
    return {(int(i), int(j)) for i, j in (pair.split("-")[:2] for pair in line.split())}


def format_links(links: Links) -> str:
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def grow_diag_final_and(forward: Links, reverse: Links) -> Links:
    """Koehn et al.'s heuristic: start from the intersection, grow into
    neighbouring (diagonals included) union links that cover a so-far
    unaligned word, then add union links whose two words are both unaligned."""
    union = forward | reverse
    links = forward & reverse
    aligned_zh = {i for i, _ in links}
    aligned_en = {j for _, j in links}
    grew = True
    while grew:
        grew = False
        for i, j in sorted(links):
            for di, dj in NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in links and (p[0] not in aligned_zh or p[1] not in aligned_en):
                    links.add(p)
                    aligned_zh.add(p[0])
                    aligned_en.add(p[1])
                    grew = True
    for direction in (forward, reverse):
        for i, j in sorted(direction):
            if i not in aligned_zh and j not in aligned_en:
                links.add((i, j))
                aligned_zh.add(i)
                aligned_en.add(j)
    return links


def symmetrize(forward: Links, reverse: Links, method: str) -> Links:
    if method == "intersect":
        return forward & reverse
    if method == "union":
        return forward | reverse
    if method == "grow-diag-final-and":
        return grow_diag_final_and(forward, reverse)
    raise XlembedError(f"--symmetrization must be one of {', '.join(SYMMETRIZATIONS)}, got '{method}'")


def run_eflomal(zh_lines: list[str], en_lines: list[str], forward: Path, reverse: Path, opts: AlignOptions) -> None:
    import eflomal

    if opts.align_model not in (1, 2, 3):
        raise XlembedError(f"--align-model must be 1 (IBM1), 2 (HMM) or 3 (HMM+fertility), got {opts.align_model}")
    if opts.samplers < 1 or opts.iterations <= 0:
        raise XlembedError("--samplers must be at least 1 and --iterations positive")
    aligner = eflomal.Aligner(model=opts.align_model, n_samplers=opts.samplers,
                              rel_iterations=opts.iterations, null_prior=opts.null_prior)
    with atomic_path(forward) as fwd_tmp, atomic_path(reverse) as rev_tmp:
        aligner.align(zh_lines, en_lines, links_filename_fwd=str(fwd_tmp), links_filename_rev=str(rev_tmp), quiet=True)


def lexicon_from_links(zh_sentences, en_sentences, links_per_sentence) -> dict[str, Counter]:
    """links(zh word, en word) counted over all sentences."""
    pair_counts: dict[str, Counter] = {}
    for zh, en, links in zip(zh_sentences, en_sentences, links_per_sentence):
        for i, j in links:
            pair_counts.setdefault(zh[i], Counter())[en[j]] += 1
    return pair_counts


def read_lexicon(path: Path) -> dict[str, list[tuple[str, int, float]]]:
    """zh word -> [(en word, links, p(en|zh))], most probable first."""
    lexicon: dict[str, list] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if lineno == 1:
            continue  # header
        zh, en, count, p = line.split("\t")
        lexicon.setdefault(zh, []).append((en, int(count), float(p)))
    return lexicon


def align(opts: AlignOptions, work: WorkDir, reporter: Reporter = SilentReporter(), force: bool = False) -> dict:
    """Align `corpus.zh` with `corpus.en`; write the symmetrised links and the
    lexical table; return the record (counts; `skipped` when up to date)."""
    start = time.perf_counter()
    if opts.symmetrization not in SYMMETRIZATIONS:
        raise XlembedError(f"--symmetrization must be one of {', '.join(SYMMETRIZATIONS)}, got '{opts.symmetrization}'")
    inputs = {str(p): file_hash(require(p, "tokenize")) for p in (work.corpus_zh, work.corpus_en)}
    key = stage_key("align", inputs=list(inputs.values()), **vars(opts))
    if not force and (record := up_to_date(work, "align", key)):
        return dict(record, skipped=True)
    invalidate(work, "align")
    zh_lines = list(read_lines(require(work.corpus_zh, "tokenize")))
    en_lines = list(read_lines(require(work.corpus_en, "tokenize")))
    if len(zh_lines) != len(en_lines):
        raise XlembedError(f"line counts differ: {work.corpus_zh} has {len(zh_lines)} lines, {work.corpus_en} has {len(en_lines)}; rerun `xlembed tokenize`")

    with reporter.task("align (eflomal, both directions)", None, "") as task:
        run_eflomal(zh_lines, en_lines, work.links_forward, work.links_reverse, opts)
        task.advance()
    eflomal_seconds = time.perf_counter() - start

    zh_sentences = [line.split(" ") for line in zh_lines]
    en_sentences = [line.split(" ") for line in en_lines]
    links_per_sentence = [symmetrize(parse_links(fwd), parse_links(rev), opts.symmetrization)
                          for fwd, rev in zip(read_lines(work.links_forward), read_lines(work.links_reverse))]
    if len(links_per_sentence) != len(zh_lines):
        raise XlembedError(f"{work.links_forward}: eflomal wrote {len(links_per_sentence)} lines for {len(zh_lines)} sentence pairs")
    with atomic_path(work.links) as tmp:
        tmp.write_text("".join(format_links(links) + "\n" for links in links_per_sentence), encoding="utf-8")

    pair_counts = lexicon_from_links(zh_sentences, en_sentences, links_per_sentence)
    with atomic_path(work.lexicon) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("zh\ten\tcount\tp_en_given_zh\n")
        for zh in sorted(pair_counts):
            total = sum(pair_counts[zh].values())
            for en, count in sorted(pair_counts[zh].items(), key=lambda kv: (-kv[1], kv[0])):
                f.write(f"{zh}\t{en}\t{count}\t{count / total:.6g}\n")

    record = dict(
        stage="align",
        key=key,
        options=vars(opts),
        inputs=inputs,
        counts=dict(
            pairs=len(zh_lines),
            links=sum(len(links) for links in links_per_sentence),
            lexicon_entries=sum(len(c) for c in pair_counts.values()),
            zh_words_aligned=len(pair_counts),
        ),
        eflomal_seconds=round(eflomal_seconds, 3),
        seconds=round(time.perf_counter() - start, 3),
    )
    write_json_atomic(work.record("align"), record)
    return record
