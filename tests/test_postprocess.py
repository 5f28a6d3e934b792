"""Fold reduction and temporal smoothing against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logit

from birdclef.config import PostprocessConfig
from birdclef.postprocess import postprocess, reduce_folds, smooth


def test_reductions() -> None:
    probs = np.array([[[0.2, 0.9]], [[0.6, 0.5]]])  # 2 folds, 1 window, 2 classes
    logits = logit(probs)
    assert reduce_folds(logits, "mean_prob")[0].tolist() == pytest.approx([0.4, 0.7])
    assert reduce_folds(logits, "min")[0].tolist() == pytest.approx([0.2, 0.5])
    # mean logit = log of the geometric mean of the odds: sqrt(0.25 * 1.5) and sqrt(9 * 1)
    odds = np.sqrt(0.375)
    expected = [odds / (1 + odds), 0.75]
    assert reduce_folds(logits, "mean_logit")[0].tolist() == pytest.approx(expected)
    with pytest.raises(ValueError):
        reduce_folds(logits, "median")


def test_smoothing_by_hand_with_edge_renormalisation() -> None:
    probs = np.array([[1.0], [0.0], [0.0], [0.0], [0.0], [0.0]])
    out = smooth(probs, [0.1, 0.2, 0.4, 0.2, 0.1])[:, 0]
    assert out[0] == pytest.approx(0.4 / 0.7)  # window 0 sees weights 0.4, 0.2, 0.1
    assert out[1] == pytest.approx(0.2 / 0.9)
    assert out[2] == pytest.approx(0.1 / 1.0)
    assert out[3] == 0.0
    constant = np.full((7, 3), 0.3)
    np.testing.assert_allclose(smooth(constant, [0.1, 0.2, 0.4, 0.2, 0.1]), constant, rtol=1e-6)
    two = smooth(np.array([[1.0], [0.0]]), [0.1, 0.2, 0.4, 0.2, 0.1])[:, 0]
    assert two.tolist() == pytest.approx([0.4 / 0.6, 0.2 / 0.6])
    three_tap = smooth(np.array([[0.0], [1.0], [0.0]]), [0.25, 0.5, 0.25])[:, 0]
    assert three_tap.tolist() == pytest.approx([0.25 / 0.75, 0.5, 0.25 / 0.75])
    single = np.array([[0.8, 0.1]])
    np.testing.assert_allclose(smooth(single, [0.1, 0.2, 0.4, 0.2, 0.1]), single, rtol=1e-6)


def test_postprocess_switch() -> None:
    logits = logit(np.array([[[0.9], [0.1], [0.1]]]))
    cfg = PostprocessConfig()
    assert postprocess(logits, cfg, smoothing=False)[:, 0].tolist() == pytest.approx([0.9, 0.1, 0.1])
    assert postprocess(logits, cfg)[0, 0] < 0.9
