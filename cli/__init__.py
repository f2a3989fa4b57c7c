"""xlembed's command line (Typer): parses options, calls xlembed, prints."""
