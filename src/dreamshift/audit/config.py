"""What decides an audit: the models, the split and groups, the reference dataset for the drop,
the bootstrap. Light to import (no torch): the command line is generated from it."""

from __future__ import annotations

from dataclasses import dataclass

from dreamshift.config import Config, option
from dreamshift.errors import DreamshiftError


@dataclass(frozen=True)
class AuditConfig(Config):
    """What ``dreamshift audit`` runs: every model of ``models`` (any ``--model`` spec) on a
    dataset's ``split``, grouped by ``group_by``."""

    models: tuple[str, ...]
    split: str = option(
        "", "split to audit",
        shown="test if present, else all but the probes: spurious, conflict, size, "
        "position")  # fmt: skip
    group_by: tuple[str, ...] = option(
        ("fg_class", "bg_class"), "comma-separated manifest columns forming groups",
        metavar="COLUMNS")  # fmt: skip
    in_distribution: str = option(
        "", "reference dataset for the drop and effective robustness",
        metavar="DATASET[:SPLIT]")  # fmt: skip
    spurious: str = option(
        "", "a dataset whose split 'spurious' holds the backgrounds alone for the spurious "
        "accuracy and AUC, e.g. a `dream --mode remove` run of the audited images' guides",
        metavar="DATASET", shown="the audited dataset's, else its source's")  # fmt: skip
    backgrounds: str = option(
        "", "ForAug's background robustness: where the backgrounds the audited objects (by "
        "their masks) are pasted on come from: world, a folder of <background>/ images, a "
        "dataset of backgrounds alone, or none",
        metavar="SOURCE", shown="world for a dataset of the world's backgrounds, else none",
    )  # fmt: skip
    mask_metrics: bool = option(
        True, "ForAug's foreground focus and background robustness on the images with masks "
        "(one backward and two more forward passes per image)")  # fmt: skip
    label_map: str = option(
        "", "YAML {class: [model label names or output indices]}; extends the shipped map"
    )
    batch_size: int = option(128, "images per forward pass")
    bootstrap: int = option(1000, "bootstrap resamples of the intervals")
    seed: int = option(0, "seed of the bootstrap")
    device: str = option("cpu", "where the models run: cpu, cuda, cuda:N, mps")
    allow_empty_groups: bool = option(False, "audit even when a planned group has no usable images")
    restrict_labels: bool = option(
        True,
        "headline accuracy among the dataset's classes only; --no-restrict-labels: the "
        "model's top-1 over its whole label space (records hold both)",
    )
    verified_only: bool = option(
        False, "only the images that passed review (`dreamshift review export DATASET`)"
    )
    allow_random_weights: bool = option(
        False,
        "let open_clip:ARCH without /TAG or @FILE audit a randomly initialised CLIP (a "
        "baseline; seeded, so the same weights every run); refused otherwise",
    )

    def validate(self) -> None:
        if not self.models:
            raise DreamshiftError("give at least one --model")
        if self.bootstrap < 1 or self.batch_size < 1:
            raise DreamshiftError(
                f"bootstrap = {self.bootstrap} and batch_size = {self.batch_size} must be >= 1"
            )
