"""The k-fold training stage shared by teachers and students.

Outputs for role R (teacher or student):
    models/R/fold{k}.pt           checkpoint (weights + config + class list), SPEC 4.11
    models/R/oof.parquet          validation-row probabilities of each trained fold
    metrics/R.json                per-fold AUC, their mean and spread, the OOF AUC
    reports/R_curves/fold{k}.csv  per-epoch loss, valid AUC, lr (DVC plot)
    reports/R_per_class_auc.csv   OOF AUC per species (DVC plot)
A resume state per fold lives in .resume/R/ (not a DVC output) until that fold finishes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import tracking
from birdclef.config import Params, TrainConfig
from birdclef.data import PseudoLabelStream
from birdclef.engine import FoldResult, train_fold
from birdclef.io import atomic_path, write_csv, write_json, write_parquet
from birdclef.metrics import competition_score, per_class_auc
from birdclef.stages.preprocess import CLIPS
from birdclef.stages.sample import CLASSES, TRAIN
from birdclef.store import AudioStore

RESUME = Path(".resume")

StreamFactory = Callable[[int], PseudoLabelStream | None]


def fold_list(cfg: TrainConfig, n_folds: int) -> list[int]:
    folds = list(range(n_folds)) if cfg.folds is None else list(cfg.folds)
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise ValueError(f"folds {bad} do not exist: sample.n_folds is {n_folds}")
    return folds


def load_training_data() -> tuple[pd.DataFrame, list[str], AudioStore]:
    table = pd.read_parquet(TRAIN)
    classes = json.loads(Path(CLASSES).read_text())
    return table, classes, AudioStore(CLIPS)


def summarise(
    role: str, results: list[FoldResult], table: pd.DataFrame, classes: list[str]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Per-fold and OOF metrics, the OOF table and per-class AUC."""
    scores = np.array([r.valid_score for r in results])
    metrics: dict[str, Any] = {f"fold{r.fold}_auc": r.valid_score for r in results}
    metrics["fold_auc_mean"] = float(np.nanmean(scores))
    metrics["fold_auc_std"] = float(np.nanstd(scores))
    metrics["samples_per_s"] = float(np.mean([r.history[-1]["samples_per_s"] for r in results]))
    index = np.concatenate([r.valid_index for r in results])
    probs = np.concatenate([r.valid_probs for r in results])
    rows = table.loc[index]
    targets = np.zeros_like(probs)
    position = {c: i for i, c in enumerate(classes)}
    for i, (first, last) in enumerate(zip(rows["first_species"], rows["last_species"])):
        targets[i, position[first]] = targets[i, position[last]] = 1.0
    metrics["oof_auc"] = competition_score(targets, probs)
    metrics["oof_rows"] = int(len(index))
    oof = pd.DataFrame(probs, columns=classes)
    oof.insert(0, "fold", rows["fold"].to_numpy())
    oof.insert(0, "record_id", rows["record_id"].to_numpy())
    per_class = pd.DataFrame({"species": classes, "auc": per_class_auc(targets, probs)})
    return metrics, oof, per_class


def run_training(
    role: str,
    cfg: TrainConfig,
    params: Params,
    upstream: list[str],
    streams: StreamFactory,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    table, classes, store = load_training_data()
    folds = fold_list(cfg, params.sample.n_folds)
    models = Path("models") / role
    curves = Path("reports") / f"{role}_curves"
    logged = {role: cfg.model_dump(), "model": params.model.model_dump(),
              "frontend": params.frontend.model_dump(), **(extra or {})}
    with tracking.stage_run(
        f"train_{role}", logged, params.tracking.experiment,
        inputs=[str(TRAIN), str(CLIPS)], upstream=upstream,
    ) as run:
        results = []
        with atomic_path(models) as tmp_models, atomic_path(curves) as tmp_curves:
            tmp_models.mkdir()
            tmp_curves.mkdir()
            for fold in folds:
                with run.child(f"{role}-fold{fold}", {"birdclef.fold": fold}) as child:
                    child.log_params({"fold": fold, "seed": cfg.seed + fold})
                    result = train_fold(
                        role=role, fold=fold, cfg=cfg, model_cfg=params.model,
                        frontend_cfg=params.frontend, table=table, classes=classes,
                        clip_store=store, checkpoint_path=tmp_models / f"fold{fold}.pt",
                        resume_path=RESUME / role / f"fold{fold}.pt", run=child,
                        pseudo_labels=streams(fold), extra=extra,
                    )
                    child.log_metrics({"final_valid_auc": result.valid_score})
                    if params.tracking.log_models:
                        child.log_artifact(tmp_models / f"fold{fold}.pt", "checkpoint")
                results.append(result)
                write_csv(tmp_curves / f"fold{fold}.csv", pd.DataFrame(result.history))
            metrics, oof, per_class = summarise(role, results, table, classes)
            metrics["state_sha256"] = {f"fold{r.fold}": r.state_sha256 for r in results}
            write_parquet(tmp_models / "oof.parquet", oof)
        # Resume states are kept until every fold is done: a finished fold is not trained again
        # when an interrupted stage reruns; they go once the stage's outputs are complete.
        shutil.rmtree(RESUME / role, ignore_errors=True)
        write_json(Path("metrics") / f"{role}.json", metrics)
        write_csv(Path("reports") / f"{role}_per_class_auc.csv", per_class)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float | int)})
        run.log_artifact(Path("reports") / f"{role}_per_class_auc.csv", "reports")
    print(f"train_{role}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                        if isinstance(v, float)))
    return metrics
