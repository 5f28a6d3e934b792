"""train_student (one stage per round): students on labelled clips plus pseudo-labelled soundscape
windows (SPEC 6), as extra batch items (SPEC 6.3) or mixed into the clips (Noisy Student).

Round r reads data/pseudo_labels/round{r}.parquet and writes models/student/round{r}/. When that
table is empty (a round beyond `pseudo_label.rounds`), the folder holds only `inactive.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pandas as pd

from birdclef import paths, tracking
from birdclef.config import Params, PseudoLabelStreamConfig
from birdclef.data import (
    PSEUDO_MIX_KEY,
    PseudoLabelDataset,
    PseudoLabelStream,
    SoundscapeWindows,
    WindowMix,
)
from birdclef.engine import FoldJob
from birdclef.io import atomic_path, sha256_file, write_csv, write_json
from birdclef.pseudo_labels import confidence_weights, student_targets
from birdclef.training import run_training, soundscape_windows

log = logging.getLogger(__name__)

INACTIVE = "inactive.json"


def name(round_: int) -> str:
    return f"student_round{round_}"


def pseudo_label_setup(
    cfg: PseudoLabelStreamConfig, windows: SoundscapeWindows, targets: dict[int, object],
    seed: int,
):
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
                                   seed + job.fold, cfg.restart)
        return replace(job, pseudo_labels=stream)

    return setup


def write_inactive(round_: int) -> None:
    """The outputs of a round beyond pseudo_label.rounds: no models, empty reports."""
    with atomic_path(paths.students(round_)) as tmp:
        tmp.mkdir()
        write_json(tmp / INACTIVE, {"round": round_, "active": False})
    write_json(paths.metrics(name(round_)), {"round": round_, "active": False})
    write_csv(paths.report(f"{name(round_)}_curves.csv"),
              pd.DataFrame(columns=["fold", "epoch", "train_loss", "valid_auc", "lr", "samples_per_s"]))
    write_csv(paths.report(f"{name(round_)}_per_class_auc.csv"), pd.DataFrame(columns=["species", "auc"]))
    tracking.write_inactive_run_file(f"train_student_round{round_}")
    log.info("train_student round %d: inactive (its pseudo-label table is empty)", round_)


def main(params: Params, round_: int = 1) -> None:
    cfg, pl_cfg = params.student, params.student.pseudo_labels
    table = pd.read_parquet(paths.pseudo_labels(round_))
    out = paths.students(round_)
    if table.empty:
        write_inactive(round_)
        return
    classes = json.loads(paths.CLASSES.read_text())
    windows = soundscape_windows(params)
    targets = student_targets(table, classes, windows.keys, pl_cfg)
    pl_setup = pseudo_label_setup(pl_cfg, windows, targets, cfg.seed)
    labeller = paths.labeller(round_)

    def setup(job: FoldJob) -> FoldJob:
        if cfg.init == "labeller":
            job = replace(job, init_checkpoint=labeller / f"fold{job.fold}.pt")
        return pl_setup(job) if pl_cfg.enabled else job

    pl_hash = sha256_file(paths.pseudo_labels(round_))
    run_training(
        name(round_), cfg, params, out, stage=f"train_student_round{round_}",
        inputs=[str(paths.TRAIN), str(paths.CLIPS), str(paths.SOUNDSCAPES),
                str(paths.pseudo_labels(round_))],
        upstream=["sample", f"pseudo_label_round{round_}"], setup=setup,
        extra={"round": round_, "pseudo_labels_sha256": pl_hash},
        logged={"round": round_},
    )
