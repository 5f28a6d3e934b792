"""Competition metric (SPEC 12) against AUCs counted by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from birdclef.metrics import competition_score, per_class_auc, scorable_classes

# 4 rows x 6 classes. Hand counts over positive-negative pairs (correct = 1, tie = 1/2):
#   c0: pos {.9, .4} vs neg {.1, .6}: .9>.1 .9>.6 .4>.1, .4<.6          -> 3/4   = 0.75
#   c1: no positive                                                     -> skipped
#   c2: pos {.9} vs neg {.1, .2, .3}: all correct                       -> 1.0
#   c3: pos {.1, .2} vs neg {.8, .9}: all wrong (inverted)              -> 0.0
#   c4: pos {.5, .7} vs neg {.5, .2}: tie .5=.5, then 3 correct         -> 3.5/4 = 0.875
#   c5: every row positive, no negative                                 -> skipped
SOLUTION = np.array(
    [
        [1, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 1],
        [0, 0, 1, 0, 1, 1],
    ]
)
SUBMISSION = np.array(
    [
        [0.9, 0.3, 0.1, 0.1, 0.5, 0.2],
        [0.1, 0.3, 0.2, 0.2, 0.5, 0.4],
        [0.4, 0.3, 0.3, 0.8, 0.2, 0.6],
        [0.6, 0.3, 0.9, 0.9, 0.7, 0.8],
    ]
)
HAND = [0.75, np.nan, 1.0, 0.0, 0.875, np.nan]


def _pairwise_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)]
    return sum(wins) / len(wins)


def test_per_class_auc_by_hand() -> None:
    np.testing.assert_array_equal(per_class_auc(SOLUTION, SUBMISSION), np.array(HAND))


def test_score_by_hand() -> None:
    assert competition_score(SOLUTION, SUBMISSION) == pytest.approx((0.75 + 1.0 + 0.0 + 0.875) / 4)
    np.testing.assert_array_equal(scorable_classes(SOLUTION), [True, False, True, True, True, False])


def test_matches_sklearn_macro_on_kept_columns() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 9)) < 0.2).astype(int)
    y[:, 3] = 0  # a class absent from the solution, skipped as in the competition
    p = np.round(rng.random((60, 9)), 1)  # rounding makes ties
    keep = y.sum(axis=0) > 0
    want = roc_auc_score(y[:, keep], p[:, keep], average="macro")
    assert competition_score(y, p) == pytest.approx(want, abs=1e-12)
    for j in np.flatnonzero(keep):
        assert per_class_auc(y, p)[j] == pytest.approx(_pairwise_auc(y[:, j], p[:, j]), abs=1e-12)


def test_scale_free_and_rank_based() -> None:
    # AUC depends on ranks only: a monotone transform of the scores changes nothing
    assert competition_score(SOLUTION, SUBMISSION**3) == competition_score(SOLUTION, SUBMISSION)


def test_nothing_scorable_is_nan() -> None:
    with pytest.warns(UserWarning, match="no class"):
        assert np.isnan(competition_score(np.zeros((3, 2)), np.ones((3, 2))))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one shape"):
        competition_score(SOLUTION, SUBMISSION[:, :3])
    with pytest.raises(ValueError, match="only 0 and 1"):
        competition_score(SOLUTION * 0.5, SUBMISSION)
    with pytest.raises(ValueError, match="NaN"):
        competition_score(SOLUTION, np.full_like(SUBMISSION, np.nan))
