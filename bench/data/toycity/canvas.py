"""The drawing surface of a toy-city scene: its style, base colours, camera and paint primitives.

A scene is painted into three per-pixel layers at once (labelIds, colour, texture) so that a label
and its appearance can never disagree; later paint covers earlier paint.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from bench.data.labels import LABEL_ID
from bench.errors import DataError


class ToyCityError(DataError):
    """The output folder cannot take a toy city."""


@dataclass(frozen=True)
class SceneStyle:
    """Appearance knobs of the scenes (the defaults are the toy preset's data).

    contrast: global contrast around mid gray (1 = as drawn).
    exposure: range of the per-image brightness factor (Cityscapes frames are dark).
    texture: amplitude factor of all class textures.
    jitter: amplitude factor of the per-image / per-object colour variation.
    noise: sensor noise standard deviation in gray values (per image times 0.5..1.5).

    The defaults were chosen by measurement (benchmarks/recipe_sweep.md): dark, low-contrast
    frames make the networks' own LLCM AEs far stronger, and strong sensor noise makes the
    networks robust to random +-eps noise, so that, as in the paper, the other network's AEs
    hurt more than noise. Pixel std is ~13 gray values, a third of Cityscapes' ~45.
    """

    contrast: float = 0.6
    exposure: tuple[float, float] = (0.3, 0.6)
    texture: float = 1.0
    jitter: float = 1.0
    noise: float = 6.0

    @classmethod
    def from_dict(cls, values: dict) -> SceneStyle:
        """A style from a config table (``data.toycity_style``); one line for a bad key or value."""
        names = [f.name for f in fields(cls)]
        for key, value in values.items():
            if key not in names:
                raise ToyCityError(
                    f"unknown key data.toycity_style.{key}; valid keys: {', '.join(names)}"
                )
            numbers = value if key == "exposure" else [value]
            if (
                not isinstance(numbers, (list, tuple))
                or len(numbers) != (2 if key == "exposure" else 1)
                or not all(isinstance(v, (int, float)) and v >= 0 for v in numbers)
            ):
                want = "two numbers >= 0, e.g. [0.3, 0.6]" if key == "exposure" else "a number >= 0"
                raise ToyCityError(f"data.toycity_style.{key} = {value!r} must be {want}")
        style = dict(values)
        if "exposure" in style:
            style["exposure"] = tuple(float(v) for v in style["exposure"])
        return cls(**style)


DEFAULT_STYLE = SceneStyle()  # one shared frozen default for the entry points' signatures


# Base colours (RGB) of the stuff classes; every image jitters them.
BASE_COLOURS = {
    "road": (90, 88, 92),
    "sidewalk": (150, 140, 145),
    "building": (120, 112, 105),
    "wall": (140, 130, 115),
    "fence": (115, 105, 95),
    "vegetation": (70, 95, 45),
    "terrain": (120, 140, 75),
    "sky": (190, 205, 225),
    "parking": (105, 95, 100),
}


class Canvas:
    """A pinhole camera over a ground plane and the label, colour and texture layers it paints.

    labels: (H, W) uint8 labelIds; colour: (H, W, 3) float32 RGB; tex_amp: (H, W) float32
    texture amplitude; tex_kind: (H, W) uint8 texture kind (0 smooth 1/f, 1 fine grain,
    2 leafy); yy, xx: (H, W) float32 pixel-centre rows and columns (read-only).
    """

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], style: SceneStyle) -> None:
        self.rng, self.style = rng, style
        self.h, self.w = h, w = size
        self.f = w * rng.uniform(0.8, 1.0)  # focal length in pixels
        self.yh = h * rng.uniform(0.36, 0.47)  # horizon row
        self.xv = w * rng.uniform(0.38, 0.62)  # vanishing point column
        self.cam = rng.uniform(1.3, 1.7)  # camera height in metres
        self.labels = np.zeros((h, w), np.uint8)
        self.colour = np.zeros((h, w, 3), np.float32)
        self.tex_amp = np.zeros((h, w), np.float32)
        self.tex_kind = np.zeros((h, w), np.uint8)
        self.yy, self.xx = _grid(h, w)

    def jitter(self, rgb, spread: float = 18.0) -> np.ndarray:
        """A colour near ``rgb``: shared brightness shift plus a smaller per-channel one."""
        s = spread * self.style.jitter
        return np.asarray(rgb, np.float32) + self.rng.normal(0, s) + self.rng.normal(0, s / 3, 3)

    def paint(
        self, mask: np.ndarray, name: str, rgb, amp: float, kind: int = 0, where=np.s_[:, :]
    ) -> None:
        """Set class ``name``, colour, and texture over ``mask`` (within the slice ``where``)."""
        self.labels[where][mask] = LABEL_ID[name]
        self.colour[where][mask] = rgb
        self.tex_amp[where][mask] = amp
        self.tex_kind[where][mask] = kind

    def project(self, x: float, z: float, height: float) -> tuple[float, float]:
        """Screen (column, row) of the world point at lateral x, depth z and height above ground."""
        return self.xv + self.f * x / z, self.yh + self.f * (self.cam - height) / z

    def box(self, x0: float, x1: float, y0: float, y1: float):
        """Integer slice of a screen box clipped to the image, plus local pixel-centre grids."""
        c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), self.w)
        r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), self.h)
        if c0 >= c1 or r0 >= r1:
            return None
        return np.s_[r0:r1, c0:c1], self.yy[r0:r1, c0:c1], self.xx[r0:r1, c0:c1]

    def rect(
        self, x0, x1, y0, y1, name: str, rgb, amp: float = 4.0, kind: int = 0, min_px: float = 1.0
    ) -> None:
        """A filled screen rectangle, at least ``min_px`` wide so thin things do not vanish."""
        if x1 - x0 < min_px:
            mid = (x0 + x1) / 2
            x0, x1 = mid - min_px / 2, mid + min_px / 2
        got = self.box(x0, x1, y0, y1)
        if got is not None:
            where, yy, _ = got
            self.paint(np.ones(yy.shape, bool), name, rgb, amp, kind, where)

    def ellipse(
        self, cx, cy, rx, ry, name: str, rgb, amp: float = 4.0, kind: int = 0, ring: float = 0.0
    ) -> None:
        """A filled ellipse, or a ring of relative thickness ``ring`` (wheels)."""
        rx, ry = max(rx, 0.6), max(ry, 0.6)
        got = self.box(cx - rx, cx + rx, cy - ry, cy + ry)
        if got is None:
            return
        where, yy, xx = got
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        mask = d <= 1.0
        if ring:
            mask &= d >= (1.0 - ring) ** 2
        self.paint(mask, name, rgb, amp, kind, where)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx
