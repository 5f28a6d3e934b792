"""evaluate_teacher: the teacher ensemble on the labelled soundscapes, through predict's own path
(decode, windows, mel once, every fold, post-processing) with the PyTorch engine.

A stage of its own so that every student arm of one corpus reuses it (DVC's run cache).
Outputs: data/evaluation/teacher.parquet (per-fold logits of every window), data/evaluation/truth.parquet
(the labels of the same windows), reports/details/evaluate_teacher.json.
Without labelled soundscapes (`sources.eval_soundscapes: null`, as on the real data) there is
nothing to score: the tables are written empty and the details say why (`available: false`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.device import resolve_device, set_threads
from birdclef.evaluation import (
    RESAMPLE_SEED,
    align,
    block_resamples,
    eval_folder,
    positives_per_class,
    read_labelled_soundscapes,
    score_model_set,
    score_ensemble,
)
from birdclef.inference import TorchEnsemble
from birdclef.io import write_json, write_parquet

log = logging.getLogger(__name__)


def write_not_available(reason: str, run: tracking.StageRun) -> None:
    """Empty tables (DVC outputs must exist) and details that say why nothing was scored."""
    write_parquet(paths.scores("teacher"), pd.DataFrame(columns=["row_id", "block", "fold"]))
    write_parquet(paths.scores("truth"), pd.DataFrame(columns=["row_id", "block"]))
    write_json(paths.details("evaluate_teacher"), {"available": False, "reason": reason})
    run.set_tags({"evaluation": f"not available: {reason}"})
    log.warning("evaluate_teacher: not available: %s", reason)


def main(params: Params) -> None:
    set_threads(0)
    with tracking.stage_run(
        "evaluate_teacher", {"postprocess": params.postprocess.model_dump(),
                             "eval_soundscapes": params.sources.eval_soundscapes},
        params.tracking.experiment, inputs=[str(paths.TEACHER), params.sources.root],
        upstream=["train_teacher"],
    ) as run:
        try:
            eval_folder(params)
        except FileNotFoundError as exc:  # sources.eval_soundscapes is null
            write_not_available(str(exc), run)
            return
        ensemble = TorchEnsemble(paths.TEACHER, resolve_device(params.pseudo_label.device))
        scores = score_ensemble(ensemble, params, "teacher")
        _, solution = read_labelled_soundscapes(eval_folder(params))
        truth = align(solution, scores.row_ids, scores.classes)
        truth_table = pd.DataFrame(truth.astype(np.int8), columns=scores.classes)
        truth_table.insert(0, "block", scores.blocks)
        truth_table.insert(0, "row_id", scores.row_ids)
        write_parquet(paths.scores("truth"), truth_table)
        resamples = block_resamples(scores.blocks, params.evaluate.bootstrap, RESAMPLE_SEED)
        result, _ = score_model_set(scores, truth, params.postprocess, resamples)
        metrics = {"available": True, "teacher": result, "windows": len(scores.row_ids),
                   "soundscapes": int(len(set(scores.soundscapes))),
                   "positives_per_class": positives_per_class(truth, scores.classes)}
        write_json(paths.details("evaluate_teacher"), metrics)
        run.log_metrics({f"teacher.{k}": v for k, v in result.items()})
    log.info("evaluate_teacher: ensemble %.4f smoothed (SE %.4f), folds %.4f +- %.4f",
             result["ensemble_smoothed"], result["ensemble_smoothed_se"], result["fold_mean"],
             result["fold_std"])
