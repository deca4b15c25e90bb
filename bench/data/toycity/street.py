"""The street: its cross-section, and the stuff behind the things (sky, street-end wall, facades,
and the ground with road, sidewalks and terrain)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.labels import LABEL_ID
from bench.data.toycity.canvas import BASE_COLOURS, Canvas

# Facade segment kinds, chosen uniformly by index (so a building is three times as likely);
# windows go on the building indices 0..2, slats on the fence index 4.
_FACADE_KINDS = ("building", "building", "building", "wall", "fence", "vegetation")
_FACADE_TEXTURE = {  # texture (amplitude, kind) of each facade class
    "building": (7.0, 0),
    "wall": (6.0, 1),
    "fence": (9.0, 1),
    "vegetation": (14.0, 2),
}
_SEGMENTS = 24  # facade segments along each side of the street


@dataclass(frozen=True)
class Street:
    """The street in metres, each pair (left, right) of the camera.

    road: half-widths of the road; walk: widths of the sidewalks; facade: lateral distances of
    the facades (a terrain strip may lie between sidewalk and facade); z_end: depth of the
    street-end wall.
    """

    road: tuple[float, float]
    walk: tuple[float, float]
    facade: tuple[float, float]
    z_end: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Street:
        """A random street."""
        road = (rng.uniform(3.0, 7.0), rng.uniform(3.0, 7.0))
        walk = (rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0))
        grass = tuple(rng.uniform(0.5, 3.0) if rng.random() < 0.4 else 0.0 for _ in range(2))
        facade = tuple(road[i] + walk[i] + grass[i] for i in range(2))
        return cls(road, walk, facade, rng.uniform(50.0, 140.0))


@dataclass(frozen=True)
class _Facades:
    """Where the image shows the facades.

    zf: (W,) depth in metres where each column meets its side's facade plane.
    seg_class: (W,) uint8 index into ``_FACADE_KINDS`` of the segment each column meets.
    on_facade: (H, W) bool, the pixels on a facade.
    height: (H, W) metres above ground of each pixel on its column's facade plane.
    """

    zf: np.ndarray
    seg_class: np.ndarray
    on_facade: np.ndarray
    height: np.ndarray


def draw_background(canvas: Canvas, street: Street) -> tuple[np.ndarray, np.ndarray]:
    """Sky, street-end wall, facades on both sides and the ground (road, sidewalk, terrain).

    Returns:
        ground_x: (H, W) lateral position in metres of each pixel on the ground plane.
        on_ground: (H, W) bool, the pixels on the ground (where buildings cast their shadows).
    """
    _sky(canvas)
    _street_end(canvas, street.z_end)
    facades = _facades(canvas, street)
    _windows_and_slats(canvas, facades)
    return _ground(canvas, street, facades.zf)


def _sky(canvas: Canvas) -> None:
    """Sky everywhere: brighter towards the horizon, clouds from the smooth texture."""
    sky = canvas.jitter(BASE_COLOURS["sky"], 25)
    grad = np.clip((canvas.yy - 0) / max(canvas.yh, 1.0), 0, 1)[..., None]
    canvas.colour[:] = sky * (0.85 + 0.2 * grad)
    canvas.labels[:] = LABEL_ID["sky"]
    canvas.tex_amp[:] = 10.0


def _street_end(canvas: Canvas, z_end: float) -> None:
    """The street-end wall at depth ``z_end``: buildings (or trees) up to a skyline."""
    rng, yy, xx = canvas.rng, canvas.yy, canvas.xx
    end_kind = "building" if rng.random() < 0.75 else "vegetation"
    top_h = rng.uniform(8.0, 30.0) + 4.0 * np.sin(
        xx[0] / canvas.w * rng.uniform(5, 20) + rng.uniform(0, 6)
    )
    top_row = canvas.yh - canvas.f * (top_h - canvas.cam) / z_end
    end_mask = yy >= top_row[None, :]
    canvas.paint(
        end_mask,
        end_kind,
        canvas.jitter(BASE_COLOURS[end_kind]) * 0.9,
        6.0,
        2 if end_kind == "vegetation" else 0,
    )


def _facades(canvas: Canvas, street: Street) -> _Facades:
    """Side facades: planes at lateral distance ``street.facade``, cut into segments along depth."""
    yy, f, cam, yh = canvas.yy, canvas.f, canvas.cam, canvas.yh
    dx = canvas.xx[0] - canvas.xv
    right = dx > 0
    dist = np.where(right, street.facade[1], street.facade[0])
    zf = f * dist / np.maximum(np.abs(dx), 1e-3)  # depth where each column meets its facade
    seg_height, seg_class, seg_colour = _facade_segments(canvas, zf, right)
    # Hedges and trees get a bumpy top.
    bumpy = np.asarray(_FACADE_KINDS)[seg_class] == "vegetation"
    seg_height = seg_height + bumpy * 1.2 * np.sin(zf * 0.9) * np.sin(zf * 0.37 + 1.0)
    visible = zf < street.z_end
    top = yh - f * (seg_height - cam) / zf
    bottom = yh + f * cam / zf
    on_facade = visible[None, :] & (yy >= top[None, :]) & (yy < bottom[None, :])
    height = cam + (yh - yy) * zf[None, :] / f  # metres above ground on the facade plane
    colour = np.broadcast_to(seg_colour[None], (canvas.h, canvas.w, 3))
    for name, (amp, kind) in _FACADE_TEXTURE.items():
        ks = [k for k, n in enumerate(_FACADE_KINDS) if n == name]
        mask = on_facade & np.isin(seg_class, ks)[None, :]
        if mask.any():
            canvas.paint(mask, name, colour[mask], amp, kind)
    return _Facades(zf, seg_class, on_facade, height)


def _facade_segments(
    canvas: Canvas, zf: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Height (W,) float32, class (W,) uint8 and colour (W, 3) float32 of the facade segment
    each column meets, the left side's segments drawn before the right side's."""
    rng, w = canvas.rng, canvas.w
    seg_height = np.zeros(w, np.float32)
    seg_class = np.zeros(w, np.uint8)
    seg_colour = np.zeros((w, 3), np.float32)
    for cols in (~right, right):
        edges = np.cumsum(rng.uniform(6.0, 25.0, _SEGMENTS))
        kind = rng.choice(len(_FACADE_KINDS), _SEGMENTS)
        heights = np.array([_segment_height(rng, _FACADE_KINDS[k]) for k in kind], np.float32)
        colours = np.array(
            [canvas.jitter(BASE_COLOURS[_FACADE_KINDS[k]], 22) for k in kind], np.float32
        )
        idx = np.minimum(np.searchsorted(edges, zf[cols]), _SEGMENTS - 1)
        seg_height[cols] = heights[idx]
        seg_class[cols] = kind[idx]
        seg_colour[cols] = colours[idx]
    return seg_height, seg_class, seg_colour


