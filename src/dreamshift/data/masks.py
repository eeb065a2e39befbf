"""Object masks: how a dataset stores where its object is, and how a dream keeps it.

Every composed sample has a mask (``mask_path``: a 1-bit PNG beside its image, white = the
object; ``mask_sha256``: its hash), and the dreams that keep the layout carry it. A dream that
keeps pixels exactly (``dream --mode inpaint | harmonize | remove``) restores the guide's
pixels of a *kept* region after decoding, the fix for diffusers' inpainting changing pixels
outside its mask (huggingface/diffusers #3880, #4782), as ImageNet-E (Li et al. 2023) blends
its objects back by their masks. The restore ramps over a ``feather`` band inside the kept
region's edge; every kept pixel farther in is the guide's byte for byte.

Distances here are in pixels on the 8-neighbour (chessboard) grid: one erosion step removes
every pixel that touches the outside. The image border does not erode.

>>> m = np.zeros((7, 7), bool); m[1:6, 1:6] = True
>>> int(erode(m, 1).sum()), int(dilate(m, 1).sum())  # 3 x 3 inside, 7 x 7 around
(9, 49)
>>> alpha = feather_alpha(m, 2)
>>> float(alpha[1, 1]), float(alpha[3, 3]), float(alpha[0, 0])  # edge, deep inside, outside
(0.5, 1.0, 0.0)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from dreamshift.data.images import check_size, encode_png, sha256_bytes
from dreamshift.errors import BadInputError

MASK_SUFFIX = ".mask.png"
# the dream modes whose images show their guide's object where its mask says, and so carry
# the mask (img2img and txt2img draw the object anew; remove takes it out)
MASK_CARRYING_MODES = ("paste", "inpaint", "harmonize")


def encode_mask(mask: np.ndarray) -> bytes:
    """A boolean (H, W) mask as 1-bit PNG bytes (white = the object); deterministic."""
    return encode_png(Image.fromarray(np.asarray(mask, dtype=bool)))


def decode_mask(data: bytes, where: object) -> np.ndarray:
    """The boolean mask of PNG ``data`` (any mode: nonzero = the object)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_size(img, where)
            return np.asarray(img.convert("L")) > 127
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInputError(f"mask {where} cannot be decoded ({exc})") from exc


def read_mask(path: Path, sha256: str | None, size: tuple[int, int], remedy: str) -> np.ndarray:
    """The boolean mask stored at ``path``, checked against its recorded ``sha256`` and
    resized (nearest) to ``size`` (width, height). A missing, changed or undecodable file
    raises :class:`BadInputError` naming it, followed by ``remedy``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read mask {path} ({exc.strerror or exc}): {remedy}") from exc
    if sha256 and sha256_bytes(data) != sha256:
        raise BadInputError(
            f"mask {path} changed since the manifest was written (its sha256 differs): {remedy}"
        )
    mask = decode_mask(data, path)
    if mask.shape[::-1] != size:
        img = Image.fromarray(mask).resize(size, Image.Resampling.NEAREST)
        mask = np.asarray(img, dtype=bool)
    return mask


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` shrunk by ``px`` pixels (8-neighbour steps; the image border does not erode)."""
    m = np.asarray(mask, dtype=bool)
    for _ in range(px):
        p = np.pad(m, 1, mode="edge")
        h, w = m.shape
        out = m.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                out &= p[dy : dy + h, dx : dx + w]
        m = out
    return m


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` pixels (8-neighbour steps)."""
    return ~erode(~np.asarray(mask, dtype=bool), px)


def feather_alpha(keep: np.ndarray, feather: int) -> np.ndarray:
    """How much of the guide each pixel keeps: 1 inside ``keep`` at least ``feather`` pixels
    from its edge, k / feather on its k-th pixel ring from the edge, 0 outside."""
    keep = np.asarray(keep, dtype=bool)
    if feather <= 0:
        return keep.astype(np.float32)
    depth = np.zeros(keep.shape, np.float32)
    m = keep
    for _ in range(feather):
        depth += m
        m = erode(m, 1)
    return depth / feather


def restore(generated: np.ndarray, guide: np.ndarray, keep: np.ndarray, feather: int) -> np.ndarray:
    """``generated`` (H, W, 3 uint8) with ``guide``'s pixels put back where ``keep`` holds:
    exactly (the guide's bytes) at ``feather`` pixels or more inside, blended on the band."""
    alpha = feather_alpha(keep, feather)[..., None]
    blended = alpha * guide.astype(np.float32) + (1 - alpha) * generated.astype(np.float32)
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(alpha >= 1.0, guide, out)
