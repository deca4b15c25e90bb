"""The run directory: checkpoints (``checkpoints.py``) and cached AE sets (``aesets.py``)."""

from bench.store.checkpoints import (
    CheckpointError,
    ModelRecord,
    load_model,
    load_record,
    save_model,
    sha256_file,
)

__all__ = ["CheckpointError", "ModelRecord", "load_model", "load_record", "save_model", "sha256_file"]
