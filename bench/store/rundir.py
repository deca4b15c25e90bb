"""The run directory: its layout, its lock, its caches and the publishing of a finished run.

    <run>/config.toml        the config of the last finished run        } published together,
    <run>/metrics.csv        one row per defense x subset x variant     } only when a run (or
    <run>/records.csv        one row per defense x image                } ``bench report``)
    <run>/qualitative.npz    the qualitative grid's arrays              } has finished:
    <run>/checks.csv         warnings of the evaluation's own checks    }
    <run>/tables/ plots/ report.md                                      } never stale, never torn
    <run>/models/            checkpoints (``checkpoints``)              } caches, reused while
    <run>/aes/               AE sets, one HDF5 file each (``aesets``)   } their keys match
    <run>/cache/             every metrics row and image record computed so far, and the grid

A run first fills the caches, then stages the published files in a sibling folder and moves them
in at the very end: a run that fails or is refused leaves a finished run's files untouched, and
results that the current config does not ask for (an eps removed, a defense dropped, an alpha
changed) stay in the cache but never reach the published tables. One process at a time works on
a run directory (``lock``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import RunDirError
from bench.files import atomic_write, exclusive_lock

METRICS_FILE, RECORDS_FILE, QUALITATIVE_FILE = "metrics.csv", "records.csv", "qualitative.npz"
CHECKS_FILE = "checks.csv"
REPORT_FILE = "report.md"
PUBLISHED_DIRS = ("tables", "plots")

log = logging.getLogger(__name__)


class RunDir:
    """A run directory; ``path`` need not exist yet."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    def require_published(self) -> None:
        """Stop with one line unless the folder holds a finished run (before locking it)."""
        if not (self.path / "config.toml").is_file() or not (self.path / METRICS_FILE).is_file():
            raise RunDirError(
                f"{self.path} holds no finished run (no config.toml and metrics.csv); run "
                "bench run --out there first"
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the run directory; a second ``bench`` command on it stops at once."""
        busy = (
            f"run directory {self.path} is in use by another bench command; wait for it to "
            "finish or choose another folder (--out DIR)"
        )
        with exclusive_lock(self.path / ".lock", busy):
            yield self

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh sibling folder to build the published files in; ``publish`` moves them in.

        A sibling (not a subfolder) so that paths relative to the run resolve alike from both.
        Leftovers of killed runs are removed first (the caller holds the lock).
        """
        parent = self.path.resolve().parent
        for stale in parent.glob(f".{self.path.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        folder = parent / f".{self.path.name}.staging-{os.getpid()}"
        try:
            folder.mkdir(parents=True)
        except OSError as err:
            raise RunDirError(
                f"cannot write beside {self.path} ({err.strerror}); choose a writable --out DIR"
            ) from err
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path) -> None:
        """Move the staged files and folders into the run directory, replacing the old ones."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for name in PUBLISHED_DIRS:
                if (staged / name).is_dir():
                    if (self.path / name).exists():
                        os.replace(self.path / name, staged / f"{name}.old")
                    os.replace(staged / name, self.path / name)
            for item in sorted(staged.iterdir()):
                if item.is_file():
                    os.replace(item, self.path / item.name)
        except OSError as err:
            raise RunDirError(
                f"cannot publish into {self.path} ({err.strerror}); choose a writable --out DIR"
            ) from err


# --- tables on disk -----------------------------------------------------------------------------


#: columns that must hold numbers wherever they appear
NUMERIC = ("eps", "miou", "q", "acc", "n_pixels", "image", "d_ae", "d_ta", "d_sa")


def read_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A published CSV table; one line naming the file when it is missing or not a table (a
    required column missing, or text where numbers belong)."""
    if not path.is_file():
        raise RunDirError(f"no {path.name} in {path.parent}; run bench run there first")
    try:
        frame = pd.read_csv(path, dtype={"key": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RunDirError(
            f"{path} is not a readable table ({str(err).splitlines()[0]}); rerun bench run there"
        ) from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RunDirError(
            f"{path} lacks the columns {', '.join(missing)}; it was not written by bench run "
            "(or is damaged): rerun bench run there"
        )
    for column in (c for c in NUMERIC if c in frame.columns):
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError) as err:
            raise RunDirError(
                f"{path} holds text where its column {column!r} needs numbers; it is damaged: "
                "rerun bench run there"
            ) from err
    return frame


def read_cached_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A cache table, or an empty one when it is missing; a damaged cache is moved aside with a
    warning and rebuilt (a cache is never worth stopping a run for)."""
    if not path.is_file():
        return pd.DataFrame(columns=list(columns))
    try:
        return read_table(path, columns)
    except RunDirError as err:
        log.warning("%s; moved it to %s.corrupt and recomputing", err, path.name)
        os.replace(path, path.with_name(path.name + ".corrupt"))
        return pd.DataFrame(columns=list(columns))


def write_table(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file; ``RunDirError`` naming the file when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as err:
        raise RunDirError(f"no {path.name} in {path.parent}; run bench run there first") from err
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:  # torn / foreign
        raise RunDirError(f"{path} is damaged ({err}); rerun bench run there") from err


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a name
            np.savez_compressed(handle, **arrays)

    atomic_write(path, save)
