"""make_sample: generate the embedded sample corpus in the Kaggle layouts (DESIGN 5)."""

from __future__ import annotations

import logging

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.io import write_json
from birdclef.synth import make_sample_corpus

log = logging.getLogger(__name__)
DETAILS = paths.details("make_sample")


def main(params: Params) -> None:
    with tracking.stage_run(
        "make_sample", {"make_sample": params.make_sample.model_dump()}, params.tracking.experiment
    ) as run:
        summary = make_sample_corpus(params.make_sample)
        numbers = {k: v for k, v in summary.items() if isinstance(v, int | float)}
        write_json(DETAILS, numbers)
        run.log_metrics(numbers)
    log.info("make_sample: %s species, %s unlabelled and %s labelled soundscapes, %.0f s of audio "
             "in %.0f s -> %s", summary["n_species"], summary["unlabeled_soundscapes"],
             summary["labelled_soundscapes"], summary["audio_seconds"], summary["seconds_taken"],
             summary["out_dir"])
