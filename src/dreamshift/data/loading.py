"""Reading a dataset's images: usable rows of a split, batches decoded ahead in threads, and a
whole split in memory as tensors.

>>> rows = [{"status": "ok", "split": "test"}, {"status": "failed", "split": "test"}]
>>> len(usable_rows(rows, "test"))
1
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError


def usable_rows(manifest: list[dict[str, Any]], split: str | None) -> list[dict[str, Any]]:
    """The rows of ``manifest`` (``read_manifest(...).to_pylist()``) with status ok in
    ``split``; no split: every split but ``spurious`` and ``conflict`` (probes that are no
    sample of their labels' distribution)."""
    probes = (ds.SPURIOUS, ds.CONFLICT)
    return [
        r
        for r in manifest
        if r["status"] == ds.OK and (r["split"] == split if split else r["split"] not in probes)
    ]


def _decode(root: Path, row: dict[str, Any]) -> np.ndarray | str:
    try:
        with Image.open(root / row["path"]) as img:
            return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (OSError, ValueError) as exc:
        return f"cannot read {root / row['path']}: {exc}"


def iter_batches(
    root: Path, rows: Sequence[dict[str, Any]], batch_size: int, threads: int = 1
) -> Iterator[tuple[list[int], np.ndarray | None, list[tuple[int, str]]]]:
    """(row positions, (B, H, W, 3) uint8 images, unreadable (position, reason)) per batch; the
    next batch is decoded in threads while the caller runs the current one."""

    def load(start: int) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
        positions = list(range(start, min(start + batch_size, len(rows))))
        decoded = list(pool.map(lambda i: _decode(root, rows[i]), positions))
        ok = [(i, a) for i, a in zip(positions, decoded, strict=True) if not isinstance(a, str)]
        bad = [(i, a) for i, a in zip(positions, decoded, strict=True) if isinstance(a, str)]
        if len({a.shape for _, a in ok}) > 1:  # mixed sizes: all to the first one's
            h, w = ok[0][1].shape[:2]
            ok = [(i, np.asarray(Image.fromarray(a).resize((w, h)))) for i, a in ok]
        images = np.stack([a for _, a in ok]) if ok else None
        return [i for i, _ in ok], images, bad

    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(1) as ahead:
        starts = list(range(0, len(rows), batch_size))
        pending = ahead.submit(load, starts[0]) if starts else None
        for k in range(len(starts)):
            assert pending is not None
            batch = pending.result()
            pending = ahead.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
            yield batch


def load_split(
    root: Path, split: str, classes: list[str], backgrounds: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, H, W, 3) uint8, class index (N,), background index (N,)) of the usable rows
    of one split, in memory."""
    rows = usable_rows(ds.read_manifest(root).to_pylist(), split)
    if not rows:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros((0, 1, 1, 3), dtype=torch.uint8), empty, empty
    images = []
    for _, batch, bad in iter_batches(root, rows, 256):
        if bad:
            raise DreamshiftError(f"{bad[0][1]}: re-run the command that made {root}")
        assert batch is not None
        images.append(torch.from_numpy(batch))
    labels = torch.tensor([classes.index(r["fg_class"]) for r in rows])
    bg = torch.tensor([backgrounds.index(r["bg_class"]) for r in rows])
    return torch.cat(images), labels, bg
