"""xlembed's command line (Typer): parses options, calls xlembed, prints."""
import os

# Typer reads TERMINAL_WIDTH once, at import, and ends in a traceback on anything but a whole number (and draws
# nothing at 0): such a value is ignored, as Rich ignores a COLUMNS it cannot use
if not os.environ.get("TERMINAL_WIDTH", "80").strip().isdigit() or int(os.environ.get("TERMINAL_WIDTH", "80")) < 1:
    os.environ.pop("TERMINAL_WIDTH", None)
