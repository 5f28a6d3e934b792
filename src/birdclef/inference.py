"""The one inference engine: fold models as PyTorch checkpoints or exported ONNX graphs.

Export parity, predict, evaluate, pseudo-labelling and the benchmark all go through
`predict_windows`: the mel image of a window batch is computed once and fed to every fold model:
by the torch module for checkpoints, by its NumPy twin (`mel.py`) for exported graphs, so that the
exported path imports no torch. The mel inside an ONNX graph ran at about 15 windows/s on this CPU
(DESIGN 9). Every ensemble returns (folds, windows, classes) logits.

Exported graphs run on ONNX Runtime (fp32) or OpenVINO (fp32, or bf16 on CPUs with bf16 units);
`load_ensemble` picks one by name (predict.engine, predict.precision). Where export wrote the fused
graph (every fold's backbone in one graph that shares the input image: export.fused), one call per
batch runs the whole ensemble.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from birdclef.config import ConfigError, FrontendConfig
from birdclef.mel import NumpyMelFrontend
from birdclef.parallel import usable_cores

if TYPE_CHECKING:  # the exported models' path runs without torch
    import torch

MANIFEST = "manifest.json"
ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
# engine/precision pairs that export prices (onnxruntime's CPU provider has no bf16 kernels)
ENGINE_PRECISIONS = ("onnxruntime/fp32", "openvino/fp32", "openvino/bf16")
log = logging.getLogger(__name__)


class Ensemble(Protocol):
    folds: list[int]
    classes: list[str]
    frontend_cfg: FrontendConfig

    def images(self, audio: np.ndarray) -> np.ndarray | torch.Tensor: ...

    def logits_from_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray: ...

    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray: ...


class Stopwatch:
    """Seconds spent in each named part of a loop, summed over its iterations."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def predict_windows(
    ensemble: Ensemble, windows: np.ndarray, batch: int, clock: Stopwatch | None = None,
) -> np.ndarray:
    """(N, samples) float32 audio windows -> (folds, N, classes) logits, the mel once per window.
    `clock` collects the seconds of the mel and of the models."""
    if len(windows) == 0:
        return np.zeros((len(ensemble.folds), 0, len(ensemble.classes)), np.float32)
    clock = clock or Stopwatch()
    out = []
    for start in range(0, len(windows), batch):
        audio = np.ascontiguousarray(windows[start : start + batch], np.float32)
        with clock.part("mel"):
            images = ensemble.images(audio)
        with clock.part("models"):
            out.append(ensemble.logits_from_images(images))
    return np.concatenate(out, axis=1)


def checkpoint_paths(folder: Path) -> list[Path]:
    paths = sorted(Path(folder).glob("fold*.pt"), key=lambda p: int(p.stem[4:]))
    if not paths:
        raise FileNotFoundError(f"{folder}: no fold*.pt checkpoints (run the training stage)")
    return paths


class TorchEnsemble:
    """Fold checkpoints of one role, eager PyTorch in inference mode."""

    def __init__(self, folder: Path, device: torch.device | str = "cpu") -> None:
        import torch

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

    def images(self, audio: np.ndarray) -> torch.Tensor:
        """(B, T) float32 audio -> (B, 3, H, W) images on the models' device."""
        import torch

        with torch.inference_mode():
            return self.frontend(torch.from_numpy(audio).to(self.device))

    def logits_from_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) float32 images -> (folds, B, classes) logits."""
        import torch

        with torch.inference_mode():
            x = torch.as_tensor(images, dtype=torch.float32, device=self.device)
            return torch.stack([m.forward_images(x).float() for m in self.models]).cpu().numpy()

    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray:
        return predict_windows(self, windows, batch)


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    # The fold sessions run one after another and share the cores with the torch mel and the decode
    # workers; idle sessions spinning on those cores cost about a third of the throughput with 5
    # models on 2 cores (measured: 190-275 -> 300-390 model-windows/s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


Runner = Callable[[np.ndarray], np.ndarray]


class ExportedEnsemble:
    """Exported fold models (models/onnx/manifest.json, fold{k}.onnx and, where export fused them,
    one graph of every fold) on a CPU engine. `fused` None: the fused graph when export wrote one."""

    engine = ""
    precision = "fp32"

    def __init__(self, folder: Path, threads: int = 0, fused: bool | None = None) -> None:
        manifest_path = Path(folder) / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: no exported models (run the export stage)")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        self.classes: list[str] = self.manifest["classes"]
        self.folds: list[int] = self.manifest["folds"]
        self.frontend_cfg = FrontendConfig(**self.manifest["frontend_cfg"])
        self.frontend = NumpyMelFrontend(self.frontend_cfg)
        fused_file = self.manifest.get("fused")
        if fused and not fused_file:
            raise FileNotFoundError(f"{manifest_path}: export wrote no fused graph (export.fused)")
        self.fused = bool(fused_file) if fused is None else fused
        self.graphs = [fused_file] if self.fused else list(self.manifest["files"])
        self.threads = threads or usable_cores()
        self.runners = [self.compile(Path(folder) / name) for name in self.graphs]

    def compile(self, graph: Path) -> Runner:
        raise NotImplementedError

    def images(self, audio: np.ndarray) -> np.ndarray:
        return self.frontend(audio)

    def logits_from_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) float32 images -> (folds, B, classes) logits."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        if self.fused:
            return self.runners[0](x)
        return np.stack([run(x) for run in self.runners])

    def logits(self, windows: np.ndarray, batch: int) -> np.ndarray:
        return predict_windows(self, windows, batch)


class OnnxEnsemble(ExportedEnsemble):
    """The exported graphs on ONNX Runtime's CPU provider, fp32."""

    engine = "onnxruntime"

    def compile(self, graph: Path) -> Runner:
        import onnxruntime as ort

        session = ort.InferenceSession(str(graph), session_options(self.threads),
                                       providers=["CPUExecutionProvider"])
        return lambda x: session.run(["logits"], {"images": x})[0]


def has_bf16() -> bool:
    """Whether OpenVINO finds bf16 units on this CPU (AVX512_BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoEnsemble(ExportedEnsemble):
    """The exported graphs on OpenVINO's CPU plugin, read from the ONNX files. fp32, or bf16 (its
    default on CPUs with bf16 units): a CPU without them runs fp32, with a warning."""

    engine = "openvino"

    def __init__(self, folder: Path, threads: int = 0, precision: str = "fp32",
                 fused: bool | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} (one of {PRECISIONS})")
        if precision == "bf16" and not has_bf16():
            log.warning("openvino: this CPU has no bf16 units; running fp32 instead")
            precision = "fp32"
        self.precision = precision
        super().__init__(folder, threads, fused)

    def compile(self, graph: Path) -> Runner:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(graph)), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x}, share_inputs=True)[0]


def load_ensemble(
    folder: Path, engine: str = "onnxruntime", precision: str = "fp32", threads: int = 0,
    fused: bool | None = None,
) -> ExportedEnsemble:
    """The exported models of `folder` on `engine` ("onnxruntime" or "openvino") at `precision`."""
    if engine == "onnxruntime":
        if precision != "fp32":
            raise ConfigError(f"predict.precision {precision} needs predict.engine: openvino "
                              "(onnxruntime runs fp32 here)")
        return OnnxEnsemble(folder, threads, fused)
    if engine == "openvino":
        return OpenVinoEnsemble(folder, threads, precision, fused)
    raise ConfigError(f"unknown predict.engine {engine!r} (one of {ENGINES})")


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
