"""Shared plumbing of the `xlembed` command (as spaCy's cli/_util.py): the
Typer app, one-line errors, progress display, stage summaries, and the
options generated from the config declarations in xlembed.config."""
import errno
import inspect
import os
import re
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer import _click as click  # Typer's own copy of click: its exceptions and parameter sources
from typer.core import TyperGroup

from xlembed.config import Layer, all_fields, base_type, default_config_path, flag_name, load_config, select_fields
from xlembed.errors import XlembedError
from xlembed.progress import LogTask, Reporter, err  # noqa: F401  (the progress display lives in xlembed.progress)
from xlembed.version import __version__

out = Console(soft_wrap=True, highlight=False)


def fail(message: str, code: int = 2):
    """One line `error: …` on stderr, then exit."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise SystemExit(code)


OPTION_NAME = re.compile(r"(?<![\w.-])[a-z]+\.[a-z0-9_]+\b")  # declared ones only: `encode.json` stays


def flags_for_options(message: str) -> str:
    """A library error names an option as `table.option` (`encode.layer`,
    as in the TOML file and in Python); on the command line it is the flag."""
    flags = {f"{stage}.{f.name}": f"--{flag_name(f)}" for stage, f in all_fields()}
    return OPTION_NAME.sub(lambda m: flags.get(m.group(0), m.group(0)), message)


def _os_error_message(e: OSError) -> str:
    """The path and the reason. An error without a path, when standard output
    cannot take what is left to write, is standard output's."""
    where = e.filename if e.filename is not None else ""
    if where == STDOUT:
        sys.stdout = open(os.devnull, "w")  # nothing more to write there at exit
    reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{where}: {reason}" if where else reason


STDOUT = "standard output"


