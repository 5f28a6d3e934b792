"""ONNX export parity, the registered MLflow model, and `predict` on odd real files, with two tiny
random-weight efficientvit_b0 students (5 classes) in a temporary working directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from scipy.special import expit

from birdclef import benchmark, tracking
from birdclef.audio import AudioDecodeError
from birdclef.cli import main as cli_main
from birdclef.config import Params, load_params
from birdclef.inference import OnnxEnsemble, TorchEnsemble, fixed_windows
from birdclef.model import build_model, load_checkpoint, save_checkpoint
from birdclef.stages import export
from birdclef.prediction import predict_folder
from birdclef.windows import frame_windows, window_samples
from tests.conftest import REPO, tone, write_audio

pytestmark = pytest.mark.slow  # exports real ONNX models

CLASSES = ["aaa", "bbb", "ccc", "ddd", "eee"]
PL_SHA = "0123abcd"


def tiny_params() -> Params:
    params = load_params(REPO / "params.yaml")
    return params.model_copy(update={
        "model": params.model.model_copy(
            update={"backbone": "efficientvit_b0", "pretrained": False, "pretrained_path": None}),
        "tracking": params.tracking.model_copy(update={"experiment": "test-export"}),
        "export": params.export.model_copy(update={"bench_seconds": 5.0}),
    })


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory with models/student/round1/fold{0,1}.pt, exported once for the module."""
    work = tmp_path_factory.mktemp("export")
    params = tiny_params()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("DVC_ROOT", raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        for fold in (0, 1):
            torch.manual_seed(fold)
            model = build_model(params.model, params.frontend, len(CLASSES), pretrained=False)
            save_checkpoint(Path("models/student/round1") / f"fold{fold}.pt", model,
                            model_cfg=params.model, frontend_cfg=params.frontend, classes=CLASSES,
                            extra={"fold": fold, "role": "student", "pseudo_labels_sha256": PL_SHA})
        export.main(params)
        yield work


def test_export_manifest_metrics_and_parity(workdir: Path) -> None:
    metrics = json.loads((workdir / "reports/details/export.json").read_text())
    assert metrics["n_models"] == 2 and metrics["opset"] == 18 and metrics["fused"] is True
    # the graphs on the same images (checked); end to end each side with its own mel (reported)
    assert metrics["parity_max_abs_diff"] < 1e-4 and metrics["parity_auc_diff"] < 1e-3
    assert 0 < metrics["end_to_end_max_abs_diff"] < 1e-2
    assert metrics["onnx_windows_per_s"] > 0 and metrics["torch_windows_per_s"] > 0
    assert metrics["fused_vs_separate_max_abs_diff"] < 1e-5 and metrics["separate_windows_per_s"] > 0
    # every engine priced; no labelled soundscapes in this folder, so no AUC difference
    engines = metrics["engines"]
    assert engines["labelled_windows"] == 0
    for name in ("onnxruntime/fp32", "openvino/fp32"):
        assert engines[name]["windows_per_s"] > 0 and engines[name]["max_abs_logit_diff"] < 1e-3
    assert "windows_per_s" in engines["openvino/bf16"] or "skipped" in engines["openvino/bf16"]
    manifest = json.loads((workdir / "models/onnx/manifest.json").read_text())
    assert manifest["classes"] == CLASSES and manifest["folds"] == [0, 1]
    assert manifest["files"] == ["fold0.onnx", "fold1.onnx"] and manifest["fused"] == "ensemble.onnx"
    assert sorted(p.name for p in (workdir / "models/onnx").iterdir()) == [
        "ensemble.onnx", "fold0.onnx", "fold1.onnx", "manifest.json"]  # no external data files
    # independently of the stage: both engines on other fixed audio
    cfg = tiny_params().frontend
    windows = fixed_windows(6, window_samples(cfg), seed=3)
    onnx = OnnxEnsemble(workdir / "models/onnx", threads=1)
    eager = TorchEnsemble(workdir / "models/student/round1")
    got, ref = onnx.logits(windows, 4), eager.logits(windows, 4)
    assert got.shape == (2, 6, len(CLASSES))
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


def test_registered_model_version(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    # from another folder, through the tracking URI the README documents; nothing is created here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    tracking._mlflow()
    version = mlflow.MlflowClient().get_model_version_by_alias(export.REGISTERED_NAME, "current")
    assert int(version.version) == json.loads((workdir / "reports/details/export.json").read_text())[
        "registered_version"]
    assert version.tags["pseudo_labels.sha256"] == PL_SHA
    assert version.tags["birdclef.stage"] == "export"
    model = mlflow.pyfunc.load_model(f"models:/{export.REGISTERED_NAME}@current")
    samples = window_samples(tiny_params().frontend)
    windows = fixed_windows(3, samples, seed=5)
    expected = expit(OnnxEnsemble(workdir / "models/onnx").logits(windows, 48)).mean(0)
    np.testing.assert_allclose(model.predict(windows), expected, atol=1e-6)
    np.testing.assert_allclose(model.predict(pd.DataFrame(windows)), expected, atol=1e-6)
    assert list(model.predict(windows).columns) == CLASSES
    assert list(tmp_path.iterdir()) == []

    # signature: named class columns; an example; batch and reduction from the manifest
    assert model.metadata.signature.outputs.input_names() == CLASSES
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, samples)
    assert model.input_example.shape == (1, samples)
    python_model = model.unwrap_python_model()
    manifest = json.loads((workdir / "models/onnx/manifest.json").read_text())
    assert (python_model.batch, python_model.reduction) == (12, "mean_prob")
    assert (manifest["batch_windows"], manifest["reduction"]) == (12, "mean_prob")

    # the wrong shape: MLflow's schema check and the model's own both name the expected one
    for bad in (windows[:, :100], windows[0], windows[None]):
        with pytest.raises(Exception, match=rf"expected shape \(-1, {samples}\)"):
            model.predict(bad)
        with pytest.raises(ValueError, match=rf"expected audio windows of shape \(n, {samples}\)"):
            python_model.predict(None, bad)


def test_registered_requirements_are_pinned_and_cover_the_model_imports(workdir: Path) -> None:
    """requirements.txt holds requirements.lock's pins of every distribution the model's code
    imports when it is loaded and run in a fresh process."""
    import importlib.metadata
    import sys

    from birdclef.registry import canonical

    folder = next((workdir / "mlartifacts").glob("models/*/artifacts"))
    required = (folder / "requirements.txt").read_text().split()
    lock = {canonical(line.split("==")[0]): line for line in
            (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    assert all(lock[canonical(r.split("==")[0])] == r for r in required)
    script = ("import json, sys, mlflow, numpy as np\n"
              f"m = mlflow.pyfunc.load_model({str(folder)!r})\n"
              f"m.predict(np.zeros((1, {window_samples(tiny_params().frontend)}), np.float32))\n"
              "print(json.dumps([getattr(v, '__file__', None) for k, v in list(sys.modules.items())"
              " if k.startswith('birdclef')]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=workdir).stdout
    imported = {name for file in json.loads(out.splitlines()[-1]) if file
                for name in third_party_imports(Path(file))}
    pinned = {canonical(r.split("==")[0]) for r in required}
    distributions = importlib.metadata.packages_distributions()  # e.g. yaml -> PyYAML
    missing = [name for name in imported
               if not pinned & {canonical(d) for d in distributions[name]}]
    assert not missing and imported, (missing, imported)


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-standard-library, non-birdclef modules a file imports."""
    import ast
    import sys

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("birdclef", "__future__")}


def test_checkpoint_of_a_compiled_backbone_loads(tmp_path: Path) -> None:
    """The engine compiles `model.backbone`: its weights are saved under the plain names. Compiling
    is lazy, so wrapping without running is enough to give the `_orig_mod.` names."""
    params = tiny_params()
    model = build_model(params.model, params.frontend, len(CLASSES), pretrained=False)
    plain_keys = set(model.state_dict())
    model.backbone = torch.compile(model.backbone)
    assert any("_orig_mod." in k for k in model.state_dict())
    save_checkpoint(tmp_path / "fold0.pt", model, model_cfg=params.model,
                    frontend_cfg=params.frontend, classes=CLASSES, extra={"fold": 0})
    assert set(torch.load(tmp_path / "fold0.pt", weights_only=True)["state_dict"]) == plain_keys
    loaded, _ = load_checkpoint(tmp_path / "fold0.pt")
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key.replace("backbone.", "backbone._orig_mod.")])


def test_tracking_refuses_to_create_a_store_outside_a_dvc_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(tracking.StoreNotFoundError, match="not inside a DVC repository"):
        with tracking.stage_run("export", {}, "test"):
            pass
    assert cli_main(["--params", str(REPO / "params.yaml"), "make-sample"]) == 2
    assert "MLFLOW_TRACKING_URI=sqlite:///" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no empty mlflow.db, no corpus


def test_failed_parity_leaves_models_untouched(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    before = {p.name: p.read_bytes() for p in (workdir / "models/onnx").iterdir()}
    metrics_before = (workdir / "reports/details/export.json").read_bytes()
    params = tiny_params()
    strict = params.model_copy(update={"export": params.export.model_copy(
        update={"parity_atol": 1e-12}), "tracking": params.tracking.model_copy(
        update={"log_models": False})})
    with pytest.raises(ValueError, match="ONNX parity failed"):
        export.main(strict)
    assert {p.name: p.read_bytes() for p in (workdir / "models/onnx").iterdir()} == before
    assert (workdir / "reports/details/export.json").read_bytes() == metrics_before
    assert not list((workdir / "models").glob(".onnx.*"))  # no temp folder left behind


@pytest.fixture
def odd_inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_audio(folder / "stereo44k.ogg", tone(37.0, sr=44100, channels=2), sr=44100)
    write_audio(folder / "short.wav", tone(3.0))
    write_audio(folder / "full.ogg", tone(240.0))
    (folder / "broken.mp3").write_bytes(b"ID3" + bytes(500))
    (folder / "notes.txt").write_text("not audio, not listed")
    return folder


def test_predict_odd_inputs(
    workdir: Path, odd_inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tiny_params()
    models = workdir / "models/onnx"
    out = tmp_path / "submission.csv"
    summary = predict_folder(odd_inputs, models, out, params, workers=2, threads=1)
    table = pd.read_csv(out)
    assert list(table.columns) == ["row_id", *CLASSES]
    ids = table["row_id"].tolist()
    assert [i for i in ids if i.startswith("stereo44k_")] == [f"stereo44k_{s}" for s in range(5, 45, 5)]
    assert [i for i in ids if i.startswith("short_")] == ["short_5"]
    assert [i for i in ids if i.startswith("full_")] == [f"full_{s}" for s in range(5, 245, 5)]
    assert len(ids) == 8 + 1 + 48 and summary["rows"] == len(ids) and summary["files"] == 4
    values = table[CLASSES].to_numpy()
    assert np.isfinite(values).all() and np.all((values >= 0) & (values <= 1))
    assert len(summary["skipped"]) == 1 and "broken.mp3" in summary["skipped"][0]
    assert "broken.mp3" in capsys.readouterr().err
    assert "broken.mp3" in (tmp_path / "submission.csv.errors.txt").read_text()

    # same bytes again, decoded in this process instead of workers, through the command line
    again = tmp_path / "again.csv"
    code = cli_main(["--params", str(REPO / "params.yaml"), "predict", str(odd_inputs),
                     "--output", str(again), "--models", str(models), "--workers", "1"])
    assert code == 0 and again.read_bytes() == out.read_bytes()

    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        predict_folder(odd_inputs, models, tmp_path / "x.csv", params, on_error="fail")
    assert not (tmp_path / "x.csv").exists()


def predict_only_environment(root: Path) -> tuple[Path, set[str]]:
    """A Python environment without pip whose site-packages holds only requirements-predict.txt's
    distributions and their dependencies (links into this environment's files): (its python, the
    distributions in it)."""
    import importlib.metadata
    import venv

    from packaging.requirements import Requirement

    from birdclef.registry import canonical

    lines = (REPO / "requirements-predict.txt").read_text().splitlines()
    todo = [Requirement(line).name for line in lines if line and not line.startswith("#")]
    site, present = root / "site", set()
    site.mkdir(parents=True)
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if canonical(dist.metadata["Name"]) in present:
            continue
        present.add(canonical(dist.metadata["Name"]))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            if not (site / top).exists():
                (site / top).symlink_to(Path(str(dist.locate_file(top))))
        todo += [r.name for r in map(Requirement, dist.requires or [])
                 if r.marker is None or r.marker.evaluate({"extra": ""})]
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = root / "venv/bin/python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "predict-only.pth").write_text(f"{site}\n")
    return python, present


def test_predict_runs_with_only_the_kaggle_route_packages(
    workdir: Path, odd_inputs: Path, tmp_path: Path
) -> None:
    """The CPU notebook route: predict in an environment of requirements-predict.txt alone (no
    torch, timm, MLflow, DVC) writes the same bytes as predict here; its pins are the lock's."""
    from birdclef.registry import canonical

    lock = {canonical(line.split("==")[0]): line for line in
            (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    pins = [line for line in (REPO / "requirements-predict.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert all(lock[canonical(pin.split("==")[0])] == pin for pin in pins)
    python, present = predict_only_environment(tmp_path / "env")
    assert not {"torch", "torchaudio", "timm", "mlflow", "dvc", "openvino"} & present
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PYTHONPATH": str(REPO / "src")}
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, env=env)
    assert probe.returncode != 0  # the environment really lacks torch
    out = tmp_path / "clean.csv"
    run = subprocess.run(
        [python, "-m", "birdclef.cli", "--params", str(REPO / "params.yaml"), "predict", str(odd_inputs), "--output", str(out),
         "--models", str(workdir / "models/onnx"), "--workers", "2", "--threads", "1"],
        capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    predict_folder(odd_inputs, workdir / "models/onnx", tmp_path / "here.csv", tiny_params(),
                   workers=2, threads=1)
    assert out.read_bytes() == (tmp_path / "here.csv").read_bytes()


def test_predict_without_smoothing_is_the_fold_mean(workdir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.flac", tone(12.0, sr=48000, freq=2500.0), 48000)  # flac, 48 kHz
    out = tmp_path / "raw.csv"
    predict_folder(folder, workdir / "models/onnx", out, tiny_params(), smoothing=False)
    table = pd.read_csv(out)
    assert table["row_id"].tolist() == ["a_5", "a_10", "a_15"]
    from birdclef.audio import decode

    cfg = tiny_params().frontend
    windows = frame_windows(decode(folder / "a.flac", cfg.sample_rate)[0], window_samples(cfg),
                            cfg.sample_rate)
    expected = expit(OnnxEnsemble(workdir / "models/onnx").logits(windows, 48)).mean(0)
    np.testing.assert_allclose(table[CLASSES].to_numpy(), expected, atol=1e-6)


def test_benchmark_explains_predicts_path(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    result = benchmark.run(0.5, Path("models/onnx"), 1, tiny_params(), repeats=2,
                           checkpoints=Path("models/student/round1"))
    assert result["models"] == 2 and result["windows"] == 6 and result["files"] == 1
    assert result["engine"] == "onnxruntime/fp32" and result["fused"] is True
    seconds = result["end_to_end_seconds"]
    assert 0 < seconds["min"] <= seconds["median"] <= seconds["max"]
    assert result["ensemble_windows_per_s"] > 0 and result["eager_windows_per_s"] > 0
    assert result["model_windows_per_s"] == pytest.approx(2 * result["ensemble_windows_per_s"])
    parts = result["ms_per_window"]
    assert {"decode", "resample", "mel", "model0", "model1", "fused_models", "postprocess",
            "overhead"} <= set(parts)
    assert parts["decode"] > 0 and parts["resample"] == 0  # the files are at the model's rate
    assert {"decode_wait", "mel", "models", "postprocess"} <= set(result["predict_parts_ms_per_window"])
    assert 0.15 < result["gflop_per_window_per_model"] < 0.25  # efficientvit_b0 on 224 x 224
    assert result["peak_gflops"] > 0 and 0 < result["roofline_fraction"] < 1
    assert result["projected_minutes_2024_4_cores"] > result["projected_minutes_2025_4_cores"] > 0
    assert "ensemble windows/s" in benchmark.report(result)
