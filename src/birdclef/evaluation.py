"""Scoring model sets on the labelled soundscapes: per fold, ensemble raw and smoothed, the
standard error of the ensemble's AUC by a bootstrap over blocks of windows, and paired differences.

A model set's scores file (`paths.scores(name)`) has one row per (fold, window): `row_id`, `block`
(the bootstrap unit: one minute of one soundscape), `fold`, then one logit column per class. The
study and `evaluate` recompute everything from these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from birdclef import paths
from birdclef.audio import AUDIO_SUFFIXES
from birdclef.config import Params, PostprocessConfig
from birdclef.inference import Ensemble
from birdclef.io import write_parquet
from birdclef.metrics import competition_score, per_class_auc
from birdclef.postprocess import reduce_folds, smooth
from birdclef.prediction import predict_files

BLOCK_SECONDS = 60.0  # bootstrap unit: windows of one minute of one soundscape move together
CONFIDENCE_BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
RESAMPLE_SEED = 0  # the same resamples for every model set: their SEs are comparable


def read_labelled_soundscapes(folder: str | Path) -> tuple[list[Path], pd.DataFrame]:
    """Audio files and the solution table (row_id `<stem>_<end second>` + one 0/1 column per class)."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: labels of the evaluation soundscapes not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    return files, pd.read_csv(labels)


def align(solution: pd.DataFrame, row_ids: list[str], classes: list[str]) -> np.ndarray:
    """The solution's 0/1 matrix in prediction row order; every predicted row must be labelled."""
    table = solution.set_index("row_id")
    missing = sorted(set(row_ids) - set(table.index))
    if missing:
        raise ValueError(f"labels.csv has no rows for {missing[:5]} ...")
    absent = [c for c in classes if c not in table.columns]
    if absent:
        raise ValueError(f"labels.csv has no column for classes {absent[:5]}")
    return table.loc[row_ids, classes].to_numpy(dtype=np.float32)


def scores_table(
    stems: list[str], per_file: list[np.ndarray], row_ids: list[str], folds: list[int],
    classes: list[str], window_seconds: float,
) -> pd.DataFrame:
    """Long table of a model set's logits: one row per (fold, window)."""
    blocks = [f"{stem}:{int(i * window_seconds // BLOCK_SECONDS)}"
              for stem, logits in zip(stems, per_file) for i in range(logits.shape[1])]
    logits = np.concatenate(per_file, axis=1)  # (folds, windows, classes)
    frames = []
    for k, fold in enumerate(folds):
        frame = pd.DataFrame(logits[k].astype(np.float32), columns=classes)
        frame.insert(0, "fold", np.int16(fold))
        frame.insert(0, "block", blocks)
        frame.insert(0, "row_id", row_ids)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


class ModelSetScores:
    """One model set's logits on the evaluation windows, in the solution's terms."""

    def __init__(self, table: pd.DataFrame, classes: list[str]) -> None:
        self.folds = sorted(int(f) for f in table["fold"].unique())
        first = table[table["fold"] == self.folds[0]]
        self.row_ids = first["row_id"].tolist()
        self.blocks = first["block"].to_numpy()
        self.soundscapes = np.array([b.rsplit(":", 1)[0] for b in self.blocks])
        self.classes = classes
        self.logits = np.stack([table[table["fold"] == f][classes].to_numpy(np.float32)
                                for f in self.folds])  # (folds, windows, classes)

    def ensemble(self, pp: PostprocessConfig, smoothed: bool) -> np.ndarray:
        """(windows, classes) ensemble probabilities, smoothed within each soundscape if asked."""
        probs = reduce_folds(self.logits, pp.reduction)
        if not smoothed:
            return probs.astype(np.float32)
        out = np.empty_like(probs, dtype=np.float32)
        for stem in dict.fromkeys(self.soundscapes):  # soundscapes in order of appearance
            rows = np.flatnonzero(self.soundscapes == stem)
            out[rows] = smooth(probs[rows], pp.smoothing_kernel)
        return out


def score_ensemble(ensemble: Ensemble, params: Params, name: str | None = None) -> ModelSetScores:
    """Run `ensemble` over the labelled soundscapes through predict's path; with a `name`, also
    write its scores file (paths.scores(name))."""
    files, _ = read_labelled_soundscapes(eval_folder(params))
    prediction = predict_files(files, ensemble, params, on_error="fail")
    table = scores_table([p.stem for p in files], prediction.logits, prediction.row_ids,
                         ensemble.folds, ensemble.classes, ensemble.frontend_cfg.window_seconds)
    if name is not None:
        write_parquet(paths.scores(name), table)
    return ModelSetScores(table, ensemble.classes)


