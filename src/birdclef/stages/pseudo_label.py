"""pseudo_label (one stage per round): the round's labeller models predict every 5-s window of every
unlabelled soundscape (SPEC 5). Round 1's labellers are the teachers, round r's the students of round
r-1. A round beyond `pseudo_label.rounds` writes an empty table, which leaves its students untrained.

Outputs: data/pseudo_labels/round{r}.parquet (one row per soundscape, window and fold:
soundscape_id, window, start_second, fold, then one probability column per class; no ensembling and
no post-processing, SPEC 5),
reports/details/pseudo_label_round{r}.json (with the table's sha256), reports/pseudo_label_round{r}_max_prob.csv.
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import expit

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.distributed import SINGLE, Group, barrier
from birdclef.io import progress, sha256_file, write_csv, write_json, write_parquet
from birdclef.store import AudioStore
from birdclef.windows import frame_windows, window_samples

if TYPE_CHECKING:
    from birdclef.inference import Ensemble

log = logging.getLogger(__name__)


def name(round_: int) -> str:
    return f"pseudo_label_round{round_}"


def label_soundscapes(
    store: AudioStore, ensemble: Ensemble, batch: int, group: Group = SINGLE
) -> pd.DataFrame:
    """Every fold of `ensemble` on every window of this process's share of the soundscapes (all of
    them for one process; every `world`-th from `rank` in id order under DDP)."""
    cfg, folds, classes = ensemble.frontend_cfg, ensemble.folds, ensemble.classes
    window = window_samples(cfg)
    frames = []
    index = store.index.sort_values("soundscape_id", kind="stable").iloc[group.rank :: group.world]
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


def write_inactive(params: Params, round_: int) -> None:
    classes = json.loads(paths.CLASSES.read_text())
    out = paths.pseudo_labels(round_)
    write_parquet(out, empty_table(classes))
    metrics, histogram = summary(empty_table(classes), classes)
    metrics.update({"round": round_, "active": False, "sha256": sha256_file(out)})
    write_json(paths.details(name(round_)), metrics)
    write_csv(paths.report(f"{name(round_)}_max_prob.csv"), histogram)
    tracking.write_inactive_run_file(name(round_))
    log.info("%s: inactive (pseudo_label.rounds is %d)", name(round_), params.pseudo_label.rounds)


def merge_shares(table: pd.DataFrame, group: Group, round_: int) -> pd.DataFrame | None:
    """Under DDP: every process leaves its share in .resume/; rank 0 returns them merged in the
    table's order (identical to one process's table), the others None."""
    if not group.distributed:
        return table
    folder = paths.RESUME / name(round_)
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(folder / f"share{group.rank}.parquet", table)
    barrier(group)
    if not group.main:
        return None
    shares = [pd.read_parquet(folder / f"share{r}.parquet") for r in range(group.world)]
    shutil.rmtree(folder)
    merged = pd.concat([t for t in shares if not t.empty] or shares[:1], ignore_index=True)
    return merged.sort_values(["soundscape_id", "fold", "window"], kind="stable", ignore_index=True)


def main(params: Params, round_: int = 1) -> None:
    cfg = params.pseudo_label
    if round_ > cfg.rounds:
        write_inactive(params, round_)
        return
    # torch-heavy modules are imported here: an inactive round finishes in a second without them
    from birdclef.device import set_threads
    from birdclef.distributed import join, launch
    from birdclef.inference import TorchEnsemble

    launch(cfg.device, cfg.ddp_processes)
    group, device = join(cfg.device)
    set_threads(cfg.threads)
    labeller = paths.labeller(round_)
    ensemble = TorchEnsemble(labeller, device)
    table = merge_shares(label_soundscapes(AudioStore(paths.SOUNDSCAPES), ensemble,
                                           cfg.batch_size, group), group, round_)
    if table is not None:
        write_outputs(params, round_, table, ensemble)


def write_outputs(params: Params, round_: int, table: pd.DataFrame, ensemble: Ensemble) -> None:
    out = paths.pseudo_labels(round_)
    with tracking.stage_run(
        name(round_), {"pseudo_label": params.pseudo_label.model_dump(), "round": round_},
        params.tracking.experiment, inputs=[str(paths.labeller(round_)), str(paths.SOUNDSCAPES)],
        upstream=["train_teacher" if round_ == 1 else f"train_student_round{round_ - 1}"],
    ) as run:
        write_parquet(out, table)
        metrics, histogram = summary(table, ensemble.classes)
        metrics.update({"round": round_, "active": True, "sha256": sha256_file(out)})
        write_json(paths.details(name(round_)), metrics)
        write_csv(paths.report(f"{name(round_)}_max_prob.csv"), histogram)
        run.log_params({"pseudo_labels.sha256": metrics["sha256"],
                        **{f"labeller.fold{f}.state_sha256": m["extra"].get("state_sha256", "")
                           for f, m in zip(ensemble.folds, ensemble.metas)}})
        run.log_metrics({"mean_max_prob": metrics["mean_max_prob"], "rows": metrics["rows"]})
        run.log_artifact(paths.report(f"{name(round_)}_max_prob.csv"), "reports")
        if params.tracking.log_models:
            run.log_artifact(out, "pseudo_labels")
    log.info("%s: %d rows, sha256 %s..., mean max prob %.3f", name(round_), metrics["rows"],
             metrics["sha256"][:16], metrics["mean_max_prob"])
