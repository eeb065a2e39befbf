"""From reviewers' votes to one decision per image, and how much the reviewers agree.

- ``d3s``: D3S's rule (Kattakinda et al. 2022, its quality-control code): K of K reviewers say
  the object is present and none flags the image as unsafe;
- ``majority``: more than half say yes, and fewer than half flag it;
- ``dawid-skene``: the answer Dawid & Skene's (1979) EM model of each reviewer's confusion
  matrix finds most likely (crowd-kit's implementation) is yes, and fewer than half flag it;
- agreement: Krippendorff's α (nominal) over the yes/no/unsure answers.

>>> from dreamshift.verify.store import Vote
>>> v = [Vote("a", r, "yes", False, None) for r in "pqr"] + [Vote("b", "p", "no", False, None)]
>>> decide(v, "d3s", 3)
{'a': True, 'b': False}
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from dreamshift.errors import DreamshiftError, need_extra
from dreamshift.verify.store import ANSWERS, Vote

RULES = ("d3s", "majority", "dawid-skene")


def by_image(votes: Sequence[Vote]) -> dict[str, list[Vote]]:
    out: dict[str, list[Vote]] = defaultdict(list)
    for v in votes:
        out[v.sample_id].append(v)
    return dict(out)


def _flagged_by_half(vs: Sequence[Vote]) -> bool:
    return sum(v.unsafe for v in vs) * 2 >= len(vs)


def dawid_skene(votes: Sequence[Vote], seed: int = 0) -> dict[str, str]:
    """The most likely answer per image under Dawid & Skene's model (crowd-kit)."""
    need_extra("crowdkit", "review", "Dawid-Skene aggregation of review votes")
    import pandas as pd  # crowd-kit's own dependency
    from crowdkit.aggregation import DawidSkene

    if not votes:
        return {}
    frame = pd.DataFrame({"worker": [v.reviewer for v in votes],
                          "task": [v.sample_id for v in votes],
                          "label": [v.present for v in votes]})  # fmt: skip
    np.random.seed(seed)  # crowd-kit breaks ties with numpy's global generator
    with warnings.catch_warnings():  # crowd-kit 1.4 calls pandas APIs that pandas 3 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        labels = DawidSkene(n_iter=100).fit_predict(frame)
    return {str(k): str(v) for k, v in labels.items()}


def decide(votes: Sequence[Vote], rule: str, votes_per_image: int) -> dict[str, bool]:
    """Whether each voted image passes ``rule``. An image with fewer than K votes fails
    ``d3s`` (K of K); the other rules decide on the votes there are."""
    if rule not in RULES:
        raise DreamshiftError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
    images = by_image(votes)
    if rule == "d3s":
        return {s: len(vs) >= votes_per_image and all(v.present == "yes" and not v.unsafe
                for v in vs) for s, vs in images.items()}  # fmt: skip
    if rule == "majority":
        return {s: sum(v.present == "yes" for v in vs) * 2 > len(vs) and not _flagged_by_half(vs)
                for s, vs in images.items()}  # fmt: skip
    answers = dawid_skene(votes)
    return {s: answers.get(s) == "yes" and not _flagged_by_half(vs) for s, vs in images.items()}


def krippendorff_alpha(votes: Sequence[Vote]) -> float | None:
    """Krippendorff's α (nominal) of the yes/no/unsure answers; None when no image has two
    votes (α is undefined)."""
    krippendorff = need_extra("krippendorff", "review", "Krippendorff's alpha of review votes")

    reviewers = sorted({v.reviewer for v in votes})
    images = sorted({v.sample_id for v in votes})
    if len(reviewers) < 2 or not images:
        return None
    data = np.full((len(reviewers), len(images)), np.nan)
    r_index = {r: i for i, r in enumerate(reviewers)}
    s_index = {s: i for i, s in enumerate(images)}
    for v in votes:
        data[r_index[v.reviewer], s_index[v.sample_id]] = ANSWERS.index(v.present)
    if not ((~np.isnan(data)).sum(0) >= 2).any():
        return None
    values = np.unique(data[~np.isnan(data)])
    if len(values) < 2:
        return 1.0  # every answer the same: perfect agreement (the formula is 0/0)
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
