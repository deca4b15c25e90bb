"""The things of a street scene (vehicles, people, bicycles, poles with signs and lights, trees,
bins), placed in 3-D and drawn far to near so near ones occlude far ones."""

from __future__ import annotations

import numpy as np

from bench.data.toycity.canvas import BASE_COLOURS, Canvas
from bench.data.toycity.street import Street

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


def draw_things(canvas: Canvas, street: Street) -> None:
    """Place things in 3-D, then draw them from far to near (near ones occlude far ones)."""
    rng, road, walk = canvas.rng, street.road, street.walk
    things: list[tuple[float, str, float]] = []  # (depth, kind, lateral position)

    def along(kind: str, n: int, lo: float, hi: float, z_lo: float) -> None:
        for _ in range(n):
            things.append((rng.uniform(z_lo, street.z_end * 0.9), kind, rng.uniform(lo, hi)))

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
        while z < street.z_end * 0.8:
            r = rng.random()
            things.append((z, "pole" if r < 0.45 else ("sign" if r < 0.75 else "light"), kerb))
            z += rng.uniform(8.0, 25.0)
        if rng.random() < 0.6:
            gap = side * (road[(side + 1) // 2] + walk[(side + 1) // 2] * 0.7)
            along("tree", rng.poisson(2.0), gap, gap, 5.0)

    draw = {
        "car": _car,
        "truck": _truck,
        "bus": _truck,
        "person": _person,
        "cyclist": _cyclist,
        "motorcyclist": _cyclist,
        "bicycle": _bicycle,
        "bin": _bin,
        "pole": _pole,
        "sign": _pole,
        "light": _pole,
        "tree": _tree,
    }
    for z, kind, x in sorted(things, key=lambda t: -t[0]):
        draw[kind](canvas, x, z, kind)


def _car(canvas: Canvas, x: float, z: float, _kind: str) -> None:
    rng, s = canvas.rng, canvas.f / z
    paint = canvas.jitter(_CAR_PAINT[rng.integers(len(_CAR_PAINT))], 10)
    width, length = rng.uniform(1.7, 1.9), rng.uniform(3.8, 4.6)
    # Screen extent of the box's rear face plus its side, foreshortened towards the street.
    cols = [
        canvas.project(x + dx, z + dz, 0)[0] for dx in (-width / 2, width / 2) for dz in (0, length)
    ]
    x0, x1 = min(cols), max(cols)
    cx = canvas.project(x, z, 0)[0]
    ground = canvas.project(x, z, 0)[1]
    _shadow(canvas, x0, x1, ground, s * 0.25)
    canvas.rect(x0, x1, ground - s * 0.95, ground - s * 0.2, "car", paint, 5.0)
    inset = (x1 - x0) * 0.12
    canvas.rect(
        x0 + inset, x1 - inset, ground - s * 1.45, ground - s * 0.95, "car", paint * 0.95, 5.0
    )
    canvas.rect(
        x0 + inset * 1.6,
        x1 - inset * 1.6,
        ground - s * 1.38,
        ground - s * 1.0,
        "car",
        canvas.jitter((45, 50, 60), 10),
        4.0,
    )
    for wx in (x0 + s * 0.35, x1 - s * 0.35):
        canvas.ellipse(
            wx, ground - s * 0.33, s * 0.33, s * 0.33, "car", canvas.jitter((25, 25, 28), 5), 3.0
        )
    for lx in (cx - s * 0.7, cx + s * 0.7):  # tail lights
        canvas.rect(
            lx - s * 0.12,
            lx + s * 0.12,
            ground - s * 0.85,
            ground - s * 0.72,
            "car",
            (170, 30, 30),
            2.0,
        )


def _truck(canvas: Canvas, x: float, z: float, kind: str) -> None:
    s = canvas.f / z
    cx, ground = canvas.project(x, z, 0)
    half = s * canvas.rng.uniform(1.2, 1.3)
    paint = canvas.jitter((150, 150, 150) if kind == "truck" else (200, 180, 60), 30)
    _shadow(canvas, cx - half, cx + half, ground, s * 0.3)
    top = ground - s * canvas.rng.uniform(3.0, 3.8)
    canvas.rect(cx - half, cx + half, top, ground - s * 0.3, kind, paint, 6.0)
    for wx in (cx - half * 0.7, cx + half * 0.7):
        canvas.ellipse(
            wx, ground - s * 0.45, s * 0.45, s * 0.45, kind, canvas.jitter((25, 25, 28), 5), 3.0
        )
    if kind == "bus":  # window band
        canvas.rect(
            cx - half * 0.9,
            cx + half * 0.9,
            top + s * 0.4,
            top + s * 1.4,
            "bus",
            canvas.jitter((40, 48, 60), 10),
            4.0,
        )


def _person(canvas: Canvas, x: float, z: float, kind: str = "person") -> None:
    rng, s = canvas.rng, canvas.f / z
    cx, ground = canvas.project(x, z, 0)
    tall = rng.uniform(1.5, 1.9)
    half = s * rng.uniform(0.18, 0.25)
    legs = canvas.jitter((50, 50, 60), 25)
    coat = canvas.jitter(rng.uniform(30, 180, 3), 20)
    stride = s * rng.uniform(0.0, 0.12)
    canvas.rect(cx - half - stride, cx - half * 0.1, ground - tall * s * 0.48, ground, kind, legs)
    canvas.rect(cx + half * 0.1, cx + half + stride, ground - tall * s * 0.48, ground, kind, legs)
    canvas.rect(
        cx - half * 1.1,
        cx + half * 1.1,
        ground - tall * s * 0.82,
        ground - tall * s * 0.46,
        kind,
        coat,
    )
    head = s * 0.11
    canvas.ellipse(
        cx, ground - tall * s + head, head, head * 1.2, kind, canvas.jitter((180, 140, 120), 30)
    )


def _bicycle(
    canvas: Canvas, x: float, z: float, kind: str = "bicycle", rider: bool = False
) -> None:
    rng, s = canvas.rng, canvas.f / z
    cx, ground = canvas.project(x, z, 0)
    frame = canvas.jitter(rng.uniform(20, 200, 3), 15)
    name = "motorcycle" if kind == "motorcyclist" else "bicycle"
    r = s * (0.33 if name == "bicycle" else 0.38)
    span = s * 0.55
    for wx in (cx - span, cx + span):
        canvas.ellipse(
            wx,
            ground - r,
            r,
            r,
            name,
            canvas.jitter((30, 30, 32), 5),
            3.0,
            ring=0.25 if name == "bicycle" else 0.0,
        )
    bar = max(s * 0.05, 1.0)
    canvas.rect(cx - span, cx + span, ground - r * 1.9 - bar, ground - r * 1.9 + bar, name, frame)
    canvas.rect(cx - bar, cx + bar, ground - r * 2.0, ground - r, name, frame)
    if name == "motorcycle":
        canvas.rect(
            cx - span * 0.7, cx + span * 0.7, ground - r * 2.2, ground - r * 1.0, name, frame
        )
    if rider:
        coat = canvas.jitter(rng.uniform(30, 180, 3), 20)
        canvas.rect(cx - s * 0.2, cx + s * 0.15, ground - s * 1.65, ground - r * 2.0, "rider", coat)
        canvas.rect(
            cx - s * 0.08,
            cx + s * 0.04,
            ground - r * 2.1,
            ground - r * 0.9,
            "rider",
            canvas.jitter((50, 50, 60), 20),
        )
        canvas.ellipse(
            cx - s * 0.02,
            ground - s * 1.78,
            s * 0.11,
            s * 0.13,
            "rider",
            canvas.jitter((180, 140, 120), 30),
        )


def _cyclist(canvas: Canvas, x: float, z: float, kind: str) -> None:
    _bicycle(canvas, x, z, kind, rider=True)


def _bin(canvas: Canvas, x: float, z: float, _kind: str) -> None:
    s = canvas.f / z
    cx, ground = canvas.project(x, z, 0)
    canvas.rect(
        cx - s * 0.3,
        cx + s * 0.3,
        ground - s * 1.0,
        ground,
        "static",
        canvas.jitter((60, 80, 60), 25),
    )


def _pole(canvas: Canvas, x: float, z: float, kind: str) -> None:
    rng, s = canvas.rng, canvas.f / z
    cx, ground = canvas.project(x, z, 0)
    tall = rng.uniform(3.0, 4.0) if kind == "sign" else rng.uniform(4.0, 8.0)
    grey = canvas.jitter((110, 110, 112), 20)
    canvas.rect(cx - s * 0.07, cx + s * 0.07, ground - s * tall, ground, "pole", grey, 3.0)
    if kind == "sign":
        size = s * rng.uniform(0.3, 0.4)
        cy = ground - s * (tall - 0.3)
        face = canvas.jitter(
            ((30, 70, 160), (220, 220, 215), (200, 40, 40), (230, 190, 40))[rng.integers(4)], 12
        )
        if rng.random() < 0.5:
            canvas.ellipse(cx, cy, size, size, "traffic sign", face, 3.0)
        else:
            canvas.rect(cx - size, cx + size, cy - size, cy + size, "traffic sign", face, 3.0)
    elif kind == "light":
        top = ground - s * tall
        body = canvas.jitter((35, 38, 35), 8)
        canvas.rect(cx - s * 0.16, cx + s * 0.16, top, top + s * 0.9, "traffic light", body, 2.0)
        lamp = int(rng.integers(3))
        lamp_rgb = ((230, 60, 40), (240, 180, 40), (60, 220, 120))[lamp]
        canvas.ellipse(
            cx, top + s * (0.15 + 0.3 * lamp), s * 0.1, s * 0.1, "traffic light", lamp_rgb, 2.0
        )


def _tree(canvas: Canvas, x: float, z: float, _kind: str) -> None:
    rng, s = canvas.rng, canvas.f / z
    cx, ground = canvas.project(x, z, 0)
    tall = rng.uniform(4.0, 9.0)
    canvas.rect(
        cx - s * 0.12,
        cx + s * 0.12,
        ground - s * tall * 0.6,
        ground,
        "vegetation",
        canvas.jitter((70, 55, 40), 15),
        6.0,
        1,
    )
    rx, ry = s * rng.uniform(1.2, 2.5), s * rng.uniform(1.5, 2.8)
    canvas.ellipse(
        cx,
        ground - s * tall + ry,
        rx,
        ry,
        "vegetation",
        canvas.jitter(BASE_COLOURS["vegetation"], 20),
        16.0,
        2,
    )


def _shadow(canvas: Canvas, x0: float, x1: float, ground: float, depth: float) -> None:
    """Darken the ground under a vehicle."""
    got = canvas.box(x0 - depth, x1 + depth, ground - 1, ground + depth)
    if got is not None:
        canvas.colour[got[0]] *= 0.6
