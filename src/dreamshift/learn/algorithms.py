"""Learning algorithms behind one interface, in the style of DomainBed (Gulrajani & Lopez-Paz
2021): ``update(batch) -> dict[str, float]`` takes one optimisation step and reports its losses,
``predict(x)`` gives class logits, ``features(x)`` gives the named feature blocks that linear
probes read.

- ``erm``: empirical risk minimisation;
- ``groupdro``: Group DRO (Sagawa et al. 2020), exponentiated-gradient weights on the groups
  (class x background) of the batch;
- ``irm``: IRMv1 (Arjovsky et al. 2019), the gradient penalty of a dummy scale per environment
  (background), annealed in after ``irm_anneal_steps``;
- ``dann``: domain-adversarial training (Ganin et al. 2016), a background classifier on the
  features behind a gradient-reversal layer;
- ``d3s``: the disentangled model of D3S (Kattakinda et al. 2022, Sec. 4): the feature vector
  is split into a foreground and a background block; one head predicts the class from the
  foreground block, another the background from the background block, and a penalty on the
  mutual information between the foreground block and the background label, and between the
  background block and the class, keeps each block free of the other factor. The estimator is
  MINE, an adversarial critic or a variational classifier (:mod:`dreamshift.learn.mine`); the
  penalty can start after ``mi_anneal_steps`` updates, once the heads have learned something
  (the class is carried by shape, which a small CNN picks up far more slowly than the
  background).

>>> _ = torch.manual_seed(0)
>>> algo = ALGORITHMS.get("d3s")("world-cnn", num_classes=2, num_backgrounds=2)
>>> batch = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
>>> sorted(algo.update(batch))
['bg_loss', 'loss', 'mi_bg_fg', 'mi_fg_bg']
>>> algo.predict(batch.x).shape
torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from dreamshift.learn.hparams import Hparams
from dreamshift.learn.mine import ESTIMATORS
from dreamshift.models.architectures import ARCHITECTURES
from dreamshift.registry import Registry


@dataclass(frozen=True)
class Batch:
    """Images (B, 3, H, W) in [-1, 1], class index (B,), background index (B,)."""

    x: torch.Tensor
    y: torch.Tensor
    bg: torch.Tensor


class Algorithm(nn.Module):
    """A backbone with a ``forward_features`` (B, D) and what the algorithm puts on top."""

    backbone: Any  # an ARCHITECTURES module: forward_features, num_features
    step: torch.Tensor
    base_weights_sha256: str = ""  # a fine-tuned backbone: its base model's weights hash
    # gradient accumulation: whether the loss is a mean over images, so that the gradients of
    # micro-batches sum to the batch's (not for losses over groups or environments of a batch)
    ACCUMULATES: ClassVar[bool] = False
    micro_batches: int = 1  # parts of each batch, backpropagated one at a time

    def __init__(
        self,
        arch: str,
        num_classes: int,
        num_backgrounds: int,
        hp: Hparams | None = None,
        backbone: nn.Module | None = None,
    ):
        super().__init__()
        self.hp = hp or Hparams()
        self.num_classes, self.num_backgrounds = num_classes, num_backgrounds
        self.backbone = backbone if backbone is not None else ARCHITECTURES.get(arch)(num_classes)
        self.num_features = int(self.backbone.num_features)
        self.backbone.head = nn.Identity()
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.register_buffer("step", torch.tensor(0))
        # between backward and step: gradients averaged over the training processes
        # (dreamshift.train.distributed); one process: nothing to do
        self.average_gradients: Callable[[Any], None] = lambda parameters: None

    def _optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.hp.lr, weight_decay=self.hp.weight_decay)

    def finish_init(self) -> None:
        """Called by subclasses once every module exists: builds the main optimiser."""
        self.optimizer = self._optimizer(self.main_parameters())

    def reset_optimizer(self) -> None:
        """A fresh main optimiser at the current learning rate (Adam's moments go stale when a
        penalty weight jumps, as DomainBed's IRM notes)."""
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer = self._optimizer(self.main_parameters())
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def main_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("estimators.")]

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"all": self.backbone.forward_features(x)}

    def class_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the class head reads."""
        return self.backbone.forward_features(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.class_features(x))

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.average_gradients(self.main_parameters())
        self.optimizer.step()
        self.step += 1

    def _accumulated_step(
        self, batch: Batch, losses_of: Callable[[Batch], dict[str, torch.Tensor]]
    ) -> dict[str, float]:
        """One update on ``batch`` in ``micro_batches`` parts: each part's losses (means over
        its images), weighted by its share of the batch, are backpropagated on their own, so
        the gradients add up to the whole batch's while one part's activations are held at a
        time; then one optimiser step. Returns the batch's losses."""
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        tensors = (batch.x, batch.y, batch.bg)
        parts = zip(*(t.tensor_split(self.micro_batches) for t in tensors), strict=True)
        for x, y, bg in parts:
            share = len(y) / len(batch.y)
            losses = losses_of(Batch(x, y, bg))
            (sum(losses.values()) * share).backward()  # type: ignore[union-attr]
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item() * share
        self.average_gradients(self.main_parameters())
        self.optimizer.step()
        self.step += 1
        return totals

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError


