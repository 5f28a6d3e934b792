"""pseudo_label: every teacher fold predicts every 5-s window of every unlabelled soundscape (SPEC 5).

Output `data/pseudo_labels/pseudo_labels.parquet`, one row per (soundscape, window, fold):
    soundscape_id, window (0-based), start_second, fold, then one probability column per class
No ensembling and no post-processing here (SPEC 5): each fold's sigmoid is stored. The mel image of a
window batch is computed once and fed to every fold model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from tqdm import tqdm

from birdclef import tracking
from birdclef.audio import frame_windows
from birdclef.config import Params
from birdclef.engine import resolve_device, set_threads
from birdclef.io import sha256_file, write_csv, write_json, write_parquet
from birdclef.inference import TorchEnsemble
from birdclef.stages.preprocess import SOUNDSCAPES
from birdclef.store import AudioStore

OUT = Path("data/pseudo_labels/pseudo_labels.parquet")
METRICS = Path("metrics/pseudo_label.json")
HISTOGRAM = Path("reports/pseudo_label_max_prob.csv")


def label_soundscapes(store: AudioStore, ensemble: TorchEnsemble, batch: int) -> pd.DataFrame:
    frontend_cfg, folds, classes = ensemble.frontend_cfg, ensemble.folds, ensemble.classes
    window = int(round(frontend_cfg.window_seconds * frontend_cfg.sample_rate))
    frames = []
    for row in tqdm(store.index.itertuples(), total=len(store.index), desc="pseudo-label"):
        audio = store.read(row.shard, row.offset, row.length)
        windows = frame_windows(audio, window, frontend_cfg.sample_rate)
        probs = expit(ensemble.logits(windows, batch))
        n = len(windows)
        for fold, fold_probs in zip(folds, probs):
            frame = pd.DataFrame(fold_probs.astype(np.float32), columns=classes)
            frame.insert(0, "fold", np.int16(fold))
            frame.insert(0, "start_second", (np.arange(n) * frontend_cfg.window_seconds).astype(np.float32))
            frame.insert(0, "window", np.arange(n, dtype=np.int32))
            frame.insert(0, "soundscape_id", row.soundscape_id)
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["soundscape_id", "fold", "window"], kind="stable", ignore_index=True)


def summary(table: pd.DataFrame, classes: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    probs = table[classes].to_numpy()
    max_prob = probs.max(axis=1)
    metrics: dict[str, Any] = {
        "rows": int(len(table)),
        "soundscapes": int(table["soundscape_id"].nunique()),
        "folds": sorted(int(f) for f in table["fold"].unique()),
        "mean_max_prob": float(max_prob.mean()),
        "mean_prob": float(probs.mean()),
        "per_class_mean": {c: float(v) for c, v in zip(classes, probs.mean(axis=0))},
    }
    counts, edges = np.histogram(max_prob, bins=20, range=(0.0, 1.0))
    histogram = pd.DataFrame({"max_prob": np.round(edges[:-1] + 0.025, 3), "windows": counts})
    return metrics, histogram


def main(params: Params) -> None:
    device = resolve_device(params.pseudo_label.device)
    set_threads(0)
    with tracking.stage_run(
        "pseudo_label", {"pseudo_label": params.pseudo_label.model_dump()},
        params.tracking.experiment, inputs=["models/teacher", str(SOUNDSCAPES)],
        upstream=["train_teacher"],
    ) as run:
        ensemble = TorchEnsemble(Path("models/teacher"), device)
        table = label_soundscapes(AudioStore(SOUNDSCAPES), ensemble, params.pseudo_label.batch_size)
        write_parquet(OUT, table)
        metrics, histogram = summary(table, ensemble.classes)
        metrics["sha256"] = sha256_file(OUT)
        write_json(METRICS, metrics)
        write_csv(HISTOGRAM, histogram)
        teacher_runs = {
            f"teacher.fold{f}.run_id": m["extra"]["run_id"]
            for f, m in zip(ensemble.folds, ensemble.metas)
        }
        run.log_params({"pseudo_labels.sha256": metrics["sha256"], **teacher_runs})
        run.log_metrics({"mean_max_prob": metrics["mean_max_prob"], "rows": metrics["rows"]})
        run.log_artifact(HISTOGRAM, "reports")
        if params.tracking.log_models:
            run.log_artifact(OUT, "pseudo_labels")
    print(f"pseudo_label: {metrics['rows']} rows, sha256 {metrics['sha256'][:16]}..., "
          f"mean max prob {metrics['mean_max_prob']:.3f}")
