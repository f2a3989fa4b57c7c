"""Commands on a built matrix (an output directory), all through xlembed.Embeddings:
info, neighbors, export, extend, verify, plot."""
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from xlembed.config import SENTENCE_SIF, Oov
from xlembed.config import ExportFormat as Format

from ._util import JsonFlag, OutDirArg, Quiet, Reporter, app, distilled_text, err, fail, out, print_table


def _lang(value: str) -> str:
    if value not in ("zh", "en"):
        fail(f"--lang must be zh or en, got '{value}'")
    return value


@app.command()
def neighbors(
    out_dir: OutDirArg,
    word: Annotated[str, typer.Argument(help="A Chinese word (or an English word with --lang en).")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many neighbours on each side (at least 1).")] = 10,
    lang: Annotated[str, typer.Option(help="zh: WORD is Chinese; en: WORD is English.")] = "zh",
    json_out: JsonFlag = False,
):
    """Nearest Chinese words and nearest English words (cosine) of a word: translations and neighbours.

    On a terminal, a table; piped, tab-separated lines; with --json, JSON."""
    from xlembed import Embeddings

    lang = _lang(lang)
    e = Embeddings.load(out_dir)
    same = e.most_similar(word, k, lang=lang)
    other = e.translate(word, k, lang=lang)
    zh, en = (same, other) if lang == "zh" else (other, same)
    projected = None if lang == "en" else bool(e.projected[e.index(word)])
    if json_out:
        print(json.dumps(dict(word=word, lang=lang, projected=projected,
                              chinese=[dict(word=w, cos=round(c, 6)) for w, c in zh],
                              english=[dict(word=w, cos=round(c, 6)) for w, c in en]), ensure_ascii=False, indent=2))
        return
    title = word + ("" if projected is None else " (projected)" if projected else " (filled row)")
    table = Table(title=escape(title))
    for column in ("Chinese", "cos", "English", "cos"):
        table.add_column(column, justify="right" if column == "cos" else "left", overflow="fold")
    for i in range(max(len(zh), len(en))):
        z = zh[i] if i < len(zh) else ("", None)
        n = en[i] if i < len(en) else ("", None)
        table.add_row(
            escape(z[0]),
            f"{z[1]:.3f}" if z[1] is not None else "",
            escape(n[0]),
            f"{n[1]:.3f}" if n[1] is not None else "",
        )
    print_table(table)


@app.command()
def info(
    out_dir: OutDirArg,
    json_out: JsonFlag = False,
):
    """Shape, dtype, model, settings, projected and filled rows, and the most frequent words of a matrix."""
    from xlembed.outdir import describe  # headers only: no torch

    result = describe(out_dir)
    if json_out:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    c = result["counts"]
    table = Table(title=escape(str(out_dir)), show_header=False)
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    table.add_row("matrix", f"{result['shape'][0]:,} × {result['shape'][1]} {result['dtype']}")
    table.add_row("english", f"{result['english_shape'][0]:,} × {result['english_shape'][1]}")
    filled_by = ", ".join(f"{n:,} {k}" for k, n in c.get("filled_by", {}).items() if n)
    table.add_row("rows", f"{c.get('projected_rows', 0):,} projected, {c.get('filled_rows', 0):,} filled"
                  + (f" ({filled_by})" if filled_by else "") + f", {c.get('special_rows', 0)} special")
    sha = f"sha256 {result['model_sha256'][:12]}, " if result.get("model_sha256") else ""
    table.add_row("model", escape(f"{result['model']} ({sha}layer {result['layer']})"))
    table.add_row(
        "method", f"{result['strategy']}, {result['symmetrization']}, oov {result['oov_fill']}, seed {result['seed']}"
    )
    table.add_row("corpus", f"{c.get('pairs_kept', 0):,} pairs ({c.get('pairs_dropped', 0):,} dropped)")
    if result.get("distill"):
        d = result["distill"]
        table.add_row("distilled", f"{d['epochs']:g} epochs over {d['pairs']:,} sentence pairs, anchor {d['anchor']:g} "
                                   "(sentence vectors unweighted by default)")
    table.add_row("top words", escape(" ".join(result["top_words"])))
    table.add_row("xlembed", str(result["xlembed_version"]))
    out.print(table)


@app.command()
def export(
    out_dir: OutDirArg,
    format: Annotated[
        Format,
        typer.Option("--format", help="word2vec (text), word2vec-bin (binary), gensim (a KeyedVectors file), "
                     "model2vec (a directory for model2vec and sentence-transformers)."),
    ] = Format.word2vec,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="File (a directory for model2vec) to write; - = standard output "
                     "(word2vec text only). Never inside OUT_DIR.",
                     show_default="beside OUT_DIR: OUT_DIR.word2vec.txt, .word2vec.bin, .kv, .model2vec"),
    ] = None,
    lang: Annotated[
        str, typer.Option(help="zh: the Chinese matrix; en: the English one (not with model2vec).")
    ] = "zh",
    special: Annotated[
        bool, typer.Option("--special/--no-special", metavar="", help="Keep the [PAD] and [UNK] rows in word formats.")
    ] = False,
    sif: Annotated[
        Optional[float],
        typer.Option(help="model2vec: weight rows by SIF, a / (a + p(word)), as Embeddings.encode does; 0 = no "
                     "weighting.", show_default=f"{SENTENCE_SIF}; 0 for a build made with --distill"),
    ] = None,
):
    """Export a matrix for gensim (word2vec text or binary, KeyedVectors), model2vec and sentence-transformers.

    gensim: KeyedVectors.load_word2vec_format(FILE[, binary=True]) or KeyedVectors.load(FILE).
    model2vec: StaticModel.from_pretrained(DIR); sentence-transformers: SentenceTransformer(DIR)."""
    from xlembed import Embeddings
    from xlembed.export import STDOUT, default_target

    lang = _lang(lang)
    target = output or default_target(out_dir, format, lang)
    n = Embeddings.load(out_dir).export(target, format.value, lang, special, sif)
    if target != STDOUT:
        err.print(f"[green]✔[/green] wrote {n:,} rows to {escape(str(target))} ({format.value})")


