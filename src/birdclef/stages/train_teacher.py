"""train_teacher: k-fold teachers on the labelled clips (SPEC 4)."""

from __future__ import annotations

from birdclef.config import Params
from birdclef.stages.train import run_training


def main(params: Params) -> None:
    run_training("teacher", params.teacher, params, upstream=["sample"], streams=lambda fold: None)
