"""How pseudo-labels reach the students: targets from a pseudo-label table (SPEC 6.2's max-PL blend,
then fold choice, sharpening and zeroing), how likely each window is to be drawn, and the per-fold
mix or stream that carries them into training.

The pseudo-label table (written by the pseudo_label stage) has one row per (soundscape, window, fold):
    soundscape_id, window (0-based), start_second, fold, then one probability column per class
sorted by soundscape, fold, window: no ensembling and no post-processing (SPEC 5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from birdclef.config import PseudoLabelStreamConfig
from birdclef.data import (
    PSEUDO_MIX_KEY,
    PseudoLabelDataset,
    PseudoLabelStream,
    SoundscapeWindows,
    WindowMix,
)
from birdclef.engine import FoldJob

EPS = 1e-7  # SPEC 6.2 clips probabilities to [1e-7, 1 - 1e-7] before the logit


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


def pseudo_label_setup(
    cfg: PseudoLabelStreamConfig, windows: SoundscapeWindows, targets: dict[int, np.ndarray],
    seed: int,
) -> Callable[[FoldJob], FoldJob]:
    """The per-fold change to a job: the pseudo-label mix or stream of `cfg`."""
    def setup(job: FoldJob) -> FoldJob:
        if job.fold not in targets:
            raise ValueError(
                f"student fold {job.fold} needs the labeller's fold {job.fold}; the pseudo-labels "
                f"have folds {sorted(targets)} (set student.pseudo_labels.fold_source: mean)"
            )
        fold_targets = targets[job.fold]
        use_targets = cfg.targets == "pseudo"
        if cfg.mode == "mix":
            weights = confidence_weights(fold_targets) if cfg.sampling == "confidence" else None
            mix = WindowMix(windows, cfg.mix_p, (cfg.mix_weight_min, cfg.mix_weight_max),
                            PSEUDO_MIX_KEY, fold_targets if use_targets else None, weights,
                            pseudo=True)
            return replace(job, window_mixes=[*job.window_mixes, mix])
        dataset = PseudoLabelDataset(windows, fold_targets, cfg.dup, cfg.windows_per_soundscape,
                                     seed + job.fold, use_targets)
        stream = PseudoLabelStream(dataset, cfg.soundscapes_per_batch, cfg.shuffle,
                                   seed + job.fold, cfg.restart, group=job.group)
        return replace(job, pseudo_labels=stream)

    return setup
