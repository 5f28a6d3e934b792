"""evaluate: teacher ensemble vs student ensemble on labelled soundscapes, with and without
post-processing, each fold's own score beside the ensemble's (mean and spread over folds).

Teachers run as PyTorch checkpoints; students run as the exported ONNX models through predict's own
code path, so the score is the score of what `birdclef predict` submits.
Outputs: metrics/evaluate.json, reports/evaluate_per_class.csv (DVC plot), an MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from birdclef import tracking
from birdclef.audio import AUDIO_SUFFIXES, decode, frame_windows
from birdclef.config import Params, PostprocessConfig
from birdclef.engine import resolve_device, set_threads
from birdclef.io import write_csv, write_json
from birdclef.metrics import competition_score, per_class_auc
from birdclef.postprocess import reduce_folds, smooth
from birdclef.inference import OnnxEnsemble, TorchEnsemble

METRICS = Path("metrics/evaluate.json")
PER_CLASS = Path("reports/evaluate_per_class.csv")


def read_labelled_soundscapes(folder: str | Path) -> tuple[list[Path], pd.DataFrame]:
    """Audio files and the solution table (row_id `<stem>_<end second>` + one 0/1 column per class)."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: labels of the evaluation soundscapes not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    return files, pd.read_csv(labels)


def ensemble_logits(files: list[Path], ensemble, batch: int) -> list[np.ndarray]:
    """Per file, the (folds, windows, classes) logits of an ensemble."""
    cfg = ensemble.frontend_cfg
    window = int(round(cfg.window_seconds * cfg.sample_rate))
    return [
        ensemble.logits(frame_windows(decode(p, cfg.sample_rate), window, cfg.sample_rate), batch)
        for p in files
    ]


def align(solution: pd.DataFrame, row_ids: list[str], classes: list[str]) -> np.ndarray:
    """The solution's 0/1 matrix in prediction row order; every predicted row must be labelled."""
    table = solution.set_index("row_id")
    missing = sorted(set(row_ids) - set(table.index))
    if missing:
        raise ValueError(f"labels.csv has no rows for {missing[:5]} ...")
    return table.loc[row_ids, classes].to_numpy(dtype=np.float32)


def score_ensemble(
    folds: list[int], per_file: list[np.ndarray], truth: np.ndarray, pp: PostprocessConfig
) -> tuple[dict[str, Any], np.ndarray]:
    """Each fold alone, the ensemble raw, the ensemble smoothed; per-class AUC of the final one."""
    logits = np.concatenate(per_file, axis=1)  # (folds, all windows, classes)
    result: dict[str, Any] = {}
    fold_scores = [competition_score(truth, expit(logits[i])) for i in range(len(folds))]
    for fold, value in zip(folds, fold_scores):
        result[f"fold{fold}"] = value
    result["fold_mean"] = float(np.mean(fold_scores))
    result["fold_std"] = float(np.std(fold_scores))
    raw = np.concatenate([reduce_folds(f, pp.reduction) for f in per_file])
    smoothed = np.concatenate(
        [smooth(reduce_folds(f, pp.reduction), pp.smoothing_kernel) for f in per_file]
    )
    result["ensemble"] = competition_score(truth, raw)
    result["ensemble_smoothed"] = competition_score(truth, smoothed)
    final = smoothed if pp.smoothing else raw
    return result, per_class_auc(truth, final)


def main(params: Params) -> None:
    from birdclef.stages.predict import predict_files

    if params.sources.eval_soundscapes is None:
        raise FileNotFoundError("sources.eval_soundscapes is null: no labelled soundscapes to score")
    set_threads(0)
    files, solution = read_labelled_soundscapes(params.sources.eval_soundscapes)
    with tracking.stage_run(
        "evaluate", {"postprocess": params.postprocess.model_dump()}, params.tracking.experiment,
        inputs=["models/teacher", "models/onnx"], upstream=["train_teacher", "export"],
    ) as run:
        teachers = TorchEnsemble(Path("models/teacher"), resolve_device(params.pseudo_label.device))
        t_folds, classes = teachers.folds, teachers.classes
        t_logits = ensemble_logits(files, teachers, params.pseudo_label.batch_size)
        row_ids = [f"{p.stem}_{int((i + 1) * params.frontend.window_seconds)}"
                   for p, lg in zip(files, t_logits) for i in range(lg.shape[1])]
        truth = align(solution, row_ids, classes)
        teacher, teacher_auc = score_ensemble(t_folds, t_logits, truth, params.postprocess)

        ensemble = OnnxEnsemble(Path("models/onnx"))
        predicted = predict_files(files, ensemble, params, on_error="fail")
        student, student_auc = score_ensemble(
            ensemble.folds, predicted.logits, align(solution, predicted.row_ids, classes),
            params.postprocess,
        )
        metrics = {"teacher": teacher, "student": student,
                   "student_minus_teacher": student["ensemble_smoothed"] - teacher["ensemble_smoothed"],
                   "windows": int(len(row_ids)), "soundscapes": len(files),
                   "classes_scored": int(np.sum(truth.sum(axis=0) > 0))}
        write_json(METRICS, metrics)
        write_csv(PER_CLASS, pd.DataFrame({"species": classes, "teacher_auc": teacher_auc,
                                           "student_auc": student_auc}))
        run.log_metrics({f"{role}.{k}": v for role in ("teacher", "student")
                         for k, v in metrics[role].items()})
        run.log_artifact(PER_CLASS, "reports")
    print(f"evaluate: teacher {teacher['ensemble_smoothed']:.4f} "
          f"(folds {teacher['fold_mean']:.4f} +- {teacher['fold_std']:.4f}), "
          f"student {student['ensemble_smoothed']:.4f} "
          f"(folds {student['fold_mean']:.4f} +- {student['fold_std']:.4f})")