class NamedStdout:
    """sys.stdout whose write errors name it (a full disk under `> file`
    otherwise gives an error without a path)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            e.filename = e.filename or STDOUT
            raise

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            e.filename = e.filename or STDOUT
            raise

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Interrupted(Exception):
    """Ctrl-C, carried past Typer, which turns a KeyboardInterrupt into a silent exit 130."""


class Terminated(BaseException):
    """SIGTERM (`kill`, a batch system's time limit), raised in the main thread as Ctrl-C raises
    KeyboardInterrupt: the same unwinding (temporaries removed, previous outputs kept, a Ray session
    left), then one line and exit 143. A BaseException, so no `except Exception` swallows it."""


def _terminated(signum, frame):
    raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM raises Terminated, unless someone (an embedding program) set a handler of its own."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL, _terminated
    ):
        signal.signal(signal.SIGTERM, _terminated)


def _value_name(param) -> str | None:
    """A metavar that wraps at spaces in a narrow help column: choices as
    `<a | b | c>` (not cut mid-word at 80 columns), ranges by their type
    (`<int>`), flags with none (Typer's own show `<bool>`)."""
    desc = param.type_descriptor
    if desc.is_choice:
        return "<" + " | ".join(str(getattr(c, "value", c)) for c in desc.choices) + ">"
    if getattr(param, "is_flag", False):
        return ""
    if desc.is_list:
        return f"<{param.bare_type().removeprefix('list[').removesuffix(']').lower()}>"
    if desc.is_ranged:
        return f"<{desc.ranged_type_name}>"
    return None


RICH_HELP_MIN_WIDTH = 80  # under it Rich's tables cut long option names ("--distill-…"): click's plain help


def help_width() -> int:
    """The width Typer's Rich help is drawn at: TERMINAL_WIDTH (read by Typer at import), else the terminal's."""
    from rich.console import Console
    from typer import rich_utils

    return rich_utils.MAX_WIDTH or Console().width


def _plain_when_narrow(command) -> None:
    """Under RICH_HELP_MIN_WIDTH columns, click's own help layout (it wraps option names, never cuts them;
    50 columns at least, as click draws it); decided when the help is drawn, so start-up imports nothing more."""
    if hasattr(command, "rich_help_mode"):
        return
    command.rich_help_mode, own_format_help = command.rich_markup_mode, command.format_help

    def format_help(ctx, formatter):
        width = help_width()
        command.rich_markup_mode = None if width < RICH_HELP_MIN_WIDTH else command.rich_help_mode
        formatter.width = max(width - 2, 50)  # click's own rule, from the width Rich would have used
        return own_format_help(ctx, formatter)

    command.format_help = format_help


def _tidy_help(command) -> None:
    """Help as a user reads it at any width: docstring paragraphs reflowed
    (Typer keeps their line breaks), no `<bool>` on --help, choices that wrap
    between words, arguments in usage lines as OUT_DIR, not {out_dir}, and
    in a narrow terminal click's plain layout."""
    _plain_when_narrow(command)
    if command.help:
        command.help = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(command.help).split("\n\n"))
    own_help_option = command.get_help_option

    def get_help_option(ctx):
        option = own_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():  # a group's commands (`xlembed work`)
        if sub is not command:
            _tidy_help(sub)
    for param in command.params:
        if param.param_type_name == "argument":
            name = param.name.upper() + ("..." if param.nargs != 1 else "")
            param.get_usage_pieces = lambda ctx, name=name, required=param.required: [name if required else f"[{name}]"]
        if param.metavar is None and _value_name(param) is not None:
            param.display_type_rich = lambda ctx, value_name=_value_name(param): value_name


class OneLineErrors(TyperGroup):
    """Every usage error (Typer's and click's own too), every XlembedError and
    every OS error becomes one line `error: …` on stderr with exit code 2,
    whatever the terminal width; Ctrl-C is 'interrupted', exit 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted()

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not isinstance(sys.stdout, NamedStdout):
            sys.stdout = NamedStdout(sys.stdout)
        _tidy_help(self)  # here: Typer adds its completion options after __init__
        handle_sigterm()
        try:
            code = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.NoArgsIsHelpError as e:  # `xlembed` alone: the help, as click does
            e.show()
            raise SystemExit(e.exit_code)
        except click.ClickException as e:
            message = e.format_message().replace("\n", " ")
            command = e.ctx.command_path if getattr(e, "ctx", None) is not None else "xlembed"
            fail(f"{message} (see `{command} --help`)", e.exit_code)
        except (typer.Abort, Interrupted):
            fail("interrupted", 130)
        except Terminated:
            fail("terminated", 128 + signal.SIGTERM)
        except XlembedError as e:
            fail(flags_for_options(str(e)))
        except OSError as e:
            try:
                sys.stdout.flush()  # what is left of a failed write fails again, here, not at exit
            except OSError:
                pass
            if e.errno == errno.EPIPE:  # `xlembed … | head`
                sys.stderr = open(os.devnull, "w")
                raise SystemExit(1)
            fail(_os_error_message(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        if not standalone_mode:
            return code
        raise SystemExit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="xlembed",
    cls=OneLineErrors,
    help="Build a Chinese word-embedding matrix from an English–Chinese parallel corpus and an English BERT.\n\n"
         "Stages, in order: tokenize → encode → align → project → write; `run` does them all.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def summarize(stage: str, record: dict, quiet: bool) -> None:
    """One line per stage: what it counted and how long it took."""
    if quiet:
        return
    if record.get("skipped"):
        seconds = record.get("seconds")
        earlier = f"; reused the result an earlier command computed in {seconds:.1f} s" if seconds is not None else ""
        err.print(f"[green]✔[/green] [bold]{stage}[/bold]: up to date, skipped{earlier} (--force recomputes)")
        return
    if record.get("resumed_at_shard"):
        err.print(f"  {stage}: resumed after {record['resumed_at_shard']} completed shard(s)")
    counts = record.get("counts", {})
    text = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items() if isinstance(v, int))
    seconds = record.get("seconds", {})
    if isinstance(seconds, dict):
        seconds = seconds.get(stage, 0.0)
    err.print(f"[green]✔[/green] [bold]{stage}[/bold] ({seconds:.1f} s): {escape(text)}")
    filled_by = {k: v for k, v in (counts.get("filled_by") or {}).items() if v}
    if filled_by:  # what --oov gave: a fallback (context to chars, chars to random) shows here
        err.print("  filled rows by source: " + ", ".join(f"{k} {v:,}" for k, v in filled_by.items()))
    if record.get("distill"):  # write --distill
        err.print(f"  {distilled_text(record['distill'])}")
    if record.get("context_training"):  # write --context with --context-epochs
        trained = record["context_training"]
        loss = trained["loss"]
        err.print(f"  {trained['rows']:,} rows trained on --context's text ({trained['words']:,} words, "
                  f"{trained['epochs']} epoch(s) of skip-gram): loss {loss[0]:.4g} → {loss[-1]:.4g}")
    timing = record.get("timing")
    if timing:
        host = ", ".join(f"{k} {v:.1f}" for k, v in timing.items() if k not in ("forward", "host"))
        err.print(f"  forward (model + pooling) {timing['forward']:.1f} s, host {timing['host']:.1f} s ({host})"
                  f"{precision_note(record)}")


def distilled_text(distilled: dict, what: str = "rows") -> str:
    """'rows distilled over N sentence pairs, S steps, loss a → b': a distillation's record (write, transplant),
    with a warning where the loss rose (the output is still written: it is what was asked for)."""
    first, last = (f"{distilled[key]:.4g}" for key in ("loss_first", "loss_last"))
    text = (f"{what} distilled over {distilled['pairs']:,} sentence pairs, {distilled['steps']:,} steps, "
            f"loss {first} → {last}")
    if distilled.get("targets") == "teacher":  # write's, where encode kept no sentence embeddings
        text += " (the model ran again for the targets: `xlembed encode --force` keeps them)"
    if float(last) > float(first):  # as printed: a rise too small to show is no rise
        hint = "; a lower --distill-layers-lr may help" if distilled.get("layers_lr") else ""
        text += f" [yellow](warning: the loss rose, so the training made the fit worse{hint})[/yellow]"
    return text


def precision_note(record: dict) -> str:
    """'; bf16: matmul speed-up 2.31x': the encoder's precision and what chose it, where the record says."""
    if "precision_used" not in record:
        return ""
    decided = record.get("precision_decided_by") or {}
    speedup = f" {decided['bf16_speedup']:.2f}x" if decided.get("bf16_speedup") is not None else ""
    why = f": {decided['by']}{speedup}" if decided.get("by") else ""
    return f"; {record['precision_used']}{why}"


def print_table(table: Table) -> None:
    """A table on stdout: drawn with a box on a terminal; piped, plain
    tab-separated lines (a header, then the rows), whole, for cut and awk."""
    if out.is_terminal:
        out.print(table)
        return
    print("\t".join(str(c.header) for c in table.columns))
    for row in zip(*(c.cells for c in table.columns)):
        print("\t".join(Text.from_markup(str(cell)).plain for cell in row))


def version_callback(value: bool):
    if value:
        print(f"xlembed {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", "-V", callback=version_callback, is_eager=True, metavar="",
                                               help="Print the version and exit.")] = False):
    pass


