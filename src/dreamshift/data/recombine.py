"""Recombination: an image's object, cut by its mask, pasted on another background.

ForAug (Nauen et al. 2025, arXiv 2503.09399) recombines every training image inside the data
loader: its foreground, segmented once, goes onto a background drawn afresh at every step, at
a size and place drawn too, with a smoothed edge. Trained so, a classifier cannot lean on the
background, the centre or the size of the object as it can on a fixed dataset. The same
operation, with the background's label chosen, measures how much a trained classifier leans on
them (``dreamshift audit``'s background robustness).

Backgrounds come from a :class:`BackgroundSource` (``dreamshift.world.sources``: the world's
procedural scenes, a folder of images per label, or a dataset directory of backgrounds alone
such as ``dream --mode remove`` output). Every draw is a function of the generator it is
given, so a run seeded by (seed, epoch, draw) recombines identically on any number of loader
workers and after a resume.

>>> pixels = np.zeros((8, 8, 3), np.uint8); pixels[2:4, 2:4] = 200
>>> mask = pixels[..., 0] > 0
>>> class Flat:  # every background one grey
...     names = ("a", "b")
...     def choose(self, name, rng): return name
...     def image(self, source_id, size): return Image.new("RGB", (size, size), (9, 9, 9))
>>> mix = Recombination(Flat(), labels=("a", "b"), position="keep", feather=0)
>>> out, bg = mix(pixels, mask, 0, np.random.default_rng(0))
>>> int(out[2, 2, 0]), int(out[0, 0, 0]), bg in (0, 1)
(200, 9, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageFilter

from dreamshift.errors import DreamshiftError

POSITIONS = ("uniform", "center", "keep")  # anywhere it fits, centred, or its own place


class BackgroundSource(Protocol):
    """Where backgrounds come from: ``names`` are its labels; ``choose`` draws one background
    of a label (a source id, recorded in manifests), ``image`` renders it as a square RGB
    image of side ``size``."""

    names: tuple[str, ...]

    def choose(self, name: str, rng: np.random.Generator) -> str: ...

    def image(self, source_id: str, size: int) -> Image.Image: ...


def object_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the smallest box holding every True pixel of ``mask``; None if none."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def paste_object(
    pixels: np.ndarray,
    mask: np.ndarray,
    background: np.ndarray,
    box: tuple[int, int, int, int],
    feather: float = 0.0,
) -> np.ndarray:
    """``background`` (H, W, 3) uint8 with the object of ``pixels`` (its ``mask``) resized into
    ``box`` (x, y, w, h; inside the image). The edge is smoothed inwards by a Gaussian of radius
    ``feather`` px, so none of the object's old surroundings comes along."""
    ox, oy, ow, oh = object_box(mask) or (0, 0, *mask.shape[::-1])
    x, y, w, h = box
    obj = Image.fromarray(pixels[oy : oy + oh, ox : ox + ow])
    alpha = Image.fromarray(mask[oy : oy + oh, ox : ox + ow].astype(np.uint8) * 255)
    if (w, h) != (ow, oh):
        obj = obj.resize((w, h), Image.Resampling.BILINEAR)
        alpha = alpha.resize((w, h), Image.Resampling.BILINEAR)
    a = np.asarray(alpha, np.float32) / 255.0
    if feather > 0:
        padded = Image.new("L", (w + 2, h + 2), 0)  # the box's own edge is an edge too
        padded.paste(alpha, (1, 1))
        blurred = np.asarray(padded.filter(ImageFilter.GaussianBlur(feather)), np.float32)
        a = np.minimum(a, blurred[1:-1, 1:-1] / 255.0)
    out = background.astype(np.float32)
    region = out[y : y + h, x : x + w]
    region += a[..., None] * (np.asarray(obj, np.float32) - region)
    return np.round(out).astype(np.uint8)


@dataclass(frozen=True)
class Recombination:
    """ForAug's recombination of one image (Nauen et al. 2025): with probability ``p``, its
    object goes onto a background of ``backgrounds``. The background's label is the image's
    own with probability ``rho``, else drawn uniformly from ``labels`` (the dataset's
    backgrounds, by index; so ``rho`` 0 is uniform). ``scale``: (min, max) of the object's
    longer side over the image's shorter side (None: its own size); ``position``: uniform
    (anywhere it fits), center, or keep (its own place; its own size too, whatever
    ``scale``); ``feather``: the edge smoothing in px."""

    backgrounds: BackgroundSource
    labels: tuple[str, ...]
    p: float = 1.0
    rho: float = 0.0
    scale: tuple[float, float] | None = None
    position: str = "uniform"
    feather: float = 1.0

    def __post_init__(self) -> None:
        missing = [b for b in self.labels if b not in self.backgrounds.names]
        if missing:
            raise DreamshiftError(
                f"the recombination's backgrounds have no {', '.join(missing)} (they have "
                f"{', '.join(self.backgrounds.names)}): give a source with every background "
                "of the dataset"
            )
        if self.position not in POSITIONS:
            raise DreamshiftError(f"position {self.position!r}: choose {', '.join(POSITIONS)}")

    def __call__(
        self, pixels: np.ndarray, mask: np.ndarray, bg: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        """(the image, its background index) after the draw: recombined with probability
        ``p``, else ``pixels`` and ``bg`` as they were. ``mask``: the object, (H, W) bool."""
        if rng.random() >= self.p or not mask.any():
            return pixels, bg
        new_bg = bg if rng.random() < self.rho else int(rng.integers(len(self.labels)))
        return self.onto(pixels, mask, new_bg, rng), new_bg

    def onto(
        self, pixels: np.ndarray, mask: np.ndarray, bg: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The object of ``pixels`` on a background of label index ``bg`` drawn by ``rng``,
        at a size and place drawn by it too."""
        height, width = mask.shape
        name = self.labels[bg]
        scene = self.backgrounds.image(self.backgrounds.choose(name, rng), max(height, width))
        if scene.size != (width, height):
            scene = scene.resize((width, height), Image.Resampling.BILINEAR)
        box = self._place(mask, rng)
        return paste_object(pixels, mask, np.asarray(scene.convert("RGB")), box, self.feather)

    def _place(self, mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
        height, width = mask.shape
        own = object_box(mask)
        assert own is not None
        if self.position == "keep":
            return own
        w, h = own[2], own[3]
        if self.scale is not None:
            side = float(rng.uniform(*self.scale)) * min(height, width)
            k = side / max(w, h)
            w, h = max(1, round(w * k)), max(1, round(h * k))
        k = min(1.0, width / w, height / h)  # never larger than the image
        w, h = max(1, int(w * k)), max(1, int(h * k))
        if self.position == "center":
            return (width - w) // 2, (height - h) // 2, w, h
        return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
