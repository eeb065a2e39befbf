"""Per-sample appearance of a silhouette: the silhouette is the mask, its fill gets a random
colour, texture and shading drawn independently of the class, so that the class is carried by
shape alone (a colour or texture never identifies an animal).
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
from PIL import Image

from dreamshift.data.images import flip_rotate

TEXTURES: tuple[str, ...] = ("solid", "stripes", "spots", "mottled", "gradient")


def _colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.15, 0.9), rng.uniform(0.2, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _texture(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """Where the second colour shows, (h, w) in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
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
        return (d2 < r**2).any(-1).astype(np.float32)
    if kind == "mottled":
        grid = rng.random((5, 5), dtype=np.float32)
        img = Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC)
        return np.clip(np.asarray(img), 0.0, 1.0)
    angle = rng.uniform(0, 2 * np.pi)  # gradient
    u = xx * np.cos(angle) + yy * np.sin(angle)
    return (u - u.min()) / max(float(np.ptp(u)), 1e-6)


def paint_silhouette(
    mask: np.ndarray,
    rng: np.random.Generator,
    box_side: int,
    flip: bool,
    max_rotation: float,
) -> tuple[Image.Image, dict[str, Any]]:
    """Cut-out of one silhouette as an RGBA image whose longer side is about ``box_side``.

    ``mask`` is the 28x28 uint8 silhouette. Returns the image and the drawn appearance
    parameters (recorded in the manifest).
    """
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ch, cw = crop.shape
    k = box_side / max(ch, cw)
    w, h = max(1, round(cw * k)), max(1, round(ch * k))
    alpha = Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC)
    gain = min(4.0, max(1.0, k / 2))  # sharpen edges blurred by upscaling the 28x28 mask
    if gain > 1:
        alpha = alpha.point([min(255, max(0, round((v - 128) * gain + 128))) for v in range(256)])

    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    c1, c2 = _colour(rng), _colour(rng)
    t = _texture(rng, texture, h, w)[..., None]
    fill = c1 * (1 - t) + c2 * t  # (h, w, 3)
    light_angle, light = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    shade = (xx - 0.5) * np.cos(light_angle) + (yy - 0.5) * np.sin(light_angle)
    fill = np.clip(fill * (1.0 + light * shade[..., None] * 2), 0, 1)

    rgba = np.dstack([np.round(fill * 255).astype(np.uint8), np.asarray(alpha)])
    img, flipped, rotation = flip_rotate(
        Image.fromarray(rgba, mode="RGBA"), rng, flip, max_rotation
    )
    params = {
        "texture": texture,
        "colour": [round(float(v), 4) for v in c1],
        "colour2": [round(float(v), 4) for v in c2],
        "light": round(float(light), 4),
        "flip": flipped,
        "rotation": rotation,
    }
    return img, params
