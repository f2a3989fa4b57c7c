"""Quality commands: evaluate (word similarity, lexicon induction) and evaluate-alignment (AER)."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from xlembed.config import Config
from xlembed.layout import WorkDir

from ._util import OutDirArg, Quiet, Reporter, Work, app, config_command, fail, out

JsonOut = Annotated[
    Optional[Path], typer.Option("--json", dir_okay=False, help="Also write the scores to this JSON file.")
]


def quality_table(result: dict, out_dir: Path, dictionary: Path | None, analogies: Path | None) -> Table:
    """evaluate's scores as one table: set, measure, score, coverage."""
    table = Table(title=escape(f"quality of {out_dir}"))
    for column in ("set", "measure", "score", "coverage"):
        table.add_column(column, justify="left" if column in ("set", "measure") else "right", overflow="fold")
    for path, r in result["wordsim"].items():
        name = escape(Path(path).name)
        table.add_row(name, "Spearman rho", f"{r['rho']:.3f}", f"{r['covered']}/{r['pairs']}")
        table.add_row(
            name,
            "rho, pairs touching filled rows",
            f"{r['filled']['rho']:.3f}",
            f"{r['filled']['covered']}/{r['pairs']}",
        )
    if "lexicon_induction" in result:
        r = result["lexicon_induction"]
        name = escape(Path(dictionary).name)
        for method in ("cosine", "csls"):
            if method not in r:
                continue
            label = "cosine" if method == "cosine" else f"CSLS-{r['csls_k']}"
            for k in (1, 5, 10):
                table.add_row(
                    name,
                    f"P@{k} {label} (covered / all words)",
                    f"{r[method][f'p_at_{k}']:.3f} / {r[method][f'p_at_{k}_all']:.3f}",
                    f"{r['covered']}/{r['words']}",
                )
    if "analogy" in result:
        r = result["analogy"]
        name = escape(Path(analogies).name)
        table.add_row(name, "3CosAdd accuracy", f"{r['three_cos_add']:.3f}", f"{r['covered']}/{r['questions']}")
        table.add_row(name, "3CosMul accuracy", f"{r['three_cos_mul']:.3f}", f"{r['covered']}/{r['questions']}")
    return table


@app.command()
def evaluate(
    out_dir: OutDirArg,
    wordsim: Annotated[
        Optional[list[Path]],
        typer.Option(metavar="<file>", help="Word-similarity file (word1<TAB>word2<TAB>score); repeatable."),
    ] = None,
    dictionary: Annotated[
        Optional[Path],
        typer.Option(
            help="Bilingual dictionary: zh<TAB>en or MUSE's 'zh en' per line, several lines per word allowed."
        ),
    ] = None,
    csls: Annotated[
        int, typer.Option(min=0, help="Neighbours of CSLS retrieval, reported beside cosine (0: cosine only).")
    ] = 10,
    analogies: Annotated[
        Optional[Path],
        typer.Option(
            "--analogy", help="Analogy questions 'a b c d' per line (a is to b as c is to d; ':' lines are sections)."
        ),
    ] = None,
    json_out: JsonOut = None,
):
    """Score a matrix in one table: word similarity, bilingual lexicon induction, word analogy.

    Word similarity: Spearman rho over covered pairs, also over pairs touching filled rows. Lexicon
    induction the MUSE way: P@1/5/10 by cosine and by CSLS, over covered words and over all
    dictionary words. Analogy: 3CosAdd and 3CosMul accuracy over covered questions."""
    from xlembed.config import require_input
    from xlembed.evaluate import evaluate as run_evaluation
    from xlembed.io import write_json_atomic

    if not wordsim and dictionary is None and analogies is None:
        fail("nothing to evaluate: give --wordsim FILE, --dictionary FILE and/or --analogy FILE")
    for path in [*(wordsim or []), *([dictionary] if dictionary else []), *([analogies] if analogies else [])]:
        require_input(path)
    result = run_evaluation(out_dir, wordsim or [], dictionary, csls, analogies)
    out.print(quality_table(result, out_dir, dictionary, analogies))
    if json_out is not None:
        write_json_atomic(json_out, result)


@app.command("evaluate-alignment")
@config_command("align")
def evaluate_alignment(
    gold: Annotated[
        Path,
        typer.Option(
            help="Directory with train.zh (segmented), train.en and train.align (zhIndex-enIndex, -P = possible)."
        ),
    ],
    work: Work,
    config: Config,
    json_out: JsonOut = None,
    quiet: Quiet = False,
):
    """Score word alignment against gold links: AER, precision and recall for each symmetrization.

    The gold pairs are aligned together with WORK/corpus.* (run `xlembed tokenize` first) and only they are scored."""
    from xlembed.evaluate import evaluate_alignment as run_evaluation
    from xlembed.io import write_json_atomic
    from xlembed.run import prepared

    work_dir = WorkDir(work)
    with prepared(config, ("align",), work_dir, command="xlembed evaluate-alignment"):
        result = run_evaluation(gold, work_dir, config.align, Reporter(quiet))
    table = Table(
        title=f"alignment of {result['gold_pairs']} gold pairs (aligned with {result['corpus_pairs']:,} corpus pairs)"
    )
    for column in ("links", "AER", "precision", "recall"):
        table.add_column(column, justify="right", overflow="fold")
    table.add_column("symmetrization", justify="left", overflow="fold")
    for method, s in result["scores"].items():
        table.add_row(f"{s['links']:,}", f"{s['aer']:.3f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", method)
    out.print(table)
    if json_out is not None:
        write_json_atomic(json_out, result)
