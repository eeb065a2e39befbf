"""How well a generator dreams the world: label fidelity, closeness to photos, change, diversity.

For balanced paste guides of held-out silhouettes (every class on every background), the model
dreams img2img at several strengths and txt2img, twice with different run seeds. Per setting we
report the oracles' accuracy on the dreamed images (label fidelity, the automatic stand-in for
D3S's human check: fg names the animal, shape its shape alone, bg the scene), the Fréchet
distance to held-out photos in the fg oracle's features (the world's FID: D3S's premise is that
a dream of a paste comes closer to a real photo), the mean absolute pixel change from the guide
(a pass-through scores 0 and is not a dream), and diversity: the mean absolute pixel difference
between the two seeds' images of one guide. The guides and a sample of photos are the first
rows: the oracles' ceilings and the distance's floor; the guides' round trip through the
model's autoencoder alone tells what the VAE changes before the UNet does anything. A last
row dreams at strength 1.0 with the prompt of a *wrong* class (the next class in the list): its
fg accuracy is measured against the prompted class, i.e. how often the image follows the prompt.
The modes that keep the object by its mask follow (:data:`MASKED`: inpaint, harmonize,
remove), and a row of each guide's own background without its animal: what ``remove`` should
come to. Labels are always the guide's, so on removed images the fg oracle's accuracy is how
often it still names the removed animal; *no animal* is the share of images on which the fg
oracle is less sure than on 95 % of the guides (its top probability below their 5th
percentile; the oracle has no "no animal" class).

Run it with ``dreamshift world evaluate-dream --out DIR`` (about 15 minutes on 2 CPU cores).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError
from dreamshift.metrics import frechet_distance
from dreamshift.world.animals import CLASSES
from dreamshift.world.backgrounds import BACKGROUNDS

STRENGTHS = (0.3, 0.5, 0.7, 0.8, 1.0)
# the modes that keep the object (or remove it) by its mask: (mode, strength, class context)
MASKED = (
    ("inpaint", 1.0, True), ("inpaint", 0.8, True), ("inpaint", 0.6, False),
    ("harmonize", 0.3, True), ("remove", 1.0, True),
)  # fmt: skip
PRESENT_QUANTILE = 0.05  # "no animal": the fg oracle less sure than on 95 % of the guides
REFERENCE_PHOTOS_PER_GROUP = 10


@dataclass(frozen=True)
class Row:
    setting: str
    n: int
    fg_accuracy: float
    shape_accuracy: float
    bg_accuracy: float
    distance: float  # Fréchet distance to the reference photos, fg-oracle features
    change: float  # mean |dream - guide|, 0..255
    diversity: float  # mean |seed 0 - seed 1|, 0..255
    prompted_accuracy: float | None = None  # fg oracle = the prompt's (wrong) class
    no_animal: float | None = None  # fg oracle's top probability under the guides' 5th pct.


Images = dict[str, tuple[np.ndarray, dict[str, Any]]]


def _images(root: Path, split: str | None = None) -> Images:
    """ok rows of a dataset by guide id (a composed dataset: by its own id)."""
    out = {}
    for r in ds.read_manifest(root).to_pylist():
        if r["status"] == ds.OK and (split is None or r["split"] == split):
            key = r.get("guide_sample_id") or r["sample_id"]
            out[key] = (np.asarray(Image.open(root / r["path"]).convert("RGB")), r)
    return out


def wrong_class(c: str) -> str:
    """The class a wrong prompt names instead of ``c``: the next one in the list."""
    return CLASSES[(CLASSES.index(c) + 1) % len(CLASSES)]


def _top_probability(logits: np.ndarray) -> np.ndarray:
    """The softmax probability of each row's top class."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).max(1)


