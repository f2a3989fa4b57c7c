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


def symmetrize_and_count(work: WorkDir, method: str) -> tuple[int, int, dict[str, Counter]]:
    """From the two directions' link files, write the symmetrised links and
    the lexical table, line by line (memory stays flat in the corpus size).
    Returns (pairs, links, links per (zh word, en word))."""
    pair_counts: dict[str, Counter] = {}
    n_pairs = n_links = 0
    with atomic_path(work.links) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for zh_line, en_line, fwd, rev in zip(read_lines(work.corpus_zh), read_lines(work.corpus_en),
                                              read_lines(work.links_forward), read_lines(work.links_reverse)):
            links = symmetrize(parse_links(fwd), parse_links(rev), method)
            out.write(format_links(links) + "\n")
            zh, en = zh_line.split(" "), en_line.split(" ")
            for i, j in links:
                pair_counts.setdefault(zh[i], Counter())[en[j]] += 1
            n_pairs += 1
            n_links += len(links)
    with atomic_path(work.lexicon) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("zh\ten\tcount\tp_en_given_zh\n")
        for zh in sorted(pair_counts):
            total = sum(pair_counts[zh].values())
            for en, count in sorted(pair_counts[zh].items(), key=lambda kv: (-kv[1], kv[0])):
                f.write(f"{zh}\t{en}\t{count}\t{count / total:.6g}\n")
    return n_pairs, n_links, pair_counts


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
    with reporter.task("align (eflomal, both directions)", None, "") as task, \
            open(work.corpus_zh, encoding="utf-8") as zh_file, open(work.corpus_en, encoding="utf-8") as en_file:
        try:
            run_eflomal(zh_file, en_file, work.links_forward, work.links_reverse, opts)
        except ValueError as e:  # eflomal: "Mismatched file sizes"
            raise XlembedError(f"{work.corpus_zh} and {work.corpus_en} differ in line count ({e}); rerun `xlembed tokenize`")
        task.advance()
    eflomal_seconds = time.perf_counter() - start

    n_pairs, n_links, pair_counts = symmetrize_and_count(work, opts.symmetrization)

    record = dict(
        stage="align",
        key=key,
        options=vars(opts),
        inputs=inputs,
        counts=dict(
            pairs=n_pairs,
            links=n_links,
            lexicon_entries=sum(len(c) for c in pair_counts.values()),
            zh_words_aligned=len(pair_counts),
        ),
        eflomal_seconds=round(eflomal_seconds, 3),
        seconds=round(time.perf_counter() - start, 3),
    )
    write_json_atomic(work.record("align"), record)
    return record
