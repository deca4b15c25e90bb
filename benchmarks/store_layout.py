"""The AE store's layout, measured: one HDF5 file for every set (the store before the per-set
files) against one file per set (``bench/store/aesets.py``), side by side in one run.

Both write the sets of a finished run (``--run``, e.g. a ``bench run --preset smoke``) the way
the store does: datasets allocated in full, one chunk per image, every batch written and flushed
twice (images, then their ``done`` entries); the per-set layout goes through the store's own
code (``build_ae_set`` with an "attack" that replays the stored images), so it pays for
everything the store does (checks, reserving the space, sync and rename). Then every set is
read back batch by batch. Prints the CPU model, the median of ``--repeat`` rounds and the bytes
on disk.

    python benchmarks/store_layout.py --run runs/smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from bench.store import SetSpec, build_ae_set, open_ae_set
from bench.store.aesets import STORE_DIR


def _sets(run: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """name -> (attributes, images) of every finished set of the run."""
    found = {}
    for path in sorted((run / STORE_DIR).rglob("*.h5")):
        with h5py.File(path, "r") as part:
            attrs = {k: json.loads(v) for k, v in part.attrs.items()}
            name = "/" + path.relative_to(run / STORE_DIR).with_suffix("").as_posix()
            found[name] = (attrs, part["images"][()])
    return found


def _early() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _single_file(folder: Path, sets: dict, batch: int) -> None:
    """The old layout: one group per set in one file, written batch by batch."""
    with h5py.File(folder / "aes.h5", "a") as store:
        for name, (attrs, images) in sets.items():
            group = store.create_group(name)
            for field, value in attrs.items():
                group.attrs[field] = json.dumps(value, sort_keys=True)
            ds = group.create_dataset(
                "images",
                shape=images.shape,
                dtype=np.uint8,
                chunks=(1, *images.shape[1:]),
                dcpl=_early(),
                fill_time="never",
            )
            done = group.create_dataset("done", shape=(len(images),), dtype=np.uint8, dcpl=_early())
            store.flush()
            for start in range(0, len(images), batch):
                ds[start : start + batch] = images[start : start + batch]
                store.flush()
                done[start : start + batch] = 1
                store.flush()


class _Replay:
    """An "attack" that returns the stored images of one set."""

    needs_labels = False

    def __init__(self, attrs: dict, images: np.ndarray) -> None:
        self.name, self._params, self.images = attrs["attack"], attrs["params"], images

    def params(self) -> dict:
        return self._params

    def __call__(self, model, clean, *, eps, labels=None, index=None):
        return torch.from_numpy(self.images[int(index[0]) : int(index[-1]) + 1])


class _Data:
    """A stand-in dataset with the set's size, shape and fingerprint."""

    def __init__(self, attrs: dict) -> None:
        self.attrs = attrs

    def __len__(self) -> int:
        return self.attrs["n_images"]

    def __getitem__(self, index: int):
        return torch.zeros(self.attrs["image_shape"], dtype=torch.uint8), torch.zeros(0)

    def fingerprint(self) -> str:
        return self.attrs["split_fingerprint"]


def _per_set(folder: Path, sets: dict, batch: int) -> None:
    """The store's own code: one file per set."""
    model = nn.Conv2d(3, 3, 1)
    for name, (attrs, images) in sets.items():
        parts = name.strip("/").split("/")
        spec = SetSpec(
            attrs["split"],
            attrs["label"],
            attrs["threat"],
            attrs["source"],
            attrs["eps"],
            attrs["networks"],
            attrs["surface"],
        )
        assert spec.name == name, (spec.name, parts)
        build_ae_set(
            folder / STORE_DIR,
            spec,
            model=model,
            dataset=_Data(attrs),
            attack=_Replay(attrs, images),
            batch_size=batch,
            progress=False,
        )


def _read_single(folder: Path, sets: dict, batch: int) -> int:
    total = 0
    with h5py.File(folder / "aes.h5", "r") as store:
        for name in sets:
            images = store[name]["images"]
            for start in range(0, len(images), batch):
                total += int(images[start : start + batch].shape[0])
    return total


def _read_per_set(folder: Path, sets: dict, batch: int) -> int:
    total = 0
    for name in sets:
        for chunk in open_ae_set(folder / STORE_DIR, name).batches(batch):
            total += int(chunk.shape[0])
    return total


def _bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory")
    parser.add_argument("--batch-size", type=int, default=1, help="images per write [1]")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = _sets(args.run)
    n_images = sum(len(images) for _, images in sets.values())
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "?"
    )
    print(f"CPU: {model}")
    print(
        f"{len(sets)} sets, {n_images} images, batch size {args.batch_size}, {args.repeat} rounds"
    )
    layouts = {
        "single file": (_single_file, _read_single),
        "per-set files": (_per_set, _read_per_set),
    }
    times: dict[str, dict[str, list[float]]] = {k: {"build": [], "read": []} for k in layouts}
    sizes = {}
    for _ in range(args.repeat):
        for label, (write, read) in layouts.items():  # alternated, so load hits both alike
            folder = Path(tempfile.mkdtemp(prefix="store_layout."))
            try:
                start = time.perf_counter()
                write(folder, sets, args.batch_size)
                times[label]["build"].append(time.perf_counter() - start)
                start = time.perf_counter()
                assert read(folder, sets, 8) == n_images
                times[label]["read"].append(time.perf_counter() - start)
                sizes[label] = _bytes(folder)
            finally:
                shutil.rmtree(folder)
    print(f"{'layout':<14} {'build (median)':>15} {'read (median)':>14} {'bytes':>10} {'files':>6}")
    for label in layouts:
        build = statistics.median(times[label]["build"])
        read = statistics.median(times[label]["read"])
        size, count = sizes[label]
        print(f"{label:<14} {build * 1000:>12.1f} ms {read * 1000:>11.1f} ms {size:>10} {count:>6}")


if __name__ == "__main__":
    main()
