"""What decides a tune run: the method, the instance images, the prompts and the optimisation.

>>> cfg = TuneConfig(method="dreambooth", classes=("zebra",), shots=4)
>>> cfg.prompts()
('a photo of ${identifier} ${class_name}', 'a photo of a ${class_name}')
>>> TuneConfig(method="textual").check()
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: method = 'textual': choose one of lora, dreambooth
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from string import Template
from typing import ClassVar

from dreamshift.config import Config
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

    method: str = "lora"
    model: str = "tiny-dream"
    split: str = ds.TRAIN
    classes: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    shots: int = 0
    sample_ids: tuple[str, ...] = ()
    called_by: tuple[str, ...] = ()  # classifiers that must all call an instance its class
    identifier: str = "sks"
    instance_prompt: str = ""
    class_prompt: str = "a photo of a ${class_name}"
    prior: str = ""
    prior_images: int = 0
    prior_weight: float = 1.0
    train_text_encoder: bool = False
    rank: int = 16
    alpha: int = 0  # 0: equal to the rank (scale 1), as diffusers' example
    targets: tuple[str, ...] = UNET_TARGETS
    text_targets: tuple[str, ...] = TEXT_TARGETS
    per_class: bool = False
    sfsl: str = ""  # a classifier (any audit --model): the spurious feature similarity loss
    kappa: float = 0.0  # its weight
    steps: int = 400
    batch_size: int = 4
    lr: float = 1e-4
    lr_schedule: str = "constant"
    max_grad_norm: float = 1.0
    snr_gamma: float = 0.0
    resolution: int = 0  # 0: the images' own size
    seed: int = 0
    checkpoint_every: int = 100
    device: str = "auto"
    precision: str = "auto"
    gradient_checkpointing: bool = False

    CHOICES: ClassVar[dict[str, Callable[[], Sequence[str]]]] = {
        "method": lambda: METHODS,
        "lr_schedule": lambda: LR_SCHEDULES,
        "device": lambda: ("auto", "cpu", "cuda", "mps"),
        "precision": lambda: PRECISIONS,
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
