"""The errors a user can fix: one class per kind of bad input or state, all under ``BenchError``.

The command line prints a ``BenchError`` as one line (``BENCH_DEBUG=1`` shows the traceback) and
lets every other exception through with its traceback, because anything else is a bug. Every
message names the problem and the fix. The classes also derive from the built-in exception a
Python caller would expect (``ValueError`` for bad values, ``RuntimeError`` for bad state).
"""

from __future__ import annotations


class BenchError(Exception):
    """Bad input or state that the user can fix; the message names the problem and the fix."""


class ConfigError(BenchError, ValueError):
    """A preset, an override or a command-line option is invalid."""


class DeviceError(BenchError, ValueError):
    """The requested device does not exist on this machine."""


class DataError(BenchError, ValueError):
    """The data tree is not where or what it should be."""


class ModelError(BenchError, ValueError):
    """An architecture, its options, its input or its feature taps are invalid."""


class AttackError(BenchError, ValueError):
    """An attack was asked for something it cannot do (bad eps, unknown name, missing labels)."""


class DefenseError(BenchError, ValueError):
    """A defense cannot be found, built, or was given (or returned) bad data."""


class LossError(BenchError, ValueError):
    """The inputs or hyper-parameters of a loss are invalid."""


class CheckpointError(BenchError, RuntimeError):
    """A checkpoint is missing, corrupt or does not match its metadata."""


class StoreError(BenchError, RuntimeError):
    """A cache or result file of a run cannot be used (in use, incomplete, unreadable)."""


class RunDirError(BenchError, RuntimeError):
    """A run directory is busy, read-only, or holds no finished run."""


class DiskFullError(RunDirError):
    """A file could not be written because its disk (or the user's quota) is full."""
