"""ForAug's bias metrics (Nauen et al. 2025, "ForAug: Recombining Foregrounds and Backgrounds
...", arXiv 2503.09399, Sec. 4): how a classifier's accuracy depends on the object's size, its
place and its background, and how much it looks at the object.

From the test samples composed again at fixed scales (split ``size``) and centred in every cell
of a K x K grid (split ``position``), pure functions of the rows and the predicted classes:

- :func:`size_bias`: accuracy per scale bin, and the accuracy at the largest scale minus at
  the smallest (positive: the model needs the object large);
- :func:`center_bias`: accuracy per grid cell, and the accuracy in the centre cell (for an
  even K the mean of the central 2 x 2 cells) minus the mean accuracy of the other cells
  (positive: the model needs the object in the middle).

From the masks of the audited images, running the model:

- :func:`background_robustness`: accuracy on the same objects over foreign backgrounds,
  divided by their accuracy over backgrounds of their home label: their class's usual one
  where the dataset assigns one (on a balanced test split an image's own background is as
  foreign as any other to a classifier of the shortcut), else their own. Both arms paste the
  object, cut by its mask at its own place and size, on a fresh background of a background
  source (:class:`~dreamshift.data.recombine.Recombination`), so the paste itself cancels out
  and only the background's label differs. 1: the background does not matter; below 1: the
  classifier needs its usual kind of background.
- :func:`foreground_focus`: the share of an input-gradient saliency map (Simonyan et al. 2014:
  the gradient of the true class's score with respect to the model's input, summed over
  channels in absolute value) that falls on the object, divided by the share of the image the
  object covers. 1: no preference; above 1: the classifier looks at the object.

Percentile bootstrap intervals resample the images within each bin or cell
(:mod:`dreamshift.metrics`), and the images in pairs for the robustness ratio.

>>> rows = [{"fg_class": "cat", "scale": s} for s in (0.3, 0.3, 0.6, 0.6)]
>>> size_bias(rows, ["dog", "cat", "cat", "cat"], n_boot=10)["summary"]["size_bias"]
0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamshift import metrics as M
from dreamshift.data import dataset as ds
from dreamshift.data.loading import ImageTable
from dreamshift.data.recombine import BackgroundSource, Recombination
from dreamshift.errors import BadInputError
from dreamshift.models.classifier import Classifier
from dreamshift.models.labels import LabelMap
from dreamshift.seeding import derive_seed


def _correct(rows: Sequence[dict[str, Any]], predicted: Sequence[str]) -> np.ndarray:
    return np.array([p == r["fg_class"] for p, r in zip(predicted, rows, strict=True)], bool)


def _resampled(correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) accuracies of ``correct`` resampled with replacement."""
    c = np.asarray(correct, np.float64)
    return c[rng.integers(0, len(c), (n_boot, len(c)))].mean(1)


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.quantile(values, [(1 - M.CI_LEVEL) / 2, (1 + M.CI_LEVEL) / 2])
    return [float(lo), float(hi)]


def _entry(stat: M.GroupStat) -> dict[str, Any]:
    return {"n": stat.n, "acc": stat.acc, "ci": list(stat.ci) if stat.ci else None}


