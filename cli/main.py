"""The `xlembed` command: one thin function per stage, plus `run`.

Each command parses its options, calls the stage function in `pipeline/`
and prints what it returned."""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from pipeline import __version__
from pipeline.config import AlignOptions as A
from pipeline.config import EncodeOptions as E
from pipeline.config import ProjectOptions as P
from pipeline.config import TokenizeOptions as T
from pipeline.config import WorkDir
from pipeline.config import WriteOptions as W
from pipeline.io import SilentTask, XlembedError

from . import options as o

app = typer.Typer(
    name="xlembed",
    help="Build a Chinese word-embedding matrix from an English–Chinese parallel corpus and an English BERT.\n\n"
         "Stages, in order: tokenize → encode → align → project → write; `run` does them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, in the unit the task was given."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {task.fields.get('unit', '')}/s" if speed else "", style="progress.data.speed")


class RichReporter:
    """Progress bars with count, rate, elapsed time and ETA, on stderr when
    it is a terminal (logs get the one-line stage summaries only). Tasks
    running at the same time (encode and align in `run`) share one display."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not err.is_terminal
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.active = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str):
        if self.quiet:
            yield SilentTask()
            return
        with self.lock:
            if self.progress is None:
                self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                         MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                         TimeRemainingColumn(), console=err)
                self.progress.start()
            task_id = self.progress.add_task(description, total=total, unit=unit, eta="eta" if total else "")
            self.active += 1
        progress = self.progress

        class Task:
            def advance(self, n: int = 1) -> None:
                progress.advance(task_id, n)

        try:
            yield Task()
        finally:
            with self.lock:
                if total is None:
                    progress.update(task_id, total=1, completed=1)
                self.active -= 1
                if self.active == 0:
                    progress.stop()
                    self.progress = None


@contextlib.contextmanager
def reported_errors():
    """An XlembedError becomes one line on stderr and exit code 2."""
    try:
        yield
    except XlembedError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        raise typer.Exit(130)


def summarize(stage: str, record: dict, quiet: bool) -> None:
    if quiet:
        return
    if record.get("skipped"):
        err.print(f"[green]✔[/green] [bold]{stage}[/bold]: up to date, skipped (--force recomputes)", highlight=False)
        return
    if record.get("resumed_at_shard"):
        err.print(f"  {stage}: resumed after {record['resumed_at_shard']} completed shard(s)", highlight=False)
    counts = record.get("counts", {})
    text = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items() if isinstance(v, int))
    seconds = record.get("seconds", {})
    if isinstance(seconds, dict):
        seconds = seconds.get(stage, 0.0)
    err.print(f"[green]✔[/green] [bold]{stage}[/bold] ({seconds:.1f} s): {text}", highlight=False, soft_wrap=True)


def version_callback(value: bool):
    if value:
        print(f"xlembed {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit.")):
    pass


@app.command()
def tokenize(
    work: o.Work, config: o.Config = None,
    tsv: o.Tsv = T.tsv, en: o.En = T.en, zh: o.Zh = T.zh, en_column: o.EnColumn = T.en_column, zh_column: o.ZhColumn = T.zh_column,
    model: o.Model = T.model, user_dict: o.UserDict = T.user_dict, hmm: o.Hmm = T.hmm, force: o.Force = False, quiet: o.Quiet = False,
):
    """Split both sides into words: English as the model's tokenizer pre-tokenizes, Chinese with jieba.

    Writes WORK/corpus.en and WORK/corpus.zh (space-separated words, one pair per line). Pairs with an
    empty side are dropped from both sides and counted."""
    with reported_errors():
        from pipeline.tokenize import tokenize as run_tokenize

        opts = T(en=en, zh=zh, tsv=tsv, en_column=en_column, zh_column=zh_column, model=model, user_dict=user_dict, hmm=hmm)
        summarize("tokenize", run_tokenize(opts, WorkDir(work), RichReporter(quiet), force), quiet)


@app.command()
def encode(
    work: o.Work, config: o.Config = None,
    model: o.Model = E.model, layer: o.Layer = E.layer, batch_size: o.BatchSize = E.batch_size, max_length: o.MaxLength = E.max_length,
    device: o.Device = E.device, shard_rows: o.ShardRows = E.shard_rows, force: o.Force = False, quiet: o.Quiet = False,
):
    """Run the English BERT over WORK/corpus.en: one vector per English word (mean of its word pieces).

    Identical sentences are encoded once, in length-sorted batches. Writes float16 shards and an index
    from (sentence, word) to row under WORK/vectors/."""
    with reported_errors():
        from pipeline.encode import encode as run_encode

        opts = E(model=model, layer=layer, batch_size=batch_size, max_length=max_length, device=device, shard_rows=shard_rows)
        summarize("encode", run_encode(opts, WorkDir(work), RichReporter(quiet), force), quiet)


@app.command()
def align(
    work: o.Work, config: o.Config = None,
    symmetrization: o.Symmetrization = A.symmetrization, align_model: o.AlignModel = A.align_model,
    iterations: o.Iterations = A.iterations, samplers: o.Samplers = A.samplers, null_prior: o.NullPrior = A.null_prior,
    force: o.Force = False, quiet: o.Quiet = False,
):
    """Word-align the corpus with eflomal in both directions and symmetrise.

    Writes WORK/align.links (zhIndex-enIndex per pair) and WORK/lexicon.tsv (zh, en, count, p(en|zh))."""
    with reported_errors():
        from pipeline.align import align as run_align

        opts = A(symmetrization=symmetrization, align_model=align_model, iterations=iterations, samplers=samplers, null_prior=null_prior)
        summarize("align", run_align(opts, WorkDir(work), RichReporter(quiet), force), quiet)


@app.command()
def project(
    work: o.Work, config: o.Config = None,
    strategy: o.Strategy = P.strategy, min_count: o.MinCount = P.min_count, stopwords: o.Stopwords = P.stopwords,
    force: o.Force = False, quiet: o.Quiet = False,
):
    """Give each Chinese word the English vectors it is aligned to; also average each English word's vectors.

    Writes per-word sums and counts (additive across corpus parts) to WORK/projection.*."""
    with reported_errors():
        from pipeline.project import project as run_project

        opts = P(strategy=strategy, min_count=min_count, stopwords=stopwords)
        summarize("project", run_project(opts, WorkDir(work), RichReporter(quiet), force), quiet)


@app.command()
def write(
    work: o.Work, out: o.Out, config: o.Config = None,
    min_freq: o.MinFreq = W.min_freq, seed: o.Seed = W.seed, oov: o.Oov = W.oov, vocab: o.Vocab = W.vocab,
    quiet: o.Quiet = False,
):
    """Fill rows without a projected vector (--oov) and write the matrix to OUT.

    OUT gets embeddings.safetensors, vocab.txt, vocab.tsv (where each row came from), english.safetensors,
    english_vocab.txt and manifest.json."""
    with reported_errors():
        from pipeline.write import write as run_write

        manifest = run_write(W(min_freq=min_freq, seed=seed, oov=oov, vocab=vocab), WorkDir(work), out)
        summarize("write", manifest, quiet)
        if not quiet:
            err.print(f"wrote {out}/embeddings.safetensors", highlight=False)


@app.command()
def run(
    out: o.Out, work: o.RunWork = None, config: o.Config = None,
    tsv: o.Tsv = T.tsv, en: o.En = T.en, zh: o.Zh = T.zh, en_column: o.EnColumn = T.en_column, zh_column: o.ZhColumn = T.zh_column,
    user_dict: o.UserDict = T.user_dict, hmm: o.Hmm = T.hmm,
    model: o.Model = E.model, layer: o.Layer = E.layer, batch_size: o.BatchSize = E.batch_size, max_length: o.MaxLength = E.max_length,
    device: o.Device = E.device, shard_rows: o.ShardRows = E.shard_rows,
    symmetrization: o.Symmetrization = A.symmetrization, align_model: o.AlignModel = A.align_model,
    iterations: o.Iterations = A.iterations, samplers: o.Samplers = A.samplers, null_prior: o.NullPrior = A.null_prior,
    strategy: o.Strategy = P.strategy, min_count: o.MinCount = P.min_count, stopwords: o.Stopwords = P.stopwords,
    min_freq: o.MinFreq = W.min_freq, seed: o.Seed = W.seed, oov: o.Oov = W.oov, vocab: o.Vocab = W.vocab,
    force: o.Force = False, quiet: o.Quiet = False,
):
    """Run every stage: tokenize → encode → align → project → write.

    Example: xlembed run --tsv data/tatoeba/cmn-eng.tsv --out runs/demo"""
    with reported_errors():
        from pipeline.run import run as run_all

        work_dir = WorkDir(work if work is not None else out.with_name(out.name + ".work"))
        manifest = run_all(
            T(en=en, zh=zh, tsv=tsv, en_column=en_column, zh_column=zh_column, model=model, user_dict=user_dict, hmm=hmm),
            E(model=model, layer=layer, batch_size=batch_size, max_length=max_length, device=device, shard_rows=shard_rows),
            A(symmetrization=symmetrization, align_model=align_model, iterations=iterations, samplers=samplers, null_prior=null_prior),
            P(strategy=strategy, min_count=min_count, stopwords=stopwords),
            W(min_freq=min_freq, seed=seed, oov=oov, vocab=vocab),
            work_dir, out, RichReporter(quiet),
            on_stage=lambda stage, record: summarize(stage, record, quiet), force=force,
        )
        if not quiet:
            c = manifest["counts"]
            err.print(f"wrote {out}/embeddings.safetensors: {c['vocab_size']:,} × {c['dim']} "
                      f"({c['projected_rows']:,} projected, {c['filled_rows']:,} filled), "
                      f"english.safetensors: {c['english_vocab_size']:,} × {c['dim']}", highlight=False)


@app.command()
def extend(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `xlembed run` or `xlembed write`.")],
    words: Annotated[Path, typer.Option(help="Words to add, one per line (those already there are skipped).")],
    oov: Annotated[Optional[str], typer.Option(help="random, chars or pinyin [default: the strategy the matrix was built with].")] = None,
):
    """Add rows for new words to an existing matrix, filled from its projected rows (atomically)."""
    with reported_errors():
        from pipeline.extend import extend as run_extend

        result = run_extend(out_dir, words, oov)
        err.print(f"[green]✔[/green] added {result['added']:,} rows ({result['oov']}: "
                  + ", ".join(f"{n} {src}" for src, n in sorted(result["sources"].items()))
                  + f"), {result['already_present']:,} already present; {result['vocab_size']:,} rows now", highlight=False)


@app.command()
def neighbors(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `xlembed run` or `xlembed write`.")],
    word: Annotated[str, typer.Argument(help="A Chinese word (or an English word with --lang en).")],
    k: Annotated[int, typer.Option("-k", help="How many neighbours on each side.")] = 10,
    lang: Annotated[str, typer.Option(help="zh: WORD is Chinese; en: WORD is English.")] = "zh",
):
    """Nearest Chinese words and nearest English words (cosine) of a word: translations and neighbours."""
    with reported_errors():
        from pipeline.inspect import neighbors as find_neighbors

        result = find_neighbors(out_dir, word, k, lang)
        title = word + ("" if lang == "en" else " (projected)" if result["projected"] else " (filled row)")
        table = Table(title=title)
        for column in ("Chinese", "cos", "English", "cos"):
            table.add_column(column, justify="right" if column == "cos" else "left")
        for i in range(max(len(result["zh"]), len(result["en"]))):
            zh = result["zh"][i] if i < len(result["zh"]) else ("", "")
            en = result["en"][i] if i < len(result["en"]) else ("", "")
            table.add_row(zh[0], f"{zh[1]:.3f}" if zh[1] != "" else "", en[0], f"{en[1]:.3f}" if en[1] != "" else "")
        Console().print(table)


@app.command()
def info(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `xlembed run` or `xlembed write`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Shape, dtype, model, settings, projected and filled rows, and the most frequent words of a matrix."""
    with reported_errors():
        from pipeline.inspect import info as read_info
        from pipeline.inspect import summary_json

        result = read_info(out_dir)
        if json_out:
            print(summary_json(result))
            return
        c = result["counts"]
        table = Table(title=str(out_dir), show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("matrix", f"{result['shape'][0]:,} × {result['shape'][1]} {result['dtype']}")
        table.add_row("english", f"{result['english_shape'][0]:,} × {result['english_shape'][1]}")
        filled_by = ", ".join(f"{n:,} {k}" for k, n in c.get("filled_by", {}).items() if n)
        table.add_row("rows", f"{c.get('projected_rows', 0):,} projected, {c.get('filled_rows', 0):,} filled"
                      + (f" ({filled_by})" if filled_by else "") + f", {c.get('special_rows', 0)} special")
        table.add_row("model", f"{result['model']} (layer {result['layer']})")
        table.add_row("method", f"{result['strategy']}, {result['symmetrization']}, oov {result['oov_fill']}, seed {result['seed']}")
        table.add_row("corpus", f"{c.get('pairs_kept', 0):,} pairs ({c.get('pairs_dropped', 0):,} dropped)")
        table.add_row("top words", " ".join(result["top_words"]))
        table.add_row("xlembed", str(result["xlembed_version"]))
        Console().print(table)


@app.command()
def export(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `xlembed run` or `xlembed write`.")],
    format: Annotated[str, typer.Option("--format", help="word2vec (text; gensim's KeyedVectors.load_word2vec_format reads it).")] = "word2vec",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write [default: OUT_DIR/embeddings.word2vec.txt].")] = None,
    lang: Annotated[str, typer.Option(help="zh: the Chinese matrix; en: the English one.")] = "zh",
):
    """Export a matrix in another format."""
    with reported_errors():
        from pipeline.inspect import export_word2vec

        if format != "word2vec":
            raise XlembedError(f"--format must be word2vec, got '{format}'")
        if lang not in ("zh", "en"):
            raise XlembedError(f"--lang must be zh or en, got '{lang}'")
        target = output or out_dir / ("embeddings.word2vec.txt" if lang == "zh" else "english.word2vec.txt")
        n = export_word2vec(out_dir, target, lang)
        err.print(f"[green]✔[/green] wrote {n:,} rows to {target}", highlight=False)


@app.command()
def verify(out_dir: Annotated[Path, typer.Argument(help="An output directory of `xlembed write` or `xlembed run`.")]):
    """Check an output directory: file checksums against manifest.json, and that rows, vocabulary lines,
    the `projected` flags and the English matrix agree. Exit code 1 on any problem."""
    from pipeline.verify import verify as run_verify

    problems = run_verify(out_dir)
    for problem in problems:
        err.print(f"[red]✘[/red] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    err.print(f"[green]✔[/green] {out_dir}: checksums and shapes agree", highlight=False)


@app.command()
def evaluate(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `xlembed run` or `xlembed write`.")],
    wordsim: Annotated[Optional[list[Path]], typer.Option(help="Word-similarity file (word1<TAB>word2<TAB>score); repeatable.")] = None,
    dictionary: Annotated[Optional[Path], typer.Option(help="Bilingual dictionary (zh<TAB>en per line, several lines per word allowed).")] = None,
    csls: Annotated[int, typer.Option(help="Retrieve translations by CSLS with this many neighbours (0 = plain cosine).")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores to this JSON file.")] = None,
):
    """Score a matrix: word similarity (Spearman rho, with coverage, also over pairs touching filled rows)
    and bilingual lexicon induction (precision@1/@5 of the nearest English words)."""
    with reported_errors():
        from pipeline.evaluate import evaluate as run_evaluation
        from pipeline.io import write_json_atomic

        if not wordsim and dictionary is None:
            raise XlembedError("nothing to evaluate: give --wordsim FILE and/or --dictionary FILE")
        result = run_evaluation(out_dir, wordsim or [], dictionary, csls)
        console = Console()
        if result["wordsim"]:
            table = Table(title=f"word similarity of {out_dir} (Spearman rho)")
            for column in ("file", "pairs covered", "rho", "touching filled rows", "rho", "both projected", "rho"):
                table.add_column(column, justify="left" if column == "file" else "right")
            for path, r in result["wordsim"].items():
                f, p = r["filled"], r["projected"]
                table.add_row(Path(path).name, f"{r['covered']}/{r['pairs']}", f"{r['rho']:.3f}",
                              f"{f['covered']}/{r['pairs']}", f"{f['rho']:.3f}", f"{p['covered']}/{r['pairs']}", f"{p['rho']:.3f}")
            console.print(table)
        if "lexicon_induction" in result:
            r = result["lexicon_induction"]
            table = Table(title=f"lexicon induction ({r['retrieval']})")
            for column in ("words evaluated", "P@1", "P@5"):
                table.add_column(column, justify="right")
            table.add_row(f"{r['evaluated']}/{r['words']}", f"{r['p_at_1']:.3f}", f"{r['p_at_5']:.3f}")
            console.print(table)
        if json_out is not None:
            write_json_atomic(json_out, result)


@app.command("evaluate-alignment")
def evaluate_alignment(
    gold: Annotated[Path, typer.Option(help="Directory with train.zh (segmented), train.en and train.align (zhIndex-enIndex, -P = possible).")],
    work: o.Work, config: o.Config = None,
    align_model: o.AlignModel = A.align_model, iterations: o.Iterations = A.iterations, samplers: o.Samplers = A.samplers,
    null_prior: o.NullPrior = A.null_prior,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores to this JSON file.")] = None,
    quiet: o.Quiet = False,
):
    """Score word alignment against gold links: AER, precision and recall for each symmetrization.

    The gold pairs are aligned together with WORK/corpus.* (run `xlembed tokenize` first) and only they are scored."""
    with reported_errors():
        from pipeline.evaluate import evaluate_alignment as run_evaluation
        from pipeline.io import write_json_atomic

        opts = A(align_model=align_model, iterations=iterations, samplers=samplers, null_prior=null_prior)
        result = run_evaluation(gold, WorkDir(work), opts, RichReporter(quiet))
        table = Table(title=f"alignment of {result['gold_pairs']} gold pairs (aligned with {result['corpus_pairs']:,} corpus pairs)")
        for column in ("links", "AER", "precision", "recall"):
            table.add_column(column, justify="right")
        table.add_column("symmetrization", justify="left")
        for method, s in result["scores"].items():
            table.add_row(f"{s['links']:,}", f"{s['aer']:.3f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", method)
        Console().print(table)
        if json_out is not None:
            write_json_atomic(json_out, result)


def entry() -> None:
    app()


if __name__ == "__main__":
    sys.exit(app())
