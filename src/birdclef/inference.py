"""The one inference engine: fold models as PyTorch checkpoints or exported ONNX graphs.

Export parity, predict, evaluate, pseudo-labelling and the benchmark all go through
`predict_windows`: the mel image of a window batch is computed once, in PyTorch, and fed to every fold
model. The mel inside an ONNX graph runs at about 15 windows/s on this CPU against about 210 in
PyTorch (DESIGN 9). Both ensembles return (folds, windows, classes) logits.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from birdclef.config import FrontendConfig
from birdclef.frontend import MelFrontend

MANIFEST = "manifest.json"


class Ensemble(Protocol):
    folds: list[int]
    classes: list[str]
    frontend_cfg: FrontendConfig
    frontend: MelFrontend

    def logits_from_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray: ...

    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray: ...


@torch.inference_mode()
def predict_windows(
    ensemble: Ensemble, frontend: MelFrontend, windows: np.ndarray, batch: int
) -> np.ndarray:
    """(N, samples) float32 audio windows -> (folds, N, classes) logits, the mel once per window."""
    if len(windows) == 0:
        return np.zeros((len(ensemble.folds), 0, len(ensemble.classes)), np.float32)
    device = frontend.ramp.device
    out = []
    for start in range(0, len(windows), batch):
        audio = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch], np.float32))
        out.append(ensemble.logits_from_images(frontend(audio.to(device))))
    return np.concatenate(out, axis=1)


def checkpoint_paths(folder: Path) -> list[Path]:
    paths = sorted(Path(folder).glob("fold*.pt"), key=lambda p: int(p.stem[4:]))
    if not paths:
        raise FileNotFoundError(f"{folder}: no fold*.pt checkpoints (run the training stage)")
    return paths


class TorchEnsemble:
    """Fold checkpoints of one role, eager PyTorch in inference mode."""

    def __init__(self, folder: Path, device: torch.device | str = "cpu") -> None:
        from birdclef.model import BirdModel, load_checkpoint  # timm: not needed by ONNX predict

        self.device = torch.device(device)
        self.models: list[BirdModel] = []
        self.metas: list[dict[str, Any]] = []
        for path in checkpoint_paths(folder):
            model, meta = load_checkpoint(path, map_location=self.device)
            # NHWC convolutions: about 1.9x the windows/s of the default layout on this CPU
            model.backbone.to(memory_format=torch.channels_last)
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
    def logits_from_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) float32 images -> (folds, B, classes) logits."""
        x = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        return torch.stack([m.forward_images(x).float() for m in self.models]).cpu().numpy()

    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray:
        return predict_windows(self, self.frontend, windows, batch)


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # The fold sessions run one after another and share the cores with the torch mel and the decode
    # workers; idle sessions spinning on those cores cost about a third of the throughput with 5
    # models on 2 cores (measured: 190-275 -> 300-390 model-windows/s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEnsemble:
    """Exported fold models (models/onnx/manifest.json + fold{k}.onnx) on ONNX Runtime, CPU."""

    def __init__(self, folder: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        manifest_path = Path(folder) / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: no exported models (run the export stage)")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        self.classes: list[str] = self.manifest["classes"]
        self.folds: list[int] = self.manifest["folds"]
        self.frontend_cfg = FrontendConfig(**self.manifest["frontend_cfg"])
        self.frontend = MelFrontend(self.frontend_cfg)
        options = session_options(threads)
        self.sessions = [
            ort.InferenceSession(str(Path(folder) / f), options, providers=["CPUExecutionProvider"])
            for f in self.manifest["files"]
        ]

    def logits_from_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) float32 images -> (folds, B, classes) logits."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        return np.stack([s.run(["logits"], {"images": x})[0] for s in self.sessions])

    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray:
        return predict_windows(self, self.frontend, windows, batch)


def fixed_windows(n: int, samples: int, seed: int = 0, sample_rate: int = 32000) -> np.ndarray:
    """Deterministic test audio: noise plus a different tone in every window."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    out = 0.05 * rng.standard_normal((n, samples))
    for i in range(n):
        out[i] += 0.3 * np.sin(2 * np.pi * (500 + 250 * (i % 48)) * t)
    return out.astype(np.float32)


def timed(
    fn: Callable[[np.ndarray, int], np.ndarray], windows: np.ndarray, batch: int, repeats: int = 1
) -> tuple[np.ndarray, float]:
    """(result, best seconds of `repeats` runs) after one warm-up on two windows."""
    fn(windows[:2], batch)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(windows, batch)
        best = min(best, time.perf_counter() - started)
    return result, best
