"""Learning-rate schedules as multipliers of the peak rate.

>>> lr_factor("constant", 5, 100), lr_factor("cosine", 0, 100), lr_factor("cosine", 5, 100)
(1.0, 0.2, 1.0)
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``: ``constant`` (DomainBed's)
    or ``cosine`` (5 % linear warm-up, then cosine decay to 0; Loshchilov & Hutter 2017)."""
    if schedule == "constant":
        return 1.0
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
