"""The HDF5 file of one cached AE set, and what keeps it whole: its paths, reading and checking
it, moving a damaged one aside, creating it with its space reserved, writing batches with a full
disk turned into one line, finishing it by a rename, stray temporaries, and the copy of a set
from the single-file store of earlier versions. What a set is and how it is built: ``aesets``.

The finished set ``/mini_test/llcm/transfer/T/eps10`` is ``<store>/mini_test/llcm/transfer/T/
eps10.h5``; it holds

    images           uint8 (N, 3, H, W), chunked one image per chunk
    done             uint8 (N,), 1 where the image has been written
    marks            int64 (N, M, 2, C), only for attacks that judge their iterates: per image,
                     the intersections and unions per class of the attacked system's output
                     at its best iterate at M marks of the budget (``attacks.best_iterate``)
    mark_iterations  int64 (M,), the iteration counts of those marks

(sets of older versions have no marks and load as they are)

and attributes (JSON each): the set's key, its generation settings and provenance (torch
version).

While a set is built it is ``eps10.partial.h5`` beside that name, written batch by batch: the
images, a flush, then their ``done`` entries and a flush. Both datasets are allocated in full,
and the disk space reserved, when the file is created (under a temporary name, renamed into
place): a full disk stops the build there, with one line, before any attack. A finished set is
flushed, synced and renamed into place, and never opened for writing again, so no write, killed
or failed, can damage it. Under torchrun rank k writes its share into ``eps10.rank<k>.h5``.

A file that HDF5 cannot read (a kill or a full disk in the middle of an HDF5 metadata write,
truncation, overwritten bytes) is moved aside to ``<file>.damaged-<time>`` with one warning, and
its set rebuilt. The store's own temporary files (``.*.h5.*.tmp``) that kills left are removed
at the start of every build. ``aes.h5``, the single-file store of earlier versions, is still read: a
finished set in it whose key matches is copied into the store instead of being attacked again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from bench.data.labels import NUM_CLASSES
from bench.errors import StoreError
from bench.files import DISK_FULL, READ_ONLY

#: the single-file store of earlier versions, beside the store's folder; read, never written
LEGACY_FILE = "aes.h5"

log = logging.getLogger(__name__)

# What h5py raises when HDF5 cannot read a file's structure (its messages vary by damage).
_UNREADABLE = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def set_file(store: str | Path, name: str) -> Path:
    """The file of the finished set ``name`` in the store folder ``store``
    (``<run>/aes/mini_test/llcm/transfer/T/eps10.h5``)."""
    return Path(store, *name.strip("/").split("/")[:-1], name.rsplit("/", 1)[-1] + ".h5")


def partial_path(final: Path) -> Path:
    """The file a set is built in until it is finished (``eps10.partial.h5``)."""
    return final.with_name(f"{final.name[:-3]}.partial.h5")


def shard_path(final: Path, rank: int) -> Path:
    """The file rank ``rank`` writes its share of a set into (``eps10.rank1.h5``)."""
    return final.with_name(f"{final.name[:-3]}.rank{rank}.h5")


def shard_files(final: Path) -> list[Path]:
    """The shard files of the set ``final`` that are there, in order of their names."""
    return sorted(final.parent.glob(f"{final.name[:-3]}.rank*.h5"))


def read_attrs_and_done(path: Path, name: str) -> tuple[dict[str, Any], np.ndarray]:
    """The attributes and ``done`` mask of the set file ``path``; one line when unreadable."""
    with _open_read(path) as part:
        try:
            return read_attrs(part), part["done"][()]
        except _UNREADABLE as err:
            raise _unreadable_set(name, path, err) from err


def read_images(path: Path, name: str, spans: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
    """The images of the set file ``path``, one (start, stop) span at a time; one line when
    unreadable."""
    with _open_read(path) as part:
        images = part["images"]
        for start, stop in spans:
            try:
                batch = images[start:stop]
            except _UNREADABLE as err:
                raise _unreadable_set(name, path, err) from err
            yield batch


def read_marks(path: Path, name: str) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The marks of the set file ``path`` ((N, M, 2, C) int64) and their iteration counts, or
    None for a set without marks; one line when unreadable."""
    with _open_read(path) as part:
        if "marks" not in part:
            return None
        try:
            return part["marks"][()], tuple(int(i) for i in part["mark_iterations"][()])
        except _UNREADABLE as err:
            raise _unreadable_set(name, path, err) from err


def partial_done(partial: Path) -> np.ndarray | None:
    """The ``done`` mask of an unfinished set, or None (none there, or unreadable)."""
    try:
        with h5py.File(partial, "r") as part:
            return part["done"][()]
    except (*_UNREADABLE, FileNotFoundError):
        return None


