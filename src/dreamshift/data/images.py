"""Reading and writing image files with clear errors and atomic writes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dreamshift.errors import BadInputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# the largest image dreamshift decodes (width x height): `dreamshift --max-pixels N` sets it
# for a command and the processes it starts; PIL's own decompression-bomb guard stays on above
MAX_PIXELS_ENV = "DREAMSHIFT_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000  # a 45-megapixel photograph passes; an 8000 x 8000 one does not


def max_pixels() -> int:
    return int(os.environ.get(MAX_PIXELS_ENV) or DEFAULT_MAX_PIXELS)


def check_size(img: Image.Image, where: object) -> None:
    """Refuse an image larger than :func:`max_pixels` before it is decoded."""
    w, h = img.size
    if w * h > max_pixels():
        raise BadInputError(
            f"image {where} is {w} x {h} = {w * h:,} pixels, above the limit of "
            f"{max_pixels():,}: shrink it, or raise the limit with `dreamshift --max-pixels N`"
        )


SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16L", "I;16B", "I"})  # PIL's modes of a 16-bit PNG


def load_image(path: Path, mode: str | None = None) -> Image.Image:
    """Open and fully decode ``path``; raise :class:`BadInputError` naming the file if it can't.
    A 16-bit greyscale image comes back as 8-bit "L", its full range mapped onto 0..255.

    >>> load_image(Path("missing.png"))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    BadInputError: cannot read image missing.png: ...
    """
    try:
        img = Image.open(path)
        check_size(img, path)
        img.load()  # decodes, and closes the file PIL opened
    except FileNotFoundError as exc:
        raise BadInputError(f"cannot read image {path}: no such file") from exc
    except UnidentifiedImageError as exc:
        if path.stat().st_size == 0:
            raise BadInputError(
                f"image {path} is an empty (zero-byte) file: replace or remove it"
            ) from exc
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise BadInputError(f"image {path} is corrupt (cannot be decoded): replace it") from exc
        raise BadInputError(
            f"{path} is not an image (expected one of {', '.join(sorted(IMAGE_SUFFIXES))}): "
            "remove it from the folder"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"image {path} is too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"image {path} is corrupt or truncated ({exc}): replace it") from exc
    out = _grey_to_8bit(img) if img.mode in SIXTEEN_BIT_GREY else img
    return out.convert(mode) if mode and out.mode != mode else out


def read_checked(path: Path, sha256: str, remedy: str) -> np.ndarray:
    """The RGB pixels (H, W, 3) uint8 of the file at ``path``, whose sha256 must be ``sha256``
    (not checked when empty). A missing, changed or undecodable file raises
    :class:`BadInputError` naming it, followed by ``remedy`` (what to do)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInputError(f"{path} is in the manifest but missing: {remedy}") from exc
    except OSError as exc:
        raise BadInputError(f"cannot read {path} ({exc}): {remedy}") from exc
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise BadInputError(
            f"{path} changed since the manifest was written (its sha256 differs): {remedy}"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_size(img, path)
            return np.array(img if img.mode == "RGB" else img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInputError(f"{path} cannot be decoded ({exc}): {remedy}") from exc


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit greyscale image as 8-bit "L", 0..65535 mapped onto 0..255 (PIL's own
    conversion clips everything above 255 to white)."""
    values = np.clip(np.asarray(img, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.rint(values / 257).astype(np.uint8))


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of ``img``; deterministic for identical pixels."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def flush_to_disk() -> None:
    """Commit written files to disk (one ``sync`` per shard instead of an fsync per image)."""
    if hasattr(os, "sync"):
        os.sync()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 4 MiB chunks (model weights can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def flip_rotate(
    img: Image.Image, rng: np.random.Generator, flip: bool, max_rotation: float
) -> tuple[Image.Image, bool, float]:
    """Random horizontal flip (p = 0.5 when ``flip``) and rotation in +-``max_rotation`` degrees
    of an RGBA cut-out, cropped back to its alpha box. Returns (image, flipped, degrees)."""
    flipped = bool(flip and rng.random() < 0.5)
    if flipped:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rotation = float(rng.uniform(-max_rotation, max_rotation)) if max_rotation > 0 else 0.0
    if rotation:
        img = img.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
        bbox = img.getchannel("A").getbbox()
        if bbox:
            img = img.crop(bbox)
    return img, flipped, round(rotation, 3)
