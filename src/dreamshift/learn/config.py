"""What decides a learn run: the algorithm and its hyper-parameters, the backbone, the data it
draws and the schedule. Light to import (no torch): the command line is generated from it.

>>> cfg = LearnConfig.from_dict({"algorithm": "groupdro", "hparams": {"lr": 1e-3}})
>>> cfg.hparams.lr, cfg.batch_size
(0.001, 128)
>>> LearnConfig(mix="shuffled").check()
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: mix = 'shuffled': choose one of concat, weighted
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dreamshift.config import Choices, Config, option
from dreamshift.data import dataset as ds
from dreamshift.data.recombine import POSITIONS as RECOMBINE_POSITIONS
from dreamshift.errors import DreamshiftError
from dreamshift.learn.hparams import Hparams
from dreamshift.train.run_folder import CONFIG, DONE
from dreamshift.train.schedules import LR_SCHEDULES

PRECISIONS = ("no", "bf16")  # mixed precision of the updates: none or bf16 autocast
ERASABLE = ("background", "class")


def _algorithms() -> tuple[str, ...]:
    from dreamshift.learn.algorithms import ALGORITHMS

    return tuple(ALGORITHMS.names())


def _architectures() -> tuple[str, ...]:
    from dreamshift.models.architectures import ARCHITECTURES

    return tuple(ARCHITECTURES.names())


def _finetune_methods() -> tuple[str, ...]:
    from dreamshift.models.finetune import METHODS

    return ("", *METHODS)


@dataclass(frozen=True)
class LearnConfig(Config):
    """A training run (DomainBed's protocol, Gulrajani & Lopez-Paz 2021): ``algorithm`` on
    ``arch`` (or a pretrained ``model`` tuned by ``finetune``), trained on ``split`` (or the
    ``train`` sources, drawn by ``mix``), scored on ``eval_splits``."""

    algorithm: str = "erm"
    arch: str = option("world-cnn", "world-cnn, world-cnn-gn (GroupNorm) or world-resnet18")
    epochs: int = option(10, "passes over the training data")
    batch_size: int = option(128, "images per update and process")
    seed: int = 0
    split: str = option(ds.TRAIN, "DATASET's training split")
    eval_splits: tuple[str, ...] = (ds.VAL, ds.TEST, ds.ANTI)
    val_split: str = option(
        ds.VAL, "split scored after every epoch (history's val_acc), where DATASET has it "
        "('' for none)")  # fmt: skip
    input_size: int = option(
        64, "side the images are resized to; a head on --features-from must use its source's"
    )
    lr_schedule: str = option(
        "constant",
        "constant (DomainBed's), cosine (5 % warm-up, cosine decay to 0) or "
        "onecycle (torch's OneCycleLR: up to --lr over 30 % of the steps, then down)",
    )
    features_from: str = option(
        "",
        "a finished run folder: train only a head on its frozen features (the fg block of "
        "a d3s run: D3S's classifier on invariant foreground features)",
        metavar="RUN",
    )
    erase: str = option(
        "",
        "with --features-from: background or class, removed from the frozen features by "
        "LEACE (Belrose et al. 2023) fitted on the source run's training split",
    )
    train: tuple[str, ...] = option(
        (), "repeatable: training sources, with the same classes and backgrounds as DATASET, "
        "on which every run is evaluated; WEIGHT: the source's share of the draws (normalised)",
        flag="--train", metavar="DIR[:SPLIT][@WEIGHT]", repeat=True,
        shown="DATASET's --split")  # fmt: skip
    mix: str = option(
        "concat",
        "concat (each image once per epoch, or by @WEIGHT) or weighted: real sources "
        "share --real-weight of the draws, generated ones (made by `dreamshift dream`) the rest",
    )
    real_weight: float = option(0.8, "--mix weighted: the real sources' share, DataDream's lambda")
    verified_only: bool = option(
        False,
        "generated sources: train on the images that passed review only (`dreamshift "
        "review export`)",
    )
    use: str = option("all", "which --train sources: all, real ones or generated ones only")
    train_size: int = option(
        0, "images kept of each source (0: all), class-balanced, nested across sizes"
    )
    recombine: str = option(
        "",
        "ForAug (Nauen et al. 2025): paste each training image's object, cut by its mask, on "
        "a background drawn afresh at every step from SOURCE: world (the world's scenes), a "
        "folder of SOURCE/<background>/ images, or a dataset of backgrounds alone (`dreamshift "
        "backgrounds`, `dream --mode remove`)",
        metavar="SOURCE", shown="no recombination",
    )  # fmt: skip
    recombine_p: float = option(1.0, "--recombine: the share of draws recombined")
    recombine_rho: float = option(
        0.0,
        "--recombine: how often the new background keeps the image's own background label; "
        "else any label, uniformly (0: uniform)",
    )
    recombine_scale: tuple[float, float] | None = option(
        None, "--recombine: the object's longer side / the image's shorter side, S or MIN,MAX",
        shown="the object's own size", metavar="SCALE")  # fmt: skip
    recombine_position: str = option(
        "uniform", "--recombine: where the object goes: uniform (anywhere it fits), center, or "
        "keep (its own place and size)")  # fmt: skip
    recombine_feather: float = option(
        1.0, "--recombine: radius in px of the smoothing of the object's edge"
    )
    mixed_precision: str = option("no", "bf16 autocast (on GPUs; 10-30x slower on most CPUs)")
    grad_accumulation: int = option(
        1,
        "split each batch into K micro-batches, backpropagated one at a time: the same "
        "update with the activation memory of batch/K (erm and dann; batch norm then sees "
        "batch/K images)",
        metavar="K",
    )
    finetune: str = option(
        "",
        "tune a pretrained --model instead of training --arch from scratch: linear (the "
        "head only), lora (low-rank adapters, peft, and the head) or full (all)",
        shown="no fine-tuning",
    )
    model: str = option(
        "",
        "the model whose features every algorithm then trains on: any --model of "
        "`dreamshift audit` (world-resnet18, a classifier folder, timm:NAME, torchvision:NAME, "
        "efficientnet_lite:NAME, open_clip:ARCH/PRETRAINED); inputs are fed as it was trained",
    )
    rank: int = option(16, "LoRA rank")
    alpha: int = option(32, "LoRA alpha")
    targets: tuple[str, ...] = option(
        (),
        "comma-separated modules for LoRA, matched by name suffix",
        shown="every Linear and ungrouped Conv2d the features pass through",
    )
    label_map: str = option(
        "",
        "YAML {class: [model label names or indices]}: which rows of an ImageNet model's "
        "head start each class's row",
    )
    hparams: Hparams = field(default_factory=Hparams)

    CHOICES: ClassVar[dict[str, Choices]] = {
        "algorithm": _algorithms,
        "arch": _architectures,
        "lr_schedule": LR_SCHEDULES,
        "mix": ("concat", "weighted"),
        "use": ("all", "real", "generated"),
        "mixed_precision": PRECISIONS,
        "finetune": _finetune_methods,
        "recombine_position": RECOMBINE_POSITIONS,
    }

    def validate(self) -> None:
        from dreamshift.data.loading import parse_source
        from dreamshift.learn.algorithms import ALGORITHMS

        if self.epochs < 1 or self.batch_size < 2:
            raise DreamshiftError(f"epochs {self.epochs} must be >= 1, batch size >= 2")
        if not 1 <= self.grad_accumulation <= self.batch_size:
            raise DreamshiftError(
                f"--grad-accumulation {self.grad_accumulation} must lie in [1, --batch-size "
                f"{self.batch_size}]: the micro-batches each batch is split into"
            )
        if self.grad_accumulation > 1 and not ALGORITHMS.get(self.algorithm).ACCUMULATES:
            takes = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).ACCUMULATES]
            raise DreamshiftError(
                f"--grad-accumulation splits a batch into micro-batches whose gradients add up "
                f"to the batch's; {self.algorithm}'s loss is computed over the whole batch (its "
                f"groups or environments), so it cannot: use it with {', '.join(takes)}, or "
                "grow the batch with more processes"
            )
        if self.input_size < 8 or self.hparams.mi_anneal_steps < 0:
            raise DreamshiftError(
                f"--input-size {self.input_size} must be >= 8 and --mi-anneal-steps "
                f"{self.hparams.mi_anneal_steps} >= 0"
            )
        if self.features_from and not (Path(self.features_from) / DONE).exists():
            raise DreamshiftError(
                f"--features-from {self.features_from} is not a finished learn run (no {DONE} "
                "marker): train it first with `dreamshift learn`"
            )
        if not 0.0 < self.real_weight < 1.0:
            raise DreamshiftError(f"--real-weight {self.real_weight} must lie in (0, 1)")
        if self.recombine:
            self._check_recombine()
        if self.train_size < 0:
            raise DreamshiftError(f"--train-size {self.train_size} must be >= 0 (0: all)")
        sources = [parse_source(t) for t in self.train]
        if self.mix == "weighted" and any(w is not None for _, _, w in sources):
            raise DreamshiftError(
                "--mix weighted sets each source's weight from --real-weight: drop the @WEIGHT "
                "of --train, or use --mix concat"
            )
        if self.erase and (self.erase not in ERASABLE or not self.features_from):
            raise DreamshiftError(
                f"--erase {self.erase!r}: choose {' or '.join(ERASABLE)}, with --features-from"
            )
        if self.finetune:
            self.tuning().check()
            if self.features_from:
                raise DreamshiftError(
                    "--finetune tunes a pretrained model's features, --features-from trains a "
                    "head on a learn run's: choose one"
                )
        elif self.model:
            raise DreamshiftError(
                f"--model {self.model}: say how to tune it with --finetune "
                + "|".join(_finetune_methods()[1:])
            )
        if self.features_from:
            source = json.loads((Path(self.features_from) / CONFIG).read_text())
            if source["config"].get("finetune"):
                raise DreamshiftError(
                    f"--features-from {self.features_from}: a fine-tuned run; heads on the "
                    "features of world-architecture runs only"
                )
            size = source["config"]["input_size"]
            if size != self.input_size:
                raise DreamshiftError(
                    f"--features-from {self.features_from} was trained at input size {size}, "
                    f"this run at {self.input_size}: pass --input-size {size}"
                )

    def _check_recombine(self) -> None:
        if not (0.0 <= self.recombine_p <= 1.0 and 0.0 <= self.recombine_rho <= 1.0):
            raise DreamshiftError(
                f"--recombine-p {self.recombine_p} and --recombine-rho {self.recombine_rho} "
                "must lie in [0, 1]"
            )
        scale = self.recombine_scale
        if scale is not None and not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise DreamshiftError(
                f"--recombine-scale {scale[0]},{scale[1]}: give MIN,MAX with 0 < MIN <= MAX <= 1"
            )
        if self.recombine_feather < 0:
            raise DreamshiftError(f"--recombine-feather {self.recombine_feather} must be >= 0")
        if self.recombine != "world" and not Path(self.recombine).is_dir():
            raise DreamshiftError(
                f"--recombine {self.recombine}: no such folder; give world, a folder of "
                "<background>/ images or a dataset of backgrounds alone"
            )

    def tuning(self) -> Any:
        """The fine-tuning this run asks for (a ``dreamshift.models.finetune.Finetune``)."""
        from dreamshift.models.finetune import Finetune

        return Finetune(self.finetune, self.model, self.rank, self.alpha, self.targets,
                        self.label_map)  # fmt: skip
