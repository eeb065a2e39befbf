"""The world's *photos*: a cut-out rendered into its scene, as a camera would see it.

A guide in D3S (Kattakinda et al. 2022) is a naive paste: the object keeps its own light, floats
without a shadow and sits in front of everything. A photo of the same animal in the same scene
differs in exactly those ways, and these are what :func:`render_photo` adds:

- **light**: the animal takes the scene's brightness where it stands (dark at night, dim in a
  cave, bright on snow) and part of its colour cast;
- **contact shadow**: a soft dark ellipse under the feet;
- **soft edges**: the mask's edge is slightly blurred, as a lens blurs it;
- **occlusion by the scene**: grass blades over the feet, a water line cutting the legs,
  rain streaks and snowflakes over the body;
- **haze and blur** of the whole frame (rain and snow most).

Scenes are known by name (the world's ten backgrounds); any other background name gets the
light, shadow, edges and blur only. Sizes are relative to the image side.

>>> import numpy as np
>>> from PIL import Image
>>> from dreamshift.seeding import rng_for
>>> bg = Image.new("RGB", (64, 64), (20, 20, 40))
>>> cut = Image.new("RGBA", (20, 16), (250, 250, 250, 255))
>>> img, params = render_photo(bg, cut, 20, 30, "night", rng_for(0))
>>> img.size, params["occluder"], bool(np.asarray(img)[38, 30].max() < 200)  # dimmed by night
((64, 64), 'none', True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

OCCLUDERS = {"grass": "grass", "water": "water line", "rain": "rain", "snow": "snow"}
HAZE = {"rain": (0.12, 0.25), "snow": (0.08, 0.18), "forest": (0.0, 0.06), "cave": (0.0, 0.05)}


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur (standard deviation ``radius`` pixels, edges reflected) of a float image
    (H, W) or (H, W, C), separably along rows and columns."""
    if radius <= 0:
        return a
    half = max(1, int(3 * radius + 0.5))
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / radius) ** 2).astype(np.float32)
    taps /= taps.sum()
    out = a.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (half, half)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > half else "edge")
        n = out.shape[axis]
        out = sum(
            taps[k] * np.take(padded, np.arange(k, k + n), axis=axis) for k in range(len(taps))
        )
    return out


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def render_photo(
    background: Image.Image,
    cutout: Image.Image,
    x: int,
    y: int,
    scene: str | None,
    rng: np.random.Generator,
) -> tuple[Image.Image, dict[str, Any]]:
    """The RGBA ``cutout`` rendered into ``background`` with its top-left corner at (x, y).

    ``scene`` is the background's name (its occluders and haze); returns the photo and the drawn
    parameters (recorded in the manifest)."""
    bg = np.asarray(background.convert("RGB"), np.float32) / 255.0
    size_h, size_w = bg.shape[:2]
    side = max(size_h, size_w)
    px = side / 64.0  # one pixel of the 64x64 world, in output pixels
    layer = Image.new("RGBA", (size_w, size_h), (0, 0, 0, 0))
    layer.paste(cutout, (x, y), cutout)
    rgba = np.asarray(layer, np.float32) / 255.0
    fg_full, alpha = rgba[..., :3], rgba[..., 3]
    w, h = cutout.size

    # light: the scene's local brightness around the animal, and part of its colour cast
    lum = _luminance(bg)
    local = _blur(lum, side / 6)
    gain_map = np.clip(0.4 + 0.95 * local, 0.4, 1.1)
    mean = bg.reshape(-1, 3).mean(0)
    cast = np.clip(mean / max(float(mean.mean()), 1e-3), 0.6, 1.5)
    cast_strength = float(rng.uniform(0.25, 0.45))
    fg_lit = fg_full * gain_map[..., None] * (1 - cast_strength + cast_strength * cast)
    # contact shadow under the feet
    yy, xx = np.mgrid[0:size_h, 0:size_w].astype(np.float32)
    cx, cy = x + w / 2, y + h - 0.5 * px
    rx, ry = max(px, 0.45 * w * rng.uniform(0.8, 1.1)), max(px, 0.12 * h + 1.5 * px)
    shadow = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1).astype(np.float32)
    shadow_strength = float(rng.uniform(0.35, 0.55)) * float(np.clip(mean.mean() * 1.6, 0.2, 1))
    shadow = _blur(shadow, 1.5 * px) * shadow_strength
    img = bg * (1 - shadow[..., None])
    # soft edge, then the animal over the scene
    alpha = np.clip(_blur(alpha, 0.6 * px), 0, 1)
    img = img * (1 - alpha[..., None]) + fg_lit * alpha[..., None]

    occluder = OCCLUDERS.get(scene or "", "none")
    in_box = (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)
    if occluder == "grass":  # blades in front of the feet, made of the scene's own grass
        depth = float(rng.uniform(0.12, 0.25)) * h
        cols = np.asarray(rng.random(size_w) < rng.uniform(0.35, 0.6))
        tops = np.asarray(y + h - depth * rng.uniform(0.3, 1.0, size_w))
        blades = in_box & cols[None, :] & (yy >= tops[None, :])
        img[blades] = bg[blades] * 0.9
    elif occluder == "water line":  # the water hides the legs below its line
        line = y + h * (1 - rng.uniform(0.15, 0.3))
        under = (yy >= line) & (alpha > 0.05)
        img[under] = 0.65 * bg[under] + 0.35 * img[under]
        glint = np.abs(yy - line) < 0.5 * px
        img[glint & in_box] = np.clip(img[glint & in_box] + 0.2, 0, 1)
    elif occluder == "rain":  # slanted light streaks over everything
        slant = rng.uniform(0.15, 0.45)
        phase = (xx + slant * yy) / px
        ids = np.floor(phase * rng.uniform(0.5, 0.8))
        on = (np.sin(ids * 12.9898) * 43758.5453 % 1.0 > 0.86) & (rng.random(lum.shape) < 0.6)
        img[on] = img[on] * 0.45 + 0.55 * np.array([0.85, 0.88, 0.95], np.float32)
    elif occluder == "snow":  # flakes over everything
        flakes = (rng.random(lum.shape) < rng.uniform(0.01, 0.03) / px**2).astype(np.float32)
        flakes = np.clip(_blur(flakes, 0.4 * px) * 2.5, 0, 1)
        img = img * (1 - flakes[..., None]) + flakes[..., None]

    lo, hi = HAZE.get(scene or "", (0.0, 0.03))
    haze = float(rng.uniform(lo, hi))
    img = img * (1 - haze) + mean * haze
    blur = float(rng.uniform(0.25, 0.55)) * px
    img = _blur(np.clip(img, 0, 1), blur)
    params = {
        "render": "photo",
        "light": round(float((gain_map * alpha).sum() / max(float(alpha.sum()), 1e-6)), 4),
        "shadow": round(shadow_strength, 4),
        "occluder": occluder,
        "haze": round(haze, 4),
        "blur": round(blur, 4),
    }
    out = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(out), params
