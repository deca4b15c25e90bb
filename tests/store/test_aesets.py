"""The AE store: bit-identical read-back, reuse only on a full key match, resume after SIGKILL,
shards. Damage, kills mid-write and a full disk: ``test_damage.py``."""

from __future__ import annotations

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

from attacks import LLCM
from bench.data.cityscapes import CityscapesSegmentation
from bench.errors import StoreError
from bench.store import SetSpec, build_ae_set, open_ae_set, set_name
from bench.store.aeset_files import set_file, shard_path

from testdata import load_split

SHA = "0" * 64
# a child process imports this checkout's packages, not whichever one is installed
CHILD_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _spec(subset="mini_test", label="llcm", sha=SHA, eps=10.0):
    return SetSpec(subset, label, "transfer", "S", eps, {"S": sha})


def _build(path, model, dataset, attack=None, sha=SHA, label="llcm", subset="mini_test", **kw):
    options = {"batch_size": 1, "progress": False, **kw}
    return build_ae_set(
        path,
        _spec(subset, label, sha),
        model=model,
        dataset=dataset,
        attack=attack or LLCM(),
        **options,
    )


NAME = "/mini_test/llcm/transfer/S/eps10"


def _file(store, name=NAME):
    """The set's file: finished, or else the unfinished one."""
    final = set_file(store, name)
    return final if final.is_file() else final.with_name(final.name[:-3] + ".partial.h5")


def _content(store, name=NAME):
    with h5py.File(_file(store, name), "r") as f:
        attrs = {k: v for k, v in f.attrs.items() if k != "torch_version"}
        return f["images"][()], f["done"][()], attrs


