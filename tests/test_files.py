"""Atomic writes and locks: what every stage relies on to never leave a torn or shared file."""

from __future__ import annotations

import errno
import os
import stat
import tempfile

import pytest

from bench.errors import DiskFullError, RunDirError
from bench.files import atomic_write, atomic_write_text, exclusive_lock, stray_temporaries


def test_atomic_files_get_ordinary_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def half(tmp):
        tmp.write_text("ha")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(RunDirError, match="is read-only; choose a writable folder"):
        atomic_write_text(tmp_path / "a.txt", "x")


def test_a_second_holder_of_a_lock_stops_at_once(tmp_path):
    held = rf"busy \(held by bench process {os.getpid()}\)"
    with (
        exclusive_lock(tmp_path / ".lock", "busy"),
        pytest.raises(RunDirError, match=held),
        exclusive_lock(tmp_path / ".lock", "busy"),
    ):
        pass
    with exclusive_lock(tmp_path / ".lock", "busy"):  # released with its holder
        pass


@pytest.mark.parametrize(
    "code, message",
    [
        (errno.ENOSPC, r"disk full while writing .*a\.txt; free space and re-run \(finished work"),
        (errno.EDQUOT, r"disk full while writing .*a\.txt"),
        (errno.EIO, r"I/O error while writing .*a\.txt; check the disk and re-run"),
    ],
)
def test_a_failed_write_is_one_line_naming_the_path_and_leaves_no_temporary(
    code, message, tmp_path
):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(RunDirError, match=message) as info:
        atomic_write(path, fail)
    assert isinstance(info.value.__cause__, OSError)
    assert (code == errno.EIO) != isinstance(info.value, DiskFullError)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_stray_temporaries_are_only_atomic_writes_own(tmp_path):
    for name in (".a.txt.abcd_123.tmp", ".a.txt.tmp", "a.txt.abcd_123.tmp", ".b.ABCDEFGH.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".c.abcdefgh.tmp").mkdir()
    assert [p.name for p in stray_temporaries(tmp_path)] == [".a.txt.abcd_123.tmp"]
