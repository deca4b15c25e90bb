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
from bench.store.checkpoints import check_meta, load_meta, load_model, save_model

ERFNET = ("erfnet", {"width": 1})  # what the config asks for: the checkpoints below are made so


def test_round_trip_restores_weights_and_eval_mode(tmp_path):
    model = ERFNet(width=1)
    meta = save_model(model, tmp_path, "S", "erfnet", {"width": 1}, seed=3)
    assert meta.sha256 == sha256_file(tmp_path / "S.pt")
    assert json.loads((tmp_path / "S.json").read_text())["info"] == {"seed": 3}
    loaded = load_model(tmp_path, "S", *ERFNET)
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
        load_model(tmp_path, "S", *ERFNET)


def test_missing_and_corrupt_metadata(tmp_path):
    with pytest.raises(
        CheckpointError, match=r"no checkpoint metadata .*T\.json; train the network"
    ):
        load_model(tmp_path, "T", *ERFNET)
    (tmp_path / "T.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
        load_model(tmp_path, "T", *ERFNET)


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
        load_model(tmp_path, "S", *ERFNET)
    assert not marker.exists()  # refused before anything ran


def test_half_precision_export_halves_the_file_and_keeps_the_key(tmp_path):
    from bench.store.checkpoints import export_half

    model = ERFNet(width=1)
    save_model(model, tmp_path / "run", "S", "erfnet", {"width": 1}, key="abc")
    exported = export_half(tmp_path / "run", "S", tmp_path / "ref")
    assert exported.info["key"] == "abc" and exported.info["stored_dtype"] == "float16"
    size = (tmp_path / "ref/S.pt").stat().st_size
    assert size < 0.6 * (tmp_path / "run/S.pt").stat().st_size
    loaded = load_model(tmp_path / "ref", "S", *ERFNET)  # sha256 checked, float32 again
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype, key
        assert torch.allclose(got.float(), value.float(), rtol=1e-3, atol=1e-4), key


def _edit_meta(path: Path, **values) -> None:
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


def test_the_config_not_the_metadata_decides_what_is_built(tmp_path):
    """Metadata naming code (``os:system`` with a command) is refused before anything is
    imported or called: the network is built from the caller's arch and options alone."""
    save_model(ERFNet(width=1), tmp_path, "T", "erfnet", {"width": 1})
    marker = tmp_path / "pwned"
    _edit_meta(tmp_path / "T.json", arch="os:system", options={"command": f"touch {marker}"})
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path, "T", *ERFNET)
    assert str(refused.value) == (
        f"{tmp_path / 'T.json'} names arch 'os:system' but the config asks for 'erfnet'; "
        "delete the checkpoint or retrain it (bench train --retrain)"
    )
    assert not marker.exists()


def test_metadata_naming_other_options_is_refused(tmp_path):
    save_model(ERFNet(width=1), tmp_path, "S", "erfnet", {"width": 1})
    with pytest.raises(CheckpointError, match=r"S\.json names options \{'width': 1\} but the "):
        load_model(tmp_path, "S", "erfnet", {"width": 2})
    # options compare as JSON holds them: a tuple in the config equals the stored list
    save_model(ERFNet(width=1), tmp_path, "T", "deeplabv3plus", {"aspp_rates": [1, 2]})
    with pytest.raises(CheckpointError, match="names arch 'deeplabv3plus'"):
        load_model(tmp_path, "T", "erfnet", {"aspp_rates": (1, 2)})
    meta = load_meta(tmp_path, "T")
    check_meta(tmp_path, "T", meta, "deeplabv3plus", {"aspp_rates": (1, 2)})  # agrees
