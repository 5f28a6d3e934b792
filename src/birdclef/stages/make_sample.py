"""make_sample: generate the embedded sample corpus in the Kaggle layouts (DESIGN 5).

Only where the corpus is the data read (`sources.root` is `make_sample.out_dir`). On real data it
generates nothing: the stage's output folder holds one placeholder file that says why, and its
details file says `generated: false`; preprocess then does not depend on it (its input is
sources.root, not this folder).
"""

from __future__ import annotations

import logging
from pathlib import Path

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.io import atomic_path, write_json
from birdclef.synth import make_sample_corpus

log = logging.getLogger(__name__)
DETAILS = paths.details("make_sample")
PLACEHOLDER = "NOT_GENERATED.txt"


def write_placeholder(out_dir: Path, reason: str) -> None:
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / PLACEHOLDER).write_text(reason + "\n")


def main(params: Params) -> None:
    logged = {"make_sample": params.make_sample.model_dump(), "sources": {"root": params.sources.root}}
    with tracking.stage_run("make_sample", logged, params.tracking.experiment) as run:
        if not params.sources.is_root(params.make_sample.out_dir):
            reason = (f"not generated: sources.root is {params.sources.root}, not "
                      f"make_sample.out_dir ({params.make_sample.out_dir}), so no stage reads a "
                      "sample corpus")
            write_placeholder(Path(params.make_sample.out_dir), reason)
            write_json(DETAILS, {"generated": False, "reason": reason})
            run.log_metrics({"generated": 0})
            log.info("make_sample: %s", reason)
            return
        summary = make_sample_corpus(params.make_sample)
        numbers = {k: v for k, v in summary.items() if isinstance(v, int | float)}
        write_json(DETAILS, {"generated": True, **numbers})
        run.log_metrics({"generated": 1, **numbers})
    log.info("make_sample: %s species, %s unlabelled and %s labelled soundscapes, %.0f s of audio "
             "in %.0f s -> %s", summary["n_species"], summary["unlabeled_soundscapes"],
             summary["labelled_soundscapes"], summary["audio_seconds"], summary["seconds_taken"],
             summary["out_dir"])
