"""Publishing a run: one step from the old publication to the new one, whatever moment a process
is killed at or a write fails; a full disk is one line naming the path; leftovers are tidied."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import bench.store.checkpoints as checkpoints
import bench.store.rundir as rundir
from bench.errors import DiskFullError, RunDirError
from bench.files import atomic_write_text
from bench.report.plots import plot_qualitative
from bench.store.rundir import PUBLICATIONS, PUBLISHED, RunDir, write_table

from testdata import FullDiskFile

FILES = ("config.toml", "metrics.csv", "records.csv", "checks.csv", "qualitative.npz", "report.md")


def _build(folder: Path, tag: str, names: tuple[str, ...] = FILES) -> Path:
    """A publication whose every file says ``tag`` (and names itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"{tag} {name}\n")
    for sub in ("tables", "plots"):
        (folder / sub).mkdir(exist_ok=True)
        for n in range(2):
            (folder / sub / f"{tag}-{n}.txt").write_text(f"{tag} {sub} {n}\n")
    return folder


def view(run: Path) -> dict[str, bytes]:
    """What a reader of the run sees under the published names, links followed."""
    seen = {}
    for name in PUBLISHED:
        path = run / name
        if path.is_file():
            seen[name] = path.read_bytes()
        elif path.is_dir():
            for item in sorted(path.iterdir()):
                seen[f"{name}/{item.name}"] = item.read_bytes()
    return seen


def _fresh(base: Path) -> RunDir:
    return RunDir(base / "run")


def _new_style(base: Path) -> RunDir:
    run = RunDir(base / "run")
    with run.lock():
        run.publish(_build(base / "staged-old", "old"))
    return run


def _old_style(base: Path) -> RunDir:
    """A run published by the older code: plain files and folders, with caches beside them."""
    run = RunDir(base / "run")
    _build(run.path, "old")
    (run.models).mkdir()
    (run.models / "T.pt").write_bytes(b"weights")
    return run


def _trained_only(base: Path) -> RunDir:
    """A folder where ``bench train`` wrote config.toml and nothing is published."""
    run = RunDir(base / "run")
    run.path.mkdir(parents=True)
    (run.path / "config.toml").write_text("trained config.toml\n")
    return run


def _copied_following_links(base: Path) -> RunDir:
    """A new-style run copied by ``shutil.copytree`` (links followed: plain names, and a real
    ``.published/current`` folder)."""
    original = _new_style(base / "original")
    run = RunDir(base / "run")
    shutil.copytree(original.path, run.path)
    assert not (run.path / "metrics.csv").is_symlink()
    return run


STARTS = {
    "fresh": _fresh,
    "published": _new_style,
    "plain": _old_style,
    "trained": _trained_only,
    "copied": _copied_following_links,
}


class Stop(BaseException):
    """Stands for an error that ends the process at a step (raised from ``_step``)."""


def _steps(monkeypatch, start, tmp_path) -> int:
    """How many file-system steps a publication from ``start`` takes."""
    calls = []
    monkeypatch.setattr(rundir, "_step", lambda what, path: calls.append(what))
    run = start(tmp_path / "count")
    with run.lock():
        calls.clear()
        run.publish(_build(tmp_path / "count" / "staged-new", "new"))
    monkeypatch.setattr(rundir, "_step", lambda what, path: None)
    return len(calls)


