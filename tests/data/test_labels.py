"""The label table against cityscapesscripts' own ``helpers/labels.py``."""

import numpy as np
import pytest

from bench.data.labels import CLASS_NAMES, LABELS, PALETTE, TRAIN_TO_LABEL, label_ids_to_train_ids


def test_table_matches_cityscapesscripts():
    official = pytest.importorskip("cityscapesscripts.helpers.labels")
    ours = {label_id: (name, train_id, colour) for name, label_id, train_id, colour in LABELS}
    for label in official.labels:
        if label.id < 0:
            continue
        assert ours[label.id] == (label.name, label.trainId, label.color)
    evaluated = sorted((lab.trainId, lab.name) for lab in official.labels if not lab.ignoreInEval)
    assert tuple(name for _, name in evaluated) == CLASS_NAMES
    assert len(CLASS_NAMES) == 19 and PALETTE.shape == (19, 3)


def test_label_ids_round_trip_and_ignore():
    train_ids = np.arange(19, dtype=np.uint8)
    assert (label_ids_to_train_ids(TRAIN_TO_LABEL[train_ids]) == train_ids).all()
    # void labelIds (unlabeled, ego vehicle, parking, ...) and the -1 of license plate as 255
    assert (label_ids_to_train_ids(np.array([0, 1, 9, 14, 29, 255], dtype=np.uint8)) == 255).all()
