"""The one inference engine: fold models as PyTorch checkpoints or exported ONNX graphs.

The mel image of a window batch is computed once, in PyTorch, and fed to every fold model: the mel
inside an ONNX graph runs at about 15 windows/s on this CPU against about 210 in PyTorch (DESIGN 9).
Both ensembles return (folds, windows, classes) logits.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from birdclef.config import FrontendConfig
from birdclef.frontend import MelFrontend
from birdclef.model import BirdModel, load_checkpoint

MANIFEST = "manifest.json"


def checkpoint_paths(folder: Path) -> list[Path]:
    paths = sorted(folder.glob("fold*.pt"), key=lambda p: int(p.stem[4:]))
    if not paths:
        raise FileNotFoundError(f"{folder}: no fold*.pt checkpoints (run the training stage)")
    return paths


class TorchEnsemble:
    """Fold checkpoints of one role, eager PyTorch in inference mode."""

    def __init__(self, folder: Path, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.models: list[BirdModel] = []
        self.metas: list[dict] = []
        for path in checkpoint_paths(folder):
            model, meta = load_checkpoint(path, map_location=self.device)
            self.models.append(model)
            self.metas.append(meta)
        first = self.metas[0]
        for meta in self.metas[1:]:
            if meta["classes"] != first["classes"] or meta["frontend_cfg"] != first["frontend_cfg"]:
                raise ValueError(f"{folder}: fold checkpoints disagree on classes or front end")
        self.folds = [int(m["extra"]["fold"]) for m in self.metas]
        self.classes: list[str] = first["classes"]
        self.frontend_cfg = FrontendConfig(**first["frontend_cfg"])
        self.frontend = self.models[0].frontend

    @torch.inference_mode()
    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray:
        out = []
        for start in range(0, len(windows), batch):
            images = self.frontend(torch.from_numpy(windows[start : start + batch]).to(self.device))
            out.append(torch.stack([m.forward_images(images).float() for m in self.models]))
        return torch.cat(out, dim=1).cpu().numpy()


class OnnxEnsemble:
    """Exported fold models (models/onnx/manifest.json + fold{k}.onnx) on ONNX Runtime, CPU."""

    def __init__(self, folder: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        manifest_path = Path(folder) / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: no exported models (run the export stage)")
        manifest = json.loads(manifest_path.read_text())
        self.classes: list[str] = manifest["classes"]
        self.folds: list[int] = manifest["folds"]
        self.frontend_cfg = FrontendConfig(**manifest["frontend_cfg"])
        self.frontend = MelFrontend(self.frontend_cfg)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        self.sessions = [
            ort.InferenceSession(str(Path(folder) / f), options, providers=["CPUExecutionProvider"])
            for f in manifest["files"]
        ]

    def logits_from_images(self, images: np.ndarray) -> np.ndarray:
        return np.stack([s.run(None, {"images": images})[0] for s in self.sessions])

    @torch.inference_mode()
    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray:
        out = []
        for start in range(0, len(windows), batch):
            images = self.frontend(torch.from_numpy(windows[start : start + batch])).numpy()
            out.append(self.logits_from_images(images))
        return np.concatenate(out, axis=1)


def fixed_windows(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """Deterministic test audio: noise plus tones at several frequencies."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 32000
    out = 0.05 * rng.standard_normal((n, samples))
    for i in range(n):
        out[i] += 0.3 * np.sin(2 * np.pi * (500 + 250 * i) * t)
    return out.astype(np.float32)


def timed(
    fn: Callable[[np.ndarray, int], np.ndarray], windows: np.ndarray, batch: int
) -> tuple[np.ndarray, float]:
    fn(windows[:2], batch)  # warm-up
    started = time.perf_counter()
    result = fn(windows, batch)
    return result, time.perf_counter() - started
