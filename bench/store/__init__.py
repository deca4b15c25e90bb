"""The run directory: checkpoints (``checkpoints.py``) and cached AE sets (``aesets.py``)."""

from bench.store.aesets import (
    STORE_FILE,
    AESet,
    AEStoreError,
    attack_tag,
    build_ae_set,
    load_ae_set,
    open_ae_set,
    set_name,
)
from bench.store.checkpoints import (
    CheckpointError,
    ModelRecord,
    load_model,
    load_record,
    save_model,
    sha256_file,
)

__all__ = ["CheckpointError", "ModelRecord", "load_model", "load_record", "save_model", "sha256_file"]
__all__ += [
    "STORE_FILE",
    "AESet",
    "AEStoreError",
    "attack_tag",
    "build_ae_set",
    "load_ae_set",
    "open_ae_set",
    "set_name",
]