def _score(
    name: str,
    runs: list[Images],
    guides: Images,
    oracles: dict[str, Any],
    reference: np.ndarray,
    prompted: bool = False,
    present: float | None = None,
) -> Row:
    """One row of the table. Labels are the guide's (a removed animal's class is what the fg
    oracle should no longer name); ``present``: the fg oracle's top probability above which
    it is taken to see an animal."""
    first = runs[0]
    ids = [k for k in first if all(k in r for r in runs)]
    images = np.stack([first[k][0] for k in ids])
    labels = [(guides.get(k) or first[k])[1] for k in ids]
    hits, logits = {}, {}
    for kind, col, names in (("fg", "fg_class", CLASSES), ("shape", "fg_class", CLASSES),
                             ("bg", "bg_class", BACKGROUNDS)):  # fmt: skip
        truth = np.array([names.index(label[col]) for label in labels])
        logits[kind] = oracles[kind].logits(images)
        hits[kind] = float((logits[kind].argmax(1) == truth).mean())
    followed = None
    if prompted:
        truth = np.array([CLASSES.index(wrong_class(first[k][1]["fg_class"])) for k in ids])
        followed = float((logits["fg"].argmax(1) == truth).mean())
    distance = frechet_distance(oracles["fg"].features(images), reference)
    guide = np.stack([guides[k][0] for k in ids]).astype(np.float32) if guides else None
    change = float(np.abs(images.astype(np.float32) - guide).mean()) if guide is not None else 0.0
    diversity = 0.0
    if len(runs) > 1:
        other = np.stack([runs[1][k][0] for k in ids]).astype(np.float32)
        diversity = float(np.abs(images.astype(np.float32) - other).mean())
    no_animal = None
    if present is not None:
        no_animal = float((_top_probability(logits["fg"]) < present).mean())
    return Row(name, len(ids), hits["fg"], hits["shape"], hits["bg"], distance, change,
               diversity, followed, no_animal)  # fmt: skip


def write_wrong_class_recipe(path: Path) -> Path:
    """A copy of the ``d3s`` recipe whose prompt for class c names :func:`wrong_class` (c)."""
    from dreamshift.dream.prompts import load_recipe

    d3s = load_recipe("d3s")
    recipe = {
        "templates": ["${definition}, ${background}"],
        "negative_prompt": d3s.negative_prompt,
        "backgrounds": d3s.backgrounds,
        # the D3S prompt of the wrong class without its (empty) background phrase
        "definitions": {c: d3s.render(0, wrong_class(c), None).rsplit(",", 1)[0] for c in CLASSES},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=True))
    return path


@dataclass(frozen=True)
class Distance:
    value: float
    n_a: int
    n_b: int


def dataset_distance(
    a: str | Path,
    b: str | Path,
    split_a: str | None = None,
    split_b: str | None = None,
    oracles: str | Path | None = None,
) -> Distance:
    """Fréchet distance between the ok images of two dataset directories (optionally one split
    of each) in the fg oracle's penultimate features."""
    from dreamshift.models.oracles import load_oracle

    fg = load_oracle("fg", oracles)
    feats = []
    for root, split in ((Path(a), split_a), (Path(b), split_b)):
        images = _images(root, split)
        if len(images) < 2:
            raise DreamshiftError(
                f"{root} has {len(images)} usable image(s)"
                + (f" in split {split!r}" if split else "")
                + ": a distance needs at least 2 on each side"
            )
        feats.append(fg.features(np.stack([v[0] for v in images.values()])))
    return Distance(frechet_distance(*feats), len(feats[0]), len(feats[1]))


def dataset_fidelity(
    root: str | Path, split: str | None = None, oracles: str | Path | None = None
) -> dict[str, float]:
    """Label fidelity of a dataset's ok images (optionally one split): the share the fg, shape
    and bg oracles name as their rows' fg_class and bg_class; ``n`` the images scored."""
    from dreamshift.models.oracles import load_oracle

    images = _images(Path(root), split)
    if not images:
        raise DreamshiftError(
            f"{root} has no usable images" + (f" in split {split!r}" if split else "")
        )
    pixels = np.stack([v[0] for v in images.values()])
    out: dict[str, float] = {"n": len(images)}
    for kind, col, names in (("fg", "fg_class", CLASSES), ("shape", "fg_class", CLASSES),
                             ("bg", "bg_class", BACKGROUNDS)):  # fmt: skip
        truth = np.array([names.index(v[1][col]) for v in images.values()])
        out[kind] = float((load_oracle(kind, oracles).logits(pixels).argmax(1) == truth).mean())
    return out


