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
from birdclef.config import Params
from birdclef.io import atomic_path, sha256_file, write_csv, write_json

log = logging.getLogger(__name__)

INACTIVE = "inactive.json"


def name(round_: int) -> str:
    return f"student_round{round_}"


def write_inactive(round_: int) -> None:
    """The outputs of a round beyond pseudo_label.rounds: no models, empty reports."""
    with atomic_path(paths.students(round_)) as tmp:
        tmp.mkdir()
        write_json(tmp / INACTIVE, {"round": round_, "active": False})
    write_json(paths.details(name(round_)), {"round": round_, "active": False})
    write_csv(paths.report(f"{name(round_)}_curves.csv"),
              pd.DataFrame(columns=["fold", "epoch", "train_loss", "valid_auc", "lr", "samples_per_s"]))
    write_csv(paths.report(f"{name(round_)}_per_class_auc.csv"), pd.DataFrame(columns=["species", "auc"]))
    tracking.write_inactive_run_file(f"train_student_round{round_}")
    log.info("train_student round %d: inactive (its pseudo-label table is empty)", round_)


def train_round(params: Params, round_: int, table: pd.DataFrame) -> None:
    # torch-heavy modules are imported here: an inactive round finishes in a second without them
    from birdclef.distributed import launch
    from birdclef.engine import FoldJob
    from birdclef.pseudo_labels import pseudo_label_setup, student_targets
    from birdclef.training import run_training, soundscape_windows

    cfg, pl_cfg = params.student, params.student.pseudo_labels
    launch(cfg.device, cfg.ddp_processes)
    classes = json.loads(paths.CLASSES.read_text())
    windows = soundscape_windows(params)
    targets = student_targets(table, classes, windows.keys, pl_cfg)
    pl_setup = pseudo_label_setup(pl_cfg, windows, targets, cfg.seed)
    labeller = paths.labeller(round_)

    def setup(job: FoldJob) -> FoldJob:
        if cfg.init == "labeller":
            job = replace(job, init_checkpoint=labeller / f"fold{job.fold}.pt")
        return pl_setup(job) if pl_cfg.enabled else job

    run_training(
        name(round_), cfg, params, paths.students(round_), stage=f"train_student_round{round_}",
        inputs=[str(paths.TRAIN), str(paths.CLASSES), str(paths.CLIPS), str(paths.SOUNDSCAPES),
                str(paths.pseudo_labels(round_)), str(labeller)],
        upstream=["sample", f"pseudo_label_round{round_}"], setup=setup,
        extra={"round": round_, "pseudo_labels_sha256": sha256_file(paths.pseudo_labels(round_))},
        logged={"round": round_},
        dvc_metrics=False,  # a comparison of experiments reads the soundscape scores (evaluate)
    )


def main(params: Params, round_: int = 1) -> None:
    table = pd.read_parquet(paths.pseudo_labels(round_))
    if table.empty:
        write_inactive(round_)
    else:
        train_round(params, round_, table)
