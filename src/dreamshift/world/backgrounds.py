"""Procedural background scenes named after D3S's ten backgrounds.

Kattakinda et al. 2022 (D3S) place every object "on grass, on a road, in a forest, in water,
in sand, indoors, in snow, in rain, at night, in a cave". Each scene here is drawn in
resolution-independent coordinates from a seed: colours, horizon, layout and texture vary per
seed, while the kind of scene stays recognisable at 64x64.

>>> img = render_background("grass", seed=3, size=64)
>>> img.shape, img.dtype
((64, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from dreamshift.errors import DreamshiftError

BACKGROUNDS: tuple[str, ...] = (
    "grass", "road", "forest", "water", "sand", "indoors", "snow", "rain", "night", "cave",
)  # fmt: skip

Canvas = np.ndarray  # (H, W, 3) float32 in [0, 1]


def _noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise in [0, 1], (h, w); ``cells`` = (rows, cols) of the random lattice."""
    grid = rng.random((cells[0] + 1, cells[1] + 1), dtype=np.float32)
    img = Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def _fractal(rng: np.random.Generator, h: int, w: int, base: int, octaves: int = 3) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = base * 2**o
        out += amp * _noise(rng, h, w, (c, c))
        total += amp
        amp *= 0.5
    return out / total


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.clip(np.array(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0.0, 1.0)


def _vgrad(h: int, w: int, top: np.ndarray, bottom: np.ndarray) -> Canvas:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.float32)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy / max(h - 1, 1), xx / max(w - 1, 1)


def _sky(rng: np.random.Generator, h: int, w: int, horizon: float) -> Canvas:
    top = _jitter(rng, (0.35, 0.6, 0.9), 0.08)
    bottom = _jitter(rng, (0.75, 0.87, 0.97), 0.05)
    sky = _vgrad(h, w, top, bottom).copy()
    clouds = _fractal(rng, h, w, 3)
    sky += (np.clip(clouds - 0.55, 0, 1) * rng.uniform(0.5, 1.5))[..., None]
    return np.clip(sky, 0, 1)


def _ground(img: Canvas, horizon: float, ground: Canvas) -> Canvas:
    h = img.shape[0]
    mask = (np.arange(h) / max(h - 1, 1) >= horizon)[:, None, None]
    return np.where(mask, ground, img)


