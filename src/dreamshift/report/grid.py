"""``dreamshift grid``: one PNG with a sample image per (class, background) group.

Rows are foreground classes (and a last row for backgrounds alone, when there are some),
columns backgrounds; a group with no ok sample shows an empty grey cell. The first ok sample
(lowest index) of each group is shown.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from dreamshift.data import dataset as ds
from dreamshift.data.images import load_image
from dreamshift.errors import DreamshiftError


def make_grid(root: str | Path, out: str | Path, split: str | None = None, cell: int = 64) -> Path:
    """Write the grid PNG of dataset ``root`` (optionally one split) to ``out``; return it."""
    root = Path(root)
    meta = ds.DatasetMeta.read(root)
    classes, bgs = list(meta.classes), list(meta.backgrounds)
    rows = ds.read_manifest(root).to_pylist()
    splits = sorted({r["split"] for r in rows})
    if split is not None and split not in splits:
        raise DreamshiftError(f"{root} has no split {split!r}: it has {', '.join(splits)}")
    chosen: dict[tuple[str | None, str], str] = {}
    for r in sorted(rows, key=lambda r: r["index"]):
        if r["status"] == ds.OK and (split is None or r["split"] == split):
            chosen.setdefault((r["fg_class"], r["bg_class"]), r["path"])

    with_class = any(c is not None for c, _ in chosen)
    alone = any(c is None for c, _ in chosen) or not classes
    # a row per class when any image has one; a last row for backgrounds alone (split spurious,
    # a `dream --mode remove` run) when there are some
    names: list[str | None] = (list(classes) if with_class else []) + ([None] if alone else [])
    label_w, label_h, gap = 8 * max(len(c or "background") for c in names) + 8, 14, 2
    width = label_w + len(bgs) * (cell + gap)
    height = label_h + len(names) * (cell + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, b in enumerate(bgs):
        draw.text((label_w + j * (cell + gap) + 2, 1), b[: max(1, cell // 6)], fill=(0, 0, 0))
    for i, c in enumerate(names):
        y = label_h + i * (cell + gap)
        draw.text((2, y + cell // 2 - 5), c or "background", fill=(0, 0, 0))
        for j, b in enumerate(bgs):
            x = label_w + j * (cell + gap)
            path = chosen.get((c, b))
            if path is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(200, 200, 200))
                continue
            img = load_image(root / path, "RGB")
            if img.size != (cell, cell):
                img = img.resize((cell, cell), Image.Resampling.BILINEAR)
            sheet.paste(img, (x, y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
