"""Per-sample appearance of a silhouette: the silhouette is the mask, its fill is a *coat*.

Two worlds:

- ``typical`` coats: each class has a coat family (palette and pattern, with within-class
  variation of hue, value, pattern scale, phase, angle and shading), as real animals are told
  apart by coat *and* shape. Some families share a cue, so that a coat alone is not enough:
  cat and zebra are both striped, cow and giraffe both patched, bear, dog and horse all brown.
- ``random`` coats: colour and texture drawn independently of the class, so that the class is
  carried by shape alone (the hard, shape-only world).

A cue-conflict image (Geirhos et al. 2019) paints one class's shape in another class's typical
coat: ``paint_silhouette(mask, ..., coat="zebra")`` on a cat's silhouette.

>>> import numpy as np
>>> from dreamshift.seeding import rng_for
>>> mask = np.zeros((28, 28), np.uint8); mask[6:22, 4:24] = 255
>>> img, params = paint_silhouette(mask, rng_for(0), 40, False, 0.0, coat="zebra")
>>> img.mode, max(img.size), params["coat"], params["texture"]
('RGBA', 40, 'zebra', 'stripes')
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dreamshift.data.images import flip_rotate

TEXTURES: tuple[str, ...] = ("solid", "stripes", "spots", "mottled", "gradient")
RANDOM = "random"  # the coat of the shape-only world


def _colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.15, 0.9), rng.uniform(0.2, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    return yy, xx


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    img = Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def _stripes(rng: np.random.Generator, h: int, w: int, freq: float, angle: float,
             duty: float) -> np.ndarray:  # fmt: skip
    """Wavy stripes: ``freq`` radians per unit length, ``duty`` in (-1, 1) thins them."""
    yy, xx = _grid(h, w)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    wobble = (_smooth_noise(rng, h, w, 3) - 0.5) * rng.uniform(0.5, 1.5)
    return (np.sin(u * freq + wobble * 2 + rng.uniform(0, 2 * np.pi)) > duty).astype(np.float32)


def _patches(rng: np.random.Generator, h: int, w: int, n: tuple[int, int],
             radius: tuple[float, float]) -> np.ndarray:  # fmt: skip
    """Irregular blotches: discs with noisy edges."""
    yy, xx = _grid(h, w)
    k = int(rng.integers(n[0], n[1] + 1))
    cy, cx = rng.random(k) * yy.max(), rng.random(k) * xx.max()  # over the cut-out's extent
    r = rng.uniform(radius[0], radius[1], k)
    d = np.sqrt((yy[..., None] - cy) ** 2 + (xx[..., None] - cx) ** 2) / r
    edge = 1.0 + 0.5 * (_smooth_noise(rng, h, w, 6) - 0.5)
    return (d.min(-1) < edge).astype(np.float32)


def _reticulated(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """A giraffe's net: Voronoi cells of side about ``cell``, 1 inside a cell and 0 on the
    borders between cells."""
    yy, xx = _grid(h, w)
    k = max(3, round(float(yy.max() * xx.max()) / cell**2))
    cy, cx = rng.random(k) * yy.max(), rng.random(k) * xx.max()
    d = np.sort(np.sqrt((yy[..., None] - cy) ** 2 + (xx[..., None] - cx) ** 2), axis=-1)
    return (d[..., 1] - d[..., 0] > cell * rng.uniform(0.12, 0.2)).astype(np.float32)


def _random_texture(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """Where the second colour shows, (h, w) in [0, 1] (the shape-only world's textures)."""
    yy, xx = _grid(h, w)
    if kind == "solid":
        return np.zeros((h, w), np.float32)
    if kind == "stripes":
        angle, freq = rng.uniform(0, np.pi), rng.uniform(12, 28)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        return (np.sin(u * freq) > 0.2).astype(np.float32)
    if kind == "spots":
        n = int(rng.integers(6, 18))
        cy, cx, r = rng.random(n), rng.random(n), rng.uniform(0.04, 0.1, n)
        d2 = (yy[..., None] - cy) ** 2 + (xx[..., None] - cx) ** 2
        return np.asarray((d2 < r**2).any(-1), np.float32)
    if kind == "mottled":
        grid = rng.random((5, 5), dtype=np.float32)
        img = Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC)
        return np.clip(np.asarray(img), 0.0, 1.0)
    angle = rng.uniform(0, 2 * np.pi)  # gradient
    u = xx * np.cos(angle) + yy * np.sin(angle)
    return (u - u.min()) / max(float(np.ptp(u)), 1e-6)


