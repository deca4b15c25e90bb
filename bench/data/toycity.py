"""The toy city: procedural street scenes written as a tree in the exact Cityscapes layout.

    <out>/leftImg8bit/<split>/<city>/<city>_<seq>_000019_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<city>_<seq>_000019_gtFine_labelIds.png        (train, val)
    <out>/gtCoarse/train_extra/<city>/<city>_<seq>_000019_gtCoarse_labelIds.png (train_extra)

so that the one loader (``bench.data.cityscapes``) reads toy and real data alike. Splits mirror
the paper: ``train`` (labelled pretraining), ``train_extra`` (the unlabelled finetuning set, with
coarse labels like real Cityscapes, never used to train) and ``val`` with the cities Lindau (mini
val) and Frankfurt + Muenster (mini test).

A scene is a street seen from a car: a road running to a vanishing point between sidewalks,
terrain strips and facades (buildings with windows, walls, fences, hedges), a street-end wall,
sky, and objects placed in 3-D and drawn far to near so near ones occlude far ones (cars, trucks,
buses, persons, riders on bicycles or motorcycles, parked bicycles, poles carrying traffic signs
and lights, trees, bins). Appearance: colours that overlap between classes (grey road, grey
buildings, grey cars), 1/f ("natural image") textures whose kind differs by class, cast shadows,
global exposure and contrast like Cityscapes' dark frames, a lens blur and sensor noise. Void
pixels: the ego vehicle's hood (labelId 1), parking bays (9) and street furniture (4).

Every image is drawn from its own generator seeded by (seed, split, index), so the same seed
gives byte-identical files and changing a count never changes the images before it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.data.cityscapes import image_path, label_kind, label_path
from bench.data.identity import MANIFEST, file_sha256, read_manifest
from bench.data.labels import LABEL_ID
from bench.errors import DataError
from bench.files import atomic_write, atomic_write_text, exclusive_lock

CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf"),
    "train_extra": ("augsburg", "bad-honnef", "bamberg", "bayreuth", "dortmund", "dresden"),
    "val": ("frankfurt", "lindau", "munster"),
}
_SPLIT_CODE = {"train": 1, "train_extra": 2, "val": 3}
# The manifest (settings + sha256 of every file) is written last: a tree without it is
# incomplete, and a run names unedited toy-city data by its settings (bench.data.identity).
_SETTINGS = "settings.json"  # the settings of an unfinished tree in <out>.partial
_FRAME = 19  # Cityscapes' annotated frame is the 20th of each snippet


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


# Base colours (RGB) of the stuff classes; every image jitters them.
_BASE = {
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
_CAR_PAINT = np.array(
    [
        (40, 40, 45),
        (200, 200, 205),
        (130, 130, 135),
        (60, 70, 110),
        (150, 30, 30),
        (90, 95, 100),
        (30, 60, 40),
    ],
    dtype=np.float32,
)


def render_scene(
    seed: int,
    split: str,
    index: int,
    size: tuple[int, int] = (128, 256),
    style: SceneStyle = SceneStyle(),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw image ``index`` of ``split`` for ``seed``.

    Returns:
        image: (H, W, 3) uint8 RGB.
        label_ids: (H, W) uint8 official Cityscapes labelIds (0 .. 33; void ids included).
    """
    if split not in _SPLIT_CODE:
        raise ToyCityError(
            f"unknown toy city split {split!r}; choose from {', '.join(_SPLIT_CODE)}"
        )
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    return _Scene(rng, size, style).draw()


