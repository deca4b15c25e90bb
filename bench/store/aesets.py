"""Cached adversarial-example (AE) sets: ``<run>/aes/``, one HDF5 file (through h5py) per set.

A set named ``/<subset>/<attack>/<threat model>/<source>/eps<eps>`` (e.g.
``/mini_test/llcm/transfer/T/eps10``, ``/mini_test/apgd-ce/white-box/jpeg(T)/eps10``) lives in
``<run>/aes/mini_test/llcm/transfer/T/eps10.h5`` once finished. The file holds

    images   uint8 (N, 3, H, W), chunked one image per chunk
    done     uint8 (N,), 1 where the image has been written

and attributes: the key (threat model, attack name, label and parameters, eps, the sha256 of
every network the attack used, the attacked surface's settings, the subset and its fingerprint,
image shape, code version), the generation settings (batch size, device) and provenance (torch
version).

While a set is built it is ``eps10.partial.h5`` beside that name: generation writes batch by
batch, the images, a flush, then their ``done`` entries and a flush, so an interrupted build
resumes at the first missing batch with the same batch boundaries (the same batch size and
device are required; otherwise the set restarts), which gives bit-identical images. Both
datasets are allocated in full, and the disk space reserved, when the file is created: a full
disk stops the build there, with one line, before any attack. A finished set is flushed,
synced and renamed into place, and never opened for writing again, so no write, killed or
failed, can damage it. A set is reused only when every key field matches; otherwise it is
rebuilt (the old file stays until the new one replaces it), never mixed.

A file that HDF5 cannot read (a kill or a full disk in the middle of an HDF5 metadata write,
truncation, overwritten bytes) is moved aside to ``<file>.damaged-<time>`` with one warning,
and its set rebuilt. Stray ``*.tmp`` files in the store's folder (left by kills) are removed at
the start of every build. Under torchrun rank k writes its share of a set into
``eps10.rank<k>.h5``; rank 0 copies the shards into the set and removes them. ``aes.h5``, the
single-file store of earlier versions, is still read: a finished set in it whose key matches
is copied into the store instead of being attacked again. One writer at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from attacks.base import ATTACKS_VERSION, Attack, check_eps
from bench import dist
from bench.devices import module_device
from bench.errors import StoreError

STORE_DIR = "aes"
#: the single-file store of earlier versions, beside ``STORE_DIR``; read, never written
LEGACY_FILE = "aes.h5"
# Part of every set's key (and so of the evaluation's cache keys): the images of a set do not
# depend on the file layout, so the per-set files kept the version of the single-file store.
CODE_VERSION = f"attacks-{ATTACKS_VERSION}/store-1"

log = logging.getLogger(__name__)

# What h5py raises when HDF5 cannot read a file's structure (its messages vary by damage).
_UNREADABLE = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@dataclass(frozen=True)
class SetSpec:
    """What an AE set is, apart from its images.

    Args:
        subset: the split or subset its images come from (``mini_test``).
        attack: the attack's label in the run's suite (``llcm``, ``apgd-ce``).
        threat: ``transfer``, ``joint`` or ``white-box``.
        source: what was attacked: a network (``T``) or a surface (``T+S``, ``jpeg(T)``).
        eps: the L_inf radius in gray values.
        networks: role -> sha256 of every network the attack differentiated through.
        surface: a key of the attacked surface's settings (thresholds, transforms), or "".
    """

    subset: str
    attack: str
    threat: str
    source: str
    eps: float
    networks: dict[str, str]
    surface: str = ""

    @property
    def name(self) -> str:
        return set_name(self.subset, self.attack, self.threat, self.source, self.eps)


def set_name(subset: str, attack: str, threat: str, source: str, eps: float) -> str:
    """The name of an AE set, e.g. ``/mini_test/llcm/transfer/T/eps10``."""
    return f"/{subset}/{attack}/{threat}/{source}/eps{check_eps(eps):g}"


def set_file(store: str | Path, name: str) -> Path:
    """The file of the finished set ``name`` in the store folder ``store``
    (``<run>/aes/mini_test/llcm/transfer/T/eps10.h5``)."""
    return Path(store, *name.strip("/").split("/")[:-1], name.rsplit("/", 1)[-1] + ".h5")


def shard_path(final: Path, rank: int) -> Path:
    """The file rank ``rank`` writes its share of a set into (``eps10.rank1.h5``)."""
    return final.with_name(f"{final.name[:-3]}.rank{rank}.h5")


def _partial_path(final: Path) -> Path:
    return final.with_name(f"{final.name[:-3]}.partial.h5")


@dataclass(frozen=True)
class AESet:
    """A complete AE set in the store. The file is opened only while reading."""

    path: Path
    name: str
    length: int
    attrs: dict[str, Any]
    #: images generated by the call that returned this set (0: reused as it was)
    built: int = 0

    def __len__(self) -> int:
        return self.length

    def batches(
        self, batch_size: int = 8, spans: Sequence[tuple[int, int]] | None = None
    ) -> Iterator[Tensor]:
        """The images in order, ``batch_size`` at a time (memory bounded by one batch), or the
        (start, stop) ``spans`` given.

        Shapes:
            yields: (B, 3, H, W) uint8, B = batch_size (the last batch may be smaller).
        """
        if spans is None:
            spans = dist.batch_spans(self.length, batch_size)
        with _open_read(self.path) as store:
            images = store["images"]
            for start, stop in spans:
                try:
                    batch = images[start:stop]
                except _UNREADABLE as err:
                    raise StoreError(
                        f"cannot read AE set {self.name} from {self.path} ({err}); rerun the "
                        "command: the damaged file is moved aside and the set rebuilt"
                    ) from err
                yield torch.from_numpy(batch)

    def read(self) -> Tensor:
        """The whole set at once (small sets and tests)."""
        return torch.cat(list(self.batches(max(self.length, 1))))


def build_ae_set(
    store: str | Path,
    spec: SetSpec,
    *,
    model: nn.Module,
    dataset: Dataset,
    attack: Attack,
    batch_size: int = 8,
    progress: bool = True,
    after_batch: Callable[[Tensor], None] | None = None,
    rebuild: bool = False,
) -> AESet:
    """Return the AE set ``spec`` of ``attack`` on ``model`` over ``dataset``, building or
    finishing it in the store when needed.

    Args:
        store: the store's folder, normally ``<run>/aes``.
        spec: the set's identity (see ``SetSpec``).
        model: the attacked network or ensemble; the attack runs on its device.
        dataset: items ``(image uint8 (3, H, W), label int64 (H, W))`` with a ``fingerprint()``
            method (``CityscapesSegmentation``); labels are read only when the attack needs them.
        batch_size: images per attack call and per write.
        after_batch: called with every finished batch (uint8), in order: the attacked defense
            learns from it. Such a set cannot resume halfway (the defense's state is gone), so an
            unfinished one restarts.
        rebuild: discard a matching set and build it again.
    """
    if batch_size < 1:
        raise StoreError(f"batch_size must be >= 1, got {batch_size}")
    eps = check_eps(spec.eps)
    store = Path(store)
    first_image = dataset[0][0]
    key = {
        "threat": spec.threat,
        "attack": attack.name,
        "label": spec.attack,
        "params": attack.params(),
        "eps": eps,
        "source": spec.source,
        "networks": spec.networks,
        "surface": spec.surface,
        "split": spec.subset,
        "split_fingerprint": dataset.fingerprint(),
        "n_images": len(dataset),
        "image_shape": list(first_image.shape),
        "code_version": CODE_VERSION,
    }
    generation = {"batch_size": batch_size, "device": str(module_device(model))}
    job = _Job(spec.name, model, dataset, attack, eps, batch_size, progress, after_batch)
    final = set_file(store, spec.name)
    if dist.size() > 1 and after_batch is None:
        return _build_sharded(store, final, job, key, generation, rebuild)
    built = 0
    if dist.is_main():  # a defense that learns sees one ordered stream: rank 0 alone builds
        remove_strays(store)
        if rebuild or not _reusable(final, key):
            partial = _partial_path(final)
            restart = rebuild or after_batch is not None
            if rebuild or not _from_legacy(store, final, key, generation):
                with _open_partial(partial, job.name, key, generation, restart) as part:
                    # what an interrupted torchrun left in shards counts, unless it starts over
                    _merge_shards(part, final, job.name, discard=restart)
                    built = _generate(part, partial, job)
                _finish(partial, final, job.name)
    dist.barrier()
    # every rank has read the set before rank 0 may write the next one
    return dataclasses.replace(open_ae_set(store, spec.name), built=sum(dist.gather(built)))


@dataclass(frozen=True)
class _Job:
    """What to attack and how."""

    name: str
    model: nn.Module
    dataset: Dataset
    attack: Attack
    eps: float
    batch_size: int
    progress: bool
    after_batch: Callable[[Tensor], None] | None = None


def _build_sharded(
    store: Path,
    final: Path,
    job: _Job,
    key: dict[str, Any],
    generation: dict[str, Any],
    rebuild: bool,
) -> AESet:
    """Several processes build one set: batch b belongs to rank b % world size (the batches a
    single process would attack, so the images come out the same); each rank writes its own
    shard file, and rank 0 copies the shards into the set. A rank killed mid-set loses its
    unfinished batch only: the next run first copies what every shard holds, then resumes."""
    partial, done, reused = _partial_path(final), None, False
    if dist.is_main():
        remove_strays(store)
        reused = not rebuild and _reusable(final, key)
        if not reused and not rebuild:
            reused = _from_legacy(store, final, key, generation)
        if reused:
            done = np.ones(key["n_images"], dtype=bool)
        else:
            with _open_partial(partial, job.name, key, generation, rebuild) as part:
                _merge_shards(part, final, job.name, discard=rebuild)
                done = part["done"][()].astype(bool)
    done = dist.broadcast(done)
    spans = dist.mine(dist.batch_spans(len(done), job.batch_size))
    todo = [(start, stop) for start, stop in spans if not done[start:stop].all()]
    built = 0
    if todo:
        shard = shard_path(final, dist.rank())
        with _open_partial(shard, job.name, key, generation, False) as part:
            built = _generate(part, shard, job, spans=todo)
    dist.barrier()
    if dist.is_main() and not reused:
        with _open_partial(partial, job.name, key, generation, False) as part:
            _merge_shards(part, final, job.name)
        _finish(partial, final, job.name)
    dist.barrier()
    return dataclasses.replace(open_ae_set(store, job.name), built=sum(dist.gather(built)))


def open_ae_set(store: str | Path, name: str) -> AESet:
    """A complete set already in the store, by its name (``SetSpec.name``)."""
    final = set_file(store, name)
    if not final.is_file():
        done = _partial_done(_partial_path(final))
        if done is not None:
            raise StoreError(
                f"AE set {name} in {store} is incomplete ({int(done.sum())}/{len(done)} "
                "images); rerun bench attack to finish it"
            )
        raise StoreError(f"no AE set {name} in {store}; build it first (bench attack)")
    with _open_read(final) as part:
        try:
            attrs, done = _read_attrs(part), part["done"][()]
        except _UNREADABLE as err:
            raise StoreError(
                f"cannot read AE set {name} from {final} ({err}); rerun the command: the damaged "
                "file is moved aside and the set rebuilt"
            ) from err
    return AESet(final, name, len(done), attrs)


def _partial_done(partial: Path) -> np.ndarray | None:
    """The ``done`` mask of an unfinished set, or None (none there, or unreadable)."""
    try:
        with h5py.File(partial, "r") as part:
            return part["done"][()]
    except (*_UNREADABLE, FileNotFoundError):
        return None


def remove_strays(store: Path) -> list[Path]:
    """Remove the temporary files (``*.tmp``) that kills left in the store's folder; return
    them. Nothing else is touched: unfinished sets (``*.partial.h5``) resume, shards are merged,
    damaged files stay for the user to look at."""
    removed = []
    if store.is_dir():
        for path in sorted(store.rglob("*.tmp")):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


# --- internals ---------------------------------------------------------------------------------


def _open_read(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise StoreError(
            f"cannot read AE set file {path} ({err}); rerun the command: the damaged file is "
            "moved aside and the set rebuilt"
        ) from err


def _inspect(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """The attributes and ``done`` mask of a set file, after a look at every part HDF5 needs to
    read it (superblock, object headers, attributes, the chunk index); raises what h5py raises
    on a damaged file."""
    with h5py.File(path, "r") as part:
        attrs = _read_attrs(part)
        images, done = part["images"], part["done"][()]
        if images.shape[:1] != done.shape or images.dtype != np.uint8:
            raise ValueError(f"images {images.shape} do not match done {done.shape}")
        chunks: list[int] = []
        images.id.chunk_iter(lambda info: chunks.append(info.size))
        if len(chunks) != len(done):
            raise ValueError(f"{len(chunks)} chunks for {len(done)} images")
        return attrs, done


def _checked(path: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """``_inspect(path)``, or None when the file is missing or damaged (moved aside then)."""
    if not path.is_file():
        return None
    try:
        return _inspect(path)
    except _UNREADABLE as err:
        _move_aside(path, err)
        return None


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


def _reusable(final: Path, key: dict[str, Any]) -> bool:
    """Whether the finished set file holds the set of ``key``, readable and complete."""
    found = _checked(final)
    if found is None:
        return False
    attrs, done = found
    reason = _key_mismatch(attrs, key) or (None if done.all() else "unfinished")
    if reason is not None:
        log.info("rebuilding AE set %s: %s", final, reason)
    return reason is None


@contextlib.contextmanager
def _open_partial(
    path: Path, name: str, key: dict[str, Any], generation: dict[str, Any], restart: bool
) -> Iterator[h5py.File]:
    """The unfinished set file ``path`` for writing: reused when readable and made under the
    same key and generation settings, else created afresh (a damaged one moved aside)."""
    found = None if restart else _checked(path)
    if found is not None:
        reason = _key_mismatch(found[0], key) or _generation_mismatch(found[0], generation)
        if reason is not None:
            log.info("restarting AE set %s: %s", name, reason)
            found = None
    with _writing(path, name):
        if found is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            _create(path, key, generation)
        part = h5py.File(path, "r+")
    try:
        yield part
    except BaseException:
        with contextlib.suppress(OSError, RuntimeError):
            part.close()  # after a failed write HDF5 may fail to close too: the first error counts
        raise
    with _writing(path, name):
        part.close()


def _create(path: Path, key: dict[str, Any], generation: dict[str, Any]) -> None:
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


@contextlib.contextmanager
def _writing(path: Path, name: str) -> Iterator[None]:
    """Turn a full disk (or quota) or a read-only folder while writing ``path`` into one line."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
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


def _disk_full(err: BaseException) -> bool:
    for cause in (err, err.__cause__, err.__context__):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if cause is not None and (
            f"errno = {errno.ENOSPC}," in str(cause) or f"errno = {errno.EDQUOT}," in str(cause)
        ):
            return True  # h5py reports HDF5's failed writes as RuntimeError
    return False


def _finish(partial: Path, final: Path, name: str) -> None:
    """Put a complete set in place: synced, then renamed over any older file of its name."""
    with _writing(partial, name):
        with h5py.File(partial, "r") as part:
            if not part["done"][()].all():
                return  # a rank failed; the error that stopped it is reported elsewhere
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)


