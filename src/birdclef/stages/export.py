"""export: the last round's student folds -> ONNX, parity against PyTorch, each engine's price,
MLflow model version.

Only the backbones are exported (input `images` (B, 3, 224, 224), dynamic batch): the mel is
computed once per window outside the graphs and shared by every fold (inference.py). Each fold gets
its own file (output `logits` (B, classes)); with `export.fused` every fold's backbone also goes
into one graph that takes the image once (output `logits` (folds, B, classes)), which predict runs
with one call per batch. The exporter is the TorchScript one (`dynamo=False`): self-contained files,
about 1 s per model, logits within 1e-6 of eager. The dynamo exporter took about 23 s per model for
a graph that ran at the same speed in ONNX Runtime (measured with torch 2.11, onnxruntime 1.32).

The shipped engine (ONNX Runtime, fp32, the fused graph when there is one) must match eager
PyTorch, or models/onnx is left as it was: its logits on the same mel images within
export.parity_atol, and end to end (each with its own front end: predict's NumPy mel, the
models' torch mel) the AUC within export.parity_auc_tol. Every engine and precision
(inference.ENGINE_PRECISIONS) is then priced: windows/s on fixed windows, its largest logit
difference from eager PyTorch, and its AUC difference on the first `export.auc_soundscapes`
labelled soundscapes (sources.eval_soundscapes) when there are any.
Outputs: models/onnx/{fold{k}.onnx, ensemble.onnx, manifest.json}, reports/details/export.json
(parity, the shipped engine's windows/s, engines, sizes, the registered version).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from birdclef import paths, tracking
from birdclef.audio import decode_windows
from birdclef.config import Params
from birdclef.device import set_threads
from birdclef.evaluation import align, read_labelled_soundscapes
from birdclef.inference import (
    ENGINE_PRECISIONS,
    MANIFEST,
    Ensemble,
    OnnxEnsemble,
    TorchEnsemble,
    checkpoint_paths,
    fixed_windows,
    load_ensemble,
    timed,
)
from birdclef.io import atomic_path, sha256_file, write_json
from birdclef.metrics import competition_score
from birdclef.model import load_checkpoint
from birdclef.postprocess import reduce_folds
from birdclef.registry import register_ensemble
from birdclef.windows import row_ids, window_samples

log = logging.getLogger(__name__)
REGISTERED_NAME = "birdclef-student-ensemble"
MIN_PARITY_WINDOWS = 48
FUSED_FILE = "ensemble.onnx"


class FoldStack(nn.Module):
    """Every fold's backbone on the same images: (B, 3, H, W) -> (folds, B, classes)."""

    def __init__(self, backbones: list[nn.Module]) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(backbones)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([backbone(images) for backbone in self.backbones])


def to_onnx(module: nn.Module, images: torch.Tensor, out_file: Path, opset: int, batch_axis: int) -> None:
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (module docstring); its notices are noise here.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module.eval(), (images,), str(out_file), input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {batch_axis: "batch"}},
            opset_version=opset, dynamo=False,
        )