# --- options shared by commands -----------------------------------------------------------------

Work = Annotated[Path, typer.Option("--work", "-w", help="Directory of intermediate artifacts.", file_okay=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output directory (replaced as a whole when the job succeeds; "
                                                       "only an earlier xlembed output is ever replaced).")]
OutDirArg = Annotated[Path, typer.Argument(help="An output directory of `xlembed run` or `xlembed write`.")]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        "-f",
        metavar="",
        help="Recompute even when the work directory's records show the result is up to date.",
    ),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", metavar="", help="No progress or summaries (errors are still printed).")
]
JsonFlag = Annotated[
    bool, typer.Option("--json", metavar="", help="Print the result as JSON on stdout (for scripts and CI).")
]
ConfigFile = Annotated[Optional[str], typer.Option(
    "--config", "-c", metavar="FILE",
    help="TOML file setting any option, one table per stage; 'default' is the shipped configs/default.toml. "
         "Flags given on the command line override it.", show_default="none: the defaults shown here")]


def _typer_option(stage: str, f) -> Any:
    """The Typer option of one config field, from its declaration."""
    kind = base_type(f)
    if kind is Layer:  # given as its text; parsed with the other options (config.coerce)
        kind = str
    annotation = Optional[kind] if "None" in f.type else kind
    flag = flag_name(f)
    decls = [f"--{flag}/--no-{flag}"] if kind is bool else [f"--{flag}"]
    help_text = f.metadata["help"]
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None or hi is not None:
        bounds = [f"more than {lo}" if f.metadata.get("min_exclusive") else f"at least {lo}"] if lo is not None else []
        bounds += [f"at most {hi}"] if hi is not None else []
        help_text += f" ({' and '.join(bounds)})"
    shown = f.metadata.get("shown")
    show_default: bool | str = shown if shown else f.default is not None
    if kind is bool:
        show_default = f"--{flag}" if f.default else f"--no-{flag}"
    elif isinstance(f.default, Enum) and not shown:
        show_default = True
    return Annotated[annotation, typer.Option(*decls, help=escape(help_text), show_default=show_default,
                                              metavar="" if kind is bool else None,
                                              rich_help_panel=f"{stage.capitalize()} options")]


def _resolve_config_file(value: str | None) -> Path | None:
    if value is None:
        return None
    return default_config_path() if value == "default" else Path(value)


def config_command(*selectors: str) -> Callable:
    """Give a command the options of whole stages ("encode") or single
    fields ("encode.model"), generated from their declarations, plus
    --config. The command receives `config`: defaults, then the TOML file,
    then the flags given on the command line (not validated yet)."""
    chosen = select_fields(*selectors)
    names = [f.name for _, f in chosen]
    assert len(set(names)) == len(names), f"an option name is declared twice: {names}"

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "config"
        ]
        generated = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=str(f.default) if isinstance(f.default, Layer) else f.default,
                annotation=_typer_option(stage, f),
            )
            for stage, f in chosen
        ]
        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        config_file = inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile
        )

        def command(ctx: typer.Context, config_file: str | None = None, **kwargs):
            overrides: dict[str, dict] = {}
            for stage, f in chosen:
                value = kwargs.pop(f.name)
                if ctx.get_parameter_source(f.name) not in (
                    click.core.ParameterSource.DEFAULT,
                    click.core.ParameterSource.DEFAULT_MAP,
                ):
                    overrides.setdefault(stage, {})[f.name] = value
            return func(config=load_config(_resolve_config_file(config_file), overrides), **kwargs)

        command.__name__, command.__doc__, command.__module__ = func.__name__, func.__doc__, func.__module__
        command.__signature__ = signature.replace(parameters=[context, *own, config_file, *generated])
        return command

    return decorate

