"""Files that are never seen half-written, and locks that two processes cannot both hold.

Every file a stage writes goes through ``atomic_write``: the content goes to a temporary name
unique to this process in the same folder, then ``os.replace`` puts it in place in one step. A
process killed mid-write leaves at most a stray ``.<name>.XXXXXXXX.tmp`` file (``TEMPORARY``;
``stray_temporaries`` finds them for the next command to remove), never a torn result, and two
processes never share a temporary name. A write that fails (a full disk, a read-only folder, an
I/O error) removes its temporary file and raises one line naming the path (``write_error``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.errors import DiskFullError, RunDirError

#: the name of ``atomic_write``'s temporary file of ``<name>``: ``.<name>.XXXXXXXX.tmp``, where
#: ``XXXXXXXX`` are ``tempfile.mkstemp``'s eight random characters
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")

# Files are created with the permissions any other file would get (mkstemp makes them private).
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary path beside ``path``, then rename it to ``path``.

    Raises ``RunDirError`` with one line naming ``path`` when it cannot be written (read-only,
    an I/O error; ``DiskFullError`` for a full disk or quota), the temporary file removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(path, err) from err
    os.close(handle)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(Path(source).read_bytes()))


def stray_temporaries(folder: str | Path) -> list[Path]:
    """The temporary files of ``atomic_write`` left in ``folder`` (not below it) by killed
    processes: only names of the ``TEMPORARY`` pattern, and only plain files."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if TEMPORARY.match(p.name) and p.is_file())


#: errno of a write that found the disk (or the quota) full, and of a folder that cannot be
#: written: every store of the project reports them alike
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(path: str | Path, err: OSError) -> RunDirError:
    """One line naming ``path`` for a failed write (raise it ``from err``)."""
    path = Path(path)
    if err.errno in DISK_FULL:
        return DiskFullError(
            f"disk full while writing {path}; free space and re-run (finished work is kept)"
        )
    if err.errno in READ_ONLY:
        return RunDirError(
            f"cannot write {path}: {path.parent} is read-only; choose a writable folder (--out DIR)"
        )
    if err.errno == errno.EIO:
        return RunDirError(
            f"I/O error while writing {path}; check the disk and re-run (finished work is kept)"
        )
    return RunDirError(
        f"cannot write {path} ({err.strerror or err}); free space or choose --out DIR"
    )


@contextlib.contextmanager
def exclusive_lock(lock_file: str | Path, busy: str) -> Iterator[None]:
    """Hold ``lock_file`` for the duration; a second holder stops at once with one line, ``busy``
    followed by who holds it.

    The lock is an ``flock`` on an open file, so the system releases it when the holding process
    dies however it dies: there are no stale locks to clean up.
    """
    lock_file = Path(lock_file)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_file, "a+")  # noqa: SIM115 - held open for the whole block
    except OSError as err:
        raise write_error(lock_file, err) from err
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirError(f"{busy} (held by {holder})") from err
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"bench process {os.getpid()}")
            handle.flush()
        except OSError as err:
            raise write_error(lock_file, err) from err
        yield
    finally:
        handle.close()