def remove_strays(store: Path) -> list[Path]:
    """Remove the temporary files that kills left in the store's folder (``_create``'s
    ``.<set file>.h5.<pid>.tmp``); return them. Nothing else is touched: unfinished sets
    (``*.partial.h5``) resume, shards are merged, damaged files stay for the user to look at,
    and other ``*.tmp`` files are not ours (``aes/`` may be a link to another disk)."""
    removed = []
    if store.is_dir():
        for path in sorted(store.rglob(".*.h5.*.tmp")):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def check_set_file(path: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """The attributes and ``done`` mask of a set file, after a look at every part HDF5 needs to
    read it; None when the file is missing or damaged (moved aside then)."""
    if not path.is_file():
        return None
    try:
        return _inspect(path)
    except _UNREADABLE as err:
        _move_aside(path, err)
        return None


def reusable(final: Path, key: dict[str, Any]) -> bool:
    """Whether the finished set file holds the set of ``key``, readable and complete."""
    found = check_set_file(final)
    if found is None:
        return False
    attrs, done = found
    reason = _key_mismatch(attrs, key) or (None if done.all() else "unfinished")
    if reason is not None:
        log.info("rebuilding AE set %s: %s", final, reason)
    return reason is None


@contextlib.contextmanager
def open_partial(
    path: Path,
    name: str,
    key: dict[str, Any],
    generation: dict[str, Any],
    restart: bool,
    marks: Sequence[int] = (),
) -> Iterator[h5py.File]:
    """The unfinished set file ``path`` for writing: reused when readable and made under the
    same key and generation settings, else created afresh (a damaged one moved aside) with room
    for the marks at the iteration counts ``marks``."""
    found = None if restart else check_set_file(path)
    if found is not None:
        reason = _key_mismatch(found[0], key) or _generation_mismatch(found[0], generation)
        if reason is not None:
            log.info("restarting AE set %s: %s", name, reason)
            found = None
    with writing(path, name):
        if found is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            _create(path, key, generation, marks)
        part = h5py.File(path, "r+")
    try:
        yield part
    except BaseException:
        with contextlib.suppress(OSError, RuntimeError):
            part.close()  # after a failed write HDF5 may fail to close too: the first error counts
        raise
    with writing(path, name):
        part.close()


def write_batch(
    part: h5py.File, start: int, stop: int, images: np.ndarray, marks: np.ndarray | None = None
) -> None:
    """Write one batch: its images (and marks, where the file has room for them), a flush, then
    its ``done`` entries and a flush."""
    part["images"][start:stop] = images
    if marks is not None and "marks" in part:
        part["marks"][start:stop] = marks
    part.flush()  # the images reach the file before they are marked done
    part["done"][start:stop] = 1
    part.flush()


@contextlib.contextmanager
def writing(path: Path, name: str) -> Iterator[None]:
    """Turn a full disk (or quota) or a read-only folder while writing ``path`` into one line."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.errno in READ_ONLY:
            raise StoreError(
                f"cannot write AE set {name} to {path}: {path.parent} is read-only; "
                "choose a writable folder (--out DIR)"
            ) from err
        if not _disk_full(err):
            raise
        raise StoreError(
            f"cannot write AE set {name} to {path}: disk full ({os.strerror(errno.ENOSPC)}); "
            "free space, then rerun: the set resumes"
        ) from err


def finish_set(partial: Path, final: Path, name: str) -> None:
    """Put a complete set in place: synced, then renamed over any older file of its name."""
    with writing(partial, name):
        with h5py.File(partial, "r") as part:
            if not part["done"][()].all():
                return  # a rank failed; the error that stopped it is reported elsewhere
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)


def copy_from_legacy(
    store: Path, final: Path, key: dict[str, Any], generation: dict[str, Any]
) -> bool:
    """Copy a finished set with this key from the single-file store of earlier versions
    (``<run>/aes.h5``), if there is one; whether it was there. Never writes that file."""
    legacy = store.parent / LEGACY_FILE
    name = "/" + "/".join(final.relative_to(store).with_suffix("").parts)
    if not legacy.is_file():
        return False
    try:
        old = h5py.File(legacy, "r")
    except OSError as err:
        log.info("AE set %s not taken from %s: %s", name, legacy, err)
        return False
    partial = partial_path(final)
    with old:
        try:
            group = old.get(name)
            if not isinstance(group, h5py.Group) or _key_mismatch(read_attrs(group), key):
                return False
            if not group["done"][()].all():
                return False
            attrs, images = dict(group.attrs.items()), group["images"]
        except _UNREADABLE as err:
            log.info("AE set %s not taken from %s: %s", name, legacy, err)
            return False
        with open_partial(partial, name, key, generation, True) as part:
            with writing(partial, name):
                for field, value in attrs.items():
                    part.attrs[field] = value  # its own generation settings and provenance
            for index in range(len(images)):
                try:
                    image = images[index]
                except _UNREADABLE as err:
                    log.info("AE set %s not taken from %s: %s", name, legacy, err)
                    return False
                with writing(partial, name):
                    write_batch(part, index, index + 1, image[None])
    finish_set(partial, final, name)
    log.info("AE set %s copied from %s", name, legacy)
    return True


def read_attrs(node: h5py.Group) -> dict[str, Any]:
    """The attributes of a set file (or of a set's group in the legacy file), decoded."""
    return {k: json.loads(v) for k, v in node.attrs.items()}


# --- internals ---------------------------------------------------------------------------------


def _open_read(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise StoreError(
            f"cannot read AE set file {path} ({err}); rerun the command: the damaged file is "
            "moved aside and the set rebuilt"
        ) from err


def _unreadable_set(name: str, path: Path, err: BaseException) -> StoreError:
    return StoreError(
        f"cannot read AE set {name} from {path} ({err}); rerun the command: the damaged file is "
        "moved aside and the set rebuilt"
    )


def _inspect(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """The attributes and ``done`` mask of a set file, after a look at every part HDF5 needs to
    read it (superblock, object headers, attributes, the chunk index); raises what h5py raises
    on a damaged file."""
    with h5py.File(path, "r") as part:
        attrs = read_attrs(part)
        images, done = part["images"], part["done"][()]
        if images.shape[:1] != done.shape or images.dtype != np.uint8:
            raise ValueError(f"images {images.shape} do not match done {done.shape}")
        chunks: list[int] = []
        images.id.chunk_iter(lambda info: chunks.append(info.size))
        if len(chunks) != len(done):
            raise ValueError(f"{len(chunks)} chunks for {len(done)} images")
        return attrs, done


def _move_aside(path: Path, err: BaseException) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, aside)
    detail = " ".join(str(err).split())
    log.warning(
        "AE set file %s cannot be read (%s); moved it to %s and rebuilding", path, detail, aside
    )
    return aside


def _create(
    path: Path, key: dict[str, Any], generation: dict[str, Any], marks: Sequence[int] = ()
) -> None:
    """A new set file with both datasets allocated in full (later batch writes then change raw
    data only, never metadata) and the disk space of the whole file reserved; made under a
    temporary name (``.eps10.partial.h5.<pid>.tmp``) and renamed into place when complete."""
    n, shape = key["n_images"], tuple(key["image_shape"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as part:
            for field, value in {**key, **generation, "torch_version": torch.__version__}.items():
                part.attrs[field] = json.dumps(value, sort_keys=True)
            part.create_dataset(
                "images",
                shape=(n, *shape),
                dtype=np.uint8,
                chunks=(1, *shape),
                dcpl=_early_allocation(),
                fill_time="never",
            )
            part.create_dataset("done", shape=(n,), dtype=np.uint8, dcpl=_early_allocation())
            if marks:  # datasets, not attributes: the attributes are the set's key
                part.create_dataset(
                    "marks",
                    shape=(n, len(marks), 2, NUM_CLASSES),
                    dtype=np.int64,
                    dcpl=_early_allocation(),
                )
                part.create_dataset("mark_iterations", data=np.asarray(marks, dtype=np.int64))
            part.flush()
            size = part.id.get_filesize()
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _early_allocation() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _disk_full(err: BaseException) -> bool:
    for cause in (err, err.__cause__, err.__context__):
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            return True
        if cause is not None and any(f"errno = {code}," in str(cause) for code in DISK_FULL):
            return True  # h5py reports HDF5's failed writes as RuntimeError
    return False


def _key_mismatch(attrs: dict[str, Any], key: dict[str, Any]) -> str | None:
    for field, value in key.items():
        if attrs.get(field) != json.loads(json.dumps(value, sort_keys=True)):
            return f"{field} changed ({attrs.get(field)!r} -> {value!r})"
    return None


def _generation_mismatch(attrs: dict[str, Any], generation: dict[str, Any]) -> str | None:
    for field, value in generation.items():
        if attrs.get(field) != value:
            return f"unfinished set was generated with {field}={attrs.get(field)!r}, now {value!r}"
    return None
