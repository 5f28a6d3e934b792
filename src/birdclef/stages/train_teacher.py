"""train_teacher: k-fold teachers on the labelled clips (SPEC 4), optionally with soundscape
background mixing (`teacher.soundscape_mix`)."""

from __future__ import annotations

from birdclef import paths
from birdclef.config import Params
from birdclef.distributed import launch
from birdclef.training import run_training


def main(params: Params) -> None:
    launch(params.teacher.device, params.teacher.ddp_processes)
    run_training(
        "teacher", params.teacher, params, paths.TEACHER, stage="train_teacher",
        inputs=[str(paths.TRAIN), str(paths.CLASSES), str(paths.CLIPS), str(paths.SOUNDSCAPES)],
        upstream=["sample", "preprocess"],
    )
