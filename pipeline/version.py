"""xlembed's version (a leaf module: records, outputs and the CLI read it without importing the package face)."""
__version__ = "0.5.0"
