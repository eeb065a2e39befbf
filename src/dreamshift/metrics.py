"""Robustness metrics on predictions: pure numpy functions, each checked on hand-computed cases.

- top-1 accuracy overall (``acc_avg``), per group and worst group (``acc_wg``), named as in
  WILDS (Koh et al. 2021); groups are any combination of manifest columns;
- BG-gap: accuracy on images showing a class on its usual background minus on another one, the
  Mixed-Same − Mixed-Rand gap of ImageNet-9 (Xiao et al. 2021);
- relative drop against an in-distribution dataset;
- spurious accuracy (images holding only the spurious feature classified as the class it is
  tied to; Maung Maung et al. 2024) and the Spurious ImageNet score (Neuhaus et al. 2023): the
  class-wise AUC of the class logit separating real class images from spurious-only ones;
- effective robustness (Taori et al. 2020; Bansal & Grover 2023): fit shifted vs
  in-distribution accuracy over a family of models, linearly or in logit space, and each
  model's distance from the line;
- percentile bootstrap confidence intervals (Efron & Tibshirani 1993).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CI_LEVEL = 0.95


def accuracy(correct: np.ndarray) -> float | None:
    """Share of true entries; ``None`` for no samples (an empty group has no accuracy).

    >>> accuracy(np.array([True, False, True, True]))
    0.75
    """
    return float(np.mean(correct)) if len(correct) else None


def bootstrap_ci(
    correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the accuracy of ``correct`` (bool, (N,)).

    One sample gives a zero-width interval at its own value; none gives ``None``.
    """
    n = len(correct)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.asarray(correct, np.float64)[rng.integers(0, n, (n_boot, n))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class GroupStat:
    n: int
    acc: float | None
    ci: tuple[float, float] | None


def group_ids(
    keys: Sequence[Hashable], expected: Sequence[Hashable] = ()
) -> tuple[list[Hashable], np.ndarray]:
    """Distinct groups (``expected`` first, in order, then the others sorted) and each sample's
    group index, like WILDS' ``CombinatorialGrouper``."""
    order = list(dict.fromkeys(expected))
    seen = set(order)
    order += sorted({k for k in keys if k not in seen}, key=repr)
    index = {k: i for i, k in enumerate(order)}
    return order, np.array([index[k] for k in keys], np.int64)


def group_stats(
    correct: np.ndarray,
    keys: Sequence[Hashable],
    expected: Sequence[Hashable] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[Hashable, GroupStat]:
    """Accuracy, size and bootstrap interval of every group (``expected`` groups are listed
    even when empty, with accuracy ``None``)."""
    groups, ids = group_ids(keys, expected)
    out = {}
    for g, key in enumerate(groups):
        c = correct[ids == g]
        out[key] = GroupStat(len(c), accuracy(c), bootstrap_ci(c, n_boot, seed + g))
    return out


def worst_group(stats: dict[Hashable, GroupStat]) -> tuple[Hashable, float] | None:
    """(group, accuracy) of the least accurate non-empty group; ties go to the first listed."""
    filled = [(k, s.acc) for k, s in stats.items() if s.acc is not None]
    if not filled:
        return None
    key, acc = min(filled, key=lambda kv: kv[1])
    return key, float(acc)


def worst_group_ci(
    correct: np.ndarray,
    keys: Sequence[Hashable],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> tuple[float, float] | None:
    """Bootstrap interval of the worst-group accuracy, resampling within each group."""
    groups, ids = group_ids(keys)
    if not groups:
        return None
    rng = np.random.default_rng(seed)
    per_group = []
    for g in range(len(groups)):
        c = np.asarray(correct[ids == g], np.float64)
        per_group.append(c[rng.integers(0, len(c), (n_boot, len(c)))].mean(1))
    worst = np.min(np.stack(per_group), axis=0)
    lo, hi = np.quantile(worst, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bg_gap(correct: np.ndarray, usual_background: np.ndarray) -> dict[str, float | None]:
    """Accuracy with each class's usual background, with another one, and their difference
    (ImageNet-9's Mixed-Same − Mixed-Rand). ``None`` where one side has no images.

    >>> bg_gap(np.array([1, 1, 0, 1, 0], bool), np.array([1, 1, 0, 0, 0], bool))
    {'acc_usual_bg': 1.0, 'acc_other_bg': 0.3333333333333333, 'bg_gap': 0.6666666666666667}
    """
    usual, other = accuracy(correct[usual_background]), accuracy(correct[~usual_background])
    gap = usual - other if usual is not None and other is not None else None
    return {"acc_usual_bg": usual, "acc_other_bg": other, "bg_gap": gap}


def relative_drop(acc_id: float, acc_shift: float) -> float:
    """(in-distribution − shifted) / in-distribution accuracy."""
    return (acc_id - acc_shift) / acc_id if acc_id > 0 else float("nan")


def spurious_accuracy(
    predicted: Sequence[str], tied_classes: Sequence[Collection[str]]
) -> float | None:
    """Share of spurious-only images (a background, no animal) classified as a class that
    background is tied to: how often the spurious feature alone decides the prediction. Images
    whose background is tied to no class are left out; ``None`` when none is left.

    >>> spurious_accuracy(["cat", "dog", "cow"], [{"cat"}, {"cat", "dog"}, set()])
    1.0
    """
    hits = [p in t for p, t in zip(predicted, tied_classes, strict=True) if t]
    return float(np.mean(hits)) if hits else None


def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2
    (the Mann-Whitney U statistic over |pos| x |neg|).

    >>> auc(np.array([3.0, 2.0]), np.array([1.0, 2.0]))
    0.875
    """
    if len(positive) == 0 or len(negative) == 0:
        return None
    both = np.concatenate([positive, negative])
    ranks = _average_ranks(both)
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1  # 1-based mean rank of the tie block
        i = j + 1
    return ranks


def spurious_auc(
    scores: np.ndarray,
    classes: Sequence[str],
    true_class: Sequence[str],
    spurious_scores: np.ndarray,
    tied_classes: Sequence[Collection[str]],
) -> tuple[float | None, dict[str, float | None]]:
    """Spurious ImageNet score (Neuhaus et al. 2023): for each class k, the AUC with which the
    class-k score ranks real images of k above the spurious-only images tied to k (a
    background may be tied to several classes); the mean over classes that have both.
    1 = the spurious feature alone never outranks the object."""
    truth = np.asarray(true_class)
    per_class: dict[str, float | None] = {}
    for k, c in enumerate(classes):
        negatives = np.array([c in t for t in tied_classes], bool)
        negative_scores = spurious_scores[negatives, k] if len(negatives) else np.zeros(0)
        per_class[c] = auc(scores[truth == c, k], negative_scores)
    values = [v for v in per_class.values() if v is not None]
    return (float(np.mean(values)) if values else None), per_class


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class RobustnessFit:
    """shifted ≈ f⁻¹(slope · f(id) + intercept), f the identity or the logit; ``residuals``
    are each model's effective robustness, shifted − line, in accuracy units."""

    space: str
    slope: float
    intercept: float
    residuals: tuple[float, ...]

    def predict(self, acc_id: np.ndarray) -> np.ndarray:
        acc_id = np.asarray(acc_id, np.float64)
        if self.space == "linear":
            return self.slope * acc_id + self.intercept
        return 1 / (1 + np.exp(-(self.slope * logit(acc_id) + self.intercept)))


def fit_effective_robustness(
    acc_id: Sequence[float], acc_shift: Sequence[float], space: str = "logit"
) -> RobustnessFit:
    """Least-squares line of shifted vs in-distribution accuracy over a family of models.
    Needs at least two models with different in-distribution accuracies."""
    if space not in ("linear", "logit"):
        raise ValueError(f"space must be linear or logit, not {space!r}")
    x, y = np.asarray(acc_id, np.float64), np.asarray(acc_shift, np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("effective robustness needs >= 2 models with different accuracies")
    fx, fy = (x, y) if space == "linear" else (logit(x), logit(y))
    slope, intercept = np.polyfit(fx, fy, 1)
    fit = RobustnessFit(space, float(slope), float(intercept), ())
    residuals = tuple(float(v) for v in y - fit.predict(x))
    return RobustnessFit(space, float(slope), float(intercept), residuals)


REAL_FAMILY = "real"  # the family of a sweep trained on real data only


def effective_robustness(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Fit shifted vs in-distribution accuracy over the models of ``records`` (those of one
    dataset, split and in-distribution reference; the latest record per model), linear and in
    logit space; each model's effective robustness is its distance from the line (Taori et al.
    2020). Where three or more of the models belong to the ``real`` family of a sweep (trained
    on real data only), the line is fit on them alone and every other model is measured from
    it, as ImageNet-G measures models trained on generated data (Bansal & Grover 2023). Needs
    three models or more: a line through two points leaves nothing to measure."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("acc_id") is not None and r.get("acc_avg") is not None:
            latest[r["model"]] = r
    family = list(latest.values())
    x = [r["acc_id"] for r in family]
    y = [r["acc_avg"] for r in family]
    real = [i for i, r in enumerate(family) if r.get("family") == REAL_FAMILY]
    fit_on = real if len(real) >= 3 and len({x[i] for i in real}) >= 2 else list(range(len(x)))
    if len(fit_on) < 3 or len({x[i] for i in fit_on}) < 2:
        return None
    out: dict[str, Any] = {
        "models": [r["model"] for r in family],
        "families": [r.get("family") for r in family],
        "acc_id": x,
        "acc_shift": y,
        "fit_on": REAL_FAMILY if fit_on == real else "all",
    }
    for space in ("linear", "logit"):
        fit = fit_effective_robustness([x[i] for i in fit_on], [y[i] for i in fit_on], space)
        out[space] = {
            "slope": fit.slope,
            "intercept": fit.intercept,
            "effective_robustness": [yi - float(fit.predict(np.array([xi]))[0])
                                     for xi, yi in zip(x, y, strict=True)],
        }  # fmt: skip
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, the FID of Heusel et al.
    2017 when the features are Inception's. Square roots through symmetric eigendecompositions
    (both covariances are positive semi-definite), so no complex parts arise.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 3))
    >>> round(frechet_distance(x, x), 6)
    0.0
    >>> round(frechet_distance(x, x + [2.0, 0.0, 0.0]), 3)  # a shift of the mean by 2
    4.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N, D) feature sets of N >= 2, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_root = float(np.sqrt(np.clip(cross, 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)
    return max(d, 0.0)
