"""The one error type xlembed raises for what a user can fix. Imports nothing of xlembed."""


class XlembedError(Exception):
    """A user-facing error: printed as one line, exit code 2."""
