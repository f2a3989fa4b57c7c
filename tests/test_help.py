"""Help and version output as a user reads it: at any width, no Typer type names, no cut words."""

import re

import pytest
from typer import rich_utils
from typer.main import get_command
from typer.testing import CliRunner

import xlembed
from xlembed.cli.main import app

COMMANDS = sorted(get_command(app).commands)


def help_text(width: int, *args: str) -> str:
    """What `COLUMNS=width xlembed ARGS --help` prints (Typer reads TERMINAL_WIDTH once, at import: set here)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rich_utils, "MAX_WIDTH", width)
        result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_width_is_the_one_asked_for():
    assert max(len(line) for line in help_text(200, "run").splitlines()) > 150
    assert max(len(line) for line in help_text(80, "run").splitlines()) == 80


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_reads_well_at_any_width(command, width):
    text = help_text(width, *([command] if command else []))
    assert max(len(line) for line in text.splitlines()) <= width
    assert "<bool>" not in text and "list[" not in text  # Typer's type names
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage  # arguments as OUT_DIR, not {out_dir}
    click_command = get_command(app).commands.get(command)
    for param in click_command.params if click_command else []:
        for choice in getattr(param.type_descriptor, "choices", None) or ():
            assert str(getattr(choice, "value", choice)) in text, f"--{param.name}: choice {choice} cut"


@pytest.mark.parametrize("width", [40, 60, 79, 80, 120])
def test_every_option_name_is_whole_at_any_width(width):
    """Rich's tables cut long names ("--distill-…") under 80 columns; there the help is click's plain layout."""
    group = get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None) or {None: command}  # `xlembed work …`
        for sub, click_command in subcommands.items():
            text = help_text(width, name, *([sub] if sub else []))
            for param in click_command.params:
                for flag in (o for o in param.opts if o.startswith("--")):
                    assert re.search(re.escape(flag) + r"(?![\w-])", text), f"{name} {sub or ''}: {flag} cut at {width}"


def test_the_argument_is_named_in_capitals_in_usage_lines():
    assert re.search(r"Usage: xlembed neighbors \[OPTIONS\] OUT_DIR WORD", help_text(200, "neighbors"))


def test_run_help_groups_options_by_stage():
    text = help_text(200, "run")
    panels = re.findall(r"─ (\w+ options|Options) ─", text)
    assert panels == [
        "Options",
        "Tokenize options",
        "Encode options",
        "Align options",
        "Project options",
        "Write options",
        "Executor options",
    ]


def test_docstring_paragraphs_are_reflowed_not_broken_mid_sentence():
    text = help_text(200, "run")
    assert "shard by shard (only per-word sums travel back" in text


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    result = CliRunner().invoke(app, [flag])
    assert result.exit_code == 0 and result.output == f"xlembed {xlembed.__version__}\n"


def test_shell_completion_is_offered_and_completes_choices():
    assert "--install-completion" in help_text(200)
    result = CliRunner().invoke(
        app,
        [],
        env={"_XLEMBED_COMPLETE": "complete_bash", "COMP_WORDS": "xlembed align --symmetrization g", "COMP_CWORD": "3"},
        prog_name="xlembed",
    )
    assert result.output.split() == ["grow-diag-final-and"]