@app.command()
def extend(
    out_dir: OutDirArg,
    words: Annotated[Path, typer.Option(help="Words to add, one per line (those already there are skipped).")],
    oov: Annotated[
        Optional[Oov],
        typer.Option(help="How the new rows are filled.", show_default="the strategy the matrix was built with"),
    ] = None,
):
    """Add rows for new words to an existing matrix, filled from its projected rows (atomically)."""
    from xlembed import Embeddings
    from xlembed.config import require_input
    from xlembed.io import out_lock, read_word_list

    listed = read_word_list(require_input(words), unique=False)
    with out_lock(out_dir):  # another writer of OUT waits: both extends keep their words
        e = Embeddings.load(out_dir)
        extended, added = e.extend(listed, oov)
        extended.manifest["extended"][-1]["words_file"] = str(words)
        extended.save(out_dir)
    sources = {r.source: 0 for r in added}
    for r in added:
        sources[r.source] += 1
    how = f" ({extended.manifest['extended'][-1]['oov']}: " + ", ".join(
        f"{n} {src}" for src, n in sorted(sources.items())) + ")" if added else ""  # none added: no empty "()"
    err.print(f"[green]✔[/green] added {len(added):,} rows{how}, {len(listed) - len(added):,} already present; "
              f"{len(extended):,} rows now")


@app.command()
def verify(out_dir: OutDirArg, json_out: JsonFlag = False):
    """Check an output directory against its manifest: checksums, rows, vocabulary, flags. Exit code 1 on a problem.

    Checks every file's checksum against manifest.json, and that rows, vocabulary lines, the `projected`
    flags and the English matrix agree. With --json: {"out", "ok", "problems"} on stdout, the same exit code."""
    from xlembed.outdir import verify as verify_output  # safetensors.numpy: no torch

    problems = verify_output(out_dir)
    if json_out:
        print(json.dumps(dict(out=str(out_dir), ok=not problems, problems=problems), ensure_ascii=False, indent=2))
        if problems:
            raise typer.Exit(1)
        return
    for problem in problems:
        err.print(f"[red]✘[/red] {escape(problem)}")
    if problems:
        raise typer.Exit(1)
    err.print(f"[green]✔[/green] {escape(str(out_dir))}: checksums and shapes agree")


