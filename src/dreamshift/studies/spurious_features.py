"""Class-wise spurious feature generation on the world (Maung Maung et al. 2024, arXiv 2402.08200).

For each class k, the references are a few *spurious images*: k's usual background without the
animal, kept where every shipped classifier calls it k (the spurious split of a composed
dataset). One DreamBooth run per class (Ruiz et al. 2023; prompt ``a photo of q <k>``, prior
preservation with the base model's ``a photo of a <k>`` images) learns them, in four variants:
the UNet alone, the UNet and the text encoder, and that plus the spurious feature similarity
loss of world-cnn at two weights κ (:mod:`dreamshift.tune.sfsl`). Each tuned model then dreams
``per_class`` txt2img images from ``a photo of q <k>``; the base model's images of the class
prompt (also the prior) are the baseline.

Scores per variant, averaged over the classes: the *spurious accuracy* (the share of a class's
images that a classifier calls k) under each shipped classifier and under both at once —
world-cnn gives the SFSL, world-resnet18 is held out; the share the bg oracle names as k's usual
background (the spurious feature drawn); the share the fg oracle names as k (an animal of k
drawn, which a spurious image must not need); and the Fréchet distance to the class's spurious
images in the fg oracle's features. The references' own scores are the first row.

Run it with ``dreamshift world spurious-features --out DIR`` (about 40 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError
from dreamshift.metrics import frechet_distance

CLASSIFIERS = ("world-cnn", "world-resnet18")
SFSL_CLASSIFIER = "world-cnn"
IDENTIFIER = "q"  # tiny-dream's vocabulary keeps single letters whole
CLASS_PROMPT = "a photo of a ${class_name}"
INSTANCE_PROMPT = "a photo of ${identifier} ${class_name}"


@dataclass(frozen=True)
class StudyConfig:
    """What the study trains and dreams. ``references``: spurious images per class (classes with
    fewer are left out); ``candidates``: spurious images composed per class to choose from."""

    classes: tuple[str, ...] = ()  # empty: every class with enough spurious images
    references: int = 6
    candidates: int = 40
    per_class: int = 75
    prior_images: int = 20
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    kappas: tuple[float, ...] = (0.1, 1.0)
    dream_steps: int = 20
    guidance_scale: float = 7.5
    seed: int = 0


@dataclass(frozen=True)
class Row:
    setting: str
    classes: int
    n: int
    spurious_accuracy: dict[str, float]  # classifier (or "both") -> share called k
    bg_accuracy: float  # the bg oracle names k's usual background
    fg_accuracy: float  # the fg oracle names k
    distance: float  # to the class's spurious images, mean over classes
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


def _variants(cfg: StudyConfig) -> list[tuple[str, dict[str, Any]]]:
    """(name, TuneConfig fields) of the tuned variants."""
    text: dict[str, Any] = {"train_text_encoder": True}
    variants = [("DreamBooth (UNet)", {}), ("DreamBooth + text encoder", text)]
    variants += [
        (f"+ SFSL (world-cnn), kappa {k:g}", {**text, "sfsl": SFSL_CLASSIFIER, "kappa": k})
        for k in cfg.kappas
    ]
    return variants


def _load(root: Path, split: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rows = [
        r
        for r in ds.read_manifest(root).to_pylist()
        if r["status"] == ds.OK and (split is None or r["split"] == split)
    ]
    if not rows:
        raise DreamshiftError(f"{root} has no usable images" + (f" in {split!r}" if split else ""))
    images = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
    return images, rows


def _recipe(path: Path, template: str) -> str:
    path.write_text(yaml.safe_dump({"templates": [template], "negative_prompt": ""}))
    return str(path)


class _Scorer:
    """The shipped classifiers and the oracles, and each class's spurious images."""

    def __init__(self, references: dict[str, np.ndarray], usual: dict[str, str]):
        from dreamshift.models.loading import load_classifier
        from dreamshift.models.oracles import load_oracle
        from dreamshift.world.animals import CLASSES
        from dreamshift.world.backgrounds import BACKGROUNDS

        self.classes, self.backgrounds, self.usual = CLASSES, BACKGROUNDS, usual
        self.classifiers = {name: load_classifier(name, CLASSES) for name in CLASSIFIERS}
        self.oracles = {kind: load_oracle(kind) for kind in ("fg", "bg")}
        self.reference_features = {
            c: self.oracles["fg"].features(images) for c, images in references.items()
        }

    def score(self, name: str, images: dict[str, np.ndarray]) -> Row:
        per_class = {}
        for c, x in images.items():
            called = {
                spec: np.array(clf.classes)[clf.logits(x).argmax(1)] == c
                for spec, clf in self.classifiers.items()
            }
            called["both"] = np.logical_and.reduce(list(called.values()))
            bg = self.oracles["bg"].logits(x).argmax(1)
            fg = self.oracles["fg"].logits(x).argmax(1)
            per_class[c] = {
                **{spec: float(v.mean()) for spec, v in called.items()},
                "bg": float((bg == self.backgrounds.index(self.usual[c])).mean()),
                "fg": float((fg == self.classes.index(c)).mean()),
                "distance": frechet_distance(
                    self.oracles["fg"].features(x), self.reference_features[c]
                ),
                "n": len(x),
            }
        mean = {k: float(np.mean([v[k] for v in per_class.values()])) for k in
                (*CLASSIFIERS, "both", "bg", "fg", "distance")}  # fmt: skip
        return Row(
            name, len(per_class), sum(int(v["n"]) for v in per_class.values()),
            {k: mean[k] for k in (*CLASSIFIERS, "both")}, mean["bg"], mean["fg"],
            mean["distance"], per_class,
        )  # fmt: skip


