"""`xlembed work list` and `xlembed work clean`: see and remove work directories (as `pip cache`)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ._util import app, err, print_table

work_app = typer.Typer(
    help="See and clean work directories (intermediate artifacts; OUT.work beside OUT by default).",
    no_args_is_help=True,
)
app.add_typer(work_app, name="work")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@work_app.command("list")
def list_(
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help="Work directories, or folders to search (3 levels down).", show_default="the current directory"
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Work directories with their size, the stages they hold, and anything in them xlembed did not write."""
    from xlembed.workspace import find_work_dirs, usage

    found = [d for p in (paths or [Path(".")]) for d in find_work_dirs(p)]
    usages = [usage(d) for d in found]
    if json_out:
        print(
            json.dumps(
                [
                    {
                        "path": str(u.root),
                        "bytes": u.bytes,
                        "stages": list(u.stages_done),
                        "others": list(u.others),
                        "entries": [e._asdict() for e in u.entries],
                    }
                    for u in usages
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    if not usages:
        err.print("no work directories found")
        return
    table = Table(box=box.SIMPLE)
    for column in ("work directory", "size", "stages", "not xlembed's (kept)"):
        table.add_column(column, justify="right" if column == "size" else "left", overflow="fold")
    for u in usages:
        table.add_row(escape(str(u.root)), _mb(u.bytes), " ".join(u.stages_done) or "-", escape(" ".join(u.others)))
    print_table(table)
    if len(usages) > 1:
        err.print(f"{len(usages)} work directories, {_mb(sum(u.bytes for u in usages))}")


@work_app.command()
def clean(
    works: Annotated[list[Path], typer.Argument(help="Work directories to clean.")],
    vectors_only: Annotated[
        bool,
        typer.Option(
            "--vectors-only",
            help="Remove only WORK/vectors (the largest part): "
            "`xlembed write` still works; `xlembed run` encodes again.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Say what would be removed; remove nothing.")
    ] = False,
):
    """Remove what xlembed wrote into work directories, and each directory once empty.

    Only xlembed's own files are removed; anything else stays, with its directory. Outputs (--out) do not
    need their work directory; keeping it lets a rerun with other options skip the stages they do not change."""
    from xlembed.workspace import clean as clean_work

    for work in works:
        removed = clean_work(work, vectors_only=vectors_only, dry_run=dry_run)
        names = ", ".join(e.name for e in removed.entries) or "nothing"
        verb = "would remove" if dry_run else "removed"
        err.print(
            f"[green]✔[/green] {escape(str(work))}: {verb} {_mb(removed.bytes)} ({escape(names)})"
            + (f"; kept what xlembed did not write: {escape(', '.join(removed.others))}" if removed.others else "")
        )
