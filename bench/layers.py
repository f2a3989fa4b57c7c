"""Layer pooling on the dev suite, with one forward pass per corpus.

Every layer's word vectors (0 = embeddings ... n = last) are summed per
Chinese word (over the links each alignment chose) and per English word in
one pass over the corpus; a word's row under any layer mean is then the mean
of its per-layer rows (pooling, averaging over contexts and over layers are
all linear, as in the encode and project stages). Each pooling is written
and scored as bench/devsuite.py scores a variant (the defaults otherwise:
write's shrink and OOV fill included), on each alignment.

    python bench/layers.py --work WORK --alignment DIR [--alignment DIR ...] \\
        --root /tmp/layers/NAME [--pooling "3-6;0-6;1-6"] [--json FILE]

WORK: a work directory with the corpus tokenized (corpus.zh, corpus.en and
the stage records of an earlier run with the default encoder); each DIR an
alignment as devsuite keeps them (align.links, lexicon.tsv, align.json).
The per-layer sums are kept under --root (float64, a few GB on the mixed
corpus), so a second call only scores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devsuite  # its scores and dev sets

import xlembed.encode as encode_module
from xlembed.config import Config
from xlembed.embeddings import Embeddings
from xlembed.encode import Encoder, encode_setup
from xlembed.evaluate import read_dictionary, read_wordsim
from xlembed.io import read_lines, write_json_atomic
from xlembed.layout import WorkDir
from xlembed.project import ProjectionSums, link_plan, save_projection
from xlembed.write import write

ALIGN_FILES = devsuite.ALIGN_FILES


def all_layers(model, batch, layers, device) -> torch.Tensor:
    """encode.forward's replacement: every hidden state side by side, [B, T, (n+1) d]."""
    out = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention.to(device), output_hidden_states=True
    )
    return torch.cat([h.float() for h in out.hidden_states], -1)


def scratch_for(base: WorkDir, alignment: Path, root: Path) -> WorkDir:
    """A work directory with `base`'s corpus and records and `alignment`'s links (no vectors: the sums replace them)."""
    work = WorkDir(root)
    devsuite.copy_inputs(base, work)
    shutil.copy(base.record("encode"), work.record("encode"))
    for name in ALIGN_FILES:
        shutil.copy(alignment / name, work.root / name)
    return work