def spurious_feature_study(
    out: str | Path,
    cfg: StudyConfig = StudyConfig(),
    progress: bool = True,
    log: Any = print,
) -> list[Row]:
    """Compose the spurious images and the prompt slots, tune and dream every variant (all
    cached under ``out``: a rerun resumes), score them and write ``out/study.json`` and
    ``out/study_grid.png``."""
    from dreamshift.compose.config import ComposeConfig, ShiftRecipe
    from dreamshift.compose.runner import compose
    from dreamshift.dream.config import DreamConfig
    from dreamshift.dream.runner import dream
    from dreamshift.tune.config import TuneConfig
    from dreamshift.tune.run import select_instances, tune

    out = Path(out)
    source = out / "spurious"
    compose(
        ComposeConfig(seed=31, recipe=ShiftRecipe(
            train_size=10, val_per_group=0, test_per_group=0, anti_per_group=0,
            spurious_per_class=cfg.candidates,
        )), source, workers=1, progress=progress,
    )  # fmt: skip
    usual = {c: b for c, b in ds.DatasetMeta.read(source).assignment.items()}
    tune_base = TuneConfig(
        method="dreambooth", split=ds.SPURIOUS, called_by=CLASSIFIERS, shots=cfg.references,
        identifier=IDENTIFIER, instance_prompt=INSTANCE_PROMPT, class_prompt=CLASS_PROMPT,
        prior_images=cfg.prior_images, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
        seed=cfg.seed,
    )  # fmt: skip
    kept = select_instances(source, replace(tune_base, shots=0))
    counts = {c: sum(r["fg_class"] == c for r in kept) for c in usual}
    classes = [
        c for c in usual if counts[c] >= cfg.references and (not cfg.classes or c in cfg.classes)
    ]
    if not classes:
        raise DreamshiftError(f"no class has {cfg.references} spurious images: {counts}")
    log("spurious images called their class by " + " and ".join(CLASSIFIERS) + ": "
        + ", ".join(f"{c} {n}/{cfg.candidates}" for c, n in counts.items())
        + f"; studied: {', '.join(classes)}")  # fmt: skip

    all_spurious, rows = _load(source, ds.SPURIOUS)
    by_class = {
        c: all_spurious[[i for i, r in enumerate(rows) if r["bg_class"] == usual[c]]]
        for c in classes
    }
    class_recipe = _recipe(out / "class-prompt.yaml", CLASS_PROMPT)
    instance_recipe = _recipe(
        out / "instance-prompt.yaml", INSTANCE_PROMPT.replace("${identifier}", IDENTIFIER)
    )

    def dreamed(target: Path, slots: Path, model: str, recipe: str) -> np.ndarray:
        dcfg = DreamConfig(
            source=str(slots), mode="txt2img", model=model, prompts=recipe,
            steps=cfg.dream_steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed,
        )  # fmt: skip
        dream(dcfg, target, workers=1, batch_size=4, progress=progress)
        return _load(target)[0]

    generated: dict[str, dict[str, np.ndarray]] = {}
    for c in classes:
        slots = out / "slots" / c
        compose(
            ComposeConfig(seed=32, classes=(c,), background_names=(usual[c],),
                          recipe=ShiftRecipe(train_size=0, val_per_group=0,
                                             test_per_group=cfg.per_class, anti_per_group=0)),
            slots, workers=1, progress=progress,
        )  # fmt: skip
        prior = out / "base-class-prompt" / c  # the base model's class images: also the prior
        generated.setdefault("base, class prompt", {})[c] = dreamed(
            prior, slots, "tiny-dream", class_recipe
        )
        for name, fields in _variants(cfg):
            run = tune(
                source, out / "runs",
                replace(tune_base, classes=(c,), prior=str(prior), **fields),
                progress=progress, log=log,
            )  # fmt: skip
            slug = name.split("(")[0].strip().replace(" ", "-").replace("+", "plus")
            generated.setdefault(name, {})[c] = dreamed(
                out / "dreams" / f"{slug}-{json.dumps(fields.get('kappa', 0))}" / c, slots,
                str(run), instance_recipe,
            )  # fmt: skip

    scorer = _Scorer(by_class, usual)
    references = {c: by_class[c] for c in classes}
    results = [scorer.score(f"spurious images of the spurious split ({cfg.candidates} per class)",
                            references)]  # fmt: skip
    results += [scorer.score(name, images) for name, images in generated.items()]
    (out / "study.json").write_text(
        json.dumps({"config": asdict(cfg), "classes": classes, "usual_backgrounds": usual,
                    "called_by_all": counts, "rows": [asdict(r) for r in results]},
                   indent=2) + "\n"
    )  # fmt: skip
    _grid(references, generated, out / "study_grid.png")
    return results


