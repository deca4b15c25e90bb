"""``cache_key``: the one way the project turns settings into a cache key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any


def cache_key(*parts: Any) -> str:
    """A short, stable hash of settings: dataclasses, dicts, lists, numbers, strings, paths.

    Canonical JSON (sorted keys, tuples as lists), so equal settings give equal keys on every
    machine and in every process.
    """

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        raise TypeError(f"cache_key cannot hash {type(value).__name__}")

    text = json.dumps(parts, sort_keys=True, default=plain, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
