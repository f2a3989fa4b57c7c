"""xlembed's stages, each a function from input artifacts to output artifacts."""
__version__ = "0.1.0"
