"""Pseudo-labels: the labelling of soundscape windows by an ensemble (SPEC 5) and the student targets
made from them (SPEC 6.2's max-PL blend, then fold choice, sharpening and zeroing).

The pseudo-label table has one row per (soundscape, window, fold):
    soundscape_id, window (0-based), start_second, fold, then one probability column per class
sorted by soundscape, fold, window: no ensembling and no post-processing (SPEC 5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from birdclef.config import PseudoLabelStreamConfig
from birdclef.inference import Ensemble
from birdclef.io import progress
from birdclef.store import AudioStore
from birdclef.windows import frame_windows, window_samples

EPS = 1e-7  # SPEC 6.2 clips probabilities to [1e-7, 1 - 1e-7] before the logit


def label_soundscapes(store: AudioStore, ensemble: Ensemble, batch: int) -> pd.DataFrame:
    """Every fold of `ensemble` on every window of every soundscape of `store`."""
    cfg, folds, classes = ensemble.frontend_cfg, ensemble.folds, ensemble.classes
    window = window_samples(cfg)
    frames = []
    index = store.index.sort_values("soundscape_id", kind="stable")
    for row in progress(index.itertuples(), total=len(index), desc="pseudo-label", unit="soundscape"):
        windows = frame_windows(store.read(row.shard, row.offset, row.length), window, cfg.sample_rate)
        probs = expit(ensemble.logits(windows, batch))
        n = len(windows)
        for fold, fold_probs in zip(folds, probs):
            frame = pd.DataFrame(fold_probs.astype(np.float32), columns=classes)
            frame.insert(0, "fold", np.int16(fold))
            frame.insert(0, "start_second", (np.arange(n) * cfg.window_seconds).astype(np.float32))
            frame.insert(0, "window", np.arange(n, dtype=np.int32))
            frame.insert(0, "soundscape_id", row.soundscape_id)
            frames.append(frame)
    if not frames:
        return empty_table(classes)
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["soundscape_id", "fold", "window"], kind="stable", ignore_index=True)


def empty_table(classes: list[str]) -> pd.DataFrame:
    columns = {"soundscape_id": pd.Series(dtype=str), "window": pd.Series(dtype=np.int32),
               "start_second": pd.Series(dtype=np.float32), "fold": pd.Series(dtype=np.int16)}
    columns.update({c: pd.Series(dtype=np.float32) for c in classes})
    return pd.DataFrame(columns)


def summary(table: pd.DataFrame, classes: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Counts and confidence of a pseudo-label set; the histogram of each row's top probability."""
    probs = table[classes].to_numpy()
    max_prob = probs.max(axis=1) if len(probs) else np.zeros(0)
    metrics: dict[str, Any] = {
        "rows": int(len(table)),
        "soundscapes": int(table["soundscape_id"].nunique()),
        "folds": sorted(int(f) for f in table["fold"].unique()),
        "mean_max_prob": float(max_prob.mean()) if len(probs) else 0.0,
        "mean_prob": float(probs.mean()) if len(probs) else 0.0,
        "per_class_mean": {c: float(v) for c, v in zip(classes, probs.mean(axis=0))}
        if len(probs) else {},
    }
    counts, edges = np.histogram(max_prob, bins=20, range=(0.0, 1.0))
    histogram = pd.DataFrame({"max_prob": np.round(edges[:-1] + 0.025, 3), "windows": counts})
    return metrics, histogram


def blend_max_pl(fold_probs: np.ndarray) -> np.ndarray:
    """SPEC 6.2 for one soundscape: (folds, windows, classes) -> blended, same shape.

    P'_k = sigmoid((L_k + M + mean(L_k) - mean(M)) / 2), L_k = logit(P_k), M = max_k L_k, means over
    all windows x classes of the soundscape.
    """
    logits = logit(np.clip(fold_probs.astype(np.float64), EPS, 1 - EPS))
    best = logits.max(axis=0)
    shift = logits.mean(axis=(1, 2), keepdims=True) - best.mean()
    return expit((logits + best + shift) / 2).astype(np.float32)


def student_targets(
    table: pd.DataFrame, classes: list[str], keys: pd.DataFrame, cfg: PseudoLabelStreamConfig
) -> dict[int, np.ndarray]:
    """Per labeller fold, the (windows, classes) targets in the row order of `keys`
    (soundscape_id, window): blended (SPEC 6.2), the folds' mean if asked, sharpened, zeroed."""
    folds = sorted(int(f) for f in table["fold"].unique())
    table = table.sort_values(["soundscape_id", "fold", "window"], kind="stable")
    ids = sorted(table["soundscape_id"].unique())
    blocks = []
    for _, group in table.groupby("soundscape_id", sort=True):
        stack = np.stack([g[classes].to_numpy(np.float32) for _, g in group.groupby("fold", sort=True)])
        if stack.shape[0] != len(folds):
            raise ValueError(f"soundscape {group['soundscape_id'].iloc[0]}: not every fold labelled it")
        blocks.append(blend_max_pl(stack) if cfg.max_pl else stack)
    if not blocks:
        return {}
    stacked = np.concatenate(blocks, axis=1)  # (folds, windows of all soundscapes, classes)
    order = pd.DataFrame({
        "soundscape_id": np.repeat(ids, [b.shape[1] for b in blocks]),
        "window": np.concatenate([np.arange(b.shape[1]) for b in blocks]).astype(np.int32),
        "row": np.arange(stacked.shape[1]),
    })
    aligned = keys.merge(order, on=["soundscape_id", "window"], how="left", validate="one_to_one")
    if aligned["row"].isna().any():
        missing = aligned.loc[aligned["row"].isna(), "soundscape_id"].unique()[:3].tolist()
        raise ValueError(f"pseudo-labels are missing for soundscape windows of {missing}")
    stacked = stacked[:, aligned["row"].to_numpy(int)]
    if cfg.fold_source == "mean":
        stacked = np.broadcast_to(stacked.mean(axis=0), stacked.shape)
    stacked = sharpen(stacked, cfg.power, cfg.threshold)
    return {f: np.ascontiguousarray(stacked[i], dtype=np.float32) for i, f in enumerate(folds)}


def sharpen(probs: np.ndarray, power: float, threshold: float) -> np.ndarray:
    """Probabilities raised to `power`, then those below `threshold` set to 0."""
    out = np.power(probs, power) if power != 1.0 else np.array(probs)
    if threshold > 0:
        out = np.where(out < threshold, 0.0, out)
    return out.astype(np.float32)


def confidence_weights(targets: np.ndarray) -> np.ndarray:
    """Sampling weight of each window: its top target probability."""
    return targets.max(axis=1).astype(np.float64)
