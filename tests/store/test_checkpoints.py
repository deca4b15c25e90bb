"""Checkpoints: round trip, sha256 check, safe loading, clear errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from bench.errors import CheckpointError
from bench.files import sha256_file
from bench.models import ERFNet
from bench.store.checkpoints import load_model, save_model


def test_round_trip_restores_weights_and_eval_mode(tmp_path):
    model = ERFNet(width=1)
    meta = save_model(model, tmp_path, "S", "erfnet", {"width": 1}, seed=3)
    assert meta.sha256 == sha256_file(tmp_path / "S.pt")
    assert json.loads((tmp_path / "S.json").read_text())["info"] == {"seed": 3}
    loaded = load_model(tmp_path, "S")
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind


def test_equal_weights_give_byte_equal_files(tmp_path):
    """A checkpoint's sha256 is part of the adaptive students' keys: training T twice alike must
    give one file, not two that differ in a temporary name inside the archive."""
    model = ERFNet(width=1)
    metas = [save_model(model, tmp_path / d, "S", "erfnet", {"width": 1}) for d in ("a", "b")]
    assert metas[0].sha256 == metas[1].sha256


def test_replaced_weights_are_detected(tmp_path):
    save_model(ERFNet(width=1), tmp_path, "S", "erfnet", {"width": 1})
    torch.save(ERFNet(width=1).state_dict(), tmp_path / "S.pt")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_model(tmp_path, "S")


def test_missing_and_corrupt_metadata(tmp_path):
    with pytest.raises(
        CheckpointError, match=r"no checkpoint metadata .*T\.json; train the network"
    ):
        load_model(tmp_path, "T")
    (tmp_path / "T.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
        load_model(tmp_path, "T")


def test_checkpoints_that_would_run_code_are_refused(tmp_path):
    """weights_only=True: a pickle that would call a function is rejected, not executed."""
    meta = save_model(ERFNet(width=1), tmp_path, "S", "erfnet", {"width": 1})
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))  # unpickling it creates the marker file

    torch.save({"x": Payload()}, tmp_path / "S.pt")
    pickle.loads(pickle.dumps(Payload()))  # the payload is live: unpickled, it does run
    assert marker.is_file()
    marker.unlink()
    data = json.loads((tmp_path / "S.json").read_text())
    data["sha256"] = sha256_file(tmp_path / "S.pt")
    (tmp_path / "S.json").write_text(json.dumps(data))
    assert meta.sha256 != data["sha256"]
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(tmp_path, "S")
    assert not marker.exists()  # refused before anything ran


def test_half_precision_export_halves_the_file_and_keeps_the_key(tmp_path):
    from bench.store.checkpoints import export_half

    model = ERFNet(width=1)
    save_model(model, tmp_path / "run", "S", "erfnet", {"width": 1}, key="abc")
    exported = export_half(tmp_path / "run", "S", tmp_path / "ref")
    assert exported.info["key"] == "abc" and exported.info["stored_dtype"] == "float16"
    size = (tmp_path / "ref/S.pt").stat().st_size
    assert size < 0.6 * (tmp_path / "run/S.pt").stat().st_size
    loaded = load_model(tmp_path / "ref", "S")  # sha256 checked, float32 again
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype, key
        assert torch.allclose(got.float(), value.float(), rtol=1e-3, atol=1e-4), key
