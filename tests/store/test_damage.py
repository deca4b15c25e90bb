"""The AE store against kills, damaged files and a full disk: a set file HDF5 cannot read is
moved aside with one warning and rebuilt; a process killed at any write of a set resumes or
rebuilds to the uninterrupted content; a full disk stops with one line and the next build
finishes. A cheap deterministic "attack" keeps every build to milliseconds."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import bench.store.aesets as aesets
from bench.errors import StoreError
from bench.store import SetSpec, build_ae_set, open_ae_set
from bench.store.aeset_files import LEGACY_FILE, set_file

NAME = "/mini_test/shift/transfer/S/eps10"
SPEC = SetSpec("mini_test", "shift", "transfer", "S", 10.0, {"S": "0" * 64})


class Shift:
    """A stand-in attack: adds the image's index + 1 to every gray value (mod 256)."""

    name = "shift"
    needs_labels = False

    def __init__(self) -> None:
        self.images = 0

    def params(self) -> dict:
        return {}

    def __call__(self, model, images, *, eps, labels=None, index=None):
        self.images += len(images)
        return (images.int() + index.view(-1, 1, 1, 1) + 1).remainder(256).to(torch.uint8)


@pytest.fixture
def model() -> nn.Module:
    return nn.Conv2d(3, 3, 1)


def _build(store, model, dataset, **kw):
    attack = kw.pop("attack", None) or Shift()
    options = {"batch_size": 1, "progress": False, **kw}
    return build_ae_set(store, SPEC, model=model, dataset=dataset, attack=attack, **options)


@pytest.fixture
def clean(tmp_path, model, mini_test) -> np.ndarray:
    """The images of an uninterrupted build."""
    return _build(tmp_path / "clean", model, mini_test).read().numpy()


def _partial(store: Path) -> Path:
    final = set_file(store, NAME)
    return final.with_name(final.name[:-3] + ".partial.h5")


def _block(path: Path, signature: bytes) -> int:
    """The offset of the first HDF5 metadata block with this signature (b"TREE": a B-tree,
    b"HEAP": a local heap, b"SNOD": a group's symbol table node)."""
    offset = path.read_bytes().find(signature)
    assert offset > 0, signature
    return offset


