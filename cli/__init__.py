"""xlembed's command line (Typer): parses options, calls pipeline/, prints."""
