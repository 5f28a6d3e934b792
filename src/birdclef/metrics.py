"""The BirdCLEF 2024 metric (SPEC 12) and the per-epoch validation metric (SPEC 4.10).

The competition keeps the species columns with at least one positive in the solution and takes
sklearn's macro ROC-AUC over them, i.e. the unweighted mean of per-class AUCs.

Deviation, documented: a kept column whose rows are *all* positive has no negatives, so its AUC is
undefined (sklearn warns and yields NaN, which would make the whole mean NaN). Such columns are
skipped too. On the hidden test set this never happens; on small validation folds it can.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score


def _as_arrays(solution: ArrayLike, submission: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(solution)
    p = np.asarray(submission, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"solution and submission must be 2-D of one shape, got {y.shape} and {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("solution must hold only 0 and 1")
    if not np.isfinite(p).all():
        raise ValueError("submission holds NaN or infinite values")
    return y.astype(np.int8), p


def scorable_classes(solution: ArrayLike) -> np.ndarray:
    """Boolean mask of the columns with at least one positive and at least one negative row."""
    y = np.asarray(solution)
    pos = (y == 1).sum(axis=0)
    return (pos > 0) & (pos < y.shape[0])


def per_class_auc(solution: ArrayLike, submission: ArrayLike) -> np.ndarray:
    """ROC-AUC of each column (ties count 1/2); NaN where a column has no positive or no negative."""
    y, p = _as_arrays(solution, submission)
    out = np.full(y.shape[1], np.nan)
    for j in np.flatnonzero(scorable_classes(y)):
        out[j] = roc_auc_score(y[:, j], p[:, j])
    return out


def competition_score(solution: ArrayLike, submission: ArrayLike) -> float:
    """Macro ROC-AUC over the classes that have positives (and negatives, see the module note).

    Returns NaN when no class can be scored, so a tiny validation fold logs NaN instead of crashing.
    """
    auc = per_class_auc(solution, submission)
    if np.isnan(auc).all():
        warnings.warn("no class has both positive and negative rows; score is NaN", stacklevel=2)
        return float("nan")
    return float(np.nanmean(auc))
