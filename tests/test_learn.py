"""Learning algorithms and mutual-information estimators on tiny synthetic cases."""

from __future__ import annotations

import pytest
import torch

from dreamshift.learn.algorithms import ALGORITHMS, Batch, Hparams
from dreamshift.learn.mine import ESTIMATORS, MINE, estimate_mi


def tiny_batch(n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    bg = (torch.arange(n) // 3) % 2
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.2 - 0.1
    x[:, 0] += y.view(n, 1, 1).float() * 0.3  # the class shows in the red channel
    return Batch(x, y, bg)


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_updates_predicts_and_its_loss_goes_down(name):
    torch.manual_seed(0)
    algo = ALGORITHMS.get(name)(
        "world-cnn", num_classes=3, num_backgrounds=2, hp=Hparams(lr=3e-3, irm_anneal_steps=1000)
    )
    batch = tiny_batch()
    first = algo.update(batch)
    for _ in range(25):
        last = algo.update(batch)
    assert set(first) == set(last) and "loss" in last
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    with torch.no_grad():  # batch statistics: 26 steps are too few for BatchNorm's running ones
        logits = algo.predict(batch.x)
        feats = algo.features(batch.x)
    assert (logits.argmax(1) == batch.y).float().mean() > 0.9
    algo.eval()
    with torch.no_grad():
        assert algo.predict(batch.x).shape == (16, 3)
    if name == "d3s":
        assert set(feats) == {"fg", "bg"}
        assert feats["fg"].shape[1] + feats["bg"].shape[1] == algo.num_features


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_estimators_tell_dependent_from_independent_variables(estimator):
    g = torch.Generator().manual_seed(0)
    n, k = 4000, 4
    y = torch.randint(0, k, (n,), generator=g)
    noise = torch.randn(n, 4, generator=g)
    dependent = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.3 * noise
    independent = torch.randn(n, 4, generator=g)
    torch.manual_seed(0)
    dep = estimate_mi(ESTIMATORS[estimator](4, k), dependent, y, steps=400)
    torch.manual_seed(0)
    ind = estimate_mi(ESTIMATORS[estimator](4, k), independent, y, steps=400)
    if estimator == "mine":  # a bound in nats: I = log 4 = 1.386 for the dependent pair
        assert 0.9 < dep <= 1.45 and abs(ind) < 0.1, (dep, ind)
    else:  # a critic's score gap: large for dependent, near 0 for independent
        assert dep > 1.0 and abs(ind) < 0.3 * dep, (dep, ind)


def test_unknown_algorithm_lists_the_choices():
    from dreamshift.errors import DreamshiftError

    with pytest.raises(DreamshiftError, match="d3s, dann, erm, groupdro, irm"):
        ALGORITHMS.get("vrex")
    assert isinstance(MINE(2, 2), torch.nn.Module)