def eval_folder(params: Params) -> str:
    if params.sources.eval_soundscapes is None:
        raise FileNotFoundError("sources.eval_soundscapes is null: no labelled soundscapes to score")
    return params.sources.eval_soundscapes


def fast_auc(truth: np.ndarray, probs: np.ndarray) -> float:
    """Macro ROC-AUC over the scorable classes (ties 1/2), by ranks: the same number as
    `competition_score`, fast enough for thousands of bootstrap resamples."""
    pos = truth.sum(axis=0)
    keep = (pos > 0) & (pos < truth.shape[0])
    if not keep.any():
        return float("nan")
    ranks = rankdata(probs[:, keep], axis=0)
    y = truth[:, keep]
    n_pos, n_neg = pos[keep], truth.shape[0] - pos[keep]
    auc = ((ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc.mean())


def block_resamples(blocks: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """`n` bootstrap resamples of window indices, drawing whole blocks with replacement."""
    names, inverse = np.unique(blocks, return_inverse=True)
    members = [np.flatnonzero(inverse == b) for b in range(len(names))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[b] for b in rng.integers(0, len(names), len(names))])
            for _ in range(n)]


def bootstrap(
    truth: np.ndarray, probs: list[np.ndarray], resamples: list[np.ndarray]
) -> np.ndarray:
    """(resamples, len(probs)) AUCs of each prediction matrix on the same resamples."""
    return np.array([[fast_auc(truth[idx], p[idx]) for p in probs] for idx in resamples])


def interval(values: np.ndarray) -> dict[str, float]:
    """Standard error and 95 % percentile interval of bootstrap values."""
    values = values[np.isfinite(values)]
    return {"se": float(values.std(ddof=1)), "ci95_low": float(np.percentile(values, 2.5)),
            "ci95_high": float(np.percentile(values, 97.5))}


def score_model_set(
    scores: ModelSetScores, truth: np.ndarray, pp: PostprocessConfig,
    resamples: list[np.ndarray],
) -> tuple[dict[str, Any], np.ndarray]:
    """Each fold alone, the ensemble raw and smoothed (with its bootstrap SE); per-class AUC of
    the ensemble as submitted (smoothed when postprocess.smoothing)."""
    result: dict[str, Any] = {}
    fold_scores = [competition_score(truth, reduce_folds(scores.logits[i : i + 1], "mean_prob"))
                   for i in range(len(scores.folds))]
    for fold, value in zip(scores.folds, fold_scores):
        result[f"fold{fold}"] = value
    result["fold_mean"] = float(np.mean(fold_scores))
    result["fold_std"] = float(np.std(fold_scores))
    raw, smoothed = scores.ensemble(pp, False), scores.ensemble(pp, True)
    result["ensemble"] = competition_score(truth, raw)
    result["ensemble_smoothed"] = competition_score(truth, smoothed)
    spread = bootstrap(truth, [raw, smoothed], resamples)
    result["ensemble_se"] = interval(spread[:, 0])["se"]
    result["ensemble_smoothed_se"] = interval(spread[:, 1])["se"]
    return result, per_class_auc(truth, smoothed if pp.smoothing else raw)


def paired_difference(
    truth: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: list[np.ndarray]
) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same windows, with its bootstrap SE and 95 % interval."""
    spread = bootstrap(truth, [a, b], resamples)
    return {"difference": competition_score(truth, a) - competition_score(truth, b),
            **interval(spread[:, 0] - spread[:, 1])}


def label_quality(truth: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """How good pseudo-label targets are where the truth is known: macro AUC, and per confidence
    bin the share of (window, class) targets that are true positives."""
    out: dict[str, Any] = {"auc": competition_score(truth, targets), "by_confidence": []}
    for lo, hi in zip(CONFIDENCE_BINS[:-1], CONFIDENCE_BINS[1:]):
        inside = (targets >= lo) & ((targets < hi) if hi < 1 else (targets <= hi))
        count = int(inside.sum())
        out["by_confidence"].append({"low": lo, "high": hi, "targets": count,
                                     "precision": float(truth[inside].mean()) if count else None})
    return out


def positives_per_class(truth: np.ndarray, classes: list[str]) -> dict[str, int]:
    return {c: int(v) for c, v in zip(classes, truth.sum(axis=0))}
