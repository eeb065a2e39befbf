"""Model inputs: one preprocessing per model family, and the one training augmentation.

A model's preprocessing is data stored next to its weights (as timm keeps mean, std and input
size in a model's pretrained config), never restated by the code that calls it:

- the **world** family (every classifier trained here, learn runs, the oracles): pixels mapped
  to [-1, 1] (``x / 127.5 - 1``, i.e. mean = std = 0.5), then resized to the input side;
- ImageNet-trained zoo models: their weights' own resizing, as torchvision's
  ``weights.transforms()`` and timm's eval transform do it on a PIL image (the shorter side to
  ``resize_size`` by PIL's antialiased filter, in uint8, then the centre crop of the input
  side), then ``(x / 255 - mean) / std`` with their own mean and std: the same pixels the
  libraries feed their models.

>>> import numpy as np
>>> prep = Preprocessing.world(32)
>>> prep(np.full((2, 64, 64, 3), 255, np.uint8)).shape
torch.Size([2, 3, 32, 32])
>>> Preprocessing.from_dict(prep.to_dict()) == prep
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamshift.errors import DreamshiftError

RESIZES = ("bilinear", "bicubic", "area")  # bilinear, bicubic: antialiased (PIL-like)
WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """uint8 images (N, H, W, 3) -> model input (N, 3, S, S), normalised then resized with
    ``resize``: straight to S x S, or with ``resize_size`` the shorter side to it and then the
    centre S x S crop."""

    input_size: int
    mean: tuple[float, float, float] = WORLD_MEAN
    std: tuple[float, float, float] = WORLD_STD
    resize: str = "bilinear"
    resize_size: int = 0  # 0: resize to input_size x input_size, no crop

    @classmethod
    def world(cls, input_size: int, resize: str = "bilinear") -> Preprocessing:
        return cls(input_size, WORLD_MEAN, WORLD_STD, resize)

    def __call__(self, images: np.ndarray | torch.Tensor, device: str = "cpu") -> torch.Tensor:
        cropped = bool(self.resize_size) and self.resize != "area"
        if cropped:  # a zoo model's resizing, as its library does it
            images = self.resize_and_crop(images)
        x = (
            images
            if isinstance(images, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(images))
        )
        x = x.to(device).permute(0, 3, 1, 2).to(torch.float32, copy=True)  # (N, 3, H, W), ours
        if self.mean == WORLD_MEAN and self.std == WORLD_STD:
            x.div_(127.5).sub_(1.0)  # the world's [-1, 1], as every world model was trained
        else:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x.div_(255.0).sub_(mean).div_(std)
        size = self.input_size
        if cropped:
            return x
        if self.resize_size:
            h, w = x.shape[-2:]
            scale = self.resize_size / min(h, w)
            x = self._resize(x, (max(size, round(h * scale)), max(size, round(w * scale))))
            top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
            return x[..., top : top + size, left : left + size]
        return self._resize(x, (size, size))

    def resize_and_crop(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (N, H, W, 3) -> uint8 (N, S, S, 3) as torchvision's ``Resize(resize_size)``
        and ``CenterCrop(input_size)`` do it on PIL images: the shorter side to
        ``resize_size`` (the longer one truncated, as torchvision computes it) with PIL's
        filter, the crop's corner rounded."""
        from PIL import Image

        arrays = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
        filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
        size, out = self.input_size, []
        for a in np.asarray(arrays, dtype=np.uint8):
            h, w = a.shape[:2]
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.resize_size, int(self.resize_size * long / short)
            nh, nw = (new_long, new_short) if w <= h else (new_short, new_long)
            if (nh, nw) != (h, w):
                a = np.asarray(Image.fromarray(a).resize((nw, nh), filters[self.resize]))
            if nh < size or nw < size:
                raise DreamshiftError(
                    f"resize_size {self.resize_size} leaves a {nh}x{nw} image, smaller than "
                    f"the {size}x{size} crop"
                )
            top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
            out.append(a[top : top + size, left : left + size])
        return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)

    def _resize(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == hw:
            return x
        if self.resize == "area":
            return nn.functional.interpolate(x, size=hw, mode="area")
        return nn.functional.interpolate(x, size=hw, mode=self.resize, antialias=True)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "preprocessing") -> Preprocessing:
        try:
            prep = cls(
                int(d["input_size"]),
                tuple(float(v) for v in d.get("mean", WORLD_MEAN)),  # type: ignore[arg-type]
                tuple(float(v) for v in d.get("std", WORLD_STD)),  # type: ignore[arg-type]
                str(d.get("resize", "bilinear")),
                int(d.get("resize_size", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DreamshiftError(f"{where}: not a valid preprocessing record ({exc!r})") from exc
        if prep.resize not in RESIZES or len(prep.mean) != 3 or len(prep.std) != 3:
            raise DreamshiftError(f"{where}: resize must be one of {RESIZES}, mean/std 3 values")
        return prep


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop with 4-pixel zero padding, per image
    (the CIFAR recipe of He et al. 2016). ``x``: (B, 3, H, W)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=g)
    dx = torch.randint(0, 9, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, 3, h, w + 8)
    x = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, 3, h, w)
    return x.gather(3, cols)


def augment_image(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """:func:`augment` of one image ``x`` (3, H, W), with slices instead of gathers (a third
    of the time): the same draws, the same pixels as ``augment(x[None], g)[0]``.

    >>> x = torch.randn(3, 8, 8)
    >>> a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    >>> torch.equal(augment_image(x, a), augment(x[None], b)[0])
    True
    """
    flip = bool(torch.rand(1, generator=g) < 0.5)
    dy = int(torch.randint(0, 9, (1,), generator=g))
    dx = int(torch.randint(0, 9, (1,), generator=g))
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x.flip(-1) if flip else x, (4, 4, 4, 4))
    return padded[:, dy : dy + h, dx : dx + w]
