"""What the data a stage reads *is*, as a short key: changed files give a changed key.

Two ways, chosen per tree:

- A toy city carries a manifest (``toycity.json``: its generator settings and the sha256 of every
  file it wrote). When every file a dataset reads is listed there with its current content, the
  data is named by those settings. That name is the same on every machine that generates the same
  toy city, which is what lets a run recognise the shipped reference checkpoints.
- Any other tree (a real Cityscapes copy, an edited toy city) is named by the file names, sizes and
  modification times of what is read: a stat per file, cheap even for Cityscapes' 45,000 files.
  Editing, adding or replacing a file changes the key.

File hashes are remembered per (path, size, mtime) within a process, so a tree is hashed once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.files import sha256_file
from bench.keys import cache_key

MANIFEST = "toycity.json"

_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (remembered until its size or mtime change)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = sha256_file(path)
    return _hashes[key]


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The toy city manifest of ``root`` (settings and file hashes), or None."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def data_identity(root: Path, files: Sequence[Path], selection: Any) -> str:
    """The key of the data that ``files`` (under ``root``) hold for ``selection`` (split, cities,
    size, ...): the toy city's settings when the manifest vouches for every file, else the files'
    names, sizes and mtimes."""
    manifest = read_manifest(root)
    relative = [f.relative_to(root).as_posix() for f in files]
    if manifest is not None:
        listed = manifest["files"]
        if all(listed.get(r) == file_sha256(f) for r, f in zip(relative, files)):
            return cache_key("toycity", manifest["settings"], selection)
    stats = [(r, f.stat().st_size, f.stat().st_mtime_ns) for r, f in zip(relative, files)]
    return cache_key("files", stats, selection)
