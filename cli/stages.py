"""The stage commands and `run`: each parses its options (generated from the
config declarations), calls the stage in xlembed and prints what it returned."""
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from xlembed.config import Config
from xlembed.layout import WorkDir

from ._util import Force, JsonFlag, Out, Quiet, Reporter, Work, app, config_command, err, summarize


def _stage(name: str, config: Config, work: Path, force: bool, quiet: bool) -> None:
    from xlembed.run import run_one

    summarize(name, run_one(name, config, WorkDir(work), reporter=Reporter(quiet), force=force), quiet)


@app.command()
@config_command("tokenize", "encode.model")
def tokenize(work: Work, config: Config, force: Force = False, quiet: Quiet = False):
    """Split both sides into words: English as the model's tokenizer pre-tokenizes, Chinese with jieba.

    Writes WORK/corpus.en and WORK/corpus.zh (space-separated words, one pair per line). Pairs with an
    empty side are dropped from both sides and counted."""
    _stage("tokenize", config, work, force, quiet)


@app.command()
@config_command("encode")
def encode(work: Work, config: Config, force: Force = False, quiet: Quiet = False):
    """Run the English BERT over WORK/corpus.en: one vector per English word (mean of its word pieces).

    Identical sentences are encoded once, in length-sorted batches. Writes float16 shards and an index
    from (sentence, word) to row under WORK/vectors/."""
    _stage("encode", config, work, force, quiet)


@app.command()
@config_command("align", "executor.executor", "executor.ray_address")
def align(work: Work, config: Config, force: Force = False, quiet: Quiet = False):
    """Word-align the corpus with eflomal in both directions and symmetrise.

    Writes WORK/align.links (zhIndex-enIndex per pair) and WORK/lexicon.tsv (zh, en, count, p(en|zh)).
    With --align-shards N the corpus is aligned in N parts from priors estimated on a sample; with
    --executor ray the parts run as Ray tasks."""
    _stage("align", config, work, force, quiet)


@app.command()
@config_command("project")
def project(work: Work, config: Config, force: Force = False, quiet: Quiet = False):
    """Give each Chinese word the English vectors it is aligned to; also average each English word's vectors.

    Writes per-word sums and counts (additive across corpus parts) to WORK/projection.*."""
    _stage("project", config, work, force, quiet)


@app.command()
@config_command("write")
def write(work: Work, out: Out, config: Config, quiet: Quiet = False):
    """Fill rows without a projected vector (--oov) and write the matrix to OUT.

    OUT gets embeddings.safetensors, vocab.txt, vocab.tsv (where each row came from), english.safetensors,
    english_vocab.txt and manifest.json."""
    from xlembed.run import run_one

    manifest = run_one("write", config, WorkDir(work), out, reporter=Reporter(quiet))
    summarize("write", manifest, quiet)
    if not quiet:
        err.print(f"wrote {out}/embeddings.safetensors")


RunWork = Annotated[Optional[Path], typer.Option("--work", "-w", help="Directory of intermediate artifacts.",
                                                 show_default="OUT.work beside OUT", file_okay=False)]


@app.command()
@config_command("tokenize", "encode", "align", "project", "write", "executor")
def run(out: Out, config: Config, work: RunWork = None, force: Force = False, quiet: Quiet = False,
        json_out: JsonFlag = False):
    """Run every stage: tokenize → encode → align → project → write.

    With --executor ray, encode and project run together on a Ray cluster, shard by shard (only
    per-word sums travel back; vectors are not kept), after align.

    With --json the manifest (OUT/manifest.json) is printed on stdout; progress and summaries stay on stderr.

    Example: xlembed run --tsv data/tatoeba/cmn-eng.tsv --out runs/demo"""
    from xlembed.run import default_work_dir
    from xlembed.run import run as run_all

    manifest = run_all(config, WorkDir(work if work is not None else default_work_dir(out)), out, Reporter(quiet),
                       on_stage=lambda stage, record: summarize(stage, record, quiet), force=force)
    if json_out:
        print(json.dumps(manifest, ensure_ascii=False, indent=2))
    if not quiet:
        c = manifest["counts"]
        err.print(f"wrote {out}/embeddings.safetensors: {c['vocab_size']:,} × {c['dim']} "
                  f"({c['projected_rows']:,} projected, {c['filled_rows']:,} filled), "
                  f"english.safetensors: {c['english_vocab_size']:,} × {c['dim']}")
        carried = sum(e["added"] for e in manifest.get("extended", []) if e.get("carried_forward"))
        if carried:
            err.print(f"  carried forward {carried:,} rows that `xlembed extend` had added to the previous {out}")
