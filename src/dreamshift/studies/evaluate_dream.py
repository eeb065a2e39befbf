"""How well a generator dreams the world: label fidelity, change from the guide, diversity.

For balanced guides of held-out silhouettes (every class on every background), the model dreams
img2img at several strengths and txt2img, twice with different run seeds. Per setting we report
the oracles' accuracy on the dreamed images (label fidelity, the automatic stand-in for D3S's
human check), the mean absolute pixel change from the guide (a pass-through scores 0 and is not
a dream), and diversity: the mean absolute pixel difference between the two seeds' images of
one guide. The guides themselves are the first row: the oracles' ceiling on this data.

Run it with ``dreamshift world evaluate-dream --out DIR`` (about 18 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.world.animals import CLASSES
from dreamshift.world.backgrounds import BACKGROUNDS

STRENGTHS = (0.3, 0.5, 0.7, 0.8, 1.0)


@dataclass(frozen=True)
class Row:
    setting: str
    n: int
    fg_accuracy: float
    bg_accuracy: float
    change: float  # mean |dream - guide|, 0..255
    diversity: float  # mean |seed 0 - seed 1|, 0..255


def _images(root: Path) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """ok rows of a dataset by guide id (a composed dataset: by its own id)."""
    out = {}
    for r in ds.read_manifest(root).to_pylist():
        if r["status"] == ds.OK:
            key = r.get("guide_sample_id") or r["sample_id"]
            out[key] = (np.asarray(Image.open(root / r["path"]).convert("RGB")), r)
    return out


def _score(
    name: str,
    runs: list[dict[str, tuple[np.ndarray, dict[str, Any]]]],
    guides: dict[str, tuple[np.ndarray, dict[str, Any]]],
    oracles: dict[str, Any],
) -> Row:
    first = runs[0]
    ids = [k for k in first if all(k in r for r in runs)]
    images = np.stack([first[k][0] for k in ids])
    hits = {}
    for kind, col, names in (("fg", "fg_class", CLASSES), ("bg", "bg_class", BACKGROUNDS)):
        truth = np.array([names.index(first[k][1][col]) for k in ids])
        hits[kind] = float((oracles[kind].logits(images).argmax(1) == truth).mean())
    guide = np.stack([guides[k][0] for k in ids]).astype(np.float32)
    change = float(np.abs(images.astype(np.float32) - guide).mean())
    diversity = 0.0
    if len(runs) > 1:
        other = np.stack([runs[1][k][0] for k in ids]).astype(np.float32)
        diversity = float(np.abs(images.astype(np.float32) - other).mean())
    return Row(name, len(ids), hits["fg"], hits["bg"], change, diversity)


def evaluate_dream(
    out: str | Path,
    model: str = "tiny-dream",
    strengths: tuple[float, ...] = STRENGTHS,
    per_group: int = 2,
    steps: int = 30,
    guidance_scale: float = 7.5,
    oracles: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> list[Row]:
    """Compose the guides, dream every setting with run seeds 0 and 1 (cached datasets under
    ``out``), score them, write ``out/evaluation.json`` and ``out/evaluation_grid.png``."""
    from dreamshift.dream.config import DreamConfig
    from dreamshift.dream.runner import dream
    from dreamshift.models.oracles import load_oracle
    from dreamshift.studies.tiny_dream import render_world

    out = Path(out)
    guides_dir = out / "guides"
    render_world(guides_dir, 0, 0, per_group, workers, progress)
    settings = [(f"img2img {s:g}", "img2img", s) for s in strengths] + [("txt2img", "txt2img", 1.0)]
    oracle = {kind: load_oracle(kind, oracles) for kind in ("fg", "bg")}
    guides = _images(guides_dir)
    rows = [_score("guides (paste)", [guides], guides, oracle)]
    dreamed = {}
    for name, mode, strength in settings:
        runs = []
        for seed in (0, 1):
            cfg = DreamConfig(
                source=str(guides_dir), mode=mode, model=model, steps=steps, strength=strength,
                guidance_scale=guidance_scale, seed=seed, shard_size=100,
            )  # fmt: skip
            target = out / f"{mode}-{strength:g}-seed{seed}"
            dream(cfg, target, workers=workers, batch_size=4, progress=progress)
            runs.append(_images(target))
        dreamed[name] = runs[0]
        rows.append(_score(name, runs, guides, oracle))
    (out / "evaluation.json").write_text(
        json.dumps({"model": model, "steps": steps, "guidance_scale": guidance_scale,
                    "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    )  # fmt: skip
    _grid(guides, dreamed, out / "evaluation_grid.png")
    return rows


def _grid(
    guides: dict[str, tuple[np.ndarray, dict[str, Any]]],
    dreamed: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]],
    path: Path,
    cell: int = 64,
) -> None:
    """One row per class (its first guide, backgrounds cycling), one column per setting,
    the guide first."""
    picks = []
    for i, c in enumerate(CLASSES):
        bg = BACKGROUNDS[i % len(BACKGROUNDS)]
        match = [k for k, (_, r) in guides.items() if r["fg_class"] == c and r["bg_class"] == bg]
        if match:
            picks.append(match[0])
    columns = [guides, *dreamed.values()]
    sheet = Image.new("RGB", (cell * len(columns), cell * len(picks)), (255, 255, 255))
    for y, key in enumerate(picks):
        for x, images in enumerate(columns):
            if key in images:
                tile = Image.fromarray(images[key][0]).resize((cell, cell))
                sheet.paste(tile, (x * cell, y * cell))
    sheet.save(path)


def format_table(rows: list[Row]) -> str:
    lines = [
        "| setting | n | fg oracle acc | bg oracle acc | change from guide | diversity |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.setting} | {r.n} | {r.fg_accuracy:.1%} | {r.bg_accuracy:.1%} | "
            f"{r.change:.1f} | {r.diversity:.1f} |"
        )
    return "\n".join(lines)
