"""export: student folds -> ONNX, parity against PyTorch, throughput, MLflow model version.

Only the backbone is exported (input `images` (B, 3, 224, 224), output `logits`, dynamic batch): the
mel is computed once per window outside the graphs and shared by every fold (inference.py).
Outputs: models/onnx/{fold{k}.onnx, manifest.json}, metrics/export.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from birdclef import tracking
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

ONNX_DIR = Path("models/onnx")
STUDENTS = Path("models/student")
METRICS = Path("metrics/export.json")


def export_folder(checkpoints: list[Path], out: Path, opset: int) -> dict[str, Any]:
    files, folds, meta = [], [], {}
    for path in checkpoints:
        model, meta = load_checkpoint(path)
        cfg = meta["frontend_cfg"]
        images = model.frontend(torch.zeros(2, int(round(cfg["window_seconds"] * cfg["sample_rate"]))))
        name = f"fold{meta['extra']['fold']}.onnx"
        # The TorchScript-based exporter writes one self-contained file and matches eager to 1e-6.
        torch.onnx.export(
            model.backbone.eval(), (images,), str(out / name), input_names=["images"],
            output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
        files.append(name)
        folds.append(int(meta["extra"]["fold"]))
    manifest = {
        "classes": meta["classes"], "frontend_cfg": meta["frontend_cfg"], "folds": folds,
        "files": files, "opset": opset, "input": "images", "output": "logits",
        "checkpoints_sha256": {p.name: sha256_file(p) for p in checkpoints},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def main(params: Params) -> None:
    checkpoints = checkpoint_paths(STUDENTS)
    with tracking.stage_run(
        "export", {"export": params.export.model_dump()}, params.tracking.experiment,
        inputs=[str(STUDENTS)], upstream=["train_student"],
    ) as run:
        with atomic_path(ONNX_DIR) as tmp:
            tmp.mkdir()
            manifest = export_folder(checkpoints, tmp, params.export.opset)
        torch.set_num_threads(os.cpu_count() or 1)
        eager, onnx = TorchEnsemble(STUDENTS), OnnxEnsemble(ONNX_DIR)
        samples = int(round(eager.frontend_cfg.window_seconds * eager.frontend_cfg.sample_rate))
        n_windows = max(48, int(params.export.bench_seconds / eager.frontend_cfg.window_seconds))
        windows = fixed_windows(n_windows, samples)
        batch = params.predict.batch_windows
        ref, torch_s = timed(eager.logits, windows, batch)
        got, onnx_s = timed(onnx.logits, windows, batch)
        max_diff = float(np.abs(ref - got).max())
        # AUC parity against fixed targets that do not depend on either model, at 1e-3 probability
        # resolution: float noise among near-tied windows of a barely trained model must not count.
        eager_probs = np.round(expit(ref).mean(0), 3)
        onnx_probs = np.round(expit(got).mean(0), 3)
        rows, cols = np.indices(eager_probs.shape)
        targets = ((rows + cols) % 2 == 0).astype(np.float32)
        auc_diff = abs(competition_score(targets, eager_probs) - competition_score(targets, onnx_probs))
        metrics = {
            "n_models": len(manifest["files"]), "opset": params.export.opset,
            "parity_max_abs_diff": max_diff, "parity_auc_diff": float(auc_diff),
            "parity_windows": n_windows,
            "torch_windows_per_s": n_windows / torch_s, "onnx_windows_per_s": n_windows / onnx_s,
            "speedup": torch_s / onnx_s,
            "onnx_mb": sum((ONNX_DIR / f).stat().st_size for f in manifest["files"]) / 2**20,
        }
        write_json(METRICS, metrics)
        run.log_metrics(metrics)
        if max_diff > params.export.parity_atol or auc_diff > params.export.parity_auc_tol:
            raise ValueError(
                f"ONNX parity failed: max |logit diff| {max_diff:.2e} (tolerance "
                f"{params.export.parity_atol}), AUC diff {auc_diff:.2e} "
                f"(tolerance {params.export.parity_auc_tol})"
            )
        pl_hash = load_checkpoint(checkpoints[0])[1]["extra"].get("pseudo_labels_sha256", "")
        version = tracking.register_ensemble(
            run, ONNX_DIR, "birdclef-student-ensemble", {"pseudo_labels.sha256": pl_hash}
        )
        metrics["registered_version"] = int(version)
        write_json(METRICS, metrics)
    print(f"export: {metrics['n_models']} models, parity {max_diff:.1e}, "
          f"ONNX {metrics['onnx_windows_per_s']:.1f} vs eager {metrics['torch_windows_per_s']:.1f} "
          f"windows/s ({metrics['speedup']:.1f}x), model version {version}")
