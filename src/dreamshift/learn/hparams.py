"""The hyper-parameters of every learning algorithm, one typed config (light to import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dreamshift.config import Choices, Config, option
from dreamshift.errors import DreamshiftError


def _estimators() -> tuple[str, ...]:
    from dreamshift.learn.mine import ESTIMATORS

    return tuple(ESTIMATORS)


@dataclass(frozen=True)
class Hparams(Config):
    """Hyper-parameters of every algorithm (typed fields, not a string-keyed dict)."""

    lr: float = option(2e-3, "peak learning rate")
    weight_decay: float = option(5e-4, "AdamW weight decay")
    groupdro_eta: float = option(0.01, "groupdro: step size of the group weights")
    irm_lambda: float = option(100.0, "irm: weight of the invariance penalty")
    irm_anneal_steps: int = option(200, "irm: updates before the penalty takes its full weight")
    dann_lambda: float = option(1.0, "dann: weight of the domain adversary")
    fg_fraction: float = option(0.5, "d3s: share of the feature vector that is the foreground "
                                "block")  # fmt: skip
    mi_weight: float = option(1.0, "d3s: weight of the MI penalty")
    mi_estimator: str = option("mine", "d3s: mine, critic or classifier")
    mi_lr: float = option(1e-3, "d3s: estimator learning rate")
    mi_steps: int = option(1, "d3s: estimator steps per update")
    mi_anneal_steps: int = option(0, "d3s: updates before the MI penalty starts (IRM's anneal)")

    CHOICES: ClassVar[dict[str, Choices]] = {"mi_estimator": _estimators}

    def validate(self) -> None:
        for name in ("lr", "mi_lr"):
            if getattr(self, name) <= 0:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be > 0")
        for name in ("mi_steps", "irm_anneal_steps", "mi_anneal_steps"):
            if getattr(self, name) < 0:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 0")
        if not 0 < self.fg_fraction < 1:
            raise DreamshiftError(f"fg_fraction = {self.fg_fraction} must lie in (0, 1)")