def _damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        os.truncate(path, size // 2)  # a kill or a full disk before the data reached the file
    elif how == "zeros":
        path.write_bytes(bytes(size))  # allocated, never written
    else:
        offset = 0 if how == "superblock" else _block(path, how.encode())
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(np.random.default_rng(0).integers(0, 256, 64, np.uint8).tobytes())


DAMAGE = ["truncated", "zeros", "superblock", "TREE", "HEAP", "SNOD"]


def _interrupted(store, model, dataset, after: int) -> None:
    """An unfinished set: ``after`` batches written, then an exception (an in-process kill)."""

    class Stop(Shift):
        def __call__(self, *args, **kwargs):
            if self.images == after:
                raise KeyboardInterrupt
            return super().__call__(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        _build(store, model, dataset, attack=Stop())


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("which", ["finished", "unfinished"])
def test_a_damaged_set_file_is_moved_aside_and_rebuilt(
    tmp_path, model, mini_test, clean, caplog, which, how
):
    store = tmp_path / "aes"
    if which == "finished":
        _build(store, model, mini_test)
        path = set_file(store, NAME)
    else:
        _interrupted(store, model, mini_test, after=2)
        path = _partial(store)
    _damage(path, how)
    with caplog.at_level(logging.WARNING, logger="bench.store.aeset_files"):
        rebuilt = _build(store, model, mini_test)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    aside = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert [p.name for p in aside] == [next(p.name for p in aside)]
    assert aside[0].name.startswith(path.name + ".damaged-") and str(aside[0]) in warnings[0]
    assert rebuilt.built == 4 and np.array_equal(rebuilt.read().numpy(), clean)
    assert sorted(p.name for p in path.parent.glob("*.h5")) == ["eps10.h5"]


def test_an_unreadable_read_is_one_line(tmp_path, model, mini_test):
    ae_set = _build(tmp_path / "aes", model, mini_test)
    path = set_file(tmp_path / "aes", NAME)
    path.write_bytes(bytes(path.stat().st_size))
    with pytest.raises(StoreError, match="rerun the command: the damaged file is moved aside"):
        ae_set.read()
    with pytest.raises(StoreError, match=f"cannot read AE set file {path}"):
        open_ae_set(tmp_path / "aes", NAME)


# --- kills ---------------------------------------------------------------------------------------

#: the calls at which a child is killed: every step that writes a set's files
_MOMENTS = [
    (h5py.File, "flush"),
    (h5py.File, "close"),
    (os, "posix_fallocate"),
    (os, "fsync"),
    (os, "replace"),
    (aesets, "write_batch"),  # the name generation calls it by
]


def _stall_at(moment: int, report) -> None:
    """Patch every write step to call ``report(k)`` at its k-th call, counted across them."""
    calls = [0]
    for owner, attr in _MOMENTS:
        original = getattr(owner, attr)

        def patched(*args, _original=original, **kwargs):
            calls[0] += 1
            report(calls[0])
            return _original(*args, **kwargs)

        setattr(owner, attr, patched)


def _count_moments(store, model, dataset, monkeypatch) -> int:
    seen = []
    with monkeypatch.context() as patch:
        for owner, attr in _MOMENTS:
            patch.setattr(owner, attr, getattr(owner, attr))  # restored afterwards
        _stall_at(0, seen.append)
        _build(store, model, dataset)
    return len(seen)


def _killed_at(store, model, dataset, moment: int) -> None:
    """Fork a child that builds the set and stops at write step ``moment``; SIGKILL it there."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build until the moment, tell the parent, wait to be killed
        try:
            os.close(read)

            def report(k: int) -> None:
                if k == moment:
                    os.write(write, b"x")
                    signal.pause()

            _stall_at(moment, report)
            _build(store, model, dataset)
            os.write(write, b"done")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read(1) == b"x", moment
    os.kill(pid, signal.SIGKILL)
    assert os.waitpid(pid, 0)[1] == signal.SIGKILL


def test_a_kill_at_every_write_step_resumes_to_the_uninterrupted_set(
    tmp_path, model, mini_test, clean, monkeypatch
):
    """Kill the builder at each call that writes the set (creation, reservation, every flush
    and close, every batch, the sync and the rename); the next build finishes it, equal to an
    uninterrupted build, and the store is left with the finished file alone."""
    moments = _count_moments(tmp_path / "count", model, mini_test, monkeypatch)
    assert moments >= 20  # 4 batches of 1 image, each written and flushed twice, and more
    resumed = 0
    for moment in range(1, moments + 1):
        store = tmp_path / f"aes{moment}"
        _killed_at(store, model, mini_test, moment)
        attack = Shift()
        ae_set = _build(store, model, mini_test, attack=attack)
        resumed += attack.images < 4
        assert np.array_equal(ae_set.read().numpy(), clean), moment
        assert [p.name for p in set_file(store, NAME).parent.iterdir()] == ["eps10.h5"], moment
    assert resumed >= 3  # the kills after a batch was marked done lose nothing but the rest
    print(f"{moments} kill moments")


_STRACE_CHILD = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from bench.data.cityscapes import CityscapesSegmentation
    from bench.store import SetSpec, build_ae_set

    class Shift:
        name, needs_labels = "shift", False
        def params(self):
            return {}
        def __call__(self, model, images, *, eps, labels=None, index=None):
            return (images.int() + index.view(-1, 1, 1, 1) + 1).remainder(256).to(torch.uint8)

    store, root = sys.argv[1:]
    build_ae_set(store, SetSpec("mini_test", "shift", "transfer", "S", 10.0, {"S": "0" * 64}),
                 model=nn.Conv2d(3, 3, 1), attack=Shift(), batch_size=1, progress=False,
                 dataset=CityscapesSegmentation(root, "mini_test", size=(32, 64)))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_kill_inside_every_hdf5_write_resumes_or_rebuilds(tmp_path, model, mini_test, clean):
    """The probe's method: strace holds the N-th pwrite64 of the build (inside HDF5's own
    writes: raw data and metadata) while the process is killed, for every N."""
    script = tmp_path / "child.py"
    script.write_text(_STRACE_CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, str(script)]
    count_file, strace = tmp_path / "count", ["strace", "-f", "-qq", "-e", "trace=pwrite64"]
    probe = subprocess.run(
        [
            *strace,
            "-c",
            "-o",
            str(count_file),
            *command,
            str(tmp_path / "probe"),
            str(mini_test.root),
        ],
        env=env,
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"strace does not work here: {probe.stderr.decode()[-200:]}")
    lines = count_file.read_text().splitlines()
    count = int(next(line.split()[3] for line in lines if "pwrite64" in line))
    for n in range(1, count + 1):
        store = tmp_path / f"aes{n}"
        inject = f"inject=pwrite64:delay_enter=60000000:when={n}"
        trace = tmp_path / f"trace{n}"
        child = subprocess.Popen(
            [*strace, "-o", str(trace), "-e", inject, *command, str(store), str(mini_test.root)],
            env=env,
            start_new_session=True,
        )
        while child.poll() is None and (
            not trace.exists() or trace.read_text().count("pwrite64") < n
        ):
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)  # strace and the held child
        child.wait()
        ae_set = _build(store, model, mini_test)
        assert np.array_equal(ae_set.read().numpy(), clean), n
    print(f"{count} pwrite64 kill moments")


# --- a full disk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_a_full_disk_stops_with_one_line_and_the_next_build_finishes(
    tmp_path, model, mini_test, clean, monkeypatch, k
):
    write = aesets.write_batch
    calls = []

    def full(*args):
        calls.append(1)
        if len(calls) == k:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(*args)

    monkeypatch.setattr(aesets, "write_batch", full)
    with pytest.raises(StoreError) as caught:
        _build(tmp_path / "aes", model, mini_test)
    message = str(caught.value)
    assert (
        "\n" not in message
        and "disk full" in message
        and str(_partial(tmp_path / "aes")) in message
    )
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.setattr(aesets, "write_batch", write)  # space again
    attack = Shift()
    ae_set = _build(tmp_path / "aes", model, mini_test, attack=attack)
    assert attack.images == 4 - (k - 1) and np.array_equal(ae_set.read().numpy(), clean)


def test_a_disk_too_full_for_a_set_stops_before_any_attack(
    tmp_path, model, mini_test, clean, monkeypatch
):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    attack = Shift()
    with pytest.raises(StoreError, match="disk full") as caught:
        _build(tmp_path / "aes", model, mini_test, attack=attack)
    assert attack.images == 0 and "\n" not in str(caught.value)
    monkeypatch.undo()
    assert np.array_equal(_build(tmp_path / "aes", model, mini_test).read().numpy(), clean)


# --- stray files and the old single-file store -------------------------------------------------


def test_stray_temporary_files_of_the_store_alone_are_removed(tmp_path, model, mini_test):
    store = tmp_path / "aes"
    strays = [store / ".eps10.h5.x1.tmp", store / "mini_test" / "shift" / ".eps1.h5.y2.tmp"]
    kept = [
        tmp_path / ".config.toml.z3.tmp",
        store / "notes.txt",
        store / "eps1.h5.damaged-1",
        store / "mine.tmp",  # not the store's: aes/ may be a link to the user's own disk
    ]
    for path in strays + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("left by a kill")
    _build(store, model, mini_test)
    assert not any(p.exists() for p in strays) and all(p.exists() for p in kept)


def test_a_finished_set_of_the_single_file_store_is_copied_not_attacked(
    tmp_path, model, mini_test, clean
):
    finished = _build(tmp_path / "old", model, mini_test)
    with h5py.File(finished.path, "r") as new, h5py.File(tmp_path / LEGACY_FILE, "w") as old:
        group = old.create_group(NAME)  # the layout of earlier versions: one group per set
        for field, value in new.attrs.items():
            group.attrs[field] = value
        for dataset in ("images", "done"):
            group.create_dataset(dataset, data=new[dataset][()])
    before = (tmp_path / LEGACY_FILE).read_bytes()
    attack = Shift()
    ae_set = _build(tmp_path / "aes", model, mini_test, attack=attack)
    assert attack.images == 0 and ae_set.attrs == finished.attrs
    assert np.array_equal(ae_set.read().numpy(), clean)
    assert (tmp_path / LEGACY_FILE).read_bytes() == before  # read, never written