class _Scene:
    """One street scene: a pinhole camera over a ground plane, drawn into label and colour maps."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], style: SceneStyle) -> None:
        self.rng, self.style = rng, style
        self.h, self.w = h, w = size
        self.f = w * rng.uniform(0.8, 1.0)  # focal length in pixels
        self.yh = h * rng.uniform(0.36, 0.47)  # horizon row
        self.xv = w * rng.uniform(0.38, 0.62)  # vanishing point column
        self.cam = rng.uniform(1.3, 1.7)  # camera height in metres
        self.labels = np.zeros((h, w), np.uint8)
        self.colour = np.zeros((h, w, 3), np.float32)
        self.tex_amp = np.zeros((h, w), np.float32)  # per-pixel texture amplitude, set by class
        self.tex_kind = np.zeros((h, w), np.uint8)  # 0 smooth 1/f, 1 fine grain, 2 leafy
        self.yy, self.xx = _grid(h, w)

    # -- helpers ------------------------------------------------------------------------------

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

    # -- the scene ----------------------------------------------------------------------------

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        road = (rng.uniform(3.0, 7.0), rng.uniform(3.0, 7.0))  # half-widths left, right
        walk = (rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0))
        grass = tuple(rng.uniform(0.5, 3.0) if rng.random() < 0.4 else 0.0 for _ in range(2))
        facade = tuple(road[i] + walk[i] + grass[i] for i in range(2))
        self.z_end = rng.uniform(50.0, 140.0)
        self.background(road, walk, facade)
        self.objects(road, walk)
        self.ego_vehicle()
        image = self.shade(road)
        return image, self.labels

    def background(self, road, walk, facade) -> None:
        """Sky, street-end wall, facades on both sides and the ground (road, sidewalk, terrain)."""
        rng, yy, xx, f, cam = self.rng, self.yy, self.xx, self.f, self.cam
        sky = self.jitter(_BASE["sky"], 25)
        # Sky: brighter towards the horizon, clouds from the smooth texture.
        grad = np.clip((yy - 0) / max(self.yh, 1.0), 0, 1)[..., None]
        self.colour[:] = sky * (0.85 + 0.2 * grad)
        self.labels[:] = LABEL_ID["sky"]
        self.tex_amp[:] = 10.0

        # Street-end wall at depth z_end: buildings (or trees) up to a skyline.
        end_kind = "building" if rng.random() < 0.75 else "vegetation"
        top_h = rng.uniform(8.0, 30.0) + 4.0 * np.sin(
            xx[0] / self.w * rng.uniform(5, 20) + rng.uniform(0, 6)
        )
        top_row = self.yh - f * (top_h - cam) / self.z_end
        end_mask = yy >= top_row[None, :]
        self.paint(
            end_mask,
            end_kind,
            self.jitter(_BASE[end_kind]) * 0.9,
            6.0,
            2 if end_kind == "vegetation" else 0,
        )

        # Side facades: planes at lateral distance facade[side], cut into segments along depth.
        dx = xx[0] - self.xv
        right = dx > 0
        dist = np.where(right, facade[1], facade[0])
        zf = f * dist / np.maximum(np.abs(dx), 1e-3)  # depth where each column meets its facade
        seg_height = np.zeros(self.w, np.float32)
        seg_class = np.zeros(self.w, np.uint8)
        seg_colour = np.zeros((self.w, 3), np.float32)
        kinds = ("building", "building", "building", "wall", "fence", "vegetation")
        for cols in (~right, right):
            edges = np.cumsum(rng.uniform(6.0, 25.0, 24))
            kind = rng.choice(len(kinds), 24)
            heights = np.array([_segment_height(rng, kinds[k]) for k in kind], np.float32)
            colours = np.array([self.jitter(_BASE[kinds[k]], 22) for k in kind], np.float32)
            idx = np.minimum(np.searchsorted(edges, zf[cols]), 23)
            seg_height[cols] = heights[idx]
            seg_class[cols] = kind[idx]
            seg_colour[cols] = colours[idx]
        # Hedges and trees get a bumpy top.
        bumpy = np.asarray(kinds)[seg_class] == "vegetation"
        seg_height = seg_height + bumpy * 1.2 * np.sin(zf * 0.9) * np.sin(zf * 0.37 + 1.0)
        visible = zf < self.z_end
        top = self.yh - f * (seg_height - cam) / zf
        bottom = self.yh + f * cam / zf
        on_facade = visible[None, :] & (yy >= top[None, :]) & (yy < bottom[None, :])
        height = cam + (self.yh - yy) * zf[None, :] / f  # metres above ground on the facade plane
        for name in ("building", "wall", "fence", "vegetation"):
            ks = [k for k, n in enumerate(kinds) if n == name]
            mask = on_facade & np.isin(seg_class, ks)[None, :]
            if not mask.any():
                continue
            amp, kind = {
                "building": (7.0, 0),
                "wall": (6.0, 1),
                "fence": (9.0, 1),
                "vegetation": (14.0, 2),
            }[name]
            self.paint(
                mask, name, np.broadcast_to(seg_colour[None], (self.h, self.w, 3))[mask], amp, kind
            )
        # Windows (perspective-correct: a depth x height grid on the facade plane), fence slats.
        storey, pitch = rng.uniform(2.8, 3.6), rng.uniform(2.0, 4.0)
        win = (
            on_facade
            & np.isin(seg_class, (0, 1, 2))[None, :]
            & (height > 2.5)
            & (np.mod(height / storey, 1.0) > 0.35)
            & (np.mod(zf / pitch, 1.0)[None, :] < rng.uniform(0.4, 0.7))
        )
        glass = self.jitter((55, 62, 75), 15)
        self.colour[win] = 0.5 * self.colour[win] + 0.5 * glass
        slats = on_facade & (seg_class == 4)[None, :] & (np.mod(zf / 0.4, 1.0)[None, :] < 0.35)
        self.colour[slats] *= 0.7

        # Ground: road, sidewalks, terrain strips; lateral position from the ground-plane depth.
        below = yy > self.yh + 0.5
        # Above the horizon the depth is "far" (finite, so the tiling arithmetic stays NaN-free).
        zg = np.where(below, f * cam / np.maximum(yy - self.yh, 0.5), 1e6)
        xg = (xx - self.xv) * zg / f
        ground = below & (zg < np.minimum(zf[None, :], self.z_end))
        side_walk = np.where(xg > 0, walk[1], walk[0])
        side_road = np.where(xg > 0, road[1], road[0])
        lateral = np.abs(xg)
        on_road = ground & (lateral < side_road)
        on_walk = ground & ~on_road & (lateral < side_road + side_walk)
        on_grass = ground & ~on_road & ~on_walk
        self.paint(on_grass, "terrain", self.jitter(_BASE["terrain"], 22), 12.0, 2)
        walk_rgb = self.jitter(_BASE["sidewalk"], 22)
        self.paint(on_walk, "sidewalk", walk_rgb, 6.0, 1)
        tiles = on_walk & ((np.mod(zg / 0.6, 1.0) < 0.12) | (np.mod(xg / 0.6, 1.0) < 0.12))
        self.colour[tiles] *= 0.85
        self.paint(on_road, "road", self.jitter(_BASE["road"], 14), 5.0, 1)
        # Dashed centre line and a parking bay (void) at the kerb of one side.
        centre = rng.uniform(-1.0, 1.0)
        paint = (
            on_road
            & (np.abs(xg - centre) < 0.08 * np.maximum(zg, 1.0) ** 0.5)
            & (np.mod(zg / 6.0, 1.0) < 0.45)
        )
        self.colour[paint] = self.jitter((200, 200, 195), 10)
        if rng.random() < 0.4:
            z0 = rng.uniform(5.0, 25.0)
            side = 1 if rng.random() < 0.5 else -1
            bay = (
                on_road & (side * xg > side_road - 2.2) & (zg > z0) & (zg < z0 + rng.uniform(5, 15))
            )
            self.paint(bay, "parking", self.jitter(_BASE["parking"], 12), 5.0, 1)
        self.ground_x, self.on_ground = xg, ground

    def objects(self, road, walk) -> None:
        """Place things in 3-D, then draw them from far to near (near ones occlude far ones)."""
        rng = self.rng
        things: list[tuple[float, str, float]] = []  # (depth, kind, lateral position)

        def along(kind: str, n: int, lo: float, hi: float, z_lo: float) -> None:
            for _ in range(n):
                things.append((rng.uniform(z_lo, self.z_end * 0.9), kind, rng.uniform(lo, hi)))

        along("car", rng.poisson(2.5), -road[0] + 1.2, road[1] - 1.2, 5.0)  # driving
        along("car", rng.poisson(1.5), road[1] - 1.0, road[1] - 0.9, 5.0)  # parked right
        along("car", rng.poisson(1.0), -road[0] + 0.9, -road[0] + 1.0, 5.0)  # parked left
        along("truck", int(rng.random() < 0.15), -road[0] + 1.5, road[1] - 1.5, 10.0)
        along("bus", int(rng.random() < 0.12), -road[0] + 1.5, road[1] - 1.5, 12.0)
        along("person", rng.poisson(1.5), road[1] + 0.3, road[1] + walk[1] - 0.3, 3.0)
        along("person", rng.poisson(1.5), -road[0] - walk[0] + 0.3, -road[0] - 0.3, 3.0)
        along("person", int(rng.random() < 0.2), -road[0], road[1], 6.0)  # crossing
        rider = "cyclist" if rng.random() < 0.8 else "motorcyclist"
        along(rider, int(rng.random() < 0.5), road[1] - 1.5, road[1] - 0.8, 4.0)
        along("bicycle", rng.poisson(0.8), road[1] + 0.4, road[1] + walk[1] - 0.4, 3.0)
        along("bin", rng.poisson(0.6), road[1] + walk[1] - 0.6, road[1] + walk[1] - 0.3, 3.0)
        for side in (-1, 1):
            kerb = side * (road[(side + 1) // 2] + 0.4)
            z = rng.uniform(3.0, 12.0)
            while z < self.z_end * 0.8:
                r = rng.random()
                things.append((z, "pole" if r < 0.45 else ("sign" if r < 0.75 else "light"), kerb))
                z += rng.uniform(8.0, 25.0)
            if rng.random() < 0.6:
                gap = side * (road[(side + 1) // 2] + walk[(side + 1) // 2] * 0.7)
                along("tree", rng.poisson(2.0), gap, gap, 5.0)

        draw = {
            "car": self.car,
            "truck": self.truck,
            "bus": self.bus,
            "person": self.person,
            "cyclist": self.cyclist,
            "motorcyclist": self.cyclist,
            "bicycle": self.bicycle,
            "bin": self.bin,
            "pole": self.pole,
            "sign": self.pole,
            "light": self.pole,
            "tree": self.tree,
        }
        for z, kind, x in sorted(things, key=lambda t: -t[0]):
            draw[kind](x, z, kind)

    def car(self, x: float, z: float, _kind: str) -> None:
        rng, s = self.rng, self.f / z
        paint = self.jitter(_CAR_PAINT[rng.integers(len(_CAR_PAINT))], 10)
        width, length = rng.uniform(1.7, 1.9), rng.uniform(3.8, 4.6)
        # Screen extent of the box's rear face plus its side, foreshortened towards the street.
        cols = [
            self.project(x + dx, z + dz, 0)[0]
            for dx in (-width / 2, width / 2)
            for dz in (0, length)
        ]
        x0, x1 = min(cols), max(cols)
        cx = self.project(x, z, 0)[0]
        ground = self.project(x, z, 0)[1]
        self.shadow(x0, x1, ground, s * 0.25)
        self.rect(x0, x1, ground - s * 0.95, ground - s * 0.2, "car", paint, 5.0)
        inset = (x1 - x0) * 0.12
        self.rect(
            x0 + inset, x1 - inset, ground - s * 1.45, ground - s * 0.95, "car", paint * 0.95, 5.0
        )
        self.rect(
            x0 + inset * 1.6,
            x1 - inset * 1.6,
            ground - s * 1.38,
            ground - s * 1.0,
            "car",
            self.jitter((45, 50, 60), 10),
            4.0,
        )
        for wx in (x0 + s * 0.35, x1 - s * 0.35):
            self.ellipse(
                wx, ground - s * 0.33, s * 0.33, s * 0.33, "car", self.jitter((25, 25, 28), 5), 3.0
            )
        for lx in (cx - s * 0.7, cx + s * 0.7):  # tail lights
            self.rect(
                lx - s * 0.12,
                lx + s * 0.12,
                ground - s * 0.85,
                ground - s * 0.72,
                "car",
                (170, 30, 30),
                2.0,
            )

    def truck(self, x: float, z: float, kind: str) -> None:
        s = self.f / z
        cx, ground = self.project(x, z, 0)
        half = s * self.rng.uniform(1.2, 1.3)
        paint = self.jitter((150, 150, 150) if kind == "truck" else (200, 180, 60), 30)
        self.shadow(cx - half, cx + half, ground, s * 0.3)
        top = ground - s * self.rng.uniform(3.0, 3.8)
        self.rect(cx - half, cx + half, top, ground - s * 0.3, kind, paint, 6.0)
        for wx in (cx - half * 0.7, cx + half * 0.7):
            self.ellipse(
                wx, ground - s * 0.45, s * 0.45, s * 0.45, kind, self.jitter((25, 25, 28), 5), 3.0
            )
        if kind == "bus":  # window band
            self.rect(
                cx - half * 0.9,
                cx + half * 0.9,
                top + s * 0.4,
                top + s * 1.4,
                "bus",
                self.jitter((40, 48, 60), 10),
                4.0,
            )

    bus = truck

    def person(self, x: float, z: float, kind: str = "person") -> None:
        rng, s = self.rng, self.f / z
        cx, ground = self.project(x, z, 0)
        tall = rng.uniform(1.5, 1.9)
        half = s * rng.uniform(0.18, 0.25)
        legs = self.jitter((50, 50, 60), 25)
        coat = self.jitter(rng.uniform(30, 180, 3), 20)
        stride = s * rng.uniform(0.0, 0.12)
        self.rect(cx - half - stride, cx - half * 0.1, ground - tall * s * 0.48, ground, kind, legs)
        self.rect(cx + half * 0.1, cx + half + stride, ground - tall * s * 0.48, ground, kind, legs)
        self.rect(
            cx - half * 1.1,
            cx + half * 1.1,
            ground - tall * s * 0.82,
            ground - tall * s * 0.46,
            kind,
            coat,
        )
        head = s * 0.11
        self.ellipse(
            cx, ground - tall * s + head, head, head * 1.2, kind, self.jitter((180, 140, 120), 30)
        )

    def bicycle(self, x: float, z: float, kind: str = "bicycle", rider: bool = False) -> None:
        rng, s = self.rng, self.f / z
        cx, ground = self.project(x, z, 0)
        frame = self.jitter(rng.uniform(20, 200, 3), 15)
        name = "motorcycle" if kind == "motorcyclist" else "bicycle"
        r = s * (0.33 if name == "bicycle" else 0.38)
        span = s * 0.55
        for wx in (cx - span, cx + span):
            self.ellipse(
                wx,
                ground - r,
                r,
                r,
                name,
                self.jitter((30, 30, 32), 5),
                3.0,
                ring=0.25 if name == "bicycle" else 0.0,
            )
        bar = max(s * 0.05, 1.0)
        self.rect(cx - span, cx + span, ground - r * 1.9 - bar, ground - r * 1.9 + bar, name, frame)
        self.rect(cx - bar, cx + bar, ground - r * 2.0, ground - r, name, frame)
        if name == "motorcycle":
            self.rect(
                cx - span * 0.7, cx + span * 0.7, ground - r * 2.2, ground - r * 1.0, name, frame
            )
        if rider:
            coat = self.jitter(rng.uniform(30, 180, 3), 20)
            self.rect(
                cx - s * 0.2, cx + s * 0.15, ground - s * 1.65, ground - r * 2.0, "rider", coat
            )
            self.rect(
                cx - s * 0.08,
                cx + s * 0.04,
                ground - r * 2.1,
                ground - r * 0.9,
                "rider",
                self.jitter((50, 50, 60), 20),
            )
            self.ellipse(
                cx - s * 0.02,
                ground - s * 1.78,
                s * 0.11,
                s * 0.13,
                "rider",
                self.jitter((180, 140, 120), 30),
            )

    def cyclist(self, x: float, z: float, kind: str) -> None:
        self.bicycle(x, z, kind, rider=True)

    def bin(self, x: float, z: float, _kind: str) -> None:
        s = self.f / z
        cx, ground = self.project(x, z, 0)
        self.rect(
            cx - s * 0.3,
            cx + s * 0.3,
            ground - s * 1.0,
            ground,
            "static",
            self.jitter((60, 80, 60), 25),
        )

    def pole(self, x: float, z: float, kind: str) -> None:
        rng, s = self.rng, self.f / z
        cx, ground = self.project(x, z, 0)
        tall = rng.uniform(3.0, 4.0) if kind == "sign" else rng.uniform(4.0, 8.0)
        grey = self.jitter((110, 110, 112), 20)
        self.rect(cx - s * 0.07, cx + s * 0.07, ground - s * tall, ground, "pole", grey, 3.0)
        if kind == "sign":
            size = s * rng.uniform(0.3, 0.4)
            cy = ground - s * (tall - 0.3)
            face = self.jitter(
                ((30, 70, 160), (220, 220, 215), (200, 40, 40), (230, 190, 40))[rng.integers(4)], 12
            )
            if rng.random() < 0.5:
                self.ellipse(cx, cy, size, size, "traffic sign", face, 3.0)
            else:
                self.rect(cx - size, cx + size, cy - size, cy + size, "traffic sign", face, 3.0)
        elif kind == "light":
            top = ground - s * tall
            body = self.jitter((35, 38, 35), 8)
            self.rect(cx - s * 0.16, cx + s * 0.16, top, top + s * 0.9, "traffic light", body, 2.0)
            lamp = int(rng.integers(3))
            lamp_rgb = ((230, 60, 40), (240, 180, 40), (60, 220, 120))[lamp]
            self.ellipse(
                cx, top + s * (0.15 + 0.3 * lamp), s * 0.1, s * 0.1, "traffic light", lamp_rgb, 2.0
            )

    def tree(self, x: float, z: float, _kind: str) -> None:
        rng, s = self.rng, self.f / z
        cx, ground = self.project(x, z, 0)
        tall = rng.uniform(4.0, 9.0)
        self.rect(
            cx - s * 0.12,
            cx + s * 0.12,
            ground - s * tall * 0.6,
            ground,
            "vegetation",
            self.jitter((70, 55, 40), 15),
            6.0,
            1,
        )
        rx, ry = s * rng.uniform(1.2, 2.5), s * rng.uniform(1.5, 2.8)
        self.ellipse(
            cx,
            ground - s * tall + ry,
            rx,
            ry,
            "vegetation",
            self.jitter(_BASE["vegetation"], 20),
            16.0,
            2,
        )

    def shadow(self, x0: float, x1: float, ground: float, depth: float) -> None:
        """Darken the ground under a vehicle."""
        got = self.box(x0 - depth, x1 + depth, ground - 1, ground + depth)
        if got is not None:
            self.colour[got[0]] *= 0.6

    def ego_vehicle(self) -> None:
        """The hood of the recording car at the bottom of most frames (void, labelId 1)."""
        if self.rng.random() < 0.75:
            rise = self.h * self.rng.uniform(0.05, 0.1)
            curve = rise * ((self.xx - self.w / 2) / (self.w / 2)) ** 2
            hood = self.yy > self.h - rise + curve
            self.paint(hood, "ego vehicle", self.jitter((35, 35, 40), 10), 3.0)

    def shade(self, road) -> np.ndarray:
        """Textures, light, shadows, exposure, blur and sensor noise -> uint8 RGB."""
        rng, style, h, w = self.rng, self.style, self.h, self.w
        smooth_a, smooth_b = _pink_noise(rng, h, w)
        grain = rng.standard_normal((h, w)).astype(np.float32)
        # Class-dependent texture: smooth blotches, fine grain (asphalt, pavement), leafy (both).
        tex = np.where(
            self.tex_kind == 0,
            smooth_a,
            np.where(
                self.tex_kind == 1, 0.4 * smooth_a + 0.8 * grain, 0.6 * smooth_b + 1.0 * grain
            ),
        )
        img = self.colour + (style.texture * self.tex_amp * tex)[..., None]
        # Buildings on one side cast a shadow across part of the ground; slow light falloff.
        light = 1.0 + 0.12 * smooth_b
        side = 1 if rng.random() < 0.5 else -1
        reach = rng.uniform(-road[0], road[1]) * side
        shaded = self.on_ground & (side * self.ground_x > reach)
        light = np.where(shaded, light * rng.uniform(0.5, 0.75), light)
        img *= light[..., None]
        img = img * rng.uniform(*style.exposure)
        img = 128.0 + style.contrast * (img - 128.0)
        img = _blur(img)
        img += rng.normal(0.0, style.noise * rng.uniform(0.5, 1.5), img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _segment_height(rng: np.random.Generator, kind: str) -> float:
    low, high = {
        "building": (6.0, 25.0),
        "wall": (1.0, 2.5),
        "fence": (1.0, 2.0),
        "vegetation": (2.0, 7.0),
    }[kind]
    return rng.uniform(low, high)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


@lru_cache(maxsize=8)
def _pink_amplitude(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    radius[0, 0] = 1.0
    amp = 1.0 / radius  # 1/f amplitude: the spectrum of natural images
    amp[0, 0] = 0.0
    return (amp / np.sqrt((amp**2).sum() / 2)).astype(np.float32)


def _pink_noise(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent unit-variance 1/f noise fields (real and imaginary part of one FFT)."""
    spectrum = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) * _pink_amplitude(
        h, w
    )
    field = np.fft.ifft2(spectrum) * np.sqrt(h * w)
    return field.real.astype(np.float32), field.imag.astype(np.float32)


def _blur(img: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 lens blur along both axes (edges replicate)."""
    out = img.copy()
    out[1:-1] = 0.25 * img[:-2] + 0.5 * img[1:-1] + 0.25 * img[2:]
    tmp = out.copy()
    out[:, 1:-1] = 0.25 * tmp[:, :-2] + 0.5 * tmp[:, 1:-1] + 0.25 * tmp[:, 2:]
    return out


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
    style: SceneStyle = SceneStyle(),
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
