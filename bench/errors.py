"""Errors that carry a one-line message for the user (the CLI prints them without a traceback)."""


class BenchError(Exception):
    """Bad input or state that the user can fix; the message names the problem and the fix."""
