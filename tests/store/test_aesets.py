"""The AE store: bit-identical read-back, reuse only on a full key match, resume after SIGKILL,
rebuild of corrupt files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch

from attacks import LLCM
from bench.data.cityscapes import CityscapesSegmentation
from bench.errors import StoreError
from bench.store import SetSpec, build_ae_set, open_ae_set, set_name
from bench.store.aesets import shard_path

from testdata import load_split

SHA = "0" * 64


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


def _content(path, name=NAME):
    with h5py.File(path, "r") as f:
        group = f[name]
        attrs = {k: v for k, v in group.attrs.items() if k != "torch_version"}
        return group["images"][()], group["done"][()], attrs


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
    built = _build(tmp_path / "aes.h5", source, mini_test, batch_size=2)
    assert built.name == NAME and len(built) == 4 and built.built == 4
    images, _ = load_split(mini_test)
    expected = torch.cat([LLCM()(source, images[i : i + 2], eps=10) for i in (0, 2)])
    assert torch.equal(built.read(), expected)
    stored = open_ae_set(tmp_path / "aes.h5", NAME)
    assert [b.shape[0] for b in stored.batches(3)] == [3, 1]
    attrs = built.attrs
    assert attrs["params"] == {"rounding": "ceil", "target": "fixed", "step": 1.0}
    assert (attrs["networks"], attrs["split_fingerprint"]) == ({"S": SHA}, mini_test.fingerprint())
    assert (attrs["threat"], attrs["label"], attrs["source"]) == ("transfer", "llcm", "S")
    assert attrs["batch_size"] == 2 and attrs["device"] == "cpu" and "code_version" in attrs
    with h5py.File(tmp_path / "aes.h5", "r") as f:
        assert f[built.name]["images"].chunks == (1, 3, 32, 64)  # one chunk per image
    assert _build(tmp_path / "aes.h5", source, mini_test, batch_size=2).built == 0


def test_any_key_change_rebuilds_never_mixes(tmp_path, source, make_source, mini_test, toy_root):
    path = tmp_path / "aes.h5"
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


def _fresh(tmp_path, model, dataset, name="fresh.h5", **kw):
    path = tmp_path / name
    _build(path, model, dataset, **kw)
    return path


def test_unfinished_set_restarts_with_another_batch_size(tmp_path, source, mini_test):
    path = tmp_path / "aes.h5"
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
    path, weights, script = tmp_path / "aes.h5", tmp_path / "S.pt", tmp_path / "child.py"
    torch.save(source.state_dict(), weights)
    script.write_text(_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), str(toy_root), str(weights), "3"],
        stdout=subprocess.PIPE,
        text=True,
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
        path = tmp_path / f"aes{trial}.h5"
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(toy_root), str(weights), "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip() == "generating"
        time.sleep(rng.uniform(0.0, 1.0))  # generating the set takes about a second
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if path.exists():
            h5py.File(path, "r").close()
        _build(path, source, mini_test)
        assert np.array_equal(_content(path)[0], reference), trial


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_is_reported_and_rebuilt(tmp_path, source, mini_test, caplog, damage):
    path = _fresh(tmp_path, source, mini_test, name="aes.h5")
    reference = _content(path)[0]
    if damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        path.write_bytes(b"not an HDF5 file" * 64)
    with caplog.at_level(logging.WARNING, logger="bench.store.aesets"):
        rebuilt = _build(path, source, mini_test)
    assert "truncated or corrupt" in caplog.text and "aes.h5.corrupt" in caplog.text
    assert rebuilt.built == 4 and np.array_equal(_content(path)[0], reference)
    assert (tmp_path / "aes.h5.corrupt").is_file()


def test_missing_store_and_set_have_clear_errors(tmp_path, source, mini_test):
    with pytest.raises(StoreError, match="no AE store"):
        open_ae_set(tmp_path / "aes.h5", NAME)
    _fresh(tmp_path, source, mini_test, name="aes.h5")
    other = set_name("mini_test", "llcm", "transfer", "T", 10)
    with pytest.raises(StoreError, match="no AE set /mini_test/llcm/transfer/T/eps10"):
        open_ae_set(tmp_path / "aes.h5", other)
    assert set_name("mini_val", "apgd-ce", "white-box", "jpeg(T)", 1.0) == (
        "/mini_val/apgd-ce/white-box/jpeg(T)/eps1"
    )


def test_a_set_for_a_learning_defense_is_built_in_order_and_never_resumed(
    tmp_path, source, mini_test
):
    seen = []
    path = tmp_path / "aes.h5"
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
    _build(tmp_path / "whole.h5", source, mini_test, batch_size=2)
    store, shard = tmp_path / "aes.h5", shard_path(tmp_path / "aes.h5", 1)
    with h5py.File(tmp_path / "whole.h5", "r") as whole, h5py.File(shard, "w") as part:
        whole.copy(whole[NAME], part.require_group(NAME.rsplit("/", 1)[0]), name=NAME)
        part[NAME]["done"][2:] = 0
    attack = Counting()
    built = _build(store, source, mini_test, attack=attack, **settings)
    assert built.built == attacked and attack.images == attacked
    assert not shard.exists()  # taken or dropped, never left to be merged later
    if attacked == 2:
        assert np.array_equal(_content(store)[0], _content(tmp_path / "whole.h5")[0])


@pytest.mark.parametrize("damage", ["no datasets", "garbage attributes"])
def test_a_damaged_shard_is_dropped_not_merged(tmp_path, source, mini_test, damage):
    store, shard = tmp_path / "aes.h5", shard_path(tmp_path / "aes.h5", 1)
    with h5py.File(shard, "w") as part:
        group = part.create_group(NAME)  # a rank killed while it created the set
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