class Interrupting(LLCM):
    """LLCM that fails on its third call, leaving a half-built set (an in-process 'kill')."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return super().__call__(*args, **kwargs)


def test_round_trip_is_bit_identical_and_reused(tmp_path, source, mini_test):
    built = _build(tmp_path / "aes", source, mini_test, batch_size=2)
    assert built.name == NAME and len(built) == 4 and built.built == 4
    images, _ = load_split(mini_test)
    expected = torch.cat([LLCM()(source, images[i : i + 2], eps=10) for i in (0, 2)])
    assert torch.equal(built.read(), expected)
    stored = open_ae_set(tmp_path / "aes", NAME)
    assert [b.shape[0] for b in stored.batches(3)] == [3, 1]
    attrs = built.attrs
    assert attrs["params"] == {"rounding": "ceil", "target": "fixed", "step": 1.0}
    assert (attrs["networks"], attrs["split_fingerprint"]) == ({"S": SHA}, mini_test.fingerprint())
    assert (attrs["threat"], attrs["label"], attrs["source"]) == ("transfer", "llcm", "S")
    assert attrs["batch_size"] == 2 and attrs["device"] == "cpu" and "code_version" in attrs
    assert built.path == tmp_path / "aes" / "mini_test/llcm/transfer/S/eps10.h5"
    with h5py.File(built.path, "r") as f:
        assert f["images"].chunks == (1, 3, 32, 64)  # one chunk per image
    assert _build(tmp_path / "aes", source, mini_test, batch_size=2).built == 0


def test_any_key_change_rebuilds_never_mixes(tmp_path, source, make_source, mini_test, toy_root):
    path = tmp_path / "aes"
    with pytest.raises(KeyboardInterrupt):
        _build(path, source, mini_test, attack=Interrupting())
    assert list(_content(path)[1]) == [1, 1, 0, 0]
    # Half a set with the weights of S, then other weights: all four images are redone.
    other = make_source(1)
    assert _build(path, other, mini_test, sha="1" * 64).built == 4
    assert np.array_equal(_content(path)[0], _content(_fresh(tmp_path, other, mini_test))[0])
    # Another split under the same name (other fingerprint): rebuilt.
    mini_val = CityscapesSegmentation(toy_root, "mini_val", size=(32, 64))
    assert _build(path, other, mini_val, sha="1" * 64).built == len(mini_val)
    # Other parameters under the same name: rebuilt; under their own label: side by side.
    assert _build(path, other, mini_val, attack=LLCM(rounding="floor"), sha="1" * 64).built == 2
    floor = _build(
        path, other, mini_val, attack=LLCM(rounding="floor"), sha="1" * 64, label="llcm-floor"
    )
    assert floor.name == "/mini_test/llcm-floor/transfer/S/eps10" and floor.built == len(mini_val)
    assert _build(path, other, mini_val, attack=LLCM(rounding="floor"), sha="1" * 64).built == 0


class _RevisedLLCM(LLCM):
    """LLCM whose output changed for the same params (its own revision bumped)."""

    revision = 1


def test_an_attacks_revision_rebuilds_only_its_own_sets(tmp_path, source, mini_test):
    path = tmp_path / "aes"
    first = _build(path, source, mini_test, batch_size=2)
    assert first.built == 4 and "revision" not in first.attrs  # 0: the keys stay as they were
    revised = _build(path, source, mini_test, attack=_RevisedLLCM(), batch_size=2)
    assert revised.built == 4 and revised.attrs["revision"] == 1
    assert _build(path, source, mini_test, attack=_RevisedLLCM(), batch_size=2).built == 0


def _fresh(tmp_path, model, dataset, name="fresh", **kw):
    path = tmp_path / name
    _build(path, model, dataset, **kw)
    return path


def test_unfinished_set_restarts_with_another_batch_size(tmp_path, source, mini_test):
    path = tmp_path / "aes"
    with pytest.raises(KeyboardInterrupt):
        _build(path, source, mini_test, attack=Interrupting())
    with pytest.raises(StoreError, match="incomplete"):
        open_ae_set(path, NAME)
    assert _build(path, source, mini_test, batch_size=4).built == 4
    _, done, attrs = _content(path)
    assert done.all() and attrs["batch_size"] == "4"


_CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    from attacks import LLCM
    from bench.data.cityscapes import CityscapesSegmentation
    from bench.models import ERFNet
    from bench.store import SetSpec, build_ae_set

    store, root, weights, stall_at = sys.argv[1:]
    torch.set_num_threads(1)
    model = ERFNet(width=1).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))

    class Stalling(LLCM):
        calls = 0
        def __call__(self, *args, **kwargs):
            Stalling.calls += 1
            if Stalling.calls == int(stall_at):  # the batches before are written and flushed
                print("stalled", flush=True)
                time.sleep(600)
            return super().__call__(*args, **kwargs)

    print("generating", flush=True)
    build_ae_set(store, SetSpec("mini_test", "llcm", "transfer", "S", 10.0, {"S": "0" * 64}),
                 model=model, dataset=CityscapesSegmentation(root, "mini_test", size=(32, 64)),
                 attack=Stalling(), batch_size=1, progress=False)
    """
)


def test_killed_generation_resumes_to_the_same_file_content(tmp_path, source, mini_test, toy_root):
    path, weights, script = tmp_path / "aes", tmp_path / "S.pt", tmp_path / "child.py"
    torch.save(source.state_dict(), weights)
    script.write_text(_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), str(toy_root), str(weights), "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    try:
        assert child.stdout.readline().strip() == "generating"
        assert child.stdout.readline().strip() == "stalled"  # two batches written and flushed
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert list(_content(path)[1]) == [1, 1, 0, 0]

    resumed = _build(path, source, mini_test)
    assert resumed.built == 2  # resumed at the first missing image
    images, done, attrs = _content(path)
    ref_images, ref_done, ref_attrs = _content(_fresh(tmp_path, source, mini_test))
    assert np.array_equal(images, ref_images) and np.array_equal(done, ref_done)
    assert attrs == ref_attrs


