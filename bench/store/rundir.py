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

A run first fills the caches, then stages the published files in a sibling folder and publishes
them at the very end: a run that fails or is refused leaves a finished run's files untouched, and
results that the current config does not ask for (an eps removed, a defense dropped, an alpha
changed) stay in the cache but never reach the published tables. One process at a time works on
a run directory (``lock``); taking the lock removes what killed commands left behind.

Publishing switches the run in one step. Each publication is a folder of its own,
``<run>/.published/<id>/``; ``<run>/.published/current`` is a symbolic link to the one in force,
and the published names (``<run>/metrics.csv``, ``tables/``, ...) are symbolic links into
``.published/current/``, made once. A new publication is moved in whole (one rename), then
``current`` is switched to it by renaming a new link over the old one (``os.replace``, atomic),
then the old publication is removed: whatever moment a process is killed at, every reader sees
the old publication or the new one. A run published by older code (plain files) is adopted by
its next publication first: its files are linked (or copied) into a publication of their own and
each plain name is swapped for its link in one step, content unchanged. Publishing needs a file
system with symbolic links; without them a command that publishes stops at once with one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import CONFIG_FILE
from bench.errors import RunDirError
from bench.files import atomic_write, exclusive_lock, stray_temporaries, write_error

METRICS_FILE, RECORDS_FILE, QUALITATIVE_FILE = "metrics.csv", "records.csv", "qualitative.npz"
CHECKS_FILE = "checks.csv"
REPORT_FILE = "report.md"
#: the published rows: what ``bench report`` reads and carries into its publication unchanged
PUBLISHED_ROWS = (CONFIG_FILE, METRICS_FILE, RECORDS_FILE, CHECKS_FILE, QUALITATIVE_FILE)
PUBLISHED_DIRS = ("tables", "plots")
#: every published name: a symbolic link ``<run>/<name> -> .published/current/<name>``
PUBLISHED = (*PUBLISHED_ROWS, REPORT_FILE, *PUBLISHED_DIRS)
PUBLICATIONS, CURRENT = ".published", "current"
#: a link being put in place: ``.<name>.<pid>.link`` (a leftover of a kill is removed later)
_NEW_LINK = re.compile(r"^\.(?P<name>.+)\.[0-9]+\.link$")
#: a published folder moved aside while its link is put in place, where folders cannot be swapped
_ASIDE = re.compile(r"^\.(?P<name>.+)\.[0-9]+\.aside$")
#: errors of a file system without symbolic links
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

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
        """Hold the run directory; a second ``bench`` command on it stops at once. Holding it,
        the leftovers of killed commands are removed first (``tidy``)."""
        busy = (
            f"run directory {self.path} is in use by another bench command; wait for it to "
            "finish or choose another folder (--out DIR)"
        )
        with exclusive_lock(self.path / ".lock", busy):
            self.tidy()
            yield self

    def tidy(self) -> None:
        """Remove what killed commands left (the caller holds the lock): staging folders,
        ``atomic_write``'s temporary files in the run, ``models/`` and ``cache/`` (``aes/`` is
        the AE store's to tidy: ``aeset_files.remove_strays``), half-placed links, and
        publications not in force."""
        self._require_own_publications()
        parent = self.path.resolve().parent
        for stale in parent.glob(f".{self.path.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        folders = [self.path]
        for sub in (self.models, self.cache):
            folders += [Path(root) for root, _, _ in os.walk(sub)]
        for folder in folders:
            for tmp in stray_temporaries(folder):
                tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            for entry in self.path.iterdir():
                if (swapped := _NEW_LINK.match(entry.name)) and entry.is_symlink():
                    entry.unlink(missing_ok=True)
                elif swapped and entry.is_dir() and (self.path / swapped["name"]).is_symlink():
                    shutil.rmtree(entry)  # a folder swapped for its link, not yet removed
                elif (aside := _ASIDE.match(entry.name)) and entry.is_dir():
                    home = self.path / aside["name"]  # killed between a folder's two renames
                    if os.path.lexists(home):
                        shutil.rmtree(entry)
                    else:
                        os.replace(entry, home)
        with contextlib.suppress(OSError):
            self._drop_old_publications()

    def _require_own_publications(self) -> None:
        """Stop with one line when ``.published`` is a link: publishing removes every entry of
        it but the one in force, so a shared run directory could otherwise make it empty any
        folder the link names."""
        publications = self.path / PUBLICATIONS
        if publications.is_symlink():
            raise RunDirError(
                f"{publications} is a link to {os.readlink(publications)}, not a folder of the "
                "run; a run directory cannot point bench at other folders: remove the link, or "
                "choose another --out DIR"
            )

    def require_links(self) -> None:
        """Stop with one line, before any work, when the run's file system has no symbolic
        links (publishing needs them)."""
        probe = self.path / PUBLICATIONS / f".probe.{os.getpid()}.link"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.unlink(missing_ok=True)
            os.symlink(CURRENT, probe)
            probe.unlink()
        except OSError as err:
            if err.errno in _NO_LINKS:
                raise _no_links(self.path) from err
            raise write_error(probe, err) from err

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh sibling folder to build the published files in; ``publish`` moves it in.

        A sibling (not a subfolder) so that paths relative to the run resolve alike from both.
        The caller holds the lock, whose ``tidy`` removed the staging folders of killed runs.
        """
        folder = self.path.resolve().parent / f".{self.path.name}.staging-{os.getpid()}"
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

    def stage_rows(self, staged: Path) -> None:
        """Link (or copy) the published rows into ``staged`` unchanged (``bench report``
        publishes them again beside its new tables, plots and report)."""
        for name in PUBLISHED_ROWS:
            if (self.path / name).is_file():
                try:
                    _link_or_copy(self.path / name, staged / name)
                except OSError as err:
                    raise write_error(staged / name, err) from err

    def publish(self, staged: Path) -> None:
        """Make the staged folder the run's publication in one step (see the module's doc); the
        old publication is removed after the switch."""
        try:
            self._adopt()
            publication = self._new_publication()
            _step("move the staged folder in", publication)
            os.replace(staged, publication)
            self._switch(publication.name)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise write_error(self.path / PUBLICATIONS, err) from err
            raise RunDirError(
                f"cannot publish into {self.path} ({err.strerror}); choose a writable --out DIR"
            ) from err
        with contextlib.suppress(OSError):  # a leftover is removed by the next command
            self._drop_old_publications()

    def _adopt(self) -> None:
        """Make the published names links into ``.published/current`` (the content every reader
        sees unchanged at each step): a run without a publication in force whose names hold
        files (published by older code, or copied following links) gets them as a publication
        of their own first."""
        publications = self.path / PUBLICATIONS
        if not publications.is_dir():
            _step("make the publications folder", publications)
            publications.mkdir(parents=True)
        current = publications / CURRENT
        if not (current.is_symlink() and current.is_dir()):
            present = [name for name in PUBLISHED if (self.path / name).exists()]
            if present:
                adopted = self._new_publication()
                _step("make the adopted publication", adopted)
                adopted.mkdir()
                for name in present:
                    _step("copy into the adopted publication", adopted / name)
                    _link_or_copy(self.path / name, adopted / name)
                self._switch(adopted.name)
        for name in PUBLISHED:
            target = f"{PUBLICATIONS}/{CURRENT}/{name}"
            link = self.path / name
            if not (link.is_symlink() and os.readlink(link) == target):
                _place_link(target, link)

    def _new_publication(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in itertools.count():
            path = self.path / PUBLICATIONS / f"{stamp}-{os.getpid()}-{n}"
            if not os.path.lexists(path):
                return path
        raise AssertionError  # unreachable

    def _switch(self, name: str) -> None:
        """Point ``.published/current`` at the publication ``name``: the one step that switches
        what every reader sees."""
        _place_link(name, self.path / PUBLICATIONS / CURRENT)

    def _drop_old_publications(self) -> None:
        """Remove every entry of ``.published`` but ``current`` and the publication it names."""
        publications = self.path / PUBLICATIONS
        if not publications.is_dir():
            return
        current = publications / CURRENT
        keep = {CURRENT, os.readlink(current) if current.is_symlink() else CURRENT}
        for entry in sorted(publications.iterdir()):
            if entry.name in keep:
                continue
            _step("remove an old publication", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)


def _step(what: str, path: Path) -> None:
    """Called before each file-system step of publishing (tests stop a publication there)."""


def _no_links(path: Path) -> RunDirError:
    return RunDirError(
        f"{path} is on a file system without symbolic links, which publishing a run needs; "
        "choose --out DIR on another file system"
    )


def _place_link(target: str, link: Path) -> None:
    """Make ``link`` a symbolic link to ``target`` in one step: a new link renamed over the old
    entry (swapped with it when the entry is a folder, which a rename cannot replace)."""
    new = link.with_name(f".{link.name}.{os.getpid()}.link")
    if os.path.lexists(new):
        new.unlink()
    _step("make a link", new)
    try:
        os.symlink(target, new)
    except OSError as err:
        if err.errno in _NO_LINKS:
            raise _no_links(link.parent.parent if link.name == CURRENT else link.parent) from err
        raise
    if link.is_dir() and not link.is_symlink():
        _step("swap a folder for its link", link)
        if _exchange(new, link):
            _step("remove the swapped folder", new)
            shutil.rmtree(new)
            return
        aside = link.with_name(f".{link.name}.{os.getpid()}.aside")  # no swap: two renames
        _step("move a folder aside", link)
        os.replace(link, aside)
        _step("put its link in place", link)
        os.replace(new, link)
        _step("remove the folder moved aside", aside)
        shutil.rmtree(aside)
        return
    _step("put a link in place", link)
    os.replace(new, link)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two entries in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _link_or_copy(source: Path, dest: Path) -> None:
    """``dest`` with ``source``'s content (links followed): files hard-linked where the file
    system allows it, else copied; folders recursively."""
    if source.is_dir():
        shutil.copytree(source, dest, copy_function=_link_or_copy_file)
    else:
        _link_or_copy_file(source, dest)


def _link_or_copy_file(source: str | Path, dest: str | Path) -> None:
    try:
        os.link(os.path.realpath(source), dest)
    except OSError:
        shutil.copy2(source, dest)


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
