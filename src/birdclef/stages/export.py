"""export: the last round's student folds -> ONNX, parity against PyTorch, throughput, MLflow model
version.

Only the backbone is exported (input `images` (B, 3, 224, 224), output `logits`, dynamic batch): the
mel is computed once per window outside the graphs and shared by every fold (inference.py).
The exporter is the TorchScript one (`dynamo=False`): one self-contained file per fold, about 1 s
per model, logits within 1e-6 of eager. The dynamo exporter took about 23 s per model for a graph
that ran at the same speed in ONNX Runtime (measured with torch 2.11, onnxruntime 1.32).
Outputs: models/onnx/{fold{k}.onnx, manifest.json}, metrics/export.json (ensemble windows/s),
reports/details/export.json (parity, sizes, the registered version).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from birdclef import paths, tracking
from birdclef.config import Params
from birdclef.inference import (
    MANIFEST,
    OnnxEnsemble,
    TorchEnsemble,
    checkpoint_paths,
    fixed_windows,
    timed,
)
from birdclef.io import atomic_path, sha256_file, write_json
from birdclef.metrics import competition_score
from birdclef.model import load_checkpoint
from birdclef.registry import register_ensemble
from birdclef.windows import window_samples

log = logging.getLogger(__name__)
REGISTERED_NAME = "birdclef-student-ensemble"
MIN_PARITY_WINDOWS = 48


def export_fold(checkpoint: Path, out_file: Path, opset: int) -> dict[str, Any]:
    """Write one fold's backbone as a self-contained ONNX file; return the checkpoint's meta."""
    model, meta = load_checkpoint(checkpoint)
    images = model.frontend(torch.zeros(2, window_samples(model.frontend.cfg)))
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (module docstring); its notices are noise here.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            model.backbone.eval(), (images,), str(out_file), input_names=["images"],
            output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return meta


def export_folder(checkpoints: list[Path], out: Path, params: Params) -> dict[str, Any]:
    """Export every fold into `out` and write its manifest.json (with the batch size and the fold
    reduction of the predict path, which the registered model uses)."""
    opset = params.export.opset
    files, folds, metas = [], [], []
    for path in checkpoints:
        name = f"{path.stem}.onnx"
        meta = export_fold(path, out / name, opset)
        files.append(name)
        folds.append(int(meta["extra"]["fold"]))
        metas.append(meta)
    for meta, path in zip(metas[1:], checkpoints[1:]):
        if meta["classes"] != metas[0]["classes"] or meta["frontend_cfg"] != metas[0]["frontend_cfg"]:
            raise ValueError(f"{path}: classes or front end differ from {checkpoints[0]}")
    manifest = {
        "classes": metas[0]["classes"], "frontend_cfg": metas[0]["frontend_cfg"], "folds": folds,
        "files": files, "opset": opset, "input": "images", "output": "logits",
        "batch_windows": params.predict.batch_windows, "reduction": params.postprocess.reduction,
        "checkpoints_sha256": {p.name: sha256_file(p) for p in checkpoints},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def auc_difference(eager_logits: np.ndarray, onnx_logits: np.ndarray) -> float:
    """|macro AUC(eager) - macro AUC(ONNX)| of the fold-mean probabilities.

    The targets are a fixed checkerboard that depends on neither model: targets taken from one
    side's own top class would favour that side. Probabilities are compared at 1e-3 resolution so
    float noise among near-tied windows of a barely trained model does not count as a difference.
    """
    eager = np.round(expit(eager_logits).mean(0), 3)
    onnx = np.round(expit(onnx_logits).mean(0), 3)
    rows, cols = np.indices(eager.shape)
    targets = ((rows + cols) % 2 == 0).astype(np.float32)
    return abs(competition_score(targets, eager) - competition_score(targets, onnx))


def parity_and_speed(students: Path, onnx_dir: Path, params: Params) -> dict[str, Any]:
    """ONNX vs eager on the same fixed windows: largest logit difference, AUC difference, windows/s."""
    torch.set_num_threads(os.cpu_count() or 1)
    eager, onnx = TorchEnsemble(students), OnnxEnsemble(onnx_dir)
    cfg = eager.frontend_cfg
    n_windows = max(MIN_PARITY_WINDOWS, int(params.export.bench_seconds / cfg.window_seconds))
    windows = fixed_windows(n_windows, window_samples(cfg), sample_rate=cfg.sample_rate)
    batch = params.predict.batch_windows
    ref, torch_s = timed(eager.logits, windows, batch)
    got, onnx_s = timed(onnx.logits, windows, batch)
    return {
        "parity_max_abs_diff": float(np.abs(ref - got).max()),
        "parity_auc_diff": float(auc_difference(ref, got)),
        "parity_windows": n_windows,
        "torch_windows_per_s": n_windows / torch_s,
        "onnx_windows_per_s": n_windows / onnx_s,
        "speedup": torch_s / onnx_s,
    }


def check_parity(metrics: dict[str, Any], params: Params) -> None:
    diff, auc = metrics["parity_max_abs_diff"], metrics["parity_auc_diff"]
    if diff > params.export.parity_atol or auc > params.export.parity_auc_tol:
        raise ValueError(
            f"ONNX parity failed: max |logit diff| {diff:.2e} (tolerance "
            f"{params.export.parity_atol}), AUC diff {auc:.2e} "
            f"(tolerance {params.export.parity_auc_tol}); models/onnx left unchanged"
        )


def main(params: Params) -> None:
    rounds = paths.trained_rounds()
    if not rounds:
        raise FileNotFoundError("no trained students to export (run train_student)")
    students = paths.students(rounds[-1])
    checkpoints = checkpoint_paths(students)
    with tracking.stage_run(
        "export", {"export": params.export.model_dump(), "predict": params.predict.model_dump()},
        params.tracking.experiment,
        inputs=[str(paths.students(r)) for r in range(1, paths.MAX_ROUNDS + 1)],
        upstream=[f"train_student_round{rounds[-1]}"],
    ) as run:
        # Checked before the rename: a failing export leaves the previous models/onnx in place.
        with atomic_path(paths.ONNX) as tmp:
            tmp.mkdir()
            manifest = export_folder(checkpoints, tmp, params)
            metrics = parity_and_speed(students, tmp, params)
            check_parity(metrics, params)
        metrics.update({
            "n_models": len(manifest["files"]), "opset": params.export.opset, "round": rounds[-1],
            "onnx_mb": sum((paths.ONNX / f).stat().st_size for f in manifest["files"]) / 2**20,
        })
        run.log_metrics(metrics)
        run.log_dict(manifest, "onnx/manifest.json")
        version = ""
        if params.tracking.log_models:
            pl_hash = str(load_checkpoint(checkpoints[0])[1]["extra"].get("pseudo_labels_sha256", ""))
            tags = {"pseudo_labels.sha256": pl_hash, "round": str(rounds[-1])}
            version = register_ensemble(run, paths.ONNX, REGISTERED_NAME, tags)
            metrics["registered_version"] = int(version)
        headline = {"onnx_windows_per_s": metrics["onnx_windows_per_s"]}
        write_json(paths.metrics("export"), headline)
        write_json(paths.details("export"), metrics)
        run.log_headline({f"export.{k}": v for k, v in headline.items()})
    log.info("export: round %d, %d models, parity %.1e, ONNX %.1f vs eager %.1f windows/s (%.1fx)%s",
             rounds[-1], metrics["n_models"], metrics["parity_max_abs_diff"],
             metrics["onnx_windows_per_s"], metrics["torch_windows_per_s"], metrics["speedup"],
             f", {REGISTERED_NAME} version {version}" if version else "")