def sorted_pairs(word_ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, word ids) of the occurrences with a vector, by row."""
    keep = rows >= 0
    order = np.argsort(rows[keep], kind="stable")
    return rows[keep][order], word_ids[keep][order]


def layer_sums(base: WorkDir, works: list[WorkDir], out: Path) -> None:
    """One forward pass; per-layer sums [words, (n+1) d] of each alignment's
    Chinese words and of the English words, saved in `out`."""
    config = Config()
    setup = encode_setup(config, base)
    encoder = Encoder(setup.model_dir, config.encode, setup.device, setup.precision)
    n_hidden = encoder.model.config.num_hidden_layers + 1
    width = n_hidden * encoder.dim
    plan = encoder.plan(read_lines(base.corpus_en))
    word_rows = plan.rows.word_rows
    links = [link_plan(work, config.project) for work in works]
    pairs = [sorted_pairs(p.links.link_words, word_rows[p.links.link_positions]) for p in links]
    pairs.append(sorted_pairs(links[0].links.en_words, word_rows))
    sizes = [len(p.vocab.zh_vocab) for p in links] + [len(links[0].vocab.en_vocab)]
    sums = [torch.zeros((n, width), dtype=torch.float64) for n in sizes]  # [words, (n+1) d] each
    counts = [torch.zeros(n, dtype=torch.int64) for n in sizes]
    buffer = torch.empty((max(config.encode.batch_tokens, encoder.window), width), dtype=torch.float16)
    filled, start, n_sentences, total = 0, time.perf_counter(), 0, len(plan.n_words)

    def rows_for(n: int) -> torch.Tensor:
        return buffer[:n]

    def done(batch, next_item: int) -> None:
        nonlocal filled, n_sentences
        for (rows, ids), s, c in zip(pairs, sums, counts):
            lo, hi = np.searchsorted(rows, [filled, filled + batch.n_rows])
            if hi > lo:
                local = torch.from_numpy(rows[lo:hi] - filled)
                index = torch.from_numpy(ids[lo:hi])
                s.index_add_(0, index, buffer[local].double())
                c.index_add_(0, index, torch.ones(hi - lo, dtype=torch.int64))
        filled += batch.n_rows
        n_sentences += batch.n_sentences
        if n_sentences // 5000 != (n_sentences - batch.n_sentences) // 5000:
            seconds = time.perf_counter() - start
            print(
                f"  {n_sentences}/{total} sentences, {n_sentences / seconds:.0f}/s, "
                f"ETA {(total - n_sentences) / n_sentences * seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    encode_module.forward = all_layers
    encoder.run(plan, 0, rows_for, done)
    out.mkdir(parents=True, exist_ok=True)
    for r, (s, c) in enumerate(zip(sums[:-1], counts[:-1])):
        save_file({"sum": s, "count": c}, str(out / f"zh-{r}.safetensors"))
    save_file({"sum": sums[-1], "count": counts[-1]}, str(out / "en.safetensors"))
    (out / "meta.json").write_text(
        json.dumps(dict(n_hidden=n_hidden, dim=encoder.dim, seconds=round(time.perf_counter() - start, 1)))
    )


def pooled(tensors: dict, layers: list[int], n_hidden: int) -> torch.Tensor:
    """Sums of the mean over `layers` [words, d] from per-layer sums [words, (n+1) d]."""
    s = tensors["sum"]
    return s.view(len(s), n_hidden, -1)[:, layers].mean(1)


def parse_pooling(spec: str) -> list[int]:
    """'3-6' (layers 3 to 6) or '4' (one layer); 0 = the embeddings."""
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--alignment", type=Path, action="append", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--pooling", default="3-6;0-6;1-6;2-6;1-4;0;1;2;3;4;5;6")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    devsuite.SETS.update({name: read_wordsim(path) for name, path in devsuite.WORDSIM.items()},
                         muse=read_dictionary(devsuite.MUSE))
    base = WorkDir(args.work)
    works = [scratch_for(base, a, args.root / f"work-{r}") for r, a in enumerate(args.alignment)]
    sums_dir = args.root / "sums"
    if not (sums_dir / "meta.json").exists():
        layer_sums(base, works, sums_dir)
    meta = json.loads((sums_dir / "meta.json").read_text())
    english = load_file(str(sums_dir / "en.safetensors"))
    results: dict[str, list[dict]] = {}
    for r, work in enumerate(works):
        plan = link_plan(work, Config().project)
        chinese = load_file(str(sums_dir / f"zh-{r}.safetensors"))
        for spec in args.pooling.split(";"):
            layers = parse_pooling(spec)
            sums = ProjectionSums(pooled(chinese, layers, meta["n_hidden"]), chinese["count"],
                                  pooled(english, layers, meta["n_hidden"]), english["count"], links_without_vector=0)
            record = save_projection(work, Config(), plan.vocab, plan.lexicon, sums, meta["dim"], inputs={})
            write_json_atomic(work.record("project"), dict(stage="project", key="bench", **record, seconds=0.0))
            write(Config(), work, args.root / "out")
            scores = devsuite.scored(Embeddings.load(args.root / "out"), f"alignment {r} layers {spec}")
            results.setdefault(f"layers {spec}", []).append(scores)
    table = devsuite.summary(results)
    print(devsuite.summary_lines(table))
    if args.json:
        args.json.write_text(json.dumps(dict(work=str(args.work), alignments=[str(a) for a in args.alignment],
                                             sums_seconds=meta["seconds"], variants=table), indent=2) + "\n")


if __name__ == "__main__":
    main()
