"""The k-fold training driver shared by the teacher and student stages.

Outputs for a model set named N (`teacher`, `student_round1`, ...) in folder D:
    D/fold{k}.pt                  checkpoint (weights + config + class list), SPEC 4.11
    D/oof.parquet                 validation-row probabilities of each trained fold
    metrics/N.json                the OOF AUC on the clips, the folds' mean and spread (teachers
                                  only: a DVC metric; the students' are in the details and MLflow)
    reports/details/N.json        per-fold AUC, steps, pseudo-labelled windows seen, samples/s,
                                  weight hashes, the numerical environment of the run
    reports/N_curves.csv          per-epoch loss, valid AUC, lr of every fold (DVC plot)
    reports/N_per_class_auc.csv   OOF AUC per species (DVC plot)
A resume state per fold lives in .resume/N/ (not a DVC output) until every fold is done.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import paths, tracking
from birdclef.config import Params, TrainConfig
from birdclef.data import BACKGROUND_KEY, SoundscapeWindows, WindowMix
from birdclef.distributed import join
from birdclef.engine import FoldJob, FoldResult, numerical_environment, train_fold
from birdclef.io import atomic_path, write_csv, write_json, write_parquet
from birdclef.metrics import competition_score, per_class_auc
from birdclef.store import AudioStore
from birdclef.windows import window_samples

log = logging.getLogger(__name__)

# What a stage adds to one fold's job: pseudo-label mixes or stream, initial weights, ...
FoldSetup = Callable[[FoldJob], FoldJob]
HEADLINE = ("oof_auc", "fold_auc_mean", "fold_auc_std")  # clip scores a user compares


def fold_list(cfg: TrainConfig, n_folds: int) -> list[int]:
    folds = list(range(n_folds)) if cfg.folds is None else list(cfg.folds)
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise ValueError(f"folds {bad} do not exist: sample.n_folds is {n_folds}")
    return folds


def load_training_data() -> tuple[pd.DataFrame, list[str], AudioStore]:
    table = pd.read_parquet(paths.TRAIN)
    classes = json.loads(paths.CLASSES.read_text())
    return table, classes, AudioStore(paths.CLIPS)


def soundscape_windows(params: Params) -> SoundscapeWindows:
    store = AudioStore(paths.SOUNDSCAPES)
    return SoundscapeWindows(store, window_samples(params.frontend), params.frontend.sample_rate)


def background_mixes(cfg: TrainConfig, windows: SoundscapeWindows | None) -> list[WindowMix]:
    """The background augmentation of `cfg.soundscape_mix`, when it is on."""
    mix = cfg.soundscape_mix
    if mix.p <= 0:
        return []
    if windows is None or len(windows) == 0:
        raise ValueError("soundscape_mix.p > 0 needs unlabelled soundscapes (none were preprocessed)")
    return [WindowMix(windows, mix.p, (mix.weight_min, mix.weight_max), BACKGROUND_KEY)]


def summarise(
    results: list[FoldResult], table: pd.DataFrame, classes: list[str]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Per-fold and OOF metrics, the OOF table and per-class AUC."""
    scores = np.array([r.valid_score for r in results])
    metrics: dict[str, Any] = {f"fold{r.fold}_auc": r.valid_score for r in results}
    metrics["fold_auc_mean"] = float(np.nanmean(scores))
    metrics["fold_auc_std"] = float(np.nanstd(scores))
    metrics["samples_per_s"] = float(np.mean([r.history[-1]["samples_per_s"] for r in results]))
    metrics["steps"] = int(sum(row["steps"] for r in results for row in r.history))
    metrics["pseudo_label_windows"] = int(
        sum(row["pseudo_label_windows"] for r in results for row in r.history))
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


def curves(results: list[FoldResult]) -> pd.DataFrame:
    """Every fold's per-epoch history in one long table (fold is a column)."""
    return pd.DataFrame([{"fold": r.fold, **row} for r in results for row in r.history])


