"""xlembed's command line (Typer): parses options, calls xlembed, prints."""
import os

# Typer reads TERMINAL_WIDTH once, at import, and ends in a traceback on anything but a whole number (and draws
# nothing at 0): such a value is ignored, as Rich ignores a COLUMNS it cannot use
_width = os.environ.get("TERMINAL_WIDTH")
if _width is not None and not (_width.strip().isdigit() and int(_width) > 0):
    del os.environ["TERMINAL_WIDTH"]