def evaluate_dream(
    out: str | Path,
    model: str = "tiny-dream",
    strengths: tuple[float, ...] = STRENGTHS,
    masked: tuple[tuple[str, float, bool], ...] = MASKED,
    per_group: int = 2,
    steps: int = 30,
    guidance_scale: float = 7.5,
    oracles: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> list[Row]:
    """Compose the guides and photos, dream every setting with run seeds 0 and 1 (cached
    datasets under ``out``), score them, write ``out/evaluation.json`` and
    ``out/evaluation_grid.png``."""
    from dreamshift.dream.config import DreamConfig
    from dreamshift.dream.runner import dream
    from dreamshift.models.oracles import NAMES, load_oracle
    from dreamshift.studies.tiny_dream import render_world

    out = Path(out)
    guides_dir = out / "guides"
    render_world(guides_dir, 0, 0, per_group, workers, progress, render="paste")
    photos_dir = render_world(out / "photos", 0, 0, per_group, workers, progress)
    reference_dir = render_world(out / "reference-photos", 1, 0, REFERENCE_PHOTOS_PER_GROUP,
                                 workers, progress)  # fmt: skip
    oracle = {kind: load_oracle(kind, oracles) for kind in NAMES}
    reference = np.stack([v[0] for v in _images(reference_dir).values()])
    reference_features = oracle["fg"].features(reference)
    guides = _images(guides_dir)
    guide_pixels = np.stack([v[0] for v in guides.values()])
    present = float(
        np.quantile(_top_probability(oracle["fg"].logits(guide_pixels)), PRESENT_QUANTILE)
    )
    scored = functools.partial(_score, oracles=oracle, reference=reference_features,
                               present=present)  # fmt: skip
    rows = [
        scored("guides (paste)", [guides], guides),
        scored("photos (held-out)", [_images(photos_dir)], {}),
        scored("guides, VAE round trip only", [_vae_round_trip(guides, model)], guides),
        scored("the guides' own backgrounds, no animal", [_backgrounds_alone(guides)], guides),
    ]
    wrong_recipe = write_wrong_class_recipe(out / "wrong-class-recipe.yaml")
    settings = [(f"img2img {s:g}", "img2img", s, "d3s", True) for s in strengths]
    settings += [
        ("txt2img", "txt2img", 1.0, "d3s", True),
        ("img2img 1, wrong class in prompt", "img2img", 1.0, str(wrong_recipe), True),
    ]
    settings += [
        (f"{mode} {s:g}" + ("" if context or mode == "remove" else ", background prompt only"),
         mode, s, "d3s", context)
        for mode, s, context in masked
    ]  # fmt: skip
    dreamed = {}
    for name, mode, strength, prompts, context in settings:
        runs = []
        for seed in (0, 1):
            cfg = DreamConfig(
                source=str(guides_dir), mode=mode, model=model, steps=steps, strength=strength,
                guidance_scale=guidance_scale, seed=seed, shard_size=100, prompts=prompts,
                class_context=context,
            )  # fmt: skip
            tag = "-wrong" if prompts != "d3s" else "" if context else "-no-class"
            target = out / f"{mode}-{strength:g}{tag}-seed{seed}"
            dream(cfg, target, workers=workers, batch_size=4, progress=progress)
            runs.append(_images(target))
        dreamed[name] = runs[0]
        rows.append(scored(name, runs, guides, prompted=prompts != "d3s"))
    (out / "evaluation.json").write_text(
        json.dumps({"model": model, "steps": steps, "guidance_scale": guidance_scale,
                    "reference_photos": len(reference),
                    "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    )  # fmt: skip
    _grid(guides, dreamed, out / "evaluation_grid.png")
    return rows


def _backgrounds_alone(guides: Images) -> Images:
    """Each guide's own background without its animal: what ``remove`` should come to."""
    from dreamshift.world.sources import WorldBackgrounds

    scenes = WorldBackgrounds()
    return {k: (np.asarray(scenes.image(r["bg_source"], img.shape[0])), r)
            for k, (img, r) in guides.items()}  # fmt: skip


def _vae_round_trip(images: Images, model: str) -> Images:
    """``images`` encoded and decoded by ``model``'s autoencoder: what the generator loses or
    changes before its UNet does anything."""
    from dreamshift.studies.oracles import vae_round_trip

    keys = list(images)
    decoded = vae_round_trip(np.stack([images[k][0] for k in keys]), 1.0, model, 0)
    return {k: (decoded[i], images[k][1]) for i, k in enumerate(keys)}


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
        "| setting | n | fg oracle | shape oracle | bg oracle | distance to photos | "
        "change from guide | diversity | no animal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fg = f"{r.fg_accuracy:.1%}"
        if r.prompted_accuracy is not None:
            fg += f" (prompted class: {r.prompted_accuracy:.1%})"
        lines.append(
            f"| {r.setting} | {r.n} | {fg} | {r.shape_accuracy:.1%} | {r.bg_accuracy:.1%} | "
            f"{r.distance:.1f} | {r.change:.1f} | {r.diversity:.1f} | "
            + (f"{r.no_animal:.1%} |" if r.no_animal is not None else "|")
        )
    return "\n".join(lines)