def _segment_height(rng: np.random.Generator, kind: str) -> float:
    low, high = {
        "building": (6.0, 25.0),
        "wall": (1.0, 2.5),
        "fence": (1.0, 2.0),
        "vegetation": (2.0, 7.0),
    }[kind]
    return rng.uniform(low, high)


def _windows_and_slats(canvas: Canvas, facades: _Facades) -> None:
    """Windows (perspective-correct: a depth x height grid on the facade plane), fence slats."""
    rng, zf, height = canvas.rng, facades.zf, facades.height
    storey, pitch = rng.uniform(2.8, 3.6), rng.uniform(2.0, 4.0)
    win = (
        facades.on_facade
        & np.isin(facades.seg_class, (0, 1, 2))[None, :]
        & (height > 2.5)
        & (np.mod(height / storey, 1.0) > 0.35)
        & (np.mod(zf / pitch, 1.0)[None, :] < rng.uniform(0.4, 0.7))
    )
    glass = canvas.jitter((55, 62, 75), 15)
    canvas.colour[win] = 0.5 * canvas.colour[win] + 0.5 * glass
    slats = (
        facades.on_facade
        & (facades.seg_class == 4)[None, :]
        & (np.mod(zf / 0.4, 1.0)[None, :] < 0.35)
    )
    canvas.colour[slats] *= 0.7


def _ground(canvas: Canvas, street: Street, zf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Road, sidewalks, terrain strips; lateral position from the ground-plane depth.

    Returns the lateral position (H, W) in metres and the ground mask (H, W) bool.
    """
    yy, f, yh = canvas.yy, canvas.f, canvas.yh
    below = yy > yh + 0.5
    # Above the horizon the depth is "far" (finite, so the tiling arithmetic stays NaN-free).
    zg = np.where(below, f * canvas.cam / np.maximum(yy - yh, 0.5), 1e6)
    xg = (canvas.xx - canvas.xv) * zg / f
    ground = below & (zg < np.minimum(zf[None, :], street.z_end))
    side_walk = np.where(xg > 0, street.walk[1], street.walk[0])
    side_road = np.where(xg > 0, street.road[1], street.road[0])
    lateral = np.abs(xg)
    on_road = ground & (lateral < side_road)
    on_walk = ground & ~on_road & (lateral < side_road + side_walk)
    on_grass = ground & ~on_road & ~on_walk
    canvas.paint(on_grass, "terrain", canvas.jitter(BASE_COLOURS["terrain"], 22), 12.0, 2)
    walk_rgb = canvas.jitter(BASE_COLOURS["sidewalk"], 22)
    canvas.paint(on_walk, "sidewalk", walk_rgb, 6.0, 1)
    tiles = on_walk & ((np.mod(zg / 0.6, 1.0) < 0.12) | (np.mod(xg / 0.6, 1.0) < 0.12))
    canvas.colour[tiles] *= 0.85
    canvas.paint(on_road, "road", canvas.jitter(BASE_COLOURS["road"], 14), 5.0, 1)
    _road_markings(canvas, on_road, xg, zg, side_road)
    return xg, ground


def _road_markings(
    canvas: Canvas, on_road: np.ndarray, xg: np.ndarray, zg: np.ndarray, side_road: np.ndarray
) -> None:
    """A dashed centre line and, on some streets, a parking bay (void) at the kerb of one side.

    All (H, W): the road mask, the ground's lateral position and depth, the road's half-width.
    """
    rng = canvas.rng
    centre = rng.uniform(-1.0, 1.0)
    line = (
        on_road
        & (np.abs(xg - centre) < 0.08 * np.maximum(zg, 1.0) ** 0.5)
        & (np.mod(zg / 6.0, 1.0) < 0.45)
    )
    canvas.colour[line] = canvas.jitter((200, 200, 195), 10)
    if rng.random() < 0.4:
        z0 = rng.uniform(5.0, 25.0)
        side = 1 if rng.random() < 0.5 else -1
        bay = on_road & (side * xg > side_road - 2.2) & (zg > z0) & (zg < z0 + rng.uniform(5, 15))
        canvas.paint(bay, "parking", canvas.jitter(BASE_COLOURS["parking"], 12), 5.0, 1)