def _read_attrs(node: h5py.Group) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in node.attrs.items()}


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


def _making(attrs: dict[str, Any]) -> dict[str, Any]:
    """A set's key and generation settings, the device's type only (rank 1 works on cuda:1)."""
    attrs = dict(attrs)
    attrs.pop("torch_version", None)
    attrs["device"] = str(attrs.get("device", "")).split(":")[0]
    return attrs


def _copy_done(source: Any, part: h5py.File) -> None:
    """Copy the images ``source`` (a set file or group) holds and ``part`` lacks."""
    done = source["done"][()].astype(bool)
    for index in np.flatnonzero(done & ~part["done"][()].astype(bool)):
        part["images"][index] = source["images"][index]
    part.flush()  # the images reach the file before they are marked done
    part["done"][done] = 1
    part.flush()


def _merge_shards(part: h5py.File, final: Path, name: str, *, discard: bool = False) -> None:
    """Copy every image the shard files hold for this set into it, then remove the shards. Only
    shard images made under the set's key and generation settings count (the device's type, not
    its index); ``discard`` drops them unread, and a damaged shard is moved aside."""
    mine = _making(_read_attrs(part))
    for shard in sorted(final.parent.glob(f"{final.name[:-3]}.rank*.h5")):
        found = None if discard else _checked(shard)
        if found is not None and _making(found[0]) == mine and len(found[1]) == len(part["done"]):
            with _writing(part.filename, name), h5py.File(shard, "r") as source:
                _copy_done(source, part)
        shard.unlink(missing_ok=True)


