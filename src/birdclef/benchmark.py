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


def training_run(params_path: str, batches: int) -> dict[str, Any]:
    """Teacher training throughput: the data loader alone vs full training steps (same batches)."""
    import time

    from torch.utils.data import DataLoader

    from birdclef.data import LabelledClips, TrainDataset
    from birdclef.engine import masked_bce, resolve_device, set_threads
    from birdclef.frontend import window_samples
    from birdclef.model import build_model
    from birdclef.optim import build_optimizer_and_scheduler
    from birdclef.stages.train import load_training_data

    params = load_params(params_path)
    cfg, fcfg = params.teacher, params.frontend
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    table, classes, store = load_training_data()
    span = int(round((fcfg.window_seconds + cfg.max_shift_seconds) * fcfg.sample_rate))
    dataset = TrainDataset(LabelledClips(table, classes, store), window_samples(fcfg), span,
                           cfg.seed, cfg.mix_p, (cfg.mix_weight_min, cfg.mix_weight_max))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.num_workers)
    started, seen = time.perf_counter(), 0
    while seen < batches * cfg.batch_size:
        for audio, _, _ in loader:
            seen += audio.shape[0]
            if seen >= batches * cfg.batch_size:
                break
    loader_rate = seen / (time.perf_counter() - started)
    model = build_model(params.model, fcfg, len(classes)).to(device).train()
    optimizer, scheduler = build_optimizer_and_scheduler(model, cfg, batches + 1)
    started, seen = time.perf_counter(), 0
    for step, (audio, target, mask) in enumerate(loader):
        if step == batches:
            break
        loss = masked_bce(model(audio.to(device)), target.to(device), mask.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += audio.shape[0]
    train_rate = seen / (time.perf_counter() - started)
    return {"device": str(device), "batch_size": cfg.batch_size, "num_workers": cfg.num_workers,
            "loader_samples_per_s": loader_rate, "train_samples_per_s": train_rate,
            "loader_headroom": loader_rate / train_rate}


def training_cli(args: Any) -> None:
    result = training_run(args.params, args.batches)
    write_json(Path("metrics/benchmark_training.json"), result)
    for key, value in result.items():
        print(f"{key:25s} {value:.2f}" if isinstance(value, float) else f"{key:25s} {value}")
