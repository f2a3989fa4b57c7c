"""Commands on a built matrix (an output directory), all through xlembed.Embeddings:
info, neighbors, export, extend, verify, plot."""
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from xlembed.config import Oov

from ._util import JsonFlag, OutDirArg, app, err, fail, out, print_table


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
        table.add_column(column, justify="right" if column == "cos" else "left")
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
    from xlembed import Embeddings

    result = Embeddings.load(out_dir).info()
    if json_out:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    c = result["counts"]
    table = Table(title=escape(str(out_dir)), show_header=False)
    table.add_column(style="bold")
    table.add_column()
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
    table.add_row("top words", escape(" ".join(result["top_words"])))
    table.add_row("xlembed", str(result["xlembed_version"]))
    out.print(table)


@app.command()
def export(
    out_dir: OutDirArg,
    format: Annotated[
        str, typer.Option("--format", help="word2vec (text; gensim's KeyedVectors.load_word2vec_format reads it).")
    ] = "word2vec",
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="File to write.",
            show_default="OUT_DIR/embeddings.word2vec.txt, or english.word2vec.txt with --lang en",
        ),
    ] = None,
    lang: Annotated[str, typer.Option(help="zh: the Chinese matrix; en: the English one.")] = "zh",
):
    """Export a matrix in another format."""
    from xlembed import Embeddings

    if format != "word2vec":
        fail(f"--format must be word2vec, got '{format}'")
    lang = _lang(lang)
    target = output or out_dir / ("embeddings.word2vec.txt" if lang == "zh" else "english.word2vec.txt")
    n = Embeddings.load(out_dir).to_word2vec(target, lang)
    err.print(f"[green]✔[/green] wrote {n:,} rows to {escape(str(target))}")


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
    from xlembed.embeddings import read_word_list

    listed = read_word_list(require_input(words), unique=False)
    e = Embeddings.load(out_dir)
    extended, added = e.extend(listed, oov)
    extended.manifest["extended"][-1]["words_file"] = str(words)
    extended.save(out_dir)
    sources = {r.source: 0 for r in added}
    for r in added:
        sources[r.source] += 1
    err.print(f"[green]✔[/green] added {len(added):,} rows ({extended.manifest['extended'][-1]['oov']}: "
              + ", ".join(f"{n} {src}" for src, n in sorted(sources.items()))
              + f"), {len(listed) - len(added):,} already present; {len(extended):,} rows now")


@app.command()
def verify(out_dir: OutDirArg, json_out: JsonFlag = False):
    """Check an output directory against its manifest: checksums, rows, vocabulary, flags. Exit code 1 on a problem.

    Checks every file's checksum against manifest.json, and that rows, vocabulary lines, the `projected`
    flags and the English matrix agree. With --json: {"out", "ok", "problems"} on stdout, the same exit code."""
    from xlembed import Embeddings

    problems = Embeddings.verify(out_dir)
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
        from xlembed.embeddings import read_word_list

        chosen = read_word_list(words)
    n = plot_map(Embeddings.load(out_dir), output, chosen, top, english)
    err.print(f"[green]✔[/green] wrote a map of {n} words to {escape(str(output))}")