def _hsv(rng: np.random.Generator, h: float, s: float, v: float, jitter: tuple[float, float, float]
         ) -> np.ndarray:  # fmt: skip
    """An RGB colour near (h, s, v), each jittered uniformly by +- ``jitter``."""
    hh = (h + rng.uniform(-jitter[0], jitter[0])) % 1.0
    ss = float(np.clip(s + rng.uniform(-jitter[1], jitter[1]), 0, 1))
    vv = float(np.clip(v + rng.uniform(-jitter[2], jitter[2]), 0, 1))
    return np.array(colorsys.hsv_to_rgb(hh, ss, vv), np.float32)


Paint = tuple[np.ndarray, np.ndarray, np.ndarray]  # base colour, pattern colour, pattern


@dataclass(frozen=True)
class Coat:
    """A coat family: ``draw(rng, h, w)`` -> (base colour, pattern colour, pattern (h, w) in
    [0, 1], texture name)."""

    texture: str
    draw: Callable[[np.random.Generator, int, int], Paint]


def _bear(rng: np.random.Generator, h: int, w: int) -> Paint:
    base = _hsv(rng, 0.07, 0.6, 0.25, (0.02, 0.15, 0.08))
    return base, base * 0.6, _smooth_noise(rng, h, w, 4) * 0.6