def _grid(references: dict[str, np.ndarray], generated: dict[str, dict[str, np.ndarray]],
          path: Path, shown: int = 3, cell: int = 64) -> None:  # fmt: skip
    """One row per class; columns: ``shown`` spurious images, then ``shown`` images of each
    setting."""
    columns = [references, *generated.values()]
    classes = list(references)
    sheet = Image.new("RGB", (cell * shown * len(columns) + 4 * len(columns), cell * len(classes)),
                      (255, 255, 255))  # fmt: skip
    for y, c in enumerate(classes):
        for x, images in enumerate(columns):
            for i in range(min(shown, len(images[c]))):
                tile = Image.fromarray(images[c][i]).resize((cell, cell))
                sheet.paste(tile, ((x * shown + i) * cell + 4 * x, y * cell))
    sheet.save(path)


def format_table(rows: list[Row]) -> str:
    lines = [
        "| images | world-cnn calls k | world-resnet18 calls k | both | bg oracle: k's "
        "background | fg oracle: k | distance to k's spurious images |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = r.spurious_accuracy
        lines.append(
            f"| {r.setting} | {acc['world-cnn']:.1%} | {acc['world-resnet18']:.1%} | "
            f"{acc['both']:.1%} | {r.bg_accuracy:.1%} | {r.fg_accuracy:.1%} | {r.distance:.1f} |"
        )
    return "\n".join(lines)