def size_bias(
    rows: Sequence[dict[str, Any]], predicted: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy per scale (the rows' ``scale``: cut-out side / image side), smallest first,
    and ``size_bias`` = accuracy at the largest scale - at the smallest, with a bootstrap
    interval (``None`` with fewer than two scales).

    >>> rows = [{"fg_class": "cat", "scale": s} for s in (0.6, 0.3, 0.6, 0.3, 0.6)]
    >>> out = size_bias(rows, ["cat", "dog", "cat", "cat", "dog"], n_boot=10)
    >>> [(b["scale"], b["n"], b["acc"]) for b in out["bins"]]
    [(0.3, 2, 0.5), (0.6, 3, 0.6666666666666666)]
    >>> round(out["summary"]["size_bias"], 4)
    0.1667
    """
    correct = _correct(rows, predicted)
    keys = [float(r["scale"]) for r in rows]
    scales = sorted(set(keys))
    stats = M.group_stats(correct, keys, scales, n_boot, seed)
    bins = [{"scale": s, **_entry(stats[s])} for s in scales]
    summary: dict[str, Any] = {"size_bias": None, "ci": None, "smallest": None, "largest": None}
    if len(scales) >= 2:
        small, large = scales[0], scales[-1]
        acc_small, acc_large = stats[small].acc, stats[large].acc
        assert acc_small is not None and acc_large is not None  # bins come from the rows
        keys_array = np.array(keys)
        rng = np.random.default_rng(seed)
        boot_large = _resampled(correct[keys_array == large], n_boot, rng)
        boot_small = _resampled(correct[keys_array == small], n_boot, rng)
        summary = {
            "size_bias": acc_large - acc_small,
            "ci": _interval(boot_large - boot_small),
            "smallest": small,
            "largest": large,
        }
    return {"bins": bins, "summary": summary}


def position_cell(row: dict[str, Any], bins: int, side: int) -> tuple[int, int]:
    """(row, column) of the ``bins`` x ``bins`` grid cell of an image ``side`` pixels wide in
    which the centre of the row's paste box lies.

    >>> position_cell({"box_x": 0, "box_y": 20, "box_w": 8, "box_h": 8}, 3, 30)
    (2, 0)
    """
    col = (2 * int(row["box_x"]) + int(row["box_w"])) * bins // (2 * side)
    line = (2 * int(row["box_y"]) + int(row["box_h"])) * bins // (2 * side)
    return min(max(line, 0), bins - 1), min(max(col, 0), bins - 1)


def center_cells(bins: int) -> list[tuple[int, int]]:
    """The grid's centre: its middle cell, or for an even ``bins`` the central 2 x 2 cells.

    >>> center_cells(3), center_cells(4)
    ([(1, 1)], [(1, 1), (1, 2), (2, 1), (2, 2)])
    """
    mid = bins // 2
    lines = [mid] if bins % 2 else [mid - 1, mid]
    return [(r, c) for r in lines for c in lines]


def center_bias(
    rows: Sequence[dict[str, Any]],
    predicted: Sequence[str],
    bins: int,
    side: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy per cell of the ``bins`` x ``bins`` grid (row by row; a row's cell is where
    its paste box's centre lies in the ``side``-pixel image) and ``center_bias`` = accuracy
    in the centre (:func:`center_cells`; the mean of their accuracies) - the mean accuracy of
    the other cells, with a bootstrap interval that resamples the images within each cell.
    Empty cells count in neither mean; ``None`` where one side has no images.

    >>> box = {"fg_class": "cat", "box_w": 2, "box_h": 2}
    >>> rows = [{**box, "box_x": 3 * c, "box_y": 3 * r} for r in range(3) for c in range(3)]
    >>> predicted = ["cat", "dog", "cat", "dog", "cat", "dog", "cat", "dog", "cat"]
    >>> out = center_bias(rows, predicted, 3, 9, n_boot=10)
    >>> out["summary"]["center_acc"], out["summary"]["other_acc"], out["summary"]["center_bias"]
    (1.0, 0.5, 0.5)
    """
    correct = _correct(rows, predicted)
    keys = [position_cell(r, bins, side) for r in rows]
    grid = [(r, c) for r in range(bins) for c in range(bins)]
    stats = M.group_stats(correct, keys, grid, n_boot, seed)
    cells = [{"row": r, "col": c, **_entry(stats[r, c])} for r, c in grid]
    centre = [g for g in center_cells(bins) if stats[g].n]
    others = [g for g in grid if g not in center_cells(bins) and stats[g].n]
    summary: dict[str, Any] = {
        "center_bias": None,
        "ci": None,
        "center_acc": None,
        "other_acc": None,
        "center_cells": [list(g) for g in center_cells(bins)],
    }
    if centre and others:
        rng = np.random.default_rng(seed)
        ids = np.array([grid.index(k) for k in keys])
        boot = {g: _resampled(correct[ids == grid.index(g)], n_boot, rng) for g in centre + others}
        summary["center_acc"] = float(np.mean([stats[g].acc for g in centre]))
        summary["other_acc"] = float(np.mean([stats[g].acc for g in others]))
        summary["center_bias"] = summary["center_acc"] - summary["other_acc"]
        diff = np.mean([boot[g] for g in centre], 0) - np.mean([boot[g] for g in others], 0)
        summary["ci"] = _interval(diff)
    return {"grid": bins, "side": side, "cells": cells, "summary": summary}


def object_rows(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> list[dict[str, Any]]:
    """The rows that show one of ``classes`` and have the object's mask."""
    return [r for r in rows if r.get("fg_class") in classes and r.get("mask_path")]


def _images_and_masks(
    root: Path, rows: Sequence[dict[str, Any]], classes: Sequence[str], backgrounds: Sequence[str]
) -> tuple[list[dict[str, Any]], list[np.ndarray], list[np.ndarray]]:
    """The readable rows' pixels and masks (an unreadable file is left out, as the audit's
    own accuracy leaves it out and records it; an empty mask too)."""
    table = ImageTable.of_rows(root, rows, list(classes), list(backgrounds))
    kept, images, masks = [], [], []
    for i, row in enumerate(rows):
        try:
            pixels = table.read(i)
            mask = table.read_mask(i, (pixels.shape[1], pixels.shape[0]))
        except BadInputError:
            continue
        if not mask.any():  # an object the paste left no pixel of
            continue
        kept.append(row)
        images.append(pixels)
        masks.append(mask)
    return kept, images, masks


def ratio_ci(
    numerator: np.ndarray, denominator: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of mean(numerator) / mean(denominator), the two paired
    per image (resampled together)."""
    n = len(numerator)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))
    num, den = numerator[idx].mean(1), denominator[idx].mean(1)
    ratios = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return None
    lo, hi = np.quantile(ratios, [(1 - M.CI_LEVEL) / 2, (1 + M.CI_LEVEL) / 2])
    return float(lo), float(hi)


def _predict_arrays(
    clf: Classifier, labels: LabelMap, images: Sequence[np.ndarray], batch_size: int
) -> np.ndarray:
    """The dataset class each image is predicted as, among the dataset's classes (N,)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = _stack(images[start : start + batch_size])
        out.append(labels.scores(clf.logits(batch)).argmax(1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """One array of images of one size (the first's; others resized, as the audit does)."""
    from PIL import Image

    h, w = images[0].shape[:2]
    return np.stack([a if a.shape[:2] == (h, w) else np.asarray(Image.fromarray(a).resize((w, h)))
                     for a in images])  # fmt: skip


def background_robustness(
    clf: Classifier,
    labels: LabelMap,
    root: Path,
    rows: Sequence[dict[str, Any]],
    backgrounds: BackgroundSource,
    background_names: Sequence[str],
    batch_size: int,
    n_boot: int,
    seed: int,
    usual_bg: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """ForAug's background robustness of ``clf`` on the objects of ``rows`` (see the module's
    docstring): each object at its own place, on a background of its home label and on one of
    another label drawn uniformly, both drawn by a generator seeded by (seed, sample id), so
    every model of an audit sees the same images. The home label is the class's usual
    background where ``usual_bg`` names one (the dataset's spurious assignment: what a
    classifier trained on it may lean on), else the image's own, as ForAug takes an ImageNet
    photo's own background. None where no row has a mask."""
    classes = labels.classes
    rows, images, masks = _images_and_masks(root, object_rows(rows, classes), classes,
                                            background_names)  # fmt: skip
    if not rows or len(background_names) < 2:
        return None
    mix = Recombination(backgrounds, tuple(background_names), position="keep")
    own, foreign = [], []
    for row, pixels, mask in zip(rows, images, masks, strict=True):
        rng = np.random.default_rng(derive_seed(seed, "background-robustness", row["sample_id"]))
        home = background_names.index((usual_bg or {}).get(row["fg_class"], row["bg_class"]))
        other = int(rng.integers(len(background_names) - 1))
        other += other >= home  # any label but the home one
        own.append(mix.onto(pixels, mask, home, rng))
        foreign.append(mix.onto(pixels, mask, other, rng))
    truth = np.array([classes.index(r["fg_class"]) for r in rows])
    ok_own = _predict_arrays(clf, labels, own, batch_size) == truth
    ok_foreign = _predict_arrays(clf, labels, foreign, batch_size) == truth
    acc_own, acc_foreign = float(ok_own.mean()), float(ok_foreign.mean())
    return {
        "n": len(rows),
        "acc_own": acc_own,
        "acc_own_ci": M.bootstrap_ci(ok_own, n_boot, seed),
        "acc_foreign": acc_foreign,
        "acc_foreign_ci": M.bootstrap_ci(ok_foreign, n_boot, seed),
        "summary": {
            "background_robustness": acc_foreign / acc_own if acc_own > 0 else None,
            "ci": ratio_ci(ok_foreign.astype(float), ok_own.astype(float), n_boot, seed),
        },
    }


def _input_masks(clf: Classifier, masks: Sequence[np.ndarray]) -> torch.Tensor:
    """The masks as the model sees its inputs: through its own preprocessing (resize, crop),
    (N, S, S) bool."""
    white = _stack([np.repeat(m[..., None].astype(np.uint8) * 255, 3, axis=2) for m in masks])
    x = clf.preprocess(white)[:, 0]
    black, full = (clf.preprocess(np.full((1, 2, 2, 3), v, np.uint8))[0, 0, 0, 0] for v in (0, 255))
    return (x > (black + full) / 2) if full > black else (x < (black + full) / 2)


def saliency(
    clf: Classifier, labels: LabelMap, images: np.ndarray, truth: np.ndarray
) -> torch.Tensor:
    """Input-gradient saliency (Simonyan et al. 2014) of each image's true class: |d score /
    d input| summed over channels, (N, S, S), where a class's score is its best member output
    (as the audit scores classes)."""
    x = clf.preprocess(images).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = clf.forward_head(clf.forward_features(x))
        members = [list(labels.members[int(t)]) for t in truth]
        score = torch.stack([logits[i, m].max() for i, m in enumerate(members)])
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad.abs().sum(1).detach().cpu()


def foreground_focus(
    clf: Classifier,
    labels: LabelMap,
    root: Path,
    rows: Sequence[dict[str, Any]],
    background_names: Sequence[str],
    batch_size: int,
    n_boot: int,
    seed: int,
) -> dict[str, Any] | None:
    """ForAug's foreground focus of ``clf`` on the objects of ``rows`` (see the module's
    docstring); None where no row has a mask."""
    classes = labels.classes
    rows, images, masks = _images_and_masks(root, object_rows(rows, classes), classes,
                                            background_names)  # fmt: skip
    if not rows:
        return None
    shares, areas = [], []
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        truth = np.array([classes.index(r["fg_class"]) for r in rows[part]])
        maps = saliency(clf, labels, _stack(images[part]), truth)
        inside = _input_masks(clf, masks[part]).cpu()
        total = maps.flatten(1).sum(1).clamp_min(1e-30)
        shares.append(((maps * inside).flatten(1).sum(1) / total).numpy())
        areas.append(inside.flatten(1).float().mean(1).numpy())
    share, area = (
        np.concatenate(shares).astype(np.float64),
        np.concatenate(areas).astype(np.float64),
    )
    seen = area > 0  # an object the resize left no pixel of says nothing
    share, area = share[seen], area[seen]
    focus = share / area
    return {
        "n": int(seen.sum()),
        "method": "input gradients of the true class's score",
        "share_on_object": float(share.mean()) if len(share) else None,
        "object_area": float(area.mean()) if len(area) else None,
        "summary": {
            "foreground_focus": float(focus.mean()) if len(focus) else None,
            "ci": M.bootstrap_ci(focus, n_boot, seed),
        },
    }


def mask_metrics(
    clf: Classifier,
    labels: LabelMap,
    root: Path,
    rows: Sequence[dict[str, Any]],
    meta: ds.DatasetMeta,
    backgrounds: BackgroundSource | None,
    batch_size: int,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The record's ``background_robustness`` (with a background source) and
    ``foreground_focus`` entries, where the audited rows have masks."""
    names = list(meta.backgrounds)
    out: dict[str, Any] = {}
    focus = foreground_focus(clf, labels, root, rows, names, batch_size, n_boot, seed)
    if focus is not None:
        out["foreground_focus"] = focus
    if backgrounds is not None:
        robust = background_robustness(clf, labels, root, rows, backgrounds, names, batch_size,
                                       n_boot, seed, dict(meta.assignment))  # fmt: skip
        if robust is not None:
            out["background_robustness"] = robust
    return out
