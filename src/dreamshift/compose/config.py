"""What decides a composed dataset: placement of the cut-outs, the shift recipe of the splits,
and the sources. Same config -> same bytes; the resolved config is saved in ``dataset.json``.

>>> cfg = ComposeConfig.from_dict({"size": 32, "placement": {"scale": 0.5}})
>>> cfg.placement.scale, cfg.recipe.rho
((0.5, 0.5), 0.95)
>>> cfg.check()
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dreamshift.config import Choices, Config, option
from dreamshift.errors import DreamshiftError

POSITIONS = ("random", "center")
COATS = ("typical", "random")  # world foregrounds: class-typical coats, or shape alone
RENDERS = ("paste", "photo")  # a naive cut-out (a guide), or lit by its scene (a photo)
PASTES = ("mask", "rect")  # the foreground's mask, or its whole image as a square (D3S's code)


@dataclass(frozen=True)
class Placement(Config):
    """Where and how a foreground cut-out is pasted.

    ``scale``: (min, max) of the cut-out's longer side as a fraction of the image side
    (D3S pastes at 0.4). ``feather``: Gaussian blur radius of the mask edge, in output pixels.
    """

    scale: tuple[float, float] = option(
        (0.4, 0.4), "cut-out side / image side: S or MIN,MAX", shown="0.4", metavar="SCALE"
    )
    position: str = option("random", "paste position")
    feather: float = option(0.0, "mask edge blur radius in pixels")
    flip: bool = option(True, "random horizontal flips")
    max_rotation: float = option(10.0, "random rotation range in degrees")

    CHOICES: ClassVar[dict[str, Choices]] = {"position": POSITIONS}

    @classmethod
    def normalise(cls, d: dict[str, Any]) -> dict[str, Any]:
        scale = d.get("scale")
        if isinstance(scale, int | float) and not isinstance(scale, bool):  # a number or a range
            d["scale"] = (scale, scale)
        return d

    def validate(self) -> None:
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise DreamshiftError(f"scale range {lo}..{hi} must satisfy 0 < min <= max <= 1")
        if self.feather < 0 or self.max_rotation < 0:
            raise DreamshiftError("feather and max rotation must be >= 0")


@dataclass(frozen=True)
class ShiftRecipe(Config):
    """Which (class, background) groups each split holds.

    ``rho`` is the confounder strength: the share of a class's training images that show it on
    its assigned background (Waterbirds uses 0.95); the rest are spread evenly over the other
    backgrounds. val and test are balanced (``*_per_group`` images of every class x background);
    ``anti`` holds every class on every background except its assigned one. ``spurious``
    holds ``spurious_per_class`` images of each class's assigned background *without* the
    animal: the spurious feature alone, for the audit's spurious accuracy.
    ``assignment``: (class, background) pairs; classes not listed get background
    ``i mod n_backgrounds`` in order. ``conflict`` holds ``conflict_per_group`` images of every
    class x background whose animal wears another class's typical coat (Geirhos et al. 2019's
    cue conflict; world foregrounds only). ``size`` holds every test sample again once per
    scale of ``scale_bins`` (the cut-out's longer side = scale x image side) at the image's
    centre; ``position`` holds it once per cell of a ``position_bins`` x ``position_bins``
    grid, centred in that cell, at the placement's minimum scale: the evaluation splits of
    ForAug's size and center bias (Nauen et al. 2025).
    """

    rho: float = option(0.95, "confounder strength of the train split")
    train_size: int = option(2000, "train images in all")
    val_per_group: int = option(2, "val images per class x background")
    test_per_group: int = option(5, "test images per class x background")
    anti_per_group: int = option(2, "anti-correlated images per group")
    spurious_per_class: int = option(
        0,
        "images of each class's assigned background without the animal: split 'spurious', "
        "for the audit's spurious accuracy",
    )
    conflict_per_group: int = option(
        0,
        "images per class x background of one class's shape in another class's coat: split "
        "'conflict', for the audit's shape bias (world, --coat typical)",
    )
    scale_bins: tuple[float, ...] = option(
        (),
        "cut-out side / image side of each copy of the test samples in split 'size', pasted "
        "at the centre: the audit's size bias (ForAug), e.g. 0.2,0.3,0.4,0.6",
        shown="none",
        metavar="SCALES",
    )
    position_bins: int = option(
        0,
        "K: each test sample again centred in every cell of a K x K grid (K >= 3), at the "
        "minimum --scale, in split 'position': the audit's center bias (ForAug)",
        shown="0: none",
        metavar="K",
    )
    assignment: tuple[tuple[str, str], ...] = option(
        (),
        "CLASS=BACKGROUND,... spurious pairs to use",
        flag="--assign",
        metavar="PAIRS",
        shown="class i on background i mod backgrounds",
    )

    @classmethod
    def normalise(cls, d: dict[str, Any]) -> dict[str, Any]:
        pairs = d.get("assignment", ())  # {class: background} or [[class, background], ...]
        if isinstance(pairs, dict):
            d["assignment"] = [list(p) for p in pairs.items()]
        return d

    def validate(self) -> None:
        counts = ("train_size", "val_per_group", "test_per_group", "anti_per_group",
                  "spurious_per_class", "conflict_per_group")  # fmt: skip
        if not 0.0 <= self.rho <= 1.0:
            raise DreamshiftError(f"rho = {self.rho} must lie in [0, 1]")
        for name in counts:
            if getattr(self, name) < 0:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 0")
        bad = [s for s in self.scale_bins if not 0.0 < s <= 1.0]
        if bad or len(set(self.scale_bins)) != len(self.scale_bins):
            raise DreamshiftError(
                f"scale_bins = {list(self.scale_bins)}: give distinct scales in (0, 1]"
            )
        if self.position_bins in (1, 2) or self.position_bins < 0:
            raise DreamshiftError(
                f"position_bins = {self.position_bins}: choose 0 (no split 'position') or a grid "
                "of at least 3 x 3 (with 1 or 2 every cell touches the centre: no center bias)"
            )


LEGACY = {
    "coat": "random",
    "render": "paste",
    "paste": "mask",
    "class_names": "",
    "per_class": 0,
}  # what datasets made before these fields hold


def saved_config(d: dict[str, Any]) -> dict[str, Any]:
    """The config of a ``dataset.json``, read as a full config: a field it lacks takes the
    value it had before the field existed (not today's default)."""
    return ComposeConfig.from_dict({**LEGACY, **d}).to_dict()


# One word for a published recipe's settings; flags and --config YAML win over them.
PRESETS: dict[str, dict[str, Any]] = {
    # D3S's official code: the whole foreground photo, centre-cropped, pasted as a square at
    # 0.4 of a 512x512 background, no flip or rotation
    "d3s": {
        "size": 512, "paste": "rect",
        "placement": {"scale": [0.4, 0.4], "flip": False, "max_rotation": 0.0},
    },
}  # fmt: skip


@dataclass(frozen=True)
class ComposeConfig(Config):
    """Everything that decides a composed dataset's content. Same config -> same bytes.

    ``foregrounds`` / ``backgrounds``: ``"world"`` or a folder (one sub-folder per class /
    background label). ``classes`` / ``background_names``: a subset to use (empty = all).
    ``coat``: the world animals' coats, class-``typical`` or ``random`` (shape alone).
    ``render``: ``paste`` (guides) or ``photo`` (the world's real images).
    """

    foregrounds: str = option("world", "'world' or a folder: one sub-folder per class")
    backgrounds: str = option("world", "'world' or a folder: one sub-folder per label")
    classes: tuple[str, ...] = option((), "comma-separated subset of classes", shown="all")
    background_names: tuple[str, ...] = option(
        (), "comma-separated subset of backgrounds", shown="all"
    )
    size: int = option(64, "output side in pixels")
    seed: int = option(0, "run seed")
    coat: str = option(
        "typical", "world animals' coats: class-typical or random (the shape-only world)"
    )
    render: str = option(
        "paste",
        "paste: a naive cut-out, the guides; photo: the animal lit "
        "by its scene, with shadow and occlusion, the world's real images",
    )
    placement: Placement = field(default_factory=Placement)
    recipe: ShiftRecipe = field(default_factory=ShiftRecipe)
    share_foregrounds: bool = option(
        False, "use every foreground file in every split (folders with < 3 files per class)"
    )
    shard_size: int = option(256, "images per shard folder")
    paste: str = option(
        "mask",
        "mask (the cut-out) or rect (the whole foreground image as a "
        "centre-cropped square, as D3S)",
    )
    class_names: str = option(
        "",
        "foreground folders named by wnid (ImageNet's train/<wnid>/): imagenet-1k (names "
        "from timm's data files) or a TSV file of wnid<TAB>name<TAB>definition",
    )
    per_class: int = option(
        0, "foreground files sampled per class folder, read entry by entry (0: all)"
    )

    CHOICES: ClassVar[dict[str, Choices]] = {
        "coat": COATS,
        "render": RENDERS,
        "paste": PASTES,
    }

    def validate(self) -> None:
        for what, names in (("classes", self.classes), ("background_names", self.background_names)):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise DreamshiftError(f"{what} lists {repeated} more than once")
        if self.per_class < 0:
            raise DreamshiftError(f"per_class = {self.per_class} must be >= 0 (0: every file)")
        if (self.class_names or self.per_class) and self.foregrounds == "world":
            raise DreamshiftError(
                "--class-names and --per-class read a foreground folder tree: give "
                "--foregrounds DIR (e.g. ImageNet's train/ with one folder per wnid)"
            )
        if self.paste == "rect" and self.foregrounds == "world":
            raise DreamshiftError(
                "--paste rect pastes whole foreground photos; the world's foregrounds are "
                "cut-outs with no photo around them: use --paste mask, or --foregrounds DIR"
            )
        if not 8 <= self.size <= 4096:
            raise DreamshiftError(f"size = {self.size}: choose a side between 8 and 4096 pixels")
        if self.shard_size < 1:
            raise DreamshiftError(f"shard_size = {self.shard_size} must be >= 1")
        self._check_grid()

    def _check_grid(self) -> None:
        """Split ``position`` centres the cut-out in each grid cell, moved inward where it would
        leave the image: refuse a cut-out so wide that a border cell's copy would then be
        centred in the next cell (the audit bins each image by where its object lies)."""
        k = self.recipe.position_bins
        if not k:
            return
        side = max(4, round(self.placement.scale[0] * self.size))
        turn = math.radians(min(self.placement.max_rotation, 45.0))
        widest = side if not turn else math.ceil(side * (math.cos(turn) + math.sin(turn))) + 1
        if widest * k >= 2 * self.size:
            raise DreamshiftError(
                f"--position-bins {k}: at the minimum scale {self.placement.scale[0]:g} the "
                f"cut-out is up to {widest} px wide (rotation included), two {self.size}/{k} px "
                "cells or more: a copy in a border cell would lie in the next one. Choose fewer "
                "bins, a smaller minimum --scale, less --max-rotation or a larger --size"
            )

    def content_hash(self) -> str:
        """Hash of what decides the pixels (not the shard layout); it prefixes sample ids."""
        d = self.to_dict()
        d.pop("shard_size")
        for key, before in LEGACY.items():  # added later: at the old value, old hashes stand
            if d[key] == before:
                d.pop(key)
        for key in ("spurious_per_class", "conflict_per_group", "scale_bins", "position_bins"):
            if not d["recipe"][key]:
                d["recipe"].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