def export_folder(checkpoints: list[Path], out: Path, params: Params) -> dict[str, Any]:
    """Export every fold (and the fused graph) into `out` and write its manifest.json (with the
    batch size and the fold reduction of the predict path, which the registered model uses)."""
    opset = params.export.opset
    loaded = [load_checkpoint(path) for path in checkpoints]
    metas = [meta for _, meta in loaded]
    for meta, path in zip(metas[1:], checkpoints[1:]):
        if meta["classes"] != metas[0]["classes"] or meta["frontend_cfg"] != metas[0]["frontend_cfg"]:
            raise ValueError(f"{path}: classes or front end differ from {checkpoints[0]}")
    first = loaded[0][0]
    images = first.frontend(torch.zeros(2, window_samples(first.frontend.cfg)))
    files = [f"{path.stem}.onnx" for path in checkpoints]
    for (model, _), name in zip(loaded, files):
        to_onnx(model.backbone, images, out / name, opset, batch_axis=0)
    if params.export.fused:
        to_onnx(FoldStack([model.backbone for model, _ in loaded]), images, out / FUSED_FILE, opset,
                batch_axis=1)
    manifest = {
        "classes": metas[0]["classes"], "frontend_cfg": metas[0]["frontend_cfg"],
        "folds": [int(meta["extra"]["fold"]) for meta in metas], "files": files,
        "fused": FUSED_FILE if params.export.fused else None, "opset": opset, "input": "images",
        "output": "logits", "batch_windows": params.predict.batch_windows,
        "reduction": params.postprocess.reduction,
        "checkpoints_sha256": {p.name: sha256_file(p) for p in checkpoints},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def auc_difference(eager_logits: np.ndarray, onnx_logits: np.ndarray) -> float:
    """|macro AUC(eager) - macro AUC(ONNX)| of the fold-mean probabilities on fixed windows.

    The targets are a fixed checkerboard that depends on neither model: targets taken from one
    side's own top class would favour that side. Probabilities are compared at 1e-3 resolution so
    float noise among near-tied windows of a barely trained model does not count as a difference.
    """
    eager = np.round(expit(eager_logits).mean(0), 3)
    onnx = np.round(expit(onnx_logits).mean(0), 3)
    rows, cols = np.indices(eager.shape)
    targets = ((rows + cols) % 2 == 0).astype(np.float32)
    return abs(competition_score(targets, eager) - competition_score(targets, onnx))


def parity_and_speed(eager: TorchEnsemble, onnx_dir: Path, params: Params) -> dict[str, Any]:
    """The shipped engine vs eager on the same fixed windows: the graphs' largest logit difference
    on the same images, the end-to-end one and AUC difference (each with its own mel), windows/s;
    and the fused graph against the separate fold graphs."""
    cfg = eager.frontend_cfg
    n_windows = max(MIN_PARITY_WINDOWS, int(params.export.bench_seconds / cfg.window_seconds))
    windows = fixed_windows(n_windows, window_samples(cfg), sample_rate=cfg.sample_rate)
    batch = params.predict.batch_windows
    onnx = OnnxEnsemble(onnx_dir)
    ref, torch_s = timed(eager.logits, windows, batch)
    got, onnx_s = timed(onnx.logits, windows, batch)
    # What the export itself changed: the graphs against eager PyTorch on the same images (predict's
    # NumPy mel). End to end, each side with its own front end, the two mels' float32 rounding moves
    # logits by up to about 1e-3 (seen: 1.1e-3), which the AUC difference judges instead.
    images = onnx.images(windows)
    graphs_diff = np.abs(eager.logits_from_images(images) - onnx.logits_from_images(images)).max()
    metrics = {
        "parity_max_abs_diff": float(graphs_diff),
        "end_to_end_max_abs_diff": float(np.abs(ref - got).max()),
        "parity_auc_diff": float(auc_difference(ref, got)),
        "parity_windows": n_windows,
        "torch_windows_per_s": n_windows / torch_s,
        "onnx_windows_per_s": n_windows / onnx_s,
        "speedup": torch_s / onnx_s,
    }
    if params.export.fused:
        separate, separate_s = timed(OnnxEnsemble(onnx_dir, fused=False).logits, windows, batch)
        metrics["fused_vs_separate_max_abs_diff"] = float(np.abs(separate - got).max())
        metrics["separate_windows_per_s"] = n_windows / separate_s
    return metrics


def check_parity(metrics: dict[str, Any], params: Params) -> None:
    diff, auc = metrics["parity_max_abs_diff"], metrics["parity_auc_diff"]
    if diff > params.export.parity_atol or auc > params.export.parity_auc_tol:
        raise ValueError(
            f"ONNX parity failed: max |logit diff| on the same images {diff:.2e} (tolerance "
            f"{params.export.parity_atol}), AUC diff {auc:.2e} "
            f"(tolerance {params.export.parity_auc_tol}); models/onnx left unchanged"
        )


def labelled_set(params: Params, eager: TorchEnsemble) -> tuple[torch.Tensor, np.ndarray] | None:
    """Mel images and 0/1 truth of the first export.auc_soundscapes labelled soundscapes, or None
    where there are none (sources.eval_soundscapes null or missing, or auc_soundscapes 0)."""
    folder = params.sources.eval_soundscapes
    if folder is None or params.export.auc_soundscapes == 0 or not Path(folder).is_dir():
        return None
    files, solution = read_labelled_soundscapes(folder)
    cfg, batch = eager.frontend_cfg, params.predict.batch_windows
    ids, images = [], []
    for path in files[: params.export.auc_soundscapes]:
        windows = decode_windows(path, cfg.sample_rate, window_samples(cfg)).value
        if windows is None:
            raise ValueError(f"{path}: a labelled soundscape that cannot be decoded")
        ids += row_ids(path.stem, len(windows), cfg.window_seconds)
        for start in range(0, len(windows), batch):
            images.append(eager.frontend(torch.from_numpy(windows[start : start + batch])))
    return torch.cat(images), align(solution, ids, eager.classes)


def labelled_auc(ensemble: Ensemble, labelled: tuple[torch.Tensor, np.ndarray], params: Params) -> float:
    """Macro AUC of the fold-reduced probabilities (no smoothing) on the labelled windows."""
    images, truth = labelled
    batch = params.predict.batch_windows
    logits = np.concatenate([ensemble.logits_from_images(images[start : start + batch])
                             for start in range(0, len(images), batch)], axis=1)
    return competition_score(truth, reduce_folds(logits, params.postprocess.reduction))


def price_engines(eager: TorchEnsemble, onnx_dir: Path, params: Params) -> dict[str, Any]:
    """For each engine and precision: ensemble windows/s (mel included) and largest logit
    difference against eager PyTorch on fixed windows, and the AUC difference on labelled windows."""
    cfg = eager.frontend_cfg
    windows = fixed_windows(MIN_PARITY_WINDOWS, window_samples(cfg), seed=1, sample_rate=cfg.sample_rate)
    batch = params.predict.batch_windows
    ref = eager.logits(windows, batch)
    labelled = labelled_set(params, eager)
    eager_auc = labelled_auc(eager, labelled, params) if labelled else None
    table: dict[str, Any] = {"labelled_windows": len(labelled[1]) if labelled else 0,
                             "eager_labelled_auc": eager_auc}
    for name in ENGINE_PRECISIONS:
        engine, precision = name.split("/")
        ensemble = load_ensemble(onnx_dir, engine, precision)
        if ensemble.precision != precision:  # a CPU without bf16 units: nothing to price
            table[name] = {"skipped": f"this CPU has no {precision} units"}
            continue
        got, seconds = timed(ensemble.logits, windows, batch)
        row = {"windows_per_s": len(windows) / seconds, "max_abs_logit_diff": float(np.abs(got - ref).max())}
        if labelled:
            row["labelled_auc"] = labelled_auc(ensemble, labelled, params)
            row["labelled_auc_diff"] = row["labelled_auc"] - eager_auc
        table[name] = row
    return table


def engine_metrics(engines: dict[str, Any]) -> dict[str, float]:
    """The engine table's numbers as flat MLflow metric names (engine.openvino_bf16.windows_per_s)."""
    return {f"engine.{name.replace('/', '_')}.{key}": value for name, row in engines.items()
            if isinstance(row, dict) for key, value in row.items() if isinstance(value, float)}


def main(params: Params) -> None:
    rounds = paths.trained_rounds()
    if not rounds:
        raise FileNotFoundError("no trained students to export (run train_student)")
    students = paths.students(rounds[-1])
    checkpoints = checkpoint_paths(students)
    set_threads(0)
    inputs = [str(paths.students(r)) for r in range(1, paths.MAX_ROUNDS + 1)]
    if params.sources.eval_soundscapes is not None and params.export.auc_soundscapes:
        inputs.append(params.sources.root)
    with tracking.stage_run(
        "export", {"export": params.export.model_dump(), "predict": params.predict.model_dump()},
        params.tracking.experiment, inputs=inputs, upstream=[f"train_student_round{rounds[-1]}"],
    ) as run:
        eager = TorchEnsemble(students)
        # Checked before the rename: a failing export leaves the previous models/onnx in place.
        with atomic_path(paths.ONNX) as tmp:
            tmp.mkdir()
            manifest = export_folder(checkpoints, tmp, params)
            metrics = parity_and_speed(eager, tmp, params)
            check_parity(metrics, params)
        engines = price_engines(eager, paths.ONNX, params)
        metrics.update({
            "n_models": len(manifest["files"]), "opset": params.export.opset, "round": rounds[-1],
            "fused": params.export.fused, "engines": engines,
            "onnx_mb": sum(p.stat().st_size for p in paths.ONNX.glob("*.onnx")) / 2**20,
        })
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        run.log_metrics(engine_metrics(engines))
        run.log_dict(manifest, "onnx/manifest.json")
        version = ""
        if params.tracking.log_models:
            pl_hash = str(load_checkpoint(checkpoints[0])[1]["extra"].get("pseudo_labels_sha256", ""))
            tags = {"pseudo_labels.sha256": pl_hash, "round": str(rounds[-1])}
            version = register_ensemble(run, paths.ONNX, REGISTERED_NAME, tags)
            metrics["registered_version"] = int(version)
        write_json(paths.details("export"), metrics)
        # A speed, not a score: beside the scores in MLflow's pipeline run, not a DVC metric (it
        # differs between any two runs, so `dvc exp show --only-changed` would always show it).
        run.log_headline({"export.onnx_windows_per_s": metrics["onnx_windows_per_s"]})
    log.info("export: round %d, %d models%s, parity %.1e, ONNX %.1f vs eager %.1f windows/s (%.1fx)%s",
             rounds[-1], metrics["n_models"], " (fused)" if params.export.fused else "",
             metrics["parity_max_abs_diff"], metrics["onnx_windows_per_s"],
             metrics["torch_windows_per_s"], metrics["speedup"],
             f", {REGISTERED_NAME} version {version}" if version else "")