def _bird(rng: np.random.Generator, h: int, w: int) -> Paint:
    hue = (0.0, 0.14, 0.58, 0.33)[int(rng.integers(4))]  # red, yellow, blue, green
    base = _hsv(rng, hue, 0.85, 0.9, (0.03, 0.1, 0.1))
    wing = _hsv(rng, (hue + rng.uniform(0.08, 0.2)) % 1.0, 0.8, 0.6, (0.02, 0.1, 0.1))
    yy, xx = _grid(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    return base, wing, ((u - u.min()) / max(float(np.ptp(u)), 1e-6)) ** 2


def _cat(rng: np.random.Generator, h: int, w: int) -> Paint:
    if rng.random() < 0.5:  # orange tabby
        base = _hsv(rng, 0.08, 0.75, 0.85, (0.02, 0.1, 0.08))
        dark = _hsv(rng, 0.06, 0.8, 0.5, (0.02, 0.1, 0.08))
    else:  # grey tabby
        base = _hsv(rng, 0.6, 0.08, 0.62, (0.05, 0.05, 0.08))
        dark = _hsv(rng, 0.6, 0.1, 0.3, (0.05, 0.05, 0.06))
    stripes = _stripes(rng, h, w, rng.uniform(28, 40), rng.uniform(0.2, 0.6) * np.pi, 0.45)
    return base, dark, stripes


def _cow(rng: np.random.Generator, h: int, w: int) -> Paint:
    white = _hsv(rng, 0.1, 0.05, 0.93, (0.05, 0.04, 0.05))
    black = _hsv(rng, 0.0, 0.0, 0.08, (0.0, 0.0, 0.05))
    return white, black, _patches(rng, h, w, (3, 6), (0.07, 0.14))


def _dog(rng: np.random.Generator, h: int, w: int) -> Paint:
    base = _hsv(rng, 0.09, 0.55, 0.7, (0.02, 0.15, 0.12))  # tan to brown
    darker = base * rng.uniform(0.5, 0.7)
    yy, _ = _grid(h, w)
    saddle = (yy < rng.uniform(0.3, 0.5)).astype(np.float32) * (rng.random() < 0.5)
    return base, darker, np.clip(saddle + 0.4 * _smooth_noise(rng, h, w, 3), 0, 1)


def _elephant(rng: np.random.Generator, h: int, w: int) -> Paint:
    grey = _hsv(rng, 0.6, 0.06, 0.5, (0.05, 0.04, 0.07))
    return grey, grey * 0.75, _smooth_noise(rng, h, w, 8)


def _giraffe(rng: np.random.Generator, h: int, w: int) -> Paint:
    tan = _hsv(rng, 0.12, 0.45, 0.88, (0.015, 0.08, 0.06))
    brown = _hsv(rng, 0.06, 0.75, 0.45, (0.015, 0.1, 0.08))
    return tan, brown, _reticulated(rng, h, w, rng.uniform(0.13, 0.18))


def _horse(rng: np.random.Generator, h: int, w: int) -> Paint:
    if rng.random() < 0.5:  # bay: dark red-brown
        base = _hsv(rng, 0.03, 0.7, 0.42, (0.015, 0.1, 0.07))
    else:  # chestnut: lighter copper
        base = _hsv(rng, 0.05, 0.72, 0.6, (0.015, 0.1, 0.07))
    yy, xx = _grid(h, w)
    sheen = np.clip(1 - ((yy - 0.4) ** 2 + (xx - 0.5) ** 2) * 4, 0, 1)
    return base, np.clip(base * 1.25, 0, 1), sheen


def _sheep(rng: np.random.Generator, h: int, w: int) -> Paint:
    wool = _hsv(rng, 0.12, 0.12, 0.88, (0.02, 0.06, 0.06))
    curls = _smooth_noise(rng, h, w, max(8, min(h, w) // 2))
    return wool, wool * 0.8, np.clip((curls - 0.35) * 2.5, 0, 1)


def _zebra(rng: np.random.Generator, h: int, w: int) -> Paint:
    white = _hsv(rng, 0.1, 0.03, 0.95, (0.05, 0.03, 0.04))
    black = _hsv(rng, 0.0, 0.0, 0.06, (0.0, 0.0, 0.04))
    stripes = _stripes(rng, h, w, rng.uniform(22, 32), rng.uniform(0.35, 0.65) * np.pi, 0.0)
    return white, black, stripes


COATS: dict[str, Coat] = {
    "bear": Coat("mottled", _bear),
    "bird": Coat("gradient", _bird),
    "cat": Coat("stripes", _cat),
    "cow": Coat("patches", _cow),
    "dog": Coat("mottled", _dog),
    "elephant": Coat("mottled", _elephant),
    "giraffe": Coat("patches", _giraffe),
    "horse": Coat("gradient", _horse),
    "sheep": Coat("woolly", _sheep),
    "zebra": Coat("stripes", _zebra),
}


def _silhouette_alpha(mask: np.ndarray, box_side: int) -> Image.Image:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ch, cw = crop.shape
    k = box_side / max(ch, cw)
    w, h = max(1, round(cw * k)), max(1, round(ch * k))
    alpha = Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC)
    gain = min(4.0, max(1.0, k / 2))  # sharpen edges blurred by upscaling the 28x28 mask
    if gain > 1:
        alpha = alpha.point([min(255, max(0, round((v - 128) * gain + 128))) for v in range(256)])
    return alpha


def paint_silhouette(
    mask: np.ndarray,
    rng: np.random.Generator,
    box_side: int,
    flip: bool,
    max_rotation: float,
    coat: str = RANDOM,
) -> tuple[Image.Image, dict[str, Any]]:
    """Cut-out of one silhouette as an RGBA image whose longer side is about ``box_side``.

    ``mask`` is the 28x28 uint8 silhouette; ``coat`` a class name (its typical coat) or
    ``"random"``. Returns the image and the drawn appearance parameters (recorded in the
    manifest).
    """
    alpha = _silhouette_alpha(mask, box_side)
    w, h = alpha.size
    if coat == RANDOM:
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        c1, c2 = _colour(rng), _colour(rng)
        t = _random_texture(rng, texture, h, w)
    else:
        family = COATS[coat]
        texture = family.texture
        c1, c2, t = family.draw(rng, h, w)
    fill = c1 * (1 - t[..., None]) + c2 * t[..., None]  # (h, w, 3)
    light_angle, light = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
    yy, xx = _grid(h, w)
    shade = (xx - 0.5) * np.cos(light_angle) + (yy - 0.5) * np.sin(light_angle)
    fill = np.clip(fill * (1.0 + light * shade[..., None] * 2), 0, 1)

    rgba = np.dstack([np.round(fill * 255).astype(np.uint8), np.asarray(alpha)])
    img, flipped, rotation = flip_rotate(
        Image.fromarray(rgba, mode="RGBA"), rng, flip, max_rotation
    )
    params = {
        "coat": coat,
        "texture": texture,
        "colour": [round(float(v), 4) for v in c1],
        "colour2": [round(float(v), 4) for v in c2],
        "light": round(float(light), 4),
        "flip": flipped,
        "rotation": rotation,
    }
    return img, params
