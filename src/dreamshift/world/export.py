"""Write parts of the world as ordinary files: folder-format foregrounds and backgrounds (the
layout ``dreamshift compose --foregrounds/--backgrounds`` reads) and a preview sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dreamshift.seeding import derive_seed, rng_for
from dreamshift.world.animals import CLASSES, SPLITS, load_silhouettes
from dreamshift.world.appearance import RANDOM, paint_silhouette
from dreamshift.world.backgrounds import BACKGROUNDS, render_background


def export_world(
    out: str | Path,
    per_class: int = 20,
    per_background: int = 10,
    split: str = "train",
    fg_size: int = 128,
    bg_size: int = 64,
    seed: int = 0,
    coat: str = "typical",
) -> Path:
    """``out/foregrounds/<class>/<id>.png`` (RGBA cut-outs, longer side ``fg_size``, in the
    class's typical coat or, with ``coat="random"``, a random one) and
    ``out/backgrounds/<name>/<k>.png`` (``bg_size`` squares)."""
    out = Path(out)
    sil = load_silhouettes()
    for c in CLASSES:
        folder = out / "foregrounds" / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in sil.indices(split, c)[:per_class]:
            img, _ = paint_silhouette(
                sil.masks[i], rng_for(seed, "export", int(i)), fg_size, False, 0,
                c if coat == "typical" else RANDOM,
            )  # fmt: skip
            img.save(folder / f"{i:05d}.png")
    for b in BACKGROUNDS:
        folder = out / "backgrounds" / b
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_background):
            pixels = render_background(b, derive_seed(seed, "export", b, k), bg_size)
            Image.fromarray(pixels).save(folder / f"{k:04d}.png")
    return out


def world_summary() -> str:
    sil = load_silhouettes()
    lines = [f"foreground classes ({len(CLASSES)}): {', '.join(CLASSES)}"]
    lines.append(f"backgrounds ({len(BACKGROUNDS)}): {', '.join(BACKGROUNDS)}")
    lines.append("silhouettes per split (identical shapes share a split):")
    for s in SPLITS:
        counts = [len(sil.indices(s, c)) for c in CLASSES]
        lines.append(f"  {s:<6} {sum(counts):>5}  (per class {min(counts)}..{max(counts)})")
    return "\n".join(lines)


def preview_sheet(out: str | Path, size: int = 64, columns: int = 8, seed: int = 0) -> Path:
    """One row per background kind (``columns`` seeds each), then a row of animals in their
    typical coats and a row in random coats."""
    rows = [
        np.concatenate(
            [
                render_background(b, derive_seed(seed, "preview", b, k), size)
                for k in range(columns)
            ],
            axis=1,
        )
        for b in BACKGROUNDS
    ]
    sil = load_silhouettes()
    for typical in (True, False):
        animals = []
        for k in range(columns):
            c = CLASSES[k % len(CLASSES)]
            i = int(sil.indices("train", c)[k])
            rng = rng_for(seed, "preview", i)
            cut, _ = paint_silhouette(sil.masks[i], rng, size - 8, True, 10,
                                      c if typical else RANDOM)  # fmt: skip
            tile = Image.new("RGB", (size, size), (255, 255, 255))
            tile.paste(cut, ((size - cut.width) // 2, (size - cut.height) // 2), cut)
            animals.append(np.asarray(tile))
        rows.append(np.concatenate(animals, axis=1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    return out
