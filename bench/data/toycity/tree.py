"""The toy city's tree: every scene written as a PNG in the Cityscapes layout, with a manifest.

<out>/leftImg8bit/<split>/<city>/<city>_<seq>_000019_leftImg8bit.png
<out>/gtFine/<split>/<city>/<city>_<seq>_000019_gtFine_labelIds.png        (train, val)
<out>/gtCoarse/train_extra/<city>/<city>_<seq>_000019_gtCoarse_labelIds.png (train_extra)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.data.cityscapes import image_path, label_kind, label_path
from bench.data.identity import MANIFEST, file_sha256, read_manifest
from bench.data.toycity.canvas import DEFAULT_STYLE, SceneStyle, ToyCityError
from bench.data.toycity.scene import render_scene
from bench.files import atomic_write, atomic_write_text, exclusive_lock

CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf"),
    "train_extra": ("augsburg", "bad-honnef", "bamberg", "bayreuth", "dortmund", "dresden"),
    "val": ("frankfurt", "lindau", "munster"),
}
# The manifest (settings + sha256 of every file) is written last: a tree without it is
# incomplete, and a run names unedited toy-city data by its settings (bench.data.identity).
_SETTINGS = "settings.json"  # the settings of an unfinished tree in <out>.partial
_FRAME = 19  # Cityscapes' annotated frame is the 20th of each snippet


def _coarse(label_ids: np.ndarray, band: int = 2) -> np.ndarray:
    """Coarse labels like gtCoarse: fine labels with class boundaries blanked to void (0)."""
    keep = np.ones(label_ids.shape, bool)
    for axis in (0, 1):
        for shift in (-band, band):
            keep &= np.roll(label_ids, shift, axis=axis) == label_ids
    return np.where(keep, label_ids, 0).astype(np.uint8)


def _write_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=1))


def image_names(split: str, count: int) -> list[tuple[str, str]]:
    """(city, file stem) of images 0..count-1 of ``split``: round-robin over the split's cities."""
    cities = CITIES[split]
    return [
        (cities[i % len(cities)], f"{cities[i % len(cities)]}_{i // len(cities):06d}_{_FRAME:06d}")
        for i in range(count)
    ]


def generate_toycity(
    out: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    train: int = 500,
    train_extra: int = 500,
    val_per_city: int = 30,
    style: SceneStyle = DEFAULT_STYLE,
    progress: bool = True,
) -> Path:
    """Write a toy city into ``out`` in the Cityscapes layout and return ``out``.

    Args:
        out: the new data root; must be missing, empty, or a finished toy city of the same settings
            (then nothing is written).
        seed: same seed -> byte-identical files.
        size: (H, W) of the images.
        train, train_extra: number of images of those splits (round-robin over ``CITIES``).
        val_per_city: images of each val city: Lindau = mini val, Frankfurt + Muenster = mini test.
        style: appearance of the scenes.

    Files are built in ``<out>.partial`` (each written atomically, so an interrupted run resumes
    there) and the folder is renamed to ``out`` only when complete, with ``toycity.json`` inside.
    """
    out = Path(out)
    h, w = size
    if h < 8 or w < 8 or min(train, train_extra, val_per_city) < 0:
        raise ToyCityError(
            f"toy city needs a size of at least 8x8 and counts >= 0, got {h}x{w}, "
            f"train={train}, train_extra={train_extra}, val_per_city={val_per_city}"
        )
    settings = {
        "seed": seed,
        "size": [h, w],
        "train": train,
        "train_extra": train_extra,
        "val_per_city": val_per_city,
        "style": asdict(style),
    }
    settings["style"]["exposure"] = list(style.exposure)
    if _finished(out, settings):
        return out  # nothing to write: a read-only shared toy city is fine
    busy = f"another bench process is generating the toy city {out}; wait for it to finish"
    with exclusive_lock(out.with_name(f".{out.name}.lock"), busy):
        return _generate(out, settings, (h, w), style, progress)


def _stored_settings(out: Path) -> dict | None:
    """The settings in ``out``'s manifest (also of trees made before manifests held hashes);
    None without one; ToyCityError for a damaged one."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        raise ToyCityError(f"{path} is damaged; delete {out} and run again to regenerate it")
    return stored.get("settings", stored)


def _finished(out: Path, settings: dict) -> bool:
    return out.is_dir() and _stored_settings(out) == settings and read_manifest(out) is not None


def _generate(
    out: Path, settings: dict, size: tuple[int, int], style: SceneStyle, progress: bool
) -> Path:
    if out.exists():
        if not out.is_dir():
            raise ToyCityError(f"{out} is a file; choose a folder for the toy city")
        stored = _stored_settings(out)
        if stored is not None:
            if stored == settings:
                if read_manifest(out) is None:  # made before trees carried file hashes
                    _write_manifest(out, settings)
                return out
            raise ToyCityError(
                f"{out} holds a toy city made with other settings; delete it, or point the run "
                "elsewhere (--data, or --set data.root=DIR)"
            )
        if any(out.iterdir()):
            raise ToyCityError(
                f"{out} is not empty and not a toy city; choose an empty or new folder"
            )
    partial = out.with_name(out.name + ".partial")
    marker = partial / _SETTINGS
    if partial.exists():
        if marker.is_file():
            if json.loads(marker.read_text()) != settings:
                shutil.rmtree(partial)  # our own leftovers, from a run with other settings
        elif any(partial.iterdir()):
            raise ToyCityError(
                f"{partial} exists and is not an interrupted toy city; move it away first"
            )
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(settings, indent=1))

    jobs = [
        (split, i, city, stem)
        for split, count in (
            ("train", settings["train"]),
            ("train_extra", settings["train_extra"]),
            ("val", settings["val_per_city"] * len(CITIES["val"])),
        )
        for i, (city, stem) in enumerate(image_names(split, count))
    ]
    for split, i, city, stem in tqdm(jobs, desc="toy city", unit="img", disable=not progress):
        image_file = image_path(partial, split, city, stem)
        label_file = label_path(partial, split, city, stem)
        if image_file.is_file() and label_file.is_file():
            continue  # written by an interrupted run with the same settings
        image, label_ids = render_scene(settings["seed"], split, i, size, style)
        coarse = label_kind(split) == "gtCoarse"
        _write_png(_coarse(label_ids) if coarse else label_ids, label_file)
        _write_png(image, image_file)
    marker.unlink()
    _write_manifest(partial, settings)
    if out.exists():
        out.rmdir()  # empty, checked above
    partial.rename(out)
    return out


def _write_manifest(root: Path, settings: dict) -> None:
    """``toycity.json``: the settings and the sha256 of every image and label of the tree."""
    files = sorted(
        p for kind in ("leftImg8bit", "gtFine", "gtCoarse") for p in (root / kind).rglob("*.png")
    )
    hashes = {p.relative_to(root).as_posix(): file_sha256(p) for p in files}
    manifest = {"settings": settings, "files": hashes}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=0, sort_keys=True))
