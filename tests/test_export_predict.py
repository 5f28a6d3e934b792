"""ONNX export parity and `predict` on odd real files, with tiny random-weight students."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.audio import AudioDecodeError
from birdclef.config import load_params
from birdclef.model import build_model, save_checkpoint
from birdclef.stages import export
from birdclef.stages.predict import predict_folder
from tests.conftest import REPO, tone, write_audio

CLASSES = ["aaa", "bbb", "ccc"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("export")
    params = load_params(REPO / "profiles" / "tiny.yaml")
    cwd = Path.cwd()
    import os

    os.chdir(work)
    try:
        for fold in (0, 1):
            model = build_model(params.model, params.frontend, len(CLASSES))
            save_checkpoint(Path("models/student") / f"fold{fold}.pt", model, model_cfg=params.model,
                            frontend_cfg=params.frontend, classes=CLASSES,
                            extra={"fold": fold, "role": "student"})
        export.main(params)
    finally:
        os.chdir(cwd)
    return work


def test_export_parity_and_manifest(exported: Path) -> None:
    metrics = json.loads((exported / "metrics/export.json").read_text())
    assert metrics["n_models"] == 2
    assert metrics["parity_max_abs_diff"] < 1e-3 and metrics["parity_auc_diff"] < 1e-3
    assert metrics["registered_version"] >= 1
    manifest = json.loads((exported / "models/onnx/manifest.json").read_text())
    assert manifest["classes"] == CLASSES and manifest["files"] == ["fold0.onnx", "fold1.onnx"]


@pytest.fixture
def odd_inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_audio(folder / "stereo44k.ogg", tone(37.0, sr=44100, channels=2), sr=44100)
    write_audio(folder / "short.wav", tone(3.0))
    write_audio(folder / "full.ogg", tone(240.0))
    (folder / "broken.mp3").write_bytes(b"ID3" + bytes(500))
    return folder


def test_predict_odd_inputs(exported: Path, odd_inputs: Path, tmp_path: Path) -> None:
    params = load_params(REPO / "profiles" / "tiny.yaml")
    out = tmp_path / "submission.csv"
    summary = predict_folder(odd_inputs, exported / "models/onnx", out, params, workers=2)
    table = pd.read_csv(out)
    assert list(table.columns) == ["row_id", *CLASSES]
    counts = table["row_id"].str.rsplit("_", n=1).str[0].value_counts().to_dict()
    assert counts == {"full": 48, "stereo44k": 8, "short": 1}
    stereo = table[table["row_id"].str.startswith("stereo44k_")]["row_id"].tolist()
    assert stereo == [f"stereo44k_{s}" for s in range(5, 45, 5)]
    values = table[CLASSES].to_numpy()
    assert np.all((values >= 0) & (values <= 1))
    assert len(summary["skipped"]) == 1 and "broken.mp3" in summary["skipped"][0]
    assert "broken.mp3" in (tmp_path / "submission.csv.errors.txt").read_text()
    again = tmp_path / "again.csv"
    predict_folder(odd_inputs, exported / "models/onnx", again, params, workers=1)
    assert again.read_bytes() == out.read_bytes()
    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        predict_folder(odd_inputs, exported / "models/onnx", tmp_path / "x.csv", params,
                       on_error="fail")
