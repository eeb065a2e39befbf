"""Automatic quality flags for generated images.

Stable Diffusion's safety checker replaces an image it rejects with an all-black one, and a
broken model, a bad dtype (float16 overflow) or a wrong VAE gives black or single-colour
outputs. Such images are flagged in the manifest (status ``flagged``, ``flag`` says why) and
are never counted as valid samples.

>>> import numpy as np
>>> quality_flag(np.zeros((8, 8, 3), np.uint8))
'black'
>>> quality_flag(np.full((8, 8, 3), 128, np.uint8))
'blank'
"""

from __future__ import annotations

import numpy as np

BLACK_MAX = 8  # no pixel value above this (of 255): black
BLANK_STD = 2.0  # every channel's standard deviation below this (of 255): one flat colour


def quality_flag(pixels: np.ndarray) -> str | None:
    """``"black"``, ``"blank"`` or None for an (H, W, 3) uint8 image."""
    if int(pixels.max()) <= BLACK_MAX:
        return "black"
    if float(pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max()) < BLANK_STD:
        return "blank"
    return None