def _publish_killed_at(run: RunDir, staged: Path, k: int) -> None:
    """Publish in a child process killed (``os._exit``: no cleanup at all) before its k-th
    file-system step."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        calls = [0]

        def step(what, path):
            calls[0] += 1
            if calls[0] == k:
                os._exit(9)

        rundir._step = step
        try:
            with run.lock():
                run.publish(staged)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9, f"step {k} was never reached"


def _check_next_commands(run: RunDir, tmp_path: Path, new: dict, old: dict) -> None:
    """The next command tidies the run (a reader still sees old or new), and the next publication
    works and leaves one publication, no leftovers."""
    with run.lock():
        assert view(run.path) in (old, new)
        run.publish(_build(tmp_path / "staged-again", "new"))
    assert view(run.path) == new
    entries = sorted(p.name for p in (run.path / PUBLICATIONS).iterdir())
    assert len(entries) == 2 and "current" in entries
    leftovers = [p.name for p in run.path.iterdir() if p.name.endswith((".link", ".aside"))]
    assert leftovers == []
    assert not list(run.path.parent.glob(".run.staging-*"))


@pytest.mark.parametrize("swap", [True, False], ids=["exchange", "no-exchange"])
@pytest.mark.parametrize("start", list(STARTS))
def test_a_kill_at_every_step_of_publishing_leaves_the_old_run_or_the_new(
    start, swap, tmp_path, monkeypatch
):
    if not swap:  # a file system that cannot swap a folder for a link in one step
        monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    steps = _steps(monkeypatch, STARTS[start], tmp_path)
    new = view(_build(tmp_path / "expected", "new"))
    assert steps >= 3
    for k in range(1, steps + 1):
        base = tmp_path / f"k{k}"
        run = STARTS[start](base)
        old = view(run.path)
        _publish_killed_at(run, _build(base / "staged-new", "new"), k)
        seen = view(run.path)
        if swap or start not in ("plain", "copied"):
            assert seen in (old, new), f"{start}: a kill before step {k} of {steps} mixed them"
        _check_next_commands(run, base, new, old)


@pytest.mark.parametrize("start", list(STARTS))
def test_an_error_at_every_step_of_publishing_is_one_line_and_leaves_old_or_new(
    start, tmp_path, monkeypatch
):
    steps = _steps(monkeypatch, STARTS[start], tmp_path)
    new = view(_build(tmp_path / "expected", "new"))
    for k in range(1, steps + 1):
        base = tmp_path / f"k{k}"
        run = STARTS[start](base)
        old = view(run.path)
        calls = [0]

        def step(what, path, k=k, calls=calls):
            calls[0] += 1
            if calls[0] == k:
                raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(rundir, "_step", step)
        with run.lock(), run.staging() as staged:
            _build(staged, "new")
            try:
                run.publish(staged)
            except RunDirError as err:
                assert "cannot publish into" in str(err) and isinstance(err.__cause__, OSError)
        assert view(run.path) in (old, new)
        monkeypatch.setattr(rundir, "_step", lambda what, path: None)
        _check_next_commands(run, base, new, old)


def test_published_names_are_links_into_the_current_publication(tmp_path):
    run = _old_style(tmp_path)
    old = view(run.path)
    with run.lock():
        run.publish(_build(tmp_path / "staged-1", "new"))
    for name in PUBLISHED:
        assert os.readlink(run.path / name) == f".published/current/{name}"
    assert (run.models / "T.pt").read_bytes() == b"weights"  # caches are not published
    assert pd.read_csv(run.path / "metrics.csv", header=None).iloc[0, 0] == "new metrics.csv"
    assert view(run.path) != old


def test_bench_report_of_a_run_keeps_its_rows(tmp_path):
    run = _old_style(tmp_path)
    staged = tmp_path / "staged-report"
    staged.mkdir()
    run.stage_rows(staged)
    assert sorted(p.name for p in staged.iterdir()) == sorted(f for f in FILES if f != "report.md")
    assert (staged / "metrics.csv").read_text() == "old metrics.csv\n"


def test_the_lock_removes_only_this_projects_leftovers(tmp_path):
    run = _new_style(tmp_path)
    run.cache.mkdir()
    strays = [
        run.path / ".config.toml.ab3_9xyz.tmp",
        run.models / ".T.pt.k2j4h5g6.tmp",
        run.cache / ".metrics.csv.zzzzzzzz.tmp",
        run.path / ".aes.h5.abcdefgh.tmp",  # the AE store lives in aes/ now: no exception here
    ]
    kept = [
        run.path / "aes" / ".eps10.partial.h5.123.tmp",  # the AE store's: it tidies aes/ itself
        run.path / "notes.tmp",
        run.path / ".notes.tmp",
        run.path / "my.data.abcdefgh.tmp",
        run.models / "T.pt",
    ]
    for path in (*strays, *kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    os.symlink("x", run.path / ".metrics.csv.123.link")
    (tmp_path / ".run.staging-999").mkdir()
    (run.path / PUBLICATIONS / "20000101-000000-1-0").mkdir()  # moved in, never switched to
    with run.lock():
        pass
    assert not [p for p in strays if p.exists()]
    assert all(p.exists() for p in kept)
    assert not os.path.lexists(run.path / ".metrics.csv.123.link")
    assert not (tmp_path / ".run.staging-999").exists()
    assert len(list((run.path / PUBLICATIONS).iterdir())) == 2


def test_a_publications_link_out_of_the_run_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "elsewhere"
    (victim / "sub").mkdir(parents=True)
    (victim / "file.txt").write_text("precious")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    os.symlink(victim, run.path / PUBLICATIONS)
    refused = pytest.raises(RunDirError, match=r"\.published is a link to .*: remove the link")
    with refused, run.lock():
        pass
    assert sorted(p.name for p in victim.iterdir()) == ["file.txt", "sub"]


def test_a_file_system_without_links_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="file system without symbolic links") as info:
        run.require_links()
    assert isinstance(info.value.__cause__, OSError)


# --- a full disk ---------------------------------------------------------------------------------


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_publishing_is_one_line_and_keeps_the_old_run(tmp_path, monkeypatch):
    run = _new_style(tmp_path)
    old = view(run.path)
    monkeypatch.setattr(os, "replace", _full)
    with run.lock(), run.staging() as staged:
        _build(staged, "new")
        with pytest.raises(DiskFullError, match=r"disk full while writing .*\.published; free"):
            run.publish(staged)
    assert view(run.path) == old


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    models = tmp_path / "models"
    checkpoints.save_model(nn.Linear(2, 2), models, "T", "erfnet", {})
    before = (models / "T.pt").read_bytes()
    monkeypatch.setattr(checkpoints, "open", FullDiskFile, raising=False)
    with pytest.raises(DiskFullError, match=rf"disk full while writing {models / 'T.pt'}; free"):
        checkpoints.save_model(nn.Linear(2, 2), models, "T", "erfnet", {})
    assert (models / "T.pt").read_bytes() == before  # the finished checkpoint is kept
    assert sorted(p.name for p in models.iterdir()) == ["T.json", "T.pt"]


def test_checkpoints_are_the_bytes_torch_writes_to_a_handle(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    checkpoints.save_model(model, tmp_path, "T", "erfnet", {})
    with open(tmp_path / "direct.pt", "wb") as handle:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, handle)
    assert (tmp_path / "T.pt").read_bytes() == (tmp_path / "direct.pt").read_bytes()


def test_a_full_disk_while_saving_a_plot_or_a_table_is_one_line(tmp_path, monkeypatch):
    import matplotlib.figure

    grid = {"clean": {"image": torch.zeros(3, 4, 4, dtype=torch.uint8).numpy()}}
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _full)
    with pytest.raises(DiskFullError, match=r"while writing .*q\.png; free space and re-run"):
        plot_qualitative(grid, tmp_path / "q.png")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _full)
    with pytest.raises(DiskFullError, match=r"while writing .*metrics\.csv; free space"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "metrics.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- a real full disk (a small tmpfs; root only) -------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=3m tmpfs {mount} 2>/dev/null"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        os.system(f"umount {mount}")


def test_a_really_full_disk_is_one_line_and_the_next_run_resumes(small_disk):
    run = RunDir(small_disk / "run")
    with run.lock(), run.staging() as staged:
        _build(staged, "old")
        run.publish(staged)
    old = view(run.path)
    big = nn.Linear(1000, 1000)  # 4 MB of weights on a 3 MB disk
    with run.lock(), pytest.raises(DiskFullError, match=r"disk full while writing .*T\.pt"):
        checkpoints.save_model(big, run.models, "T", "erfnet", {})
    assert view(run.path) == old and not list(run.models.iterdir())
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError):
        while True:  # fill the disk
            handle.write(b"\0" * (64 << 10))
    with run.lock(), run.staging() as staged, pytest.raises(DiskFullError, match="disk full"):
        atomic_write_text(staged / "report.md", "x" * (1 << 20))
        run.publish(staged)
    assert view(run.path) == old
    filler.unlink()  # space freed: the next run finishes
    with run.lock(), run.staging() as staged:
        _build(staged, "new")
        run.publish(staged)
    assert view(run.path) == view(_build(small_disk / "expected", "new"))
