"""The marks an attack records go into its set's file and come back; sets without marks load."""

from __future__ import annotations

import h5py
import torch

from attacks import APGD, LLCM, SegPGD
from bench.store import SetSpec, build_ae_set
from bench.store.aeset_files import set_file

SHA = "0" * 64


def _build(store, model, dataset, attack, label):
    spec = SetSpec("mini_test", label, "transfer", "S", 4.0, {"S": SHA})
    return build_ae_set(
        store, spec, model=model, dataset=dataset, attack=attack, batch_size=2, progress=False
    )


def test_marks_stored_with_the_set_as_the_attack_recorded_them(tmp_path, source, mini_test):
    attack = APGD(n_iter=2)
    ae_set = _build(tmp_path, source, mini_test, attack, "apgd-ce")
    marks, iterations = ae_set.marks()
    assert iterations == (1, 1, 2) and marks.shape == (4, 3, 2, 19) and marks.dtype == "int64"
    images = torch.stack([mini_test[i][0] for i in range(2, 4)])
    labels = torch.stack([mini_test[i][1] for i in range(2, 4)])
    direct = attack.run(source, images, eps=4, labels=labels, index=torch.arange(2, 4))
    assert torch.equal(torch.from_numpy(marks[2:]), direct.marks[""])
    assert torch.equal(ae_set.read()[2:], direct.images[""])


def test_sets_without_marks_load(tmp_path, source, mini_test):
    ae_set = _build(tmp_path, source, mini_test, LLCM(), "llcm")
    assert ae_set.marks() is None
    built = _build(tmp_path, source, mini_test, SegPGD(n_iter=1), "segpgd")
    with h5py.File(set_file(tmp_path, built.name), "r+") as f:  # as older code wrote it
        del f["marks"], f["mark_iterations"]
    assert built.marks() is None and len(built.read()) == 4
