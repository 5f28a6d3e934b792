"""evaluate: the shipped student ensemble against the teachers on the labelled soundscapes.

The exported (last round's) students run as ONNX models through predict's own code path, so their
score is the score of what `birdclef predict` submits; students of earlier rounds run in PyTorch.
Every model set is scored per fold, as an ensemble raw and smoothed, with a bootstrap standard
error over one-minute blocks of the evaluation; student minus teacher (and each round minus the
previous) is a paired difference on the same resamples. The teachers' pseudo-label targets, made
the way the students get them, are scored against the known labels too (their quality by
confidence).
Outputs: metrics/evaluate.json (headline: each model set's `auc`, its smoothed ensemble, and
`fold_auc`, its folds' mean; `student_minus_teacher`), reports/details/evaluate.json (everything: folds,
standard errors, paired differences, pseudo-label quality), reports/evaluate_per_class.csv (DVC
plot), data/evaluation/student.parquet (the shipped students' scores file), an MLflow run.
Without labelled soundscapes (`sources.eval_soundscapes: null`) nothing is scored: the metrics
and details say `available: false` and why, the tables are written empty.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.device import resolve_device, set_threads
from birdclef.evaluation import (
    RESAMPLE_SEED,
    ModelSetScores,
    align,
    block_resamples,
    eval_folder,
    label_quality,
    paired_difference,
    read_labelled_soundscapes,
    score_model_set,
    score_ensemble,
)
from birdclef.inference import OnnxEnsemble, TorchEnsemble
from birdclef.io import write_csv, write_json, write_parquet
from birdclef.pseudo_labels import student_targets

log = logging.getLogger(__name__)


def teacher_label_quality(teacher: ModelSetScores, truth: np.ndarray, params: Params) -> dict:
    """The targets round-1 students would get from the teachers, on windows with known labels."""
    keys = pd.DataFrame({"soundscape_id": teacher.soundscapes,
                         "window": pd.Series(teacher.soundscapes).groupby(teacher.soundscapes)
                         .cumcount().to_numpy(np.int32)})
    frames = []
    for k, fold in enumerate(teacher.folds):
        frame = pd.DataFrame(expit(teacher.logits[k]), columns=teacher.classes)
        frames.append(pd.concat([keys.assign(fold=fold), frame], axis=1))
    targets = student_targets(pd.concat(frames, ignore_index=True), teacher.classes, keys,
                              params.student.pseudo_labels)
    pooled = np.concatenate([targets[f] for f in teacher.folds])
    return label_quality(np.tile(truth, (len(teacher.folds), 1)), pooled)


def student_sets(params: Params) -> dict[str, ModelSetScores]:
    """Scores of every trained round's students; the last round as exported to ONNX."""
    rounds = paths.trained_rounds()
    if not rounds:
        raise FileNotFoundError("no trained students (run train_student)")
    device = resolve_device(params.pseudo_label.device)
    sets = {}
    for r in rounds[:-1]:
        sets[f"student_round{r}"] = score_ensemble(TorchEnsemble(paths.students(r), device), params)
    sets["student"] = score_ensemble(OnnxEnsemble(paths.ONNX), params, "student")
    return sets


def compare(params: Params) -> tuple[dict[str, Any], pd.DataFrame]:
    _, solution = read_labelled_soundscapes(eval_folder(params))
    table = pd.read_parquet(paths.scores("teacher"))
    classes = [c for c in table.columns if c not in ("row_id", "block", "fold")]
    teacher = ModelSetScores(table, classes)
    truth = align(solution, teacher.row_ids, classes)
    resamples = block_resamples(teacher.blocks, params.evaluate.bootstrap, RESAMPLE_SEED)
    pp = params.postprocess
    metrics: dict[str, Any] = {}
    per_class = {"species": classes}
    sets = {"teacher": teacher, **student_sets(params)}
    for name, scores in sets.items():
        if scores.row_ids != teacher.row_ids:
            raise ValueError(f"{name}: its windows differ from the teachers'")
        metrics[name], per_class[f"{name}_auc"] = score_model_set(scores, truth, pp, resamples)
    names = list(sets)
    for earlier, later in zip(names[:-1], names[1:]):
        metrics[f"{later}_minus_{earlier}"] = paired_difference(
            truth, sets[later].ensemble(pp, True), sets[earlier].ensemble(pp, True), resamples)
    if "student_minus_teacher" not in metrics:
        metrics["student_minus_teacher"] = paired_difference(
            truth, sets["student"].ensemble(pp, True), teacher.ensemble(pp, True), resamples)
    metrics["teacher_pseudo_label_quality"] = teacher_label_quality(teacher, truth, params)
    metrics.update({"available": True, "windows": len(teacher.row_ids),
                    "soundscapes": len(set(teacher.soundscapes)),
                    "classes_scored": int(np.sum(truth.sum(axis=0) > 0)),
                    "rounds": paths.trained_rounds()})
    return metrics, pd.DataFrame(per_class)