@app.command()
def plot(
    out_dir: OutDirArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="The picture: .html (interactive, offline), .svg or .png."),
    ],
    words: Annotated[
        Optional[Path],
        typer.Option(help="Chinese words to show, one per line.", show_default="the most frequent projected words"),
    ] = None,
    top: Annotated[
        int, typer.Option(min=1, help="How many of the most frequent projected words, without --words (at least 1).")
    ] = 60,
    english: Annotated[
        bool, typer.Option("--english/--no-english", metavar="", help="Also show each word's aligned English word.")
    ] = True,
):
    """A 2-D map (PCA) of Chinese words and their aligned English words in the shared space."""
    from xlembed import Embeddings
    from xlembed.plot import plot_map

    chosen = None
    if words is not None:
        from xlembed.io import read_word_list

        chosen = read_word_list(words)
    n = plot_map(Embeddings.load(out_dir), output, chosen, top, english)
    err.print(f"[green]✔[/green] wrote a map of {n} words to {escape(str(output))}")


DistillEpochs = Annotated[
    float,
    typer.Option(
        min=0,
        metavar="EPOCHS",
        help="Then train the Chinese rows for this many passes over the build corpus (fractions allowed) so each "
        "Chinese sentence's embedding matches the English model's of its translation (the layers stay the "
        "English model's unless --distill-layers-lr). 0: none.",
    ),
]
DistillLayersLr = Annotated[
    float,
    typer.Option(
        min=0,
        max=1,
        help="With --distill: train the Transformer layers too, at this learning rate (the rows' is 2e-3): a "
        "better Chinese encoder, no longer the English model's layers. 0: layers kept.",
    ),
]


@app.command()
def transplant(
    out_dir: OutDirArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            help="Directory for the Chinese model (replaced as a whole; only an earlier transplant is ever replaced).",
        ),
    ],
    model: Annotated[
        Optional[Path],
        typer.Option(
            file_okay=False,
            help="The English model whose layers are kept (a local directory).",
            show_default="the model the build was encoded with",
        ),
    ] = None,
    work: Annotated[
        Optional[Path],
        typer.Option(
            "--work",
            "-w",
            file_okay=False,
            help="The build's work directory (its alignments).",
            show_default="OUT_DIR.work beside OUT_DIR",
        ),
    ] = None,
    rows: Annotated[
        str,
        typer.Option(
            help="static: each word's row is the mean input embedding of the English words it was "
            "aligned to (by the build's rule); matrix: the build's own rows (e.g. built with --layer 0)."
        ),
    ] = "static",
    distill: DistillEpochs = 0.0,
    distill_layers_lr: DistillLayersLr = 0.0,
    quiet: Quiet = False,
):
    """A Chinese model from the English one: its layers, Chinese input rows and a Chinese tokenizer.

    The output loads without xlembed: transformers.AutoModel.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR),
    and SentenceTransformer(DIR) where the English model is a sentence-transformers model.

    Example: xlembed transplant runs/demo -o runs/demo-zh-model"""
    from xlembed.distill import DistillOptions
    from xlembed.transplant import transplant as transplant_model

    options = DistillOptions(epochs=distill, layers_lr=distill_layers_lr)
    record = transplant_model(out_dir, output, model, work, rows, Reporter(quiet), options)
    if not quiet:
        err.print(f"[green]✔[/green] wrote {escape(str(output))}: {transplant_summary(record)}")


def transplant_summary(record: dict) -> str:
    sources = ", ".join(f"{n:,} {source}" for source, n in record["row_sources"].items())
    summary = f"{record['vocab_size']:,} × {record['dim']} input rows ({sources})"
    trained = record.get("distill")
    if trained:
        summary += "; " + distilled_text(trained, "rows and layers" if trained.get("layers_lr") else "rows")
    return summary
