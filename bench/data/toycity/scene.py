"""One toy-city scene: a street, its things and the recording car's hood, shaded into an image."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.data.toycity.canvas import DEFAULT_STYLE, Canvas, SceneStyle, ToyCityError
from bench.data.toycity.street import Street, draw_background
from bench.data.toycity.things import draw_things

_SPLIT_CODE = {"train": 1, "train_extra": 2, "val": 3}


def render_scene(
    seed: int,
    split: str,
    index: int,
    size: tuple[int, int] = (128, 256),
    style: SceneStyle = DEFAULT_STYLE,
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
    canvas = Canvas(rng, size, style)
    street = Street.draw(rng)
    ground_x, on_ground = draw_background(canvas, street)
    draw_things(canvas, street)
    _ego_vehicle(canvas)
    return _shade(canvas, street.road, ground_x, on_ground), canvas.labels


def _ego_vehicle(canvas: Canvas) -> None:
    """The hood of the recording car at the bottom of most frames (void, labelId 1)."""
    if canvas.rng.random() < 0.75:
        rise = canvas.h * canvas.rng.uniform(0.05, 0.1)
        curve = rise * ((canvas.xx - canvas.w / 2) / (canvas.w / 2)) ** 2
        hood = canvas.yy > canvas.h - rise + curve
        canvas.paint(hood, "ego vehicle", canvas.jitter((35, 35, 40), 10), 3.0)


def _shade(
    canvas: Canvas, road: tuple[float, float], ground_x: np.ndarray, on_ground: np.ndarray
) -> np.ndarray:
    """Textures, light, shadows, exposure, blur and sensor noise -> (H, W, 3) uint8 RGB.

    ``road`` is the road's half-widths; ``ground_x`` and ``on_ground`` are ``draw_background``'s.
    """
    rng, style, h, w = canvas.rng, canvas.style, canvas.h, canvas.w
    smooth_a, smooth_b = _pink_noise(rng, h, w)
    grain = rng.standard_normal((h, w)).astype(np.float32)
    # Class-dependent texture: smooth blotches, fine grain (asphalt, pavement), leafy (both).
    tex = np.where(
        canvas.tex_kind == 0,
        smooth_a,
        np.where(canvas.tex_kind == 1, 0.4 * smooth_a + 0.8 * grain, 0.6 * smooth_b + 1.0 * grain),
    )
    img = canvas.colour + (style.texture * canvas.tex_amp * tex)[..., None]
    # Buildings on one side cast a shadow across part of the ground; slow light falloff.
    light = 1.0 + 0.12 * smooth_b
    side = 1 if rng.random() < 0.5 else -1
    reach = rng.uniform(-road[0], road[1]) * side
    shaded = on_ground & (side * ground_x > reach)
    light = np.where(shaded, light * rng.uniform(0.5, 0.75), light)
    img *= light[..., None]
    img = img * rng.uniform(*style.exposure)
    img = 128.0 + style.contrast * (img - 128.0)
    img = _blur(img)
    img += rng.normal(0.0, style.noise * rng.uniform(0.5, 1.5), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


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