def _grass(rng: np.random.Generator, h: int, w: int) -> Canvas:
    horizon = rng.uniform(0.1, 0.35)
    green = _jitter(rng, (0.25, 0.55, 0.15), 0.08)
    blades = _noise(rng, h, w, (max(2, h // 16), max(4, w // 2)))  # tall thin streaks
    patches = _fractal(rng, h, w, 3)
    shade = 0.6 + 0.45 * blades + 0.3 * (patches - 0.5)
    ground = np.clip(green[None, None] * shade[..., None], 0, 1)
    flowers = rng.random((h, w)) < rng.uniform(0.0, 0.01)
    ground[flowers] = _jitter(rng, (0.95, 0.9, 0.3), 0.1)
    return _ground(_sky(rng, h, w, horizon), horizon, ground)


def _road(rng: np.random.Generator, h: int, w: int) -> Canvas:
    horizon = rng.uniform(0.25, 0.45)
    yy, xx = _coords(h, w)
    img = _ground(_sky(rng, h, w, horizon), horizon, _grass(rng, h, w))
    depth = np.clip((yy - horizon) / (1 - horizon), 0, 1)  # 0 at horizon, 1 at bottom
    centre = rng.uniform(0.35, 0.65) + (rng.uniform(-0.25, 0.25)) * (1 - depth)
    half = 0.03 + depth * rng.uniform(0.35, 0.5)
    on_road = (np.abs(xx - centre) < half) & (yy >= horizon)
    grey = rng.uniform(0.3, 0.5)
    asphalt = grey + 0.12 * (_fractal(rng, h, w, 8, 2) - 0.5)
    img[on_road] = np.stack([asphalt, asphalt, asphalt * 1.03], -1)[on_road]
    line_colour = (0.95, 0.95, 0.9) if rng.random() < 0.5 else (0.95, 0.8, 0.2)
    dash = (np.sin(depth**0.5 * rng.uniform(18, 30) + rng.uniform(0, 6)) > 0) | (rng.random() < 0.3)
    on_line = on_road & (np.abs(xx - centre) < 0.012 + 0.02 * depth) & dash
    img[on_line] = line_colour
    edge = on_road & (np.abs(np.abs(xx - centre) - half * 0.92) < 0.01 + 0.01 * depth)
    img[edge] = (0.9, 0.9, 0.9)
    return img


def _forest(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = _coords(h, w)
    dark = _jitter(rng, (0.08, 0.22, 0.1), 0.05)
    light = _jitter(rng, (0.25, 0.5, 0.2), 0.07)
    canopy = _fractal(rng, h, w, 4)
    img = dark + (light - dark) * canopy[..., None] ** 1.5
    floor_y = rng.uniform(0.7, 0.85)
    floor = _jitter(rng, (0.3, 0.22, 0.12), 0.06) * (0.7 + 0.5 * _fractal(rng, h, w, 6)[..., None])
    img = np.where((yy >= floor_y)[..., None], floor, img)
    for _ in range(rng.integers(4, 9)):
        x0, half = rng.uniform(0, 1), rng.uniform(0.02, 0.06)
        bark = _jitter(rng, (0.32, 0.2, 0.1), 0.06) * rng.uniform(0.6, 1.1)
        trunk = (np.abs(xx - x0) < half) & (yy < floor_y + rng.uniform(0.0, 0.1))
        img[trunk] = bark * (0.8 + 0.4 * (xx[trunk] - x0 + half) / (2 * half))[:, None]
    return np.clip(img, 0, 1)


def _water(rng: np.random.Generator, h: int, w: int) -> Canvas:
    horizon = rng.uniform(0.05, 0.35)
    deep = _jitter(rng, (0.05, 0.25, 0.45), 0.06)
    shallow = _jitter(rng, (0.2, 0.5, 0.65), 0.08)
    water = _vgrad(h, w, shallow, deep).copy()
    waves = _noise(rng, h, w, (max(4, h // 3), 3))  # long horizontal ripples
    water += (waves - 0.5)[..., None] * 0.35
    glints = _noise(rng, h, w, (max(4, h // 2), max(2, w // 6))) > 0.8
    water[glints] += 0.25
    return _ground(_sky(rng, h, w, horizon), horizon, np.clip(water, 0, 1))


def _sand(rng: np.random.Generator, h: int, w: int) -> Canvas:
    horizon = rng.uniform(0.1, 0.35)
    yy, xx = _coords(h, w)
    base = _jitter(rng, (0.88, 0.76, 0.52), 0.05)
    freq, tilt = rng.uniform(15, 30), rng.uniform(-0.5, 0.5)
    warp = _noise(rng, h, w, (3, 3))
    ripples = 0.5 + 0.5 * np.sin((yy + tilt * xx) * freq + warp * 6)
    grain = rng.random((h, w), dtype=np.float32)
    shade = 0.85 + 0.12 * ripples + 0.06 * (grain - 0.5)
    return _ground(_sky(rng, h, w, horizon), horizon, np.clip(base * shade[..., None], 0, 1))


def _indoors(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = _coords(h, w)
    floor_y = rng.uniform(0.55, 0.75)
    wall = _jitter(rng, (0.82, 0.76, 0.66), 0.12)
    img = np.broadcast_to(wall, (h, w, 3)).astype(np.float32).copy()
    if rng.random() < 0.5:  # wallpaper stripes
        stripes = (np.sin(xx * rng.uniform(20, 50)) > 0.6)[..., None]
        img = np.where(stripes, img * 0.9, img)
    x0, y0 = rng.uniform(0.05, 0.55), rng.uniform(0.08, 0.2)
    x1, y1 = x0 + rng.uniform(0.25, 0.4), floor_y - rng.uniform(0.15, 0.25)
    frame = (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)
    inner = (xx > x0 + 0.03) & (xx < x1 - 0.03) & (yy > y0 + 0.03) & (yy < y1 - 0.03)
    img[frame] = _jitter(rng, (0.95, 0.95, 0.95), 0.05)
    img[inner] = _jitter(rng, (0.55, 0.75, 0.95), 0.1)  # a window or a picture
    wood = _jitter(rng, (0.55, 0.35, 0.18), 0.08)
    planks = 0.85 + 0.15 * np.sin(np.clip(yy - floor_y, 0, None) ** 0.7 * rng.uniform(40, 70)) ** 2
    grain = _noise(rng, h, w, (max(2, h // 2), 3))
    floor = wood * (planks * (0.9 + 0.2 * grain))[..., None]
    img = np.where((yy >= floor_y)[..., None], floor, img)
    img[np.abs(yy - floor_y) < 0.02] = _jitter(rng, (0.95, 0.95, 0.92), 0.04)  # skirting
    return np.clip(img, 0, 1)


def _snow(rng: np.random.Generator, h: int, w: int) -> Canvas:
    horizon = rng.uniform(0.2, 0.45)
    sky = _vgrad(
        h, w, _jitter(rng, (0.72, 0.76, 0.82), 0.05), _jitter(rng, (0.88, 0.9, 0.93), 0.03)
    )
    drifts = _fractal(rng, h, w, 3)
    snow = np.clip(0.82 + 0.18 * drifts, 0, 1)[..., None] * _jitter(rng, (0.93, 0.96, 1.0), 0.03)
    img = _ground(sky.copy(), horizon, snow)
    flakes = rng.random((h, w)) < rng.uniform(0.01, 0.05)
    img[flakes] = 1.0
    return np.clip(img, 0, 1)


def _rain(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = _coords(h, w)
    horizon = rng.uniform(0.3, 0.5)
    g = rng.uniform(0.35, 0.5)
    sky = _vgrad(h, w, np.array([g, g, g + 0.03]), np.array([g + 0.15, g + 0.15, g + 0.18]))
    ground_c = _jitter(rng, (0.22, 0.26, 0.24), 0.05)
    wet = ground_c * (0.8 + 0.4 * _fractal(rng, h, w, 4))[..., None]
    img = _ground(sky.astype(np.float32).copy(), horizon, wet)
    slant = rng.uniform(0.15, 0.45)
    phase = xx + slant * yy
    streaks = _noise(rng, h, w, (2, max(8, w // 2)))  # varies along x only ...
    ids = np.floor(phase * rng.uniform(25, 45) + streaks * 3)
    on = (np.sin(ids * 12.9898) * 43758.5453 % 1.0 > 0.8) & (rng.random((h, w)) < 0.7)
    img[on] = img[on] * 0.4 + 0.6 * np.array([0.85, 0.88, 0.95], np.float32)
    return np.clip(img, 0, 1)


def _night(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = _coords(h, w)
    sky = _vgrad(
        h, w, _jitter(rng, (0.01, 0.02, 0.08), 0.02), _jitter(rng, (0.05, 0.08, 0.2), 0.03)
    )
    img = sky.copy()
    stars = rng.random((h, w)) < rng.uniform(0.005, 0.02)
    img[stars] = rng.uniform(0.7, 1.0)
    mx, my, mr = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3), rng.uniform(0.05, 0.1)
    moon = (xx - mx) ** 2 + (yy - my) ** 2 < mr**2
    img[moon] = _jitter(rng, (0.95, 0.93, 0.8), 0.05)
    hills = rng.uniform(0.55, 0.75) + 0.08 * (_noise(rng, 1, w, (1, 4))[0] - 0.5)
    img[yy > hills[None, :]] = _jitter(rng, (0.03, 0.05, 0.05), 0.02)
    return np.clip(img, 0, 1)


def _cave(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = _coords(h, w)
    rock = _jitter(rng, (0.3, 0.24, 0.18), 0.05)
    tex = _fractal(rng, h, w, 5)
    img = rock * (0.55 + 0.7 * tex)[..., None]
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.6)
    light = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.05, 0.15))
    img = img * (0.25 + 0.9 * light)[..., None]
    for _ in range(rng.integers(5, 11)):  # stalactites hang from the roof
        x0, half, length = rng.uniform(0, 1), rng.uniform(0.02, 0.05), rng.uniform(0.1, 0.3)
        tip = (yy < length * (1 - np.abs(xx - x0) / half)) & (np.abs(xx - x0) < half)
        img[tip] = rock * 0.35
    floor = yy > rng.uniform(0.8, 0.9) + 0.05 * np.sin(xx * rng.uniform(5, 12))
    img[floor] = img[floor] * 0.5
    return np.clip(img, 0, 1)


_PAINTERS: dict[str, Callable[[np.random.Generator, int, int], Canvas]] = {
    "grass": _grass,
    "road": _road,
    "forest": _forest,
    "water": _water,
    "sand": _sand,
    "indoors": _indoors,
    "snow": _snow,
    "rain": _rain,
    "night": _night,
    "cave": _cave,
}


def check_background_name(name: str) -> str:
    if name not in _PAINTERS:
        raise DreamshiftError(
            f"unknown background {name!r}: the embedded world has {', '.join(BACKGROUNDS)}"
        )
    return name


def render_background(name: str, seed: int, size: int | tuple[int, int] = 64) -> np.ndarray:
    """One scene of kind ``name`` as (H, W, 3) uint8; the same (name, seed, size) gives the same
    pixels. ``size`` is a side or (width, height)."""
    w, h = (size, size) if isinstance(size, int) else size
    painter = _PAINTERS[check_background_name(name)]
    rng = np.random.default_rng(seed)
    canvas = painter(rng, h, w)
    return np.round(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8)
