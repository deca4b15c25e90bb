"""What a run keeps: its directory (``rundir``), checkpoints and cached AE sets (``aesets``; the
file of one set: ``aeset_files``)."""

from bench.store.aesets import STORE_DIR, AESet, SetSpec, build_ae_set, open_ae_set, set_name
from bench.store.checkpoints import (
    CheckpointMeta,
    load_meta,
    load_model,
    load_network,
    save_model,
)

__all__ = [
    "STORE_DIR",
    "AESet",
    "CheckpointMeta",
    "SetSpec",
    "build_ae_set",
    "load_meta",
    "load_model",
    "load_network",
    "open_ae_set",
    "save_model",
    "set_name",
]
