"""Learning-rate schedules as multipliers of the peak rate.

>>> lr_factor("constant", 5, 100), lr_factor("cosine", 0, 100), lr_factor("cosine", 5, 100)
(1.0, 0.2, 1.0)
>>> round(lr_factor("onecycle", 0, 100), 6), lr_factor("onecycle", 29, 100)
(0.04, 1.0)
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine", "onecycle")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``: ``constant`` (DomainBed's),
    ``cosine`` (5 % linear warm-up, then cosine decay to 0; Loshchilov & Hutter 2017) or
    ``onecycle`` (Smith & Topin 2019, as torch's ``OneCycleLR`` with its defaults: cosine from
    1/25 of the peak up to it over 30 % of the steps, then down to 1/25e4 of it; the momentum
    is not cycled)."""
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle":
        return _one_cycle(step, total)
    warmup = max(1, total // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def warmup_cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """The learning rate itself (not a factor) at ``step``: linear warm-up over ``warmup``
    steps, then cosine decay to 10 % of ``peak`` (tiny-dream's stages)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _one_cycle(step: int, total: int, pct_start: float = 0.3) -> float:
    """torch's ``OneCycleLR`` learning rate (two phases, cosine annealing) over its peak."""
    start, low = 1 / 25, 1 / 25 / 1e4
    rise_end = pct_start * total - 1
    if step <= rise_end:
        a, b, pct = start, 1.0, step / rise_end
    else:
        a, b, pct = 1.0, low, (step - rise_end) / (total - 1 - rise_end)
    return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)