@pytest.mark.slow
def test_kills_at_random_moments_never_corrupt_the_store(tmp_path, source, mini_test, toy_root):
    """SIGKILL at arbitrary moments, also mid-write: the file stays a readable HDF5 file and,
    resumed, holds exactly the uninterrupted content."""
    weights, script = tmp_path / "S.pt", tmp_path / "child.py"
    torch.save(source.state_dict(), weights)
    script.write_text(_CHILD)
    reference = _content(_fresh(tmp_path, source, mini_test))[0]
    rng = np.random.default_rng(0)
    for trial in range(6):
        path = tmp_path / f"aes{trial}"
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(toy_root), str(weights), "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=CHILD_ENV,
        )
        assert child.stdout.readline().strip() == "generating"
        time.sleep(rng.uniform(0.0, 1.0))  # generating the set takes about a second
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        _build(path, source, mini_test)
        assert np.array_equal(_content(path)[0], reference), trial


def test_missing_store_and_set_have_clear_errors(tmp_path, source, mini_test):
    with pytest.raises(StoreError, match="no AE set"):
        open_ae_set(tmp_path / "aes", NAME)
    _fresh(tmp_path, source, mini_test, name="aes")
    other = set_name("mini_test", "llcm", "transfer", "T", 10)
    with pytest.raises(StoreError, match="no AE set /mini_test/llcm/transfer/T/eps10"):
        open_ae_set(tmp_path / "aes", other)
    assert set_name("mini_val", "apgd-ce", "white-box", "jpeg(T)", 1.0) == (
        "/mini_val/apgd-ce/white-box/jpeg(T)/eps1"
    )


def test_a_set_for_a_learning_defense_is_built_in_order_and_never_resumed(
    tmp_path, source, mini_test
):
    seen = []
    path = tmp_path / "aes"
    with pytest.raises(KeyboardInterrupt):
        _build(path, source, mini_test, attack=Interrupting(), after_batch=seen.append)
    assert len(seen) == 2  # two batches done, then the "kill"
    seen.clear()
    built = _build(path, source, mini_test, after_batch=seen.append)
    assert built.built == 4 and len(seen) == 4  # restarted: the defense's state was lost
    assert torch.equal(torch.cat(seen), built.read())


@pytest.mark.parametrize(
    "settings, attacked",
    [({"batch_size": 2}, 2), ({"batch_size": 2, "rebuild": True}, 4), ({"batch_size": 1}, 4)],
    ids=["resumes", "rebuild discards", "other batch size discards"],
)
def test_a_single_process_rerun_takes_only_matching_shards(
    tmp_path, source, mini_test, settings, attacked
):
    # what a rank of an interrupted torchrun launch leaves: a shard holding the first batch
    _build(tmp_path / "whole", source, mini_test, batch_size=2)
    store, shard = tmp_path / "aes", shard_path(set_file(tmp_path / "aes", NAME), 1)
    shard.parent.mkdir(parents=True)
    shutil.copy(set_file(tmp_path / "whole", NAME), shard)
    with h5py.File(shard, "r+") as part:
        part["done"][2:] = 0
    attack = Counting()
    built = _build(store, source, mini_test, attack=attack, **settings)
    assert built.built == attacked and attack.images == attacked
    assert not shard.exists()  # taken or dropped, never left to be merged later
    if attacked == 2:
        assert np.array_equal(_content(store)[0], _content(tmp_path / "whole")[0])


@pytest.mark.parametrize("damage", ["no datasets", "garbage attributes"])
def test_a_damaged_shard_is_dropped_not_merged(tmp_path, source, mini_test, damage):
    store, shard = tmp_path / "aes", shard_path(set_file(tmp_path / "aes", NAME), 1)
    shard.parent.mkdir(parents=True)
    with h5py.File(shard, "w") as group:  # a rank killed while it created the set
        if damage == "garbage attributes":
            group.create_dataset("done", data=np.ones(4, np.uint8))
            group.create_dataset("images", data=np.zeros((4, 3, 32, 64), np.uint8))
            group.attrs["eps"] = "{not json"
    built = _build(store, source, mini_test, batch_size=2)
    assert built.built == 4 and not shard.exists()


class Counting(LLCM):
    """LLCM that counts the images it attacks."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.images = 0

    def __call__(self, model, images, **kwargs):
        self.images += len(images)
        return super().__call__(model, images, **kwargs)
