"""What decides a dream run: which guides, which model and which sampler settings.

>>> cfg = DreamConfig.from_dict({"source": "out/paste", "steps": 20, "splits": ["test"]})
>>> cfg.splits, cfg.strength
(('test',), 0.8)
>>> DreamConfig(source="out/paste", mode="remove").grow_px, DreamConfig(source="p").grow_px
(2, 0)
>>> DreamConfig(source="out/paste", mode="outpaint").check()
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: mode = 'outpaint': choose one of img2img, inpaint, \
harmonize, remove, txt2img, paste
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dreamshift.config import Choices, Config, option
from dreamshift.errors import DreamshiftError

DREAM_MODES = ("img2img", "inpaint", "harmonize", "remove", "txt2img", "paste")
# the modes that keep the guide's pixels exactly in a region given by its object mask
MASKED_MODES = ("inpaint", "harmonize", "remove")
GUIDED_MODES = ("img2img", *MASKED_MODES)  # the modes that start from the guide's pixels
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")


# One word for a published recipe's settings; flags and --config YAML win over them.
PRESETS: dict[str, dict[str, Any]] = {
    # D3S's official code (Kattakinda et al. 2022): Stable Diffusion v1.4, DDIM 50 steps (eta 0,
    # the pipeline's default), guidance 5.0, strength 0.9, 512x512, its prompt template
    "d3s": {
        "model": "CompVis/stable-diffusion-v1-4", "mode": "img2img", "scheduler": "ddim",
        "steps": 50, "guidance_scale": 5.0, "strength": 0.9, "width": 512, "height": 512,
        "prompts": "d3s",
    },
}  # fmt: skip


@dataclass(frozen=True)
class DreamConfig(Config):
    """A dream run: which guides, which model and sampler settings make the images.

    ``source``: a composed dataset directory. ``model``: ``tiny-dream`` (the small model
    trained on the embedded world and shipped in the package), a diffusers folder or a hub
    id. ``mode``: ``img2img`` (D3S: guide + prompt, the object redrawn too),
    ``txt2img`` (ImageNet-G: prompt only; the guide's labels are kept) or ``paste`` (the guide
    copied unchanged, the no-diffusion baseline); and three that keep pixels by the guide's
    object mask (ImageNet-E, Li et al. 2023): ``inpaint`` redraws the background around the
    kept object, ``harmonize`` runs img2img over the whole image (at a low ``strength``) and
    puts the object's interior back, ``remove`` redraws the object's region from the
    background prompt alone (the scene without the object, split ``spurious``). ``feather``:
    the band, in pixels inside the kept region's edge, over which the restore blends; kept
    pixels farther in are the guide's exactly. ``grow``: inpaint and harmonize let the
    generator redraw that many pixels of the object's rim (soft edges, contact), remove
    redraws that many pixels around the object (its fringe and shadow).
    ``class_context``: inpaint's prompt names the class as well as the background.
    ``prompts``: a shipped recipe name (``d3s``, ``imagenet-g``) or a YAML recipe file.
    ``negative_prompt``: None takes the recipe's.
    ``scheduler``: ``model`` (the checkpoint's own) or a name from
    :data:`dreamshift.models.diffusion.SCHEDULERS`. ``threads``: torch threads per worker on the
    CPU (None: cores / workers, for throughput). Pixels are identical for any worker count and
    batch size at a fixed ``threads``; left unset, ``--workers`` alone may move pixels by one
    level, so the count is recorded and a resumed run keeps it. ``batch_invariant``: run the
    networks one sample at a time inside a batch, so that pixels do not depend on batch size
    (the default; see ``dreamshift.models.diffusion``). ``adapters``: LoRA adapters applied
    to the model, each ``PATH[:SCALE]`` (a ``dreamshift tune`` run folder or a diffusers LoRA
    file; a per-class run applies each class's adapter to that class's samples).
    """

    source: str
    mode: str = option(
        "img2img",
        "img2img (D3S: guide + prompt), inpaint (the background redrawn around the kept "
        "object), harmonize (a light img2img, the object's interior kept), remove (the object "
        "redrawn away: backgrounds alone), txt2img (ImageNet-G: prompt only) or paste (the "
        "guides copied, the no-diffusion baseline)",
    )
    model: str = option(
        "tiny-dream",
        "tiny-dream (shipped, trained on the world), a diffusers "
        "Stable Diffusion folder, or a hub id",
    )
    adapters: tuple[str, ...] = option(
        (),
        "a LoRA to apply (repeatable): a `dreamshift tune` run folder or a diffusers LoRA "
        ".safetensors file, at SCALE (1); a per-class run applies each class's adapter to that "
        "class's samples",
        flag="--adapter",
        metavar="RUN[:SCALE]",
        repeat=True,
    )
    prompts: str = option("d3s", "recipe: d3s, imagenet-g, or a YAML file")
    negative_prompt: str | None = option(None, "overrides the recipe's negative prompt")
    scheduler: str = option(
        "model", "model (the checkpoint's own), ddim, euler, euler-a, dpm++ or lcm"
    )
    steps: int = option(30, "denoising steps")
    strength: float = option(
        0.8,
        "noise strength in (0, 1] of img2img, inpaint, harmonize and remove (inpaint and "
        "remove at 1: the region is redrawn from noise)",
    )
    feather: int = option(
        2,
        "inpaint, harmonize, remove: pixels inside the kept region's edge over which the "
        "restored guide blends into the dream; farther in it is the guide's, byte for byte",
    )
    grow: int | None = option(
        None,
        "inpaint, harmonize: pixels of the object's rim the generator may redraw; remove: "
        "pixels around the object it redraws too",
        shown="0; 2 for remove",
    )
    class_context: bool = option(
        True, "inpaint: the prompt names the class as well as the background"
    )
    guidance_scale: float = option(7.5, "classifier-free guidance")
    width: int | None = option(None, "output width", shown="the guides'")
    height: int | None = option(None, "output height", shown="the guides'")
    splits: tuple[str, ...] = option(
        (),
        "comma-separated splits to dream",
        shown="all but 'conflict', whose coats the prompt's class tends to repaint, and the "
        "test copies 'size' and 'position': name them to dream them",
    )
    seed: int = option(0, "run seed")
    device: str = option("auto", "where the model runs")
    dtype: str = option("auto", "the model's dtype", shown="auto: float16 on CUDA, else float32")
    threads: int | None = option(
        None,
        "torch threads per worker on a CPU. Pixels are identical for any --workers and "
        "--batch-size at a fixed --threads; left unset, --workers alone may move pixels by one "
        "level. Recorded; a resumed run keeps it",
        shown="cores / workers",
    )
    batch_invariant: bool = option(
        True,
        "run the networks one sample at a time inside a batch, so that pixels do not "
        "depend on the batch size; --no-batch-invariant: faster on a GPU, pixels then depend "
        "on the batch to within float rounding",
    )
    compile: bool = option(False, "torch.compile the UNet")
    shard_size: int = option(64, "images per shard folder")

    CHOICES: ClassVar[dict[str, Choices]] = {
        "mode": DREAM_MODES,
        "device": DEVICES,
        "dtype": DTYPES,
    }

    @property
    def grow_px(self) -> int:
        """``grow`` with its mode's default filled in."""
        if self.grow is not None:
            return self.grow
        return 2 if self.mode == "remove" else 0

    def validate(self) -> None:
        for name in ("width", "height", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise DreamshiftError(f"{name} = {v!r} must be a whole number >= 1")
        if self.mode != "paste" and not self.model:
            raise DreamshiftError(
                f"mode {self.mode} needs a model: tiny-dream, or a diffusers Stable Diffusion "
                "folder or hub id"
            )
        if self.adapters and self.mode == "paste":
            raise DreamshiftError("--adapter needs a model: mode paste copies the guides")
        if self.steps < 1:
            raise DreamshiftError(f"steps = {self.steps} must be >= 1")
        if not 0.0 < self.strength <= 1.0:
            raise DreamshiftError(f"strength = {self.strength} must lie in (0, 1]")
        if self.mode in GUIDED_MODES and int(self.steps * self.strength) < 1:
            raise DreamshiftError(
                f"steps x strength = {self.steps} x {self.strength} runs no denoising step "
                f"({self.mode} runs int(steps * strength) of them): raise --steps or --strength"
            )
        for name in ("feather", "grow"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 64:
                raise DreamshiftError(f"{name} = {v} must lie in 0..64 (pixels)")
        if self.guidance_scale < 0:
            raise DreamshiftError(f"guidance_scale = {self.guidance_scale} must be >= 0")
        if self.shard_size < 1:
            raise DreamshiftError(f"shard_size = {self.shard_size} must be >= 1")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and self.mode != "paste" and v % 8:
                raise DreamshiftError(f"{name} = {v}: Stable Diffusion needs a multiple of 8")