def _from_legacy(store: Path, final: Path, key: dict[str, Any], generation: dict[str, Any]) -> bool:
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
    partial = _partial_path(final)
    with old:
        try:
            group = old.get(name)
            if not isinstance(group, h5py.Group) or _key_mismatch(_read_attrs(group), key):
                return False
            if not group["done"][()].all():
                return False
            attrs, images = dict(group.attrs.items()), group["images"]
        except _UNREADABLE as err:
            log.info("AE set %s not taken from %s: %s", name, legacy, err)
            return False
        with _open_partial(partial, name, key, generation, True) as part:
            with _writing(partial, name):
                for field, value in attrs.items():
                    part.attrs[field] = value  # its own generation settings and provenance
            for index in range(len(images)):
                try:
                    image = images[index]
                except _UNREADABLE as err:
                    log.info("AE set %s not taken from %s: %s", name, legacy, err)
                    return False
                with _writing(partial, name):
                    _write_batch(part, index, index + 1, image[None])
    _finish(partial, final, name)
    log.info("AE set %s copied from %s", name, legacy)
    return True


def _generate(
    part: h5py.File, path: Path, job: _Job, spans: list[tuple[int, int]] | None = None
) -> int:
    """Attack every batch (of ``spans``, default all) whose images are not all done, in order;
    write and flush each. Returns the number of images attacked."""
    done = part["done"][()].astype(bool)
    n, built = len(done), 0
    name, model, dataset, attack, eps = job.name, job.model, job.dataset, job.attack, job.eps
    batch_size, after_batch = job.batch_size, job.after_batch
    if spans is None:
        spans = dist.batch_spans(n, batch_size)
    total = sum(stop - start for start, stop in spans)
    initial = sum(int(done[start:stop].sum()) for start, stop in spans)
    with tqdm(
        total=total, initial=initial, desc=name, unit="img", disable=not job.progress, leave=False
    ) as bar:
        for start, stop in spans:
            if done[start:stop].all():
                continue
            items = [dataset[i] for i in range(start, stop)]
            clean = torch.stack([image for image, _ in items])
            labels = torch.stack([label for _, label in items]) if attack.needs_labels else None
            if labels is not None and labels.numel() == 0:
                raise StoreError(
                    f"attack {attack.name} needs labels but the {name.split('/')[1]} split has none"
                )
            adv = attack(model, clean, eps=eps, labels=labels, index=torch.arange(start, stop))
            if after_batch is not None:
                after_batch(adv)
            with _writing(path, name):
                _write_batch(part, start, stop, adv.cpu().numpy())
            bar.update(stop - start - int(done[start:stop].sum()))
            built += stop - start
    return built


def _write_batch(part: h5py.File, start: int, stop: int, images: np.ndarray) -> None:
    """Write one batch: its images, a flush, then its ``done`` entries and a flush."""
    part["images"][start:stop] = images
    part.flush()  # the images reach the file before they are marked done
    part["done"][start:stop] = 1
    part.flush()
