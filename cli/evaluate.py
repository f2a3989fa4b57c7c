"""Quality commands: evaluate (word similarity, lexicon induction) and evaluate-alignment (AER)."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from xlembed.config import Config, WorkDir

from ._util import OutDirArg, Quiet, Reporter, Work, app, config_command, fail, out

JsonOut = Annotated[Optional[Path], typer.Option("--json", dir_okay=False, help="Also write the scores to this JSON file.")]


@app.command()
def evaluate(
    out_dir: OutDirArg,
    wordsim: Annotated[Optional[list[Path]], typer.Option(help="Word-similarity file (word1<TAB>word2<TAB>score); repeatable.")] = None,
    dictionary: Annotated[Optional[Path], typer.Option(help="Bilingual dictionary (zh<TAB>en per line, several lines per word allowed).")] = None,
    csls: Annotated[int, typer.Option(min=0, help="Retrieve translations by CSLS with this many neighbours (0 = plain cosine).")] = 0,
    json_out: JsonOut = None,
):
    """Score a matrix: word similarity (Spearman rho) and bilingual lexicon induction (P@1, P@5).

    Word similarity is given with its coverage, and also over the pairs touching filled rows."""
    from xlembed.config import require_input
    from xlembed.evaluate import evaluate as run_evaluation
    from xlembed.io import write_json_atomic

    if not wordsim and dictionary is None:
        fail("nothing to evaluate: give --wordsim FILE and/or --dictionary FILE")
    for path in [*(wordsim or []), *([dictionary] if dictionary else [])]:
        require_input(path)
    result = run_evaluation(out_dir, wordsim or [], dictionary, csls)
    if result["wordsim"]:
        table = Table(title=escape(f"word similarity of {out_dir} (Spearman rho)"))
        for column in ("file", "pairs covered", "rho", "touching filled rows", "rho", "both projected", "rho"):
            table.add_column(column, justify="left" if column == "file" else "right")
        for path, r in result["wordsim"].items():
            f, p = r["filled"], r["projected"]
            table.add_row(escape(Path(path).name), f"{r['covered']}/{r['pairs']}", f"{r['rho']:.3f}",
                          f"{f['covered']}/{r['pairs']}", f"{f['rho']:.3f}", f"{p['covered']}/{r['pairs']}", f"{p['rho']:.3f}")
        out.print(table)
    if "lexicon_induction" in result:
        r = result["lexicon_induction"]
        table = Table(title=f"lexicon induction ({r['retrieval']})")
        for column in ("words evaluated", "P@1", "P@5"):
            table.add_column(column, justify="right")
        table.add_row(f"{r['evaluated']}/{r['words']}", f"{r['p_at_1']:.3f}", f"{r['p_at_5']:.3f}")
        out.print(table)
    if json_out is not None:
        write_json_atomic(json_out, result)


@app.command("evaluate-alignment")
@config_command("align")
def evaluate_alignment(
    gold: Annotated[Path, typer.Option(help="Directory with train.zh (segmented), train.en and train.align (zhIndex-enIndex, -P = possible).")],
    work: Work, config: Config, json_out: JsonOut = None, quiet: Quiet = False,
):
    """Score word alignment against gold links: AER, precision and recall for each symmetrization.

    The gold pairs are aligned together with WORK/corpus.* (run `xlembed tokenize` first) and only they are scored."""
    from xlembed.evaluate import evaluate_alignment as run_evaluation
    from xlembed.io import write_json_atomic
    from xlembed.run import prepared

    work_dir = WorkDir(work)
    with prepared(config, ("align",), work_dir, command="xlembed evaluate-alignment"):
        result = run_evaluation(gold, work_dir, config.align, Reporter(quiet))
    table = Table(title=f"alignment of {result['gold_pairs']} gold pairs (aligned with {result['corpus_pairs']:,} corpus pairs)")
    for column in ("links", "AER", "precision", "recall"):
        table.add_column(column, justify="right")
    table.add_column("symmetrization", justify="left")
    for method, s in result["scores"].items():
        table.add_row(f"{s['links']:,}", f"{s['aer']:.3f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", method)
    out.print(table)
    if json_out is not None:
        write_json_atomic(json_out, result)
