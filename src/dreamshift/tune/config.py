"""What decides a tune run: the method, the instance images, the prompts and the optimisation.

>>> cfg = TuneConfig(method="dreambooth", classes=("zebra",), shots=4)
>>> cfg.prompts()
('a photo of ${identifier} ${class_name}', 'a photo of a ${class_name}')
>>> TuneConfig(method="textual").check()
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: method = 'textual': choose one of lora, dreambooth
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import ClassVar

from dreamshift.config import Choices, Config, option
from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError
from dreamshift.train.schedules import LR_SCHEDULES

METHODS = ("lora", "dreambooth")
PRECISIONS = ("auto", "no", "bf16")
# attention projections of the UNet and of the CLIP text encoder (diffusers'
# train_dreambooth_lora.py; DataDream adapts the same layers)
UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PLACEHOLDERS = ("identifier", "class_name", "background")


@dataclass(frozen=True)
class TuneConfig(Config):
    """A fine-tuning run of a Stable Diffusion model on a few instance images.

    ``method``: ``lora`` (low-rank adapters on the attention projections, Hu et al. 2022; the
    DataDream recipe, Kim et al. 2024) or ``dreambooth`` (every UNet weight, Ruiz et al. 2023).
    Instances: the ``split`` rows of a dataset directory, restricted to ``classes`` and
    ``backgrounds`` (empty: all), kept only where every classifier of ``called_by`` (any
    audit ``--model`` with an output for each class; a zero-shot one gets the source's
    classes) predicts the row's class (the *spurious images* of Maung Maung et al.
    2024 when the split shows backgrounds alone), then ``shots`` per class (0: all) or
    ``sample_ids``.
    Prompts are templates over ``${identifier}``, ``${class_name}`` and ``${background}``;
    empty ones take the method's default (:meth:`prompts`). ``prior``: a dataset directory of
    class images made by the base model (``dreamshift dream ... --mode txt2img``), used for the
    prior-preservation loss with weight ``prior_weight`` (``prior_images`` per class, 0: all).
    ``snr_gamma``: Min-SNR loss weighting (Hang et al. 2023; 0: off). ``per_class``: one
    adapter per class instead of one for all. ``sfsl`` and ``kappa``: the spurious feature
    similarity loss of that classifier, weighted by κ (Maung Maung et al. 2024;
    :mod:`dreamshift.tune.sfsl`). ``precision``: ``auto`` is bf16 autocast on CUDA
    and float32 elsewhere; ``bf16`` asks for it on any device (many CPUs run it far slower
    than float32); ``no`` is float32.
    """

    method: str = option("lora", "lora (DataDream) or dreambooth (the whole UNet)")
    model: str = option("tiny-dream", "base model: tiny-dream, a diffusers folder or hub id")
    split: str = option(ds.TRAIN, "split of a dataset directory to take instances from")
    classes: tuple[str, ...] = option((), "comma-separated classes", shown="all")
    backgrounds: tuple[str, ...] = option((), "comma-separated backgrounds", shown="all")
    shots: int = option(0, "instances per class, drawn with --seed (0: all)")
    sample_ids: tuple[str, ...] = option((), "comma-separated sample ids instead")
    called_by: tuple[str, ...] = option(
        (),
        "comma-separated classifiers (any `audit --model`): keep the images all of them "
        "call their class (spurious images, with --split spurious)",
        metavar="MODELS",
    )
    identifier: str = option("sks", "DreamBooth's rare token ('q' for tiny-dream)")
    instance_prompt: str = option(
        "",
        "template over ${identifier}, ${class_name}, ${background}",
        shown="lora: 'a photo of a ${class_name}'; dreambooth: 'a photo of ${identifier} "
        "${class_name}'",
    )
    class_prompt: str = option("a photo of a ${class_name}", "prior images' template")
    prior: str = option(
        "",
        "dataset directory of class images made by the base model "
        "(`dreamshift dream GUIDES --mode txt2img`): prior preservation",
    )
    prior_images: int = option(0, "prior images per class (0: all)")
    prior_weight: float = option(1.0, "weight of the prior loss")
    train_text_encoder: bool = option(
        False, "also train the text encoder (LoRA on its attention, or all of it)"
    )
    rank: int = option(16, "LoRA rank (DataDream's)")
    alpha: int = option(0, "LoRA alpha (0: the rank, scale 1, as diffusers' example)")
    targets: tuple[str, ...] = option(UNET_TARGETS, "UNet modules to adapt")
    text_targets: tuple[str, ...] = option(
        TEXT_TARGETS, "text encoder modules to adapt (with --train-text-encoder)"
    )
    per_class: bool = option(False, "one LoRA per class (DataDream) instead of one for all")
    sfsl: str = option(
        "",
        "spurious feature similarity loss of this classifier (any `audit --model`): pull "
        "the UNet's one-step image toward the instance's class-k spurious feature",
        metavar="MODEL",
    )
    kappa: float = option(0.0, "weight of the SFSL (needs --sfsl)")
    steps: int = option(400, "optimizer steps")
    batch_size: int = option(
        4,
        "instances per step and process (as many prior images); under `accelerate launch` "
        "the global batch is N x processes",
    )
    lr: float = option(1e-4, "learning rate")
    lr_schedule: str = option("constant", "constant or cosine (5 % warm-up)")
    max_grad_norm: float = option(1.0, "gradients are clipped to this norm")
    snr_gamma: float = option(0.0, "Min-SNR weighting gamma (0: off; 5 usual)")
    resolution: int = option(0, "training side (0: the images')")
    seed: int = option(0, "seed of the instance draw, the noise and the adapters' init")
    checkpoint_every: int = option(100, "steps between checkpoints")
    device: str = option("auto", "where the model trains")
    precision: str = option("auto", "auto: bf16 autocast on CUDA, float32 elsewhere")
    gradient_checkpointing: bool = option(
        False, "recompute the UNet's activations in the backward pass: less memory, slower"
    )

    CHOICES: ClassVar[dict[str, Choices]] = {
        "method": METHODS,
        "lr_schedule": LR_SCHEDULES,
        "device": ("auto", "cpu", "cuda", "mps"),
        "precision": PRECISIONS,
    }

    def prompts(self) -> tuple[str, str]:
        """(instance template, class template): DataDream's ``a photo of a ${class_name}``
        for LoRA, DreamBooth's identifier prompt for dreambooth, unless given."""
        default = (
            "a photo of a ${class_name}"
            if self.method == "lora"
            else "a photo of ${identifier} ${class_name}"
        )
        return self.instance_prompt or default, self.class_prompt

    def validate(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "rank"):
            if getattr(self, name) < 1:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 1")
        for name in ("shots", "prior_images", "resolution"):
            if getattr(self, name) < 0:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 0")
        if self.resolution % 8:
            raise DreamshiftError(
                f"resolution = {self.resolution}: Stable Diffusion needs a multiple of 8"
            )
        if self.lr <= 0 or self.prior_weight < 0 or self.snr_gamma < 0 or self.alpha < 0:
            raise DreamshiftError(
                f"lr {self.lr} must be > 0; prior_weight {self.prior_weight}, snr_gamma "
                f"{self.snr_gamma} and alpha {self.alpha} >= 0"
            )
        if bool(self.sfsl) != (self.kappa > 0):
            raise DreamshiftError(
                f"--sfsl {self.sfsl!r} and --kappa {self.kappa}: give both (a classifier and a "
                "weight > 0) or neither"
            )
        if self.method == "dreambooth" and self.per_class:
            raise DreamshiftError(
                "--per-class makes one LoRA adapter per class: use it with --method lora"
            )
        for which, template in zip(
            ("instance_prompt", "class_prompt"), self.prompts(), strict=True
        ):
            names = {
                m.group("named") or m.group("braced") for m in Template.pattern.finditer(template)
            }
            unknown = sorted(n for n in names if n and n not in PLACEHOLDERS)
            if unknown:
                raise DreamshiftError(
                    f"{which} {template!r} uses {unknown}: the placeholders are "
                    + ", ".join(f"${{{p}}}" for p in PLACEHOLDERS)
                )