# headline name -> details name. Few and short, so that `dvc exp show --only-changed` of two
# student experiments fits 120 columns; the raw ensemble, the folds' spread and the SEs are details.
HEADLINE = {"auc": "ensemble_smoothed", "fold_auc": "fold_mean"}


def headline_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """The soundscape scores a user compares: every model set's smoothed ensemble (what predict
    submits) and its folds' mean, and the shipped students minus the teachers."""
    out: dict[str, Any] = {name: {short: values[full] for short, full in HEADLINE.items()}
                           for name, values in metrics.items()
                           if isinstance(values, dict) and "ensemble_smoothed" in values}
    out["student_minus_teacher"] = metrics["student_minus_teacher"]["difference"]
    return out


def write_not_available(reason: str, run: tracking.StageRun) -> None:
    """Every output (DVC outputs must exist), empty or saying why nothing was scored."""
    write_parquet(paths.scores("student"), pd.DataFrame(columns=["row_id", "block", "fold"]))
    write_json(paths.metrics("evaluate"), {"available": False})
    write_json(paths.details("evaluate"), {"available": False, "reason": reason})
    write_csv(paths.report("evaluate_per_class.csv"),
              pd.DataFrame(columns=["species", "teacher_auc", "student_auc"]))
    run.set_tags({"evaluation": f"not available: {reason}"})
    log.warning("evaluate: not available: %s", reason)


def main(params: Params) -> None:
    set_threads(0)
    with tracking.stage_run(
        "evaluate", {"postprocess": params.postprocess.model_dump(),
                     "eval_soundscapes": params.sources.eval_soundscapes},
        params.tracking.experiment,
        inputs=[str(paths.scores("teacher")), str(paths.scores("truth")), str(paths.ONNX),
                *(str(paths.students(r)) for r in range(1, paths.MAX_ROUNDS + 1)),
                params.sources.root],  # the labelled soundscapes (optional) lie under it
        upstream=["evaluate_teacher", "export"],
    ) as run:
        try:
            eval_folder(params)
        except FileNotFoundError as exc:  # sources.eval_soundscapes is null
            write_not_available(str(exc), run)
            return
        metrics, per_class = compare(params)
        headline = headline_scores(metrics)
        write_json(paths.metrics("evaluate"), headline)
        write_json(paths.details("evaluate"), metrics)
        write_csv(paths.report("evaluate_per_class.csv"), per_class)
        run.log_metrics({f"{name}.{k}": v for name, values in metrics.items()
                         if isinstance(values, dict) for k, v in values.items()
                         if isinstance(v, float)})
        flat = {f"{name}.{k}": v for name, values in headline.items() if isinstance(values, dict)
                for k, v in values.items()}
        run.log_headline({**flat, "student_minus_teacher": headline["student_minus_teacher"]})
        run.log_artifact(paths.report("evaluate_per_class.csv"), "reports")
    teacher, student = metrics["teacher"], metrics["student"]
    diff = metrics["student_minus_teacher"]
    log.info("evaluate: teacher %.4f, student %.4f smoothed (SE %.4f); student - teacher %+.4f "
             "(95%% %+.4f..%+.4f)", teacher["ensemble_smoothed"], student["ensemble_smoothed"],
             student["ensemble_smoothed_se"], diff["difference"], diff["ci95_low"], diff["ci95_high"])
