"""The exported student ensemble as a registered MLflow model (MLflow 3: a pyfunc version with the
alias `current`), traceable to its export run and its pseudo-label set."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from birdclef.config import FrontendConfig
from birdclef.tracking import StageRun
from birdclef.windows import window_samples


class StudentEnsemble(mlflow.pyfunc.PythonModel):
    """(n, window samples) float32 audio windows -> (n, classes) fold-mean probabilities, through
    the same OnnxEnsemble as `birdclef predict`."""

    def load_context(self, context: Any) -> None:
        from birdclef.inference import OnnxEnsemble

        self.ensemble = OnnxEnsemble(Path(context.artifacts["onnx"]))

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        from scipy.special import expit

        windows = np.asarray(model_input, dtype=np.float32)
        return expit(self.ensemble.logits(windows, 48)).mean(axis=0)

    # a real object, not a postponed string: MLflow then skips type-hint validation quietly
    predict.__annotations__ = {"model_input": np.ndarray}


def signature(manifest: Mapping[str, Any]) -> ModelSignature:
    samples = window_samples(FrontendConfig(**manifest["frontend_cfg"]))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, samples))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(manifest["classes"])))]),
    )


def register_ensemble(
    run: StageRun,
    onnx_dir: Path,
    name: str = "birdclef-student-ensemble",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log the exported ensemble as an MLflow pyfunc model and register a new version of `name`.

    The birdclef package travels with the model (code_paths), so it loads outside this repository.
    The version is tagged with `tags` and the stage's lineage and gets the alias `current`
    (MLflow reserves `latest`).
    """
    manifest = json.loads((Path(onnx_dir) / "manifest.json").read_text())
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    # its CloudPickle notice concerns loading models from untrusted sources: this one is our own
    pyfunc_log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # MLflow asks for an input example to check the signature; the signature is explicit and
        # an example would be a 160,000-sample window stored as JSON.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="student_ensemble",
            python_model=StudentEnsemble(),
            artifacts={"onnx": str(onnx_dir)},
            code_paths=[str(Path(__file__).resolve().parent)],
            signature=signature(manifest),
            registered_model_name=name,
            pip_requirements=["onnxruntime", "torch", "torchaudio", "numpy", "scipy", "pydantic",
                              "pyyaml"],
        )
    pyfunc_log.setLevel(level)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {**run.tags, **(tags or {}), "birdclef.export_run_id": run.run_id}.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, "current", version)
    return version
