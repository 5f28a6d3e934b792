"""train_student: students on labelled clips plus pseudo-labelled soundscape windows (SPEC 6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.config import Params, PseudoLabelStreamConfig
from birdclef.data import PseudoLabelDataset, PseudoLabelStream
from birdclef.frontend import window_samples
from birdclef.stages.preprocess import SOUNDSCAPES
from birdclef.stages.pseudo_label import METRICS as PL_METRICS
from birdclef.stages.pseudo_label import OUT as PL_TABLE
from birdclef.stages.sample import CLASSES
from birdclef.stages.train import run_training
from birdclef.store import AudioStore

EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def blend_max_pl(fold_probs: np.ndarray) -> np.ndarray:
    """SPEC 6.2 for one soundscape: (folds, windows, classes) -> blended, same shape.

    P'_k = sigmoid((L_k + M + mean(L_k) - mean(M)) / 2), L_k = logit(P_k), M = max_k L_k, means over
    all windows x classes of the soundscape.
    """
    logits = _logit(fold_probs.astype(np.float64))
    best = logits.max(axis=0)
    shift = logits.mean(axis=(1, 2), keepdims=True) - best.mean()
    return _sigmoid((logits + best + shift) / 2).astype(np.float32)


def student_targets(
    table: pd.DataFrame, classes: list[str], cfg: PseudoLabelStreamConfig
) -> tuple[list[str], dict[int, list[np.ndarray]]]:
    """Per teacher fold, the (windows, classes) soft targets of every soundscape, in id order."""
    folds = sorted(int(f) for f in table["fold"].unique())
    ids = sorted(table["soundscape_id"].unique())
    per_fold: dict[int, list[np.ndarray]] = {f: [] for f in folds}
    for sid, group in table.groupby("soundscape_id", sort=True):
        stack = np.stack([g.sort_values("window")[classes].to_numpy() for _, g in group.groupby("fold")])
        if cfg.max_pl:
            stack = blend_max_pl(stack)
        if cfg.fold_source == "mean":
            stack = np.broadcast_to(stack.mean(axis=0), stack.shape)
        for f, probs in zip(folds, stack):
            per_fold[f].append(np.ascontiguousarray(probs, dtype=np.float32))
    return ids, per_fold


def main(params: Params) -> None:
    cfg = params.student
    pl_cfg = cfg.pseudo_labels
    factory = lambda fold: None  # noqa: E731
    if pl_cfg.enabled:
        classes = json.loads(Path(CLASSES).read_text())
        ids, per_fold = student_targets(pd.read_parquet(PL_TABLE), classes, pl_cfg)
        store = AudioStore(SOUNDSCAPES)
        window = window_samples(params.frontend)

        def factory(fold: int) -> PseudoLabelStream:
            if fold not in per_fold:
                raise ValueError(
                    f"student fold {fold} needs teacher fold {fold}'s pseudo labels; the set has "
                    f"folds {sorted(per_fold)} (set pseudo_labels.fold_source: mean, or train it)"
                )
            dataset = PseudoLabelDataset(
                store, ids, per_fold[fold], window, pl_cfg.dup, pl_cfg.windows_per_soundscape,
                cfg.seed + fold,
            )
            return PseudoLabelStream(
                dataset, pl_cfg.soundscapes_per_batch, pl_cfg.shuffle, cfg.seed + fold, pl_cfg.restart
            )

    pl_hash = json.loads(PL_METRICS.read_text())["sha256"] if PL_METRICS.is_file() else ""
    run_training("student", cfg, params, upstream=["sample", "pseudo_label"], streams=factory,
                 extra={"pseudo_labels_sha256": pl_hash})
