"""`birdclef benchmark`: predict's path on N minutes of audio, ONNX ensemble vs eager PyTorch.

Deterministic synthetic soundscapes (noise plus tones, 4 minutes each, 32 kHz ogg) are written to a
temp folder. Two measurements per engine, each the best of `REPEATS` runs:
- end to end: `predict_files` itself (decode in worker processes, mel once per window, every fold
  model, post-processing), the number to compare with the competition's time limit;
- inference only: the same windows already decoded (mel + models).
Prints one table and writes metrics/benchmark.json.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from birdclef import paths
from birdclef.config import Params, load_params
from birdclef.windows import window_samples
from birdclef.inference import Ensemble, OnnxEnsemble, TorchEnsemble, fixed_windows
from birdclef.io import sha256_file, write_json

log = logging.getLogger(__name__)

HIDDEN_TEST_WINDOWS = 52_800  # about 1,100 soundscapes x 48 windows (SPEC 12)
KAGGLE_CORES = 4
SOUNDSCAPE_WINDOWS = 48
REPEATS = 3


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def write_soundscapes(folder: Path, minutes: float, sample_rate: int, window: int) -> list[Path]:
    """ceil(minutes / 4) ogg files of 48 windows (the last one shorter): deterministic audio."""
    total = max(1, int(round(minutes * 60 * sample_rate / window)))
    audio = fixed_windows(total, window, sample_rate=sample_rate).reshape(-1)
    paths = []
    for k in range(math.ceil(total / SOUNDSCAPE_WINDOWS)):
        part = audio[k * SOUNDSCAPE_WINDOWS * window : (k + 1) * SOUNDSCAPE_WINDOWS * window]
        path = folder / f"bench{k:04d}.ogg"
        # in blocks: one huge write call can crash libsndfile's ogg encoder
        with sf.SoundFile(path, "w", sample_rate, 1, format="OGG", subtype="VORBIS") as handle:
            for start in range(0, len(part), 10 * sample_rate):
                handle.write(part[start : start + 10 * sample_rate])
        paths.append(path)
    return paths


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def rates(
    ensemble: Ensemble, paths: list[Path], windows: np.ndarray, params: Params, repeats: int
) -> tuple[float, float]:
    """(end-to-end windows/s, inference-only windows/s) of one engine."""
    from birdclef.prediction import predict_files

    batch = params.predict.batch_windows
    ensemble.logits(windows[:2], batch)  # warm-up
    e2e = best_seconds(lambda: predict_files(paths, ensemble, params), repeats)
    core = best_seconds(lambda: ensemble.logits(windows, batch), repeats)
    return len(windows) / e2e, len(windows) / core


def warn_if_other_models(onnx: OnnxEnsemble, checkpoints: Path) -> None:
    recorded = onnx.manifest.get("checkpoints_sha256", {})
    for path in sorted(checkpoints.glob("fold*.pt")):
        if recorded.get(path.name) not in (None, sha256_file(path)):
            log.warning("benchmark: %s is not the checkpoint exported to the ONNX models", path)


def run(
    minutes: float, onnx_dir: Path, checkpoints: Path, threads: int, params: Params,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    from birdclef.audio import decode_windows

    cores = threads or os.cpu_count() or 1
    torch.set_num_threads(cores)
    onnx, eager = OnnxEnsemble(onnx_dir, cores), TorchEnsemble(checkpoints)
    warn_if_other_models(onnx, checkpoints)
    cfg = onnx.frontend_cfg
    with tempfile.TemporaryDirectory(prefix="birdclef-bench-") as tmp:
        paths = write_soundscapes(Path(tmp), minutes, cfg.sample_rate, window_samples(cfg))
        windows = np.concatenate(
            [decode_windows(p, cfg.sample_rate, window_samples(cfg))[1] for p in paths]
        )
        onnx_e2e, onnx_core = rates(onnx, paths, windows, params, repeats)
        eager_e2e, eager_core = rates(eager, paths, windows, params, repeats)
    per_core = onnx_e2e / cores
    return {
        "machine": machine(),
        "cores": cores,
        "models": len(onnx.sessions),
        "windows": len(windows),
        "batch_windows": params.predict.batch_windows,
        "onnx_windows_per_s": onnx_e2e,
        "eager_windows_per_s": eager_e2e,
        "ratio": onnx_e2e / eager_e2e,
        "onnx_inference_only_windows_per_s": onnx_core,
        "eager_inference_only_windows_per_s": eager_core,
        "inference_only_ratio": onnx_core / eager_core,
        "onnx_windows_per_s_per_core": per_core,
        "projected_minutes_52800_windows_4_cores": HIDDEN_TEST_WINDOWS / (per_core * KAGGLE_CORES) / 60,
    }


def cli(args: Any) -> None:
    params = load_params(args.params)
    threads = params.predict.threads if args.threads is None else args.threads
    rounds = paths.trained_rounds()
    if not rounds:
        raise FileNotFoundError("no trained students (run dvc repro first)")
    result = run(args.minutes, Path(args.models), paths.students(rounds[-1]), threads, params)
    write_json(Path("metrics/benchmark.json"), result)
    print("end to end = decode (worker processes) + mel once + all models + post-processing")
    for key, value in result.items():
        print(f"{key:45s} {value:.2f}" if isinstance(value, float) else f"{key:45s} {value}")


def training_run(params_path: str, batches: int) -> dict[str, Any]:
    """Teacher training throughput of fold 0 through the training engine's own epoch function,
    against its data loader alone (same batches)."""
    from dataclasses import replace

    from birdclef.engine import FoldJob, build_trainer, epoch_loader, fold_datasets, train_epoch
    from birdclef.device import resolve_device, set_threads
    from birdclef.engine import seed_everything
    from birdclef.training import background_mixes, load_training_data, soundscape_windows

    params = load_params(params_path)
    cfg = params.teacher
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    table, classes, store = load_training_data()
    job = FoldJob(role="benchmark", fold=0, cfg=cfg, model_cfg=params.model,
                  frontend_cfg=params.frontend, table=table, classes=classes, clip_store=store)
    if cfg.soundscape_mix.p > 0:
        job = replace(job, window_mixes=background_mixes(cfg, soundscape_windows(params)))
    train_set, _, _ = fold_datasets(job)
    started, seen = time.perf_counter(), 0
    for step, (audio, _, _) in enumerate(epoch_loader(train_set, cfg, job.seed, 0)):
        if step == batches:
            break
        seen += audio.shape[0]
    loader_rate = seen / (time.perf_counter() - started)
    trainer = build_trainer(job, len(train_set) // min(cfg.batch_size, len(train_set)))
    _, seen, seconds = train_epoch(trainer, job, train_set, 0, "benchmark", max_steps=batches)
    train_rate = seen / seconds
    return {"device": str(resolve_device(cfg.device)), "batch_size": cfg.batch_size,
            "num_workers": cfg.num_workers, "channels_last": cfg.channels_last,
            "loader_samples_per_s": loader_rate, "train_samples_per_s": train_rate,
            "loader_headroom": loader_rate / train_rate}


def training_cli(args: Any) -> None:
    result = training_run(args.params, args.batches)
    write_json(Path("metrics/benchmark_training.json"), result)
    for key, value in result.items():
        print(f"{key:25s} {value:.2f}" if isinstance(value, float) else f"{key:25s} {value}")
