"""`birdclef benchmark`: predict's inference path on N minutes of audio, ONNX ensemble vs eager PyTorch.

Both sides include the mel front end (computed once per window for all models) and exclude decoding
(measured separately by preprocess). Prints one table and writes metrics/benchmark.json.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from birdclef.config import load_params
from birdclef.inference import OnnxEnsemble, TorchEnsemble, fixed_windows, timed
from birdclef.io import write_json

HIDDEN_TEST_WINDOWS = 52_800  # about 1,100 soundscapes x 48 windows (SPEC 12)
KAGGLE_CORES = 4


def run(minutes: float, onnx_dir: Path, checkpoints: Path, threads: int, batch: int) -> dict[str, Any]:
    cores = threads or os.cpu_count() or 1
    torch.set_num_threads(cores)
    onnx, eager = OnnxEnsemble(onnx_dir, cores), TorchEnsemble(checkpoints)
    samples = int(round(onnx.frontend_cfg.window_seconds * onnx.frontend_cfg.sample_rate))
    windows = fixed_windows(max(2, int(minutes * 60 / onnx.frontend_cfg.window_seconds)), samples)
    _, onnx_s = timed(onnx.logits, windows, batch)
    _, eager_s = timed(eager.logits, windows, batch)
    onnx_rate = len(windows) / onnx_s
    per_core = onnx_rate / cores
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cores": cores,
        "models": len(onnx.sessions),
        "windows": len(windows),
        "onnx_windows_per_s": onnx_rate,
        "eager_windows_per_s": len(windows) / eager_s,
        "ratio": eager_s / onnx_s,
        "onnx_windows_per_s_per_core": per_core,
        "projected_minutes_52800_windows_4_cores": HIDDEN_TEST_WINDOWS / (per_core * KAGGLE_CORES) / 60,
    }


def cli(args: Any) -> None:
    params = load_params(args.params)
    threads = params.predict.threads if args.threads is None else args.threads
    result = run(args.minutes, Path(args.models), Path("models/student"), threads,
                 params.predict.batch_windows)
    write_json(Path("metrics/benchmark.json"), result)
    for key, value in result.items():
        print(f"{key:45s} {value:.2f}" if isinstance(value, float) else f"{key:45s} {value}")
