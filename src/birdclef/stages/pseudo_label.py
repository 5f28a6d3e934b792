"""pseudo_label (one stage per round): the round's labeller models predict every 5-s window of every
unlabelled soundscape (SPEC 5). Round 1's labellers are the teachers, round r's the students of round
r-1. A round beyond `pseudo_label.rounds` writes an empty table, which leaves its students untrained.

Outputs: data/pseudo_labels/round{r}.parquet (schema in birdclef.pseudo_labels),
metrics/pseudo_label_round{r}.json (with the table's sha256), reports/pseudo_label_round{r}_max_prob.csv.
"""

from __future__ import annotations

import json
import logging

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.engine import resolve_device, set_threads
from birdclef.inference import TorchEnsemble
from birdclef.io import sha256_file, write_csv, write_json, write_parquet
from birdclef.pseudo_labels import empty_table, label_soundscapes, summary
from birdclef.store import AudioStore

log = logging.getLogger(__name__)


def name(round_: int) -> str:
    return f"pseudo_label_round{round_}"


def main(params: Params, round_: int = 1) -> None:
    out, labeller = paths.pseudo_labels(round_), paths.labeller(round_)
    if round_ > params.pseudo_label.rounds:
        classes = json.loads(paths.CLASSES.read_text())
        write_parquet(out, empty_table(classes))
        metrics, histogram = summary(empty_table(classes), classes)
        metrics.update({"round": round_, "active": False, "sha256": sha256_file(out)})
        write_json(paths.metrics(name(round_)), metrics)
        write_csv(paths.report(f"{name(round_)}_max_prob.csv"), histogram)
        tracking.write_inactive_run_file(name(round_))
        log.info("%s: inactive (pseudo_label.rounds is %d)", name(round_), params.pseudo_label.rounds)
        return
    with tracking.stage_run(
        name(round_), {"pseudo_label": params.pseudo_label.model_dump(), "round": round_},
        params.tracking.experiment, inputs=[str(labeller), str(paths.SOUNDSCAPES)],
        upstream=["train_teacher" if round_ == 1 else f"train_student_round{round_ - 1}"],
    ) as run:
        set_threads(0)
        ensemble = TorchEnsemble(labeller, resolve_device(params.pseudo_label.device))
        table = label_soundscapes(AudioStore(paths.SOUNDSCAPES), ensemble,
                                  params.pseudo_label.batch_size)
        write_parquet(out, table)
        metrics, histogram = summary(table, ensemble.classes)
        metrics.update({"round": round_, "active": True, "sha256": sha256_file(out)})
        write_json(paths.metrics(name(round_)), metrics)
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
