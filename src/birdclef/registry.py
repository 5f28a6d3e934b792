"""The exported student ensemble as a registered MLflow model (MLflow 3: a pyfunc version with the
alias `current`), traceable to its export run and its pseudo-label set.

The model takes (n, window samples) float32 audio windows (160,000 = 5 s at 32 kHz) and returns one
probability column per class, named after it: the fold reduction and the batch size of the predict
path, read from the ONNX manifest that export writes. Its requirements are the pinned versions, from
requirements.lock, of the packages its code imports.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from birdclef.config import FrontendConfig
from birdclef.windows import window_samples

if TYPE_CHECKING:  # not imported at run time: the model's code needs no tracking (nor pandas io)
    from birdclef.tracking import StageRun

# The distributions the model's code imports (registry, inference, frontend, config, windows,
# postprocess); tests/test_export_predict.py checks the list against the imports. openvino: the
# optional engine of inference.py (the model itself runs ONNX Runtime).
MODEL_PACKAGES = ("mlflow", "numpy", "onnxruntime", "openvino", "pandas", "pydantic", "PyYAML", "scipy",
                  "threadpoolctl", "torch", "torchaudio")
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(packages: Sequence[str] = MODEL_PACKAGES, lock: Path = LOCK_FILE) -> list[str]:
    """`name==version` of each package, as requirements.lock pins it."""
    if not lock.is_file():
        raise FileNotFoundError(f"{lock}: not found; the registered model's requirements come from it")
    pins = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.split("#")[0].split(";")[0].strip().partition("==")
        if sep:
            pins[canonical(name)] = f"{name.strip()}=={version.strip()}"
    missing = [p for p in packages if canonical(p) not in pins]
    if missing:
        raise ValueError(f"{lock} pins no version of {missing}")
    return [pins[canonical(p)] for p in packages]


class StudentEnsemble(mlflow.pyfunc.PythonModel):
    """(n, window samples) float32 audio windows -> (n, classes) probabilities, through the same
    OnnxEnsemble and fold reduction as `birdclef predict` (no smoothing: windows are independent)."""

    def load_context(self, context: Any) -> None:
        from birdclef.inference import OnnxEnsemble

        self.ensemble = OnnxEnsemble(Path(context.artifacts["onnx"]))
        self.batch = int(self.ensemble.manifest["batch_windows"])
        self.reduction = str(self.ensemble.manifest["reduction"])

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> pd.DataFrame:
        from birdclef.postprocess import reduce_folds

        windows = np.asarray(model_input, dtype=np.float32)
        cfg = self.ensemble.frontend_cfg
        samples = window_samples(cfg)
        if windows.ndim != 2 or windows.shape[1] != samples:
            raise ValueError(f"expected audio windows of shape (n, {samples}) (float32, "
                             f"{cfg.window_seconds:g} s at {cfg.sample_rate} Hz each), got shape "
                             f"{windows.shape}")
        probs = reduce_folds(self.ensemble.logits(windows, self.batch), self.reduction)
        return pd.DataFrame(probs.astype(np.float32), columns=self.ensemble.classes)

    # a real object, not a postponed string: MLflow then skips type-hint validation quietly
    predict.__annotations__ = {"model_input": np.ndarray, "return": pd.DataFrame}


def signature(manifest: Mapping[str, Any]) -> ModelSignature:
    """Input: (n, window samples) float32; output: one float column per class, named after it."""
    samples = window_samples(FrontendConfig(**manifest["frontend_cfg"]))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, samples))]),
        outputs=Schema([ColSpec("float", str(c)) for c in manifest["classes"]]),
    )


def input_example(manifest: Mapping[str, Any]) -> np.ndarray:
    """One silent window: the signature fixes the window length, so the example is a whole one
    (zeros keep its JSON small: about 0.8 MB)."""
    return np.zeros((1, window_samples(FrontendConfig(**manifest["frontend_cfg"]))), np.float32)


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
    info = mlflow.pyfunc.log_model(
        name="student_ensemble",
        python_model=StudentEnsemble(),
        artifacts={"onnx": str(onnx_dir)},
        code_paths=[str(Path(__file__).resolve().parent)],
        signature=signature(manifest),
        input_example=input_example(manifest),
        registered_model_name=name,
        pip_requirements=pinned_requirements(),
    )
    pyfunc_log.setLevel(level)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {**run.tags, **(tags or {}), "birdclef.export_run_id": run.run_id}.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, "current", version)
    return version