class FrozenFeatures(nn.Module):
    """One feature block of a trained algorithm, frozen (no gradients, BatchNorm statistics
    fixed): the backbone of a linear classifier on learned features, e.g. D3S's foreground
    block (Kattakinda et al. 2022, Sec. 5: a classifier on the invariant foreground features)."""

    def __init__(
        self, source: Algorithm, block: str, num_features: int, eraser: nn.Module | None = None
    ):
        super().__init__()
        self.source, self.block, self.num_features = source, block, num_features
        self.eraser = eraser  # e.g. LEACE of the background (dreamshift.learn.erase), or None
        self.source.requires_grad_(False)
        self.source.eval()

    def train(self, mode: bool = True) -> FrozenFeatures:
        return self  # stays in eval mode

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # no graph in training; one to the input where it asks for one (the audit's saliency)
        with torch.set_grad_enabled(x.requires_grad and torch.is_grad_enabled()):
            f = self.source.features(x)[self.block]
            return f if self.eraser is None else self.eraser(f)


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")


@ALGORITHMS.register("erm")
class ERM(Algorithm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.finish_init()

    ACCUMULATES = True

    def update(self, batch: Batch) -> dict[str, float]:
        return self._accumulated_step(
            batch, lambda b: {"loss": F.cross_entropy(self.predict(b.x), b.y)}
        )


@ALGORITHMS.register("groupdro")
class GroupDRO(Algorithm):
    q: torch.Tensor  # (classes x backgrounds,) group weights

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("q", torch.ones(self.num_classes * self.num_backgrounds))
        self.finish_init()

    def update(self, batch: Batch) -> dict[str, float]:
        losses = F.cross_entropy(self.predict(batch.x), batch.y, reduction="none")
        group = batch.y * self.num_backgrounds + batch.bg
        present = torch.unique(group)
        group_loss = torch.stack([losses[group == g].mean() for g in present])
        with torch.no_grad():
            self.q[present] *= torch.exp(self.hp.groupdro_eta * group_loss)
            self.q /= self.q.sum()
        loss = (self.q[present] * group_loss).sum() / self.q[present].sum()
        self._step(loss)
        return {"loss": loss.item(), "worst_group_loss": group_loss.max().item()}


@ALGORITHMS.register("irm")
class IRM(Algorithm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.finish_init()

    def update(self, batch: Batch) -> dict[str, float]:
        logits = self.predict(batch.x)
        scale = logits.new_ones((), requires_grad=True)
        nll, penalty = logits.new_zeros(()), logits.new_zeros(())
        envs = torch.unique(batch.bg)
        for e in envs:  # environments: backgrounds
            m = batch.bg == e
            loss_e = F.cross_entropy(logits[m] * scale, batch.y[m])
            (grad,) = torch.autograd.grad(loss_e, [scale], create_graph=True)
            nll = nll + loss_e
            penalty = penalty + grad.pow(2)
        nll, penalty = nll / len(envs), penalty / len(envs)
        weight = self.hp.irm_lambda if int(self.step) >= self.hp.irm_anneal_steps else 1.0
        loss = nll + weight * penalty
        if weight > 1.0:
            loss = loss / weight  # keep the gradient scale, as DomainBed does
        if int(self.step) == self.hp.irm_anneal_steps:
            self.reset_optimizer()
        self._step(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item()}


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


@ALGORITHMS.register("dann")
class DANN(Algorithm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.domain = nn.Sequential(
            nn.Linear(self.num_features, 128), nn.ReLU(), nn.Linear(128, self.num_backgrounds)
        )
        self.finish_init()

    ACCUMULATES = True

    def update(self, batch: Batch) -> dict[str, float]:
        def losses_of(b: Batch) -> dict[str, torch.Tensor]:
            f = self.backbone.forward_features(b.x)
            cls = F.cross_entropy(self.classifier(f), b.y)
            reversed_f = _ReverseGradient.apply(f, self.hp.dann_lambda)
            return {"loss": cls, "domain_loss": F.cross_entropy(self.domain(reversed_f), b.bg)}

        return self._accumulated_step(batch, losses_of)


@ALGORITHMS.register("d3s")
class D3S(Algorithm):
    """Foreground block ``[:k]`` and background block ``[k:]`` of the backbone's features."""

    estimators: Any  # ModuleDict of the two MI estimators

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = max(1, min(self.num_features - 1, round(self.hp.fg_fraction * self.num_features)))
        self.k = k
        self.classifier = nn.Linear(k, self.num_classes)  # class from the fg block
        self.bg_classifier = nn.Linear(self.num_features - k, self.num_backgrounds)
        if self.hp.mi_estimator not in ESTIMATORS:
            raise ValueError(f"mi_estimator must be one of {sorted(ESTIMATORS)}")
        estimator = ESTIMATORS[self.hp.mi_estimator]
        self.estimators = nn.ModuleDict(
            {
                "fg_bg": estimator(k, self.num_backgrounds),  # I(fg block; background)
                "bg_fg": estimator(self.num_features - k, self.num_classes),  # I(bg block; class)
            }
        )
        self.finish_init()
        self.estimator_optimizer = torch.optim.Adam(self.estimators.parameters(), lr=self.hp.mi_lr)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone.forward_features(x)
        return {"fg": f[:, : self.k], "bg": f[:, self.k :]}

    def class_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["fg"]

    def update(self, batch: Batch) -> dict[str, float]:
        feats = self.features(batch.x)
        fg, bg = feats["fg"], feats["bg"]
        for _ in range(self.hp.mi_steps):  # the estimators ascend their bounds
            est_loss = self.estimators["fg_bg"].critic_loss(fg.detach(), batch.bg)
            est_loss = est_loss + self.estimators["bg_fg"].critic_loss(bg.detach(), batch.y)
            self.estimator_optimizer.zero_grad(set_to_none=True)
            est_loss.backward()
            self.average_gradients(self.estimators.parameters())
            self.estimator_optimizer.step()
        cls = F.cross_entropy(self.classifier(fg), batch.y)
        bg_loss = F.cross_entropy(self.bg_classifier(bg), batch.bg)
        mi_fg = self.estimators["fg_bg"].bound(fg, batch.bg)
        mi_bg = self.estimators["bg_fg"].bound(bg, batch.y)
        # MI is >= 0: a negative estimate says nothing is left to remove, and pushing it lower
        # only makes the features anti-informative to this estimator (still informative)
        penalty = mi_fg.clamp(min=0) + mi_bg.clamp(min=0)
        weight = self.hp.mi_weight if int(self.step) >= self.hp.mi_anneal_steps else 0.0
        if self.hp.mi_anneal_steps and int(self.step) == self.hp.mi_anneal_steps:
            self.reset_optimizer()
        loss = cls + bg_loss + weight * penalty if weight > 0 else cls + bg_loss
        self._step(loss)  # only the main optimiser steps: the estimators are not trained here
        return {
            "loss": cls.item(),
            "bg_loss": bg_loss.item(),
            "mi_fg_bg": mi_fg.item(),
            "mi_bg_fg": mi_bg.item(),
        }