def train_folds(base: FoldJob, folds: list[int], setup: FoldSetup, out_dir: Path, run: Any,
                log_models: bool) -> list[FoldResult]:
    """Every fold in turn; on rank 0 each fold gets its nested MLflow run."""
    results = []
    for fold in folds:
        job = setup(replace(base, fold=fold))
        resume = paths.RESUME / base.role / f"fold{fold}.pt"
        if not base.group.main:
            results.append(train_fold(job, out_dir / f"fold{fold}.pt", resume, None))
            continue
        with run.child(f"{base.role}-fold{fold}", {"birdclef.fold": fold}) as child:
            child.log_params({"fold": fold, "seed": job.seed})
            result = train_fold(job, out_dir / f"fold{fold}.pt", resume, child)
            child.log_metrics({"final_valid_auc": result.valid_score})
            if log_models:
                child.log_artifact(out_dir / f"fold{fold}.pt", "checkpoint")
        results.append(result)
    return results


def run_training(
    name: str,
    cfg: TrainConfig,
    params: Params,
    out_dir: Path,
    *,
    stage: str,
    inputs: list[str],
    upstream: list[str],
    setup: FoldSetup = lambda job: job,
    extra: dict[str, Any] | None = None,
    logged: dict[str, Any] | None = None,
    dvc_metrics: bool = True,
) -> dict[str, Any]:
    """Train every fold of `cfg` into `out_dir` and write the model set's metrics and reports
    (metrics/N.json only with `dvc_metrics`). With `device: ddp` the stage's processes train
    together; rank 0 writes every output."""
    group, device = join(cfg.device)
    table, classes, store = load_training_data()
    folds = fold_list(cfg, params.sample.n_folds)
    windows = soundscape_windows(params) if paths.SOUNDSCAPES.is_dir() else None
    base = FoldJob(role=name, fold=folds[0], cfg=cfg, model_cfg=params.model,
                   frontend_cfg=params.frontend, table=table, classes=classes, clip_store=store,
                   window_mixes=background_mixes(cfg, windows), extra=extra, group=group,
                   device=device)
    if not group.main:
        train_folds(base, folds, setup, out_dir, None, False)
        return {}
    environment = {**numerical_environment(device, cfg), "processes": str(group.world)}
    run_params = {name: cfg.model_dump(), "model": params.model.model_dump(),
                  "frontend": params.frontend.model_dump(), **(logged or {})}
    with tracking.stage_run(stage, run_params, params.tracking.experiment, inputs=inputs,
                            upstream=upstream) as run:
        run.set_tags({f"env.{k}": v for k, v in environment.items()})
        with atomic_path(out_dir) as tmp_models:
            tmp_models.mkdir()
            results = train_folds(base, folds, setup, tmp_models, run, params.tracking.log_models)
            metrics, oof, per_class = summarise(results, table, classes)
            metrics["state_sha256"] = {f"fold{r.fold}": r.state_sha256 for r in results}
            metrics["environment"] = environment
            write_parquet(tmp_models / "oof.parquet", oof)
        # Resume states are kept until every fold is done: a finished fold is not trained again
        # when an interrupted stage reruns; they go once the stage's outputs are complete.
        shutil.rmtree(paths.RESUME / name, ignore_errors=True)
        write_reports(name, metrics, results, per_class, run, dvc_metrics)
    log.info("%s: %s", stage, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                         if isinstance(v, float)))
    return metrics


def write_reports(name: str, metrics: dict[str, Any], results: list[FoldResult],
                  per_class: pd.DataFrame, run: Any, dvc_metrics: bool) -> None:
    headline = {k: metrics[k] for k in HEADLINE}
    if dvc_metrics:
        write_json(paths.metrics(name), headline)
    write_json(paths.details(name), metrics)
    write_csv(paths.report(f"{name}_curves.csv"), curves(results))
    write_csv(paths.report(f"{name}_per_class_auc.csv"), per_class)
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float | int)})
    run.log_headline({f"{name}.{k}": v for k, v in headline.items()})
    run.log_artifact(paths.report(f"{name}_per_class_auc.csv"), "reports")
