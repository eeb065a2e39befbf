"""Audit metrics against hand-computed values, including empty and single-sample groups."""

from __future__ import annotations

import numpy as np
import pytest

from dreamshift import metrics as M


def test_accuracy_and_bootstrap_on_edge_cases():
    assert M.accuracy(np.array([True, False, False, True])) == 0.5
    assert M.accuracy(np.array([], bool)) is None
    assert M.bootstrap_ci(np.array([], bool)) is None
    assert M.bootstrap_ci(np.array([True])) == (1.0, 1.0)  # one sample: zero width
    lo, hi = M.bootstrap_ci(np.array([True] * 50 + [False] * 50), n_boot=2000)
    assert 0.35 < lo < 0.5 < hi < 0.65  # about 0.5 +- 1.96 * 0.05


def test_group_stats_list_expected_empty_groups_and_worst_group_skips_them():
    correct = np.array([True, False, True, True, False])
    keys = [("a", "x"), ("a", "x"), ("b", "x"), ("b", "y"), ("c", "y")]
    stats = M.group_stats(correct, keys, expected=[("a", "x"), ("a", "y")])
    assert list(stats)[:2] == [("a", "x"), ("a", "y")]  # expected groups first, in order
    assert stats["a", "y"].n == 0 and stats["a", "y"].acc is None and stats["a", "y"].ci is None
    assert stats["a", "x"].acc == 0.5 and stats["a", "x"].n == 2
    assert stats["b", "y"].acc == 1.0 and stats["b", "y"].ci == (1.0, 1.0)
    assert M.worst_group(stats) == (("c", "y"), 0.0)
    assert M.worst_group({}) is None
    lo, hi = M.worst_group_ci(correct, keys)
    assert lo == 0.0 and hi == 0.0  # the single-sample group ("c", "y") is always wrong


def test_bg_gap_relative_drop_and_spurious_accuracy():
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    usual = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    gap = M.bg_gap(correct, usual)
    assert gap == {"acc_usual_bg": 0.75, "acc_other_bg": 0.25, "bg_gap": 0.5}
    assert M.bg_gap(correct, np.ones(8, bool))["bg_gap"] is None
    assert M.relative_drop(0.8, 0.6) == pytest.approx(0.25)
    tied = [{"cat"}, {"cat"}, {"cat"}]
    assert M.spurious_accuracy(["cat", "dog", "cat"], tied) == pytest.approx(2 / 3)
    # a background tied to two classes: either counts; one tied to none is left out
    assert M.spurious_accuracy(["dog", "cow", "cat"], [{"cat", "dog"}, {"cat"}, set()]) == 0.5
    assert M.spurious_accuracy(["cat"], [set()]) is None
    assert M.spurious_accuracy([], []) is None


def test_auc_counts_pairs_and_ties():
    # pairs: (3>1), (3>2), (2>1), (2=2 -> 1/2) -> 3.5 / 4
    assert M.auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == 0.875
    assert M.auc(np.array([1.0]), np.array([2.0])) == 0.0
    assert M.auc(np.array([1.0]), np.array([])) is None
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 30)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert M.auc(pos, neg) == pytest.approx(brute)


def test_spurious_auc_is_the_class_mean_of_per_class_aucs():
    classes = ["cat", "dog"]
    scores = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # real images: cat, cat, dog
    spurious = np.array([[1.5, 0.0], [0.0, 4.0]])  # a cat's background, a dog's background
    mean, per_class = M.spurious_auc(
        scores, classes, ["cat", "cat", "dog"], spurious, ["cat", "dog"]
    )
    assert per_class == {"cat": 0.5, "dog": 0.0}  # cat: 2 > 1.5, 1 < 1.5; dog: 3 < 4
    assert mean == 0.25


@pytest.mark.parametrize("space", ["linear", "logit"])
def test_effective_robustness_fit_recovers_a_known_line(space):
    acc_id = np.array([0.55, 0.65, 0.75, 0.85, 0.92])
    slope, intercept = 1.3, -0.6
    if space == "linear":
        shifted = slope * acc_id + intercept
    else:
        shifted = 1 / (1 + np.exp(-(slope * M.logit(acc_id) + intercept)))
    robust = shifted.copy()
    robust[2] += 0.05  # one model 5 points above the line
    fit = M.fit_effective_robustness(acc_id, shifted, space)
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert np.allclose(fit.residuals, 0, atol=1e-9)
    fit = M.fit_effective_robustness(acc_id, robust, space)
    assert np.argmax(fit.residuals) == 2 and fit.residuals[2] > 0.03
    with pytest.raises(ValueError, match="2 models"):
        M.fit_effective_robustness([0.5, 0.5], [0.4, 0.3], space)
