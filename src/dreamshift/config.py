"""Typed, frozen run configurations. The resolved config is saved in every ``dataset.json``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dreamshift.errors import DreamshiftError

POSITIONS = ("random", "center")


def _check_types(obj: object, ints: tuple[str, ...], numbers: tuple[str, ...]) -> None:
    for name in ints:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise DreamshiftError(f"{name} = {v!r} must be a whole number")
    for name in numbers:
        v = getattr(obj, name)
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise DreamshiftError(f"{name} = {v!r} must be a number")


def _reject_unknown_keys(cls: Any, d: dict[str, Any], what: str) -> None:
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise DreamshiftError(f"unknown {what} config keys: {sorted(unknown)}")


@dataclass(frozen=True)
class Placement:
    """Where and how a foreground cut-out is pasted.

    ``scale``: (min, max) of the cut-out's longer side as a fraction of the image side
    (D3S pastes at 0.4). ``feather``: Gaussian blur radius of the mask edge, in output pixels.
    """

    scale: tuple[float, float] = (0.4, 0.4)
    position: str = "random"
    feather: float = 0.0
    flip: bool = True
    max_rotation: float = 10.0

    def check(self) -> None:
        _check_types(self, (), ("feather", "max_rotation"))
        if len(self.scale) != 2 or not all(isinstance(v, int | float) for v in self.scale):
            raise DreamshiftError(f"scale = {self.scale!r} must be a number or [min, max]")
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise DreamshiftError(f"scale range {lo}..{hi} must satisfy 0 < min <= max <= 1")
        if self.position not in POSITIONS:
            raise DreamshiftError(f"position {self.position!r}: choose one of {POSITIONS}")
        if self.feather < 0 or self.max_rotation < 0:
            raise DreamshiftError("feather and max rotation must be >= 0")


@dataclass(frozen=True)
class ShiftRecipe:
    """Which (class, background) groups each split holds.

    ``rho`` is the confounder strength: the share of a class's training images that show it on
    its assigned background (Waterbirds uses 0.95); the rest are spread evenly over the other
    backgrounds. val and test are balanced (``*_per_group`` images of every class x background);
    ``anti`` holds every class on every background except its assigned one. ``spurious``
    holds ``spurious_per_class`` images of each class's assigned background *without* the
    animal: the spurious feature alone, for the audit's spurious accuracy.
    ``assignment``: (class, background) pairs; classes not listed get background
    ``i mod n_backgrounds`` in order.
    """

    rho: float = 0.95
    train_size: int = 2000
    val_per_group: int = 2
    test_per_group: int = 5
    anti_per_group: int = 2
    spurious_per_class: int = 0
    assignment: tuple[tuple[str, str], ...] = ()

    def check(self) -> None:
        counts = ("train_size", "val_per_group", "test_per_group", "anti_per_group",
                  "spurious_per_class")  # fmt: skip
        _check_types(self, counts, ("rho",))
        if not 0.0 <= self.rho <= 1.0:
            raise DreamshiftError(f"rho = {self.rho} must lie in [0, 1]")
        for name in counts:
            if getattr(self, name) < 0:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 0")


@dataclass(frozen=True)
class ComposeConfig:
    """Everything that decides a composed dataset's content. Same config -> same bytes.

    ``foregrounds`` / ``backgrounds``: ``"world"`` or a folder (one sub-folder per class /
    background label). ``classes`` / ``background_names``: a subset to use (empty = all).
    """

    foregrounds: str = "world"
    backgrounds: str = "world"
    classes: tuple[str, ...] = ()
    background_names: tuple[str, ...] = ()
    size: int = 64
    seed: int = 0
    placement: Placement = field(default_factory=Placement)
    recipe: ShiftRecipe = field(default_factory=ShiftRecipe)
    share_foregrounds: bool = False
    shard_size: int = 256

    def check(self) -> None:
        _check_types(self, ("size", "seed", "shard_size"), ())
        for what, names in (("classes", self.classes), ("background_names", self.background_names)):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise DreamshiftError(f"{what} lists {repeated} more than once")
        if not 8 <= self.size <= 4096:
            raise DreamshiftError(f"size = {self.size}: choose a side between 8 and 4096 pixels")
        if self.shard_size < 1:
            raise DreamshiftError(f"shard_size = {self.shard_size} must be >= 1")
        self.placement.check()
        self.recipe.check()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as written to JSON

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComposeConfig:
        _reject_unknown_keys(cls, d, "compose")
        d = dict(d)
        place = dict(d.get("placement", {}))
        if "scale" in place:  # a number or [min, max]
            scale = place["scale"]
            place["scale"] = (scale, scale) if isinstance(scale, int | float) else tuple(scale)
        d["placement"] = Placement(**place)
        rec = dict(d.get("recipe", {}))
        pairs = rec.get("assignment", ())  # {class: background} or [[class, background], ...]
        pairs = pairs.items() if isinstance(pairs, dict) else pairs
        rec["assignment"] = tuple(tuple(p) for p in pairs)
        d["recipe"] = ShiftRecipe(**rec)
        for key in ("classes", "background_names"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)

    def content_hash(self) -> str:
        """Hash of what decides the pixels (not the shard layout); it prefixes sample ids."""
        d = self.to_dict()
        d.pop("shard_size")
        if not d["recipe"]["spurious_per_class"]:  # added later: unused, old hashes stand
            d["recipe"].pop("spurious_per_class")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


DREAM_MODES = ("img2img", "txt2img", "paste")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DreamConfig:
    """A dream run: which guides, which model and sampler settings make the images.

    ``source``: a composed dataset directory. ``model``: ``tiny-dream`` (the small model
    trained on the embedded world and shipped in the package), a diffusers folder or a hub
    id. ``mode``: ``img2img`` (D3S: guide + prompt),
    ``txt2img`` (ImageNet-G: prompt only; the guide's labels are kept) or ``paste`` (the guide
    copied unchanged, the no-diffusion baseline). ``prompts``: a shipped recipe name (``d3s``,
    ``imagenet-g``) or a YAML recipe file. ``negative_prompt``: None takes the recipe's.
    ``scheduler``: ``model`` (the checkpoint's own) or a name from
    :data:`dreamshift.dream.models.SCHEDULERS`. ``threads``: torch threads per worker on the
    CPU (None: cores / workers); results are bit-exact only for the same thread count, so it
    is recorded. ``batch_invariant``: run the networks one sample at a time inside a batch, so
    that pixels do not depend on batch size (the default; see ``dreamshift.dream.models``).
    """

    source: str
    mode: str = "img2img"
    model: str = "tiny-dream"
    prompts: str = "d3s"
    negative_prompt: str | None = None
    scheduler: str = "model"
    steps: int = 30
    strength: float = 0.8
    guidance_scale: float = 7.5
    width: int | None = None
    height: int | None = None
    splits: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    batch_invariant: bool = True
    compile: bool = False
    shard_size: int = 64

    def check(self) -> None:
        _check_types(self, ("steps", "seed", "shard_size"), ("strength", "guidance_scale"))
        for name in ("width", "height", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise DreamshiftError(f"{name} = {v!r} must be a whole number >= 1")
        if self.mode not in DREAM_MODES:
            raise DreamshiftError(f"mode {self.mode!r}: choose one of {', '.join(DREAM_MODES)}")
        if self.mode != "paste" and not self.model:
            raise DreamshiftError(
                f"mode {self.mode} needs a model: tiny-dream, or a diffusers Stable Diffusion "
                "folder or hub id"
            )
        if self.device not in DEVICES:
            raise DreamshiftError(f"device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise DreamshiftError(f"dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.steps < 1:
            raise DreamshiftError(f"steps = {self.steps} must be >= 1")
        if not 0.0 < self.strength <= 1.0:
            raise DreamshiftError(f"strength = {self.strength} must lie in (0, 1]")
        if self.mode == "img2img" and int(self.steps * self.strength) < 1:
            raise DreamshiftError(
                f"steps x strength = {self.steps} x {self.strength} runs no denoising step "
                "(img2img runs int(steps * strength) of them): raise --steps or --strength"
            )
        if self.guidance_scale < 0:
            raise DreamshiftError(f"guidance_scale = {self.guidance_scale} must be >= 0")
        if self.shard_size < 1:
            raise DreamshiftError(f"shard_size = {self.shard_size} must be >= 1")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and self.mode != "paste" and v % 8:
                raise DreamshiftError(f"{name} = {v}: Stable Diffusion needs a multiple of 8")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as written to JSON

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DreamConfig:
        _reject_unknown_keys(cls, d, "dream")
        if "source" not in d:
            raise DreamshiftError("a dream config needs 'source': a composed dataset directory")
        d = dict(d)
        d["splits"] = tuple(d.get("splits", ()))
        return cls(**d)
