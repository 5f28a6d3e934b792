"""Post-processing of one soundscape's predictions: fold reduction and temporal smoothing (SPEC 12)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit

from birdclef.config import PostprocessConfig


def reduce_folds(logits: np.ndarray, reduction: str) -> np.ndarray:
    """(folds, windows, classes) logits -> (windows, classes) probabilities."""
    if reduction == "mean_prob":
        return expit(logits).mean(axis=0)
    if reduction == "mean_logit":
        return expit(logits.mean(axis=0))
    if reduction == "min":
        return expit(logits).min(axis=0)
    raise ValueError(f"unknown reduction {reduction!r}")


def smooth(probs: np.ndarray, kernel: Sequence[float]) -> np.ndarray:
    """Weighted mean of each species' probability over neighbouring windows of one soundscape.

    The kernel is centred on each window; at the soundscape's edges the weights that fall outside
    are dropped and the rest renormalised, so a constant sequence stays constant and a soundscape of
    one window is unchanged. Zero padding instead would damp the first and last windows (to 0.7 of
    a constant with the default kernel); the original's edge handling is unknown (SPEC 7).
    """
    weights = np.asarray(kernel, dtype=np.float64)
    half = len(weights) // 2
    n = probs.shape[0]
    out = np.zeros(probs.shape, dtype=np.float64)
    total = np.zeros((n, 1), dtype=np.float64)
    for k, w in enumerate(weights):
        shift = k - half
        lo, hi = max(0, -shift), min(n, n - shift)
        if lo >= hi:
            continue
        out[lo:hi] += w * probs[lo + shift : hi + shift]
        total[lo:hi] += w
    return (out / total).astype(np.float32)


def postprocess(logits: np.ndarray, cfg: PostprocessConfig, smoothing: bool | None = None) -> np.ndarray:
    """One soundscape's (folds, windows, classes) logits -> submitted probabilities."""
    probs = reduce_folds(logits, cfg.reduction)
    use = cfg.smoothing if smoothing is None else smoothing
    return smooth(probs, cfg.smoothing_kernel) if use else probs.astype(np.float32)
