"""`birdclef benchmark`: predict's real path on generated soundscape files, explained.

Deterministic soundscapes (noise plus tones, 4 minutes each, 32 kHz ogg like the competition's) are
written to a temp folder. Then, with the engine, precision and threads predict uses:
- end to end, `repeats` times (min / median / max): predict's own path (decode in worker processes
  ahead of inference, mel once per window, the models, post-processing, the CSV written), the
  models already loaded (their load time is reported apart);
- a breakdown in milliseconds per window, each part timed alone in this process on the same files:
  decode and resample (the workers' share, one process), mel, each fold model, the fused graph,
  post-processing; `overhead` is the end-to-end time per window not spent in this process's parts
  (waiting for the decoders, Python glue); `predict_parts` is what predict itself measured;
- the models' FLOPs (counted with torch's FlopCounterMode on the backbone) against the machine's
  fp32 peak (a short matmul loop), and the projected minutes of the hidden test sets on 4 cores
  (scaled linearly from the cores used here).
Writes metrics/benchmark.json and an MLflow run named `benchmark`.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from birdclef import paths, tracking
from birdclef.config import FrontendConfig, Params, load_params
from birdclef.inference import ExportedEnsemble, Stopwatch, TorchEnsemble, fixed_windows, load_ensemble
from birdclef.io import write_json
from birdclef.parallel import usable_cores, worker_count
from birdclef.postprocess import postprocess
from birdclef.windows import frame_windows, window_samples

KAGGLE_CORES = 4
# (windows, files) of the hidden test sets: 2024 about 1,100 four-minute soundscapes (SPEC 12),
# 2025 about 700 one-minute soundscapes
HIDDEN_TESTS = {"2024": (52_800, 1_100), "2025": (8_400, 700)}
SOUNDSCAPE_WINDOWS = 48
REPEATS = 5


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
    files = []
    for k in range(math.ceil(total / SOUNDSCAPE_WINDOWS)):
        part = audio[k * SOUNDSCAPE_WINDOWS * window : (k + 1) * SOUNDSCAPE_WINDOWS * window]
        path = folder / f"bench{k:04d}.ogg"
        # in blocks: one huge write call can crash libsndfile's ogg encoder
        with sf.SoundFile(path, "w", sample_rate, 1, format="OGG", subtype="VORBIS") as handle:
            for start in range(0, len(part), 10 * sample_rate):
                handle.write(part[start : start + 10 * sample_rate])
        files.append(path)
    return files


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def seconds_of(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def end_to_end(
    files: list[Path], ensemble: ExportedEnsemble, params: Params, out_dir: Path, repeats: int
) -> tuple[list[float], dict[str, float]]:
    """Seconds of each run of predict's path over `files` (models loaded), and the parts predict
    itself measured in its median run (decode_wait, mel, models, postprocess)."""
    from birdclef.prediction import Problems, predict_stream, write_submission

    runs = []
    for _ in range(repeats):
        problems = Problems([], [], Stopwatch())
        seconds = seconds_of(lambda: write_submission(
            out_dir / "submission.csv", ensemble.classes,
            predict_stream(files, ensemble, params, problems)))
        runs.append((seconds, dict(problems.clock.seconds)))
    runs.sort(key=lambda item: item[0])
    return [seconds for seconds, _ in runs], runs[len(runs) // 2][1]


def decode_parts(files: list[Path], cfg: FrontendConfig) -> tuple[np.ndarray, dict[str, float]]:
    """Every file's windows, and the seconds of decoding (libsndfile, channels mixed) and of
    resampling (soxr, as predict's decoder: none for files at the model's rate), one process."""
    parts = {"decode": 0.0, "resample": 0.0}
    windows = []
    for path in files:
        started = time.perf_counter()
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        parts["decode"] += time.perf_counter() - started
        if rate != cfg.sample_rate:
            started = time.perf_counter()
            audio = soxr.resample(audio, rate, cfg.sample_rate, quality="HQ").astype(np.float32)
            parts["resample"] += time.perf_counter() - started
        windows.append(frame_windows(audio, window_samples(cfg), cfg.sample_rate))
    return np.concatenate(windows), parts


def inference_parts(
    ensemble: ExportedEnsemble, separate: ExportedEnsemble, windows: np.ndarray, params: Params
) -> dict[str, float]:
    """Seconds of the mel, of each fold model alone (`separate`), of the fused graph (when
    `ensemble` is fused) and of the post-processing, batch by batch as predict runs them."""
    batch = params.predict.batch_windows
    clock = Stopwatch()
    for start in range(0, len(windows), batch):
        with clock.part("mel"):
            images = ensemble.images(windows[start : start + batch])
        for fold, model in zip(separate.folds, separate.runners):
            with clock.part(f"model{fold}"):
                model(images)
        if ensemble.fused:
            with clock.part("fused_models"):
                ensemble.runners[0](images)
    logits = np.zeros((len(ensemble.folds), SOUNDSCAPE_WINDOWS, len(ensemble.classes)), np.float32)
    for _ in range(math.ceil(len(windows) / SOUNDSCAPE_WINDOWS)):
        with clock.part("postprocess"):
            postprocess(logits, params.postprocess)
    return clock.seconds


def model_gflop(params: Params, cfg: FrontendConfig, classes: int) -> float:
    """FLOPs of one window through one fold's backbone (params.model), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from birdclef.model import build_model

    model = build_model(params.model, cfg, classes, pretrained=False).eval()
    with torch.inference_mode():
        image = model.frontend(torch.zeros(1, window_samples(cfg)))
        with FlopCounterMode(display=False) as counter:
            model.backbone(image)
    return counter.get_total_flops() / 1e9


def peak_gflops(seconds: float = 1.0, size: int = 2048) -> float:
    """The machine's fp32 matmul rate with torch's threads: a short loop of square products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.mm(a, b)  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return count * 2 * size**3 / (time.perf_counter() - started) / 1e9


def eager_rate(checkpoints: Path, windows: np.ndarray, batch: int) -> float:
    """Ensemble windows/s of eager PyTorch on the decoded windows (mel included): the reference."""
    eager = TorchEnsemble(checkpoints)
    return len(windows) / seconds_of(lambda: eager.logits(windows, batch))


def run(
    minutes: float, models_dir: Path, threads: int, params: Params, repeats: int = REPEATS,
    checkpoints: Path | None = None,
) -> dict[str, Any]:
    """The benchmark on `minutes` of generated audio with predict's engine and precision;
    `checkpoints` (fold*.pt) adds eager PyTorch's rate for comparison."""
    cores = threads or usable_cores()
    torch.set_num_threads(cores)
    predict_cfg = params.predict
    started = time.perf_counter()
    ensemble = load_ensemble(models_dir, predict_cfg.engine, predict_cfg.precision, cores)
    load_seconds = time.perf_counter() - started
    separate = (load_ensemble(models_dir, predict_cfg.engine, ensemble.precision, cores, fused=False)
                if ensemble.fused else ensemble)
    cfg = ensemble.frontend_cfg
    with tempfile.TemporaryDirectory(prefix="birdclef-bench-") as tmp:
        files = write_soundscapes(Path(tmp), minutes, cfg.sample_rate, window_samples(cfg))
        e2e, predict_parts = end_to_end(files, ensemble, params, Path(tmp), repeats)
        windows, parts = decode_parts(files, cfg)
    parts.update(inference_parts(ensemble, separate, windows, params))
    result = summary(e2e, parts, predict_parts, len(windows), len(ensemble.folds))
    gflop = model_gflop(params, cfg, len(ensemble.classes))
    peak = peak_gflops()
    roofline = peak / (gflop * len(ensemble.folds))
    result.update({
        "machine": machine(), "threads": cores,
        "workers": min(worker_count(predict_cfg.workers), len(files)),
        "engine": f"{ensemble.engine}/{ensemble.precision}", "fused": ensemble.fused,
        "files": len(files), "batch_windows": predict_cfg.batch_windows, "repeats": repeats,
        "load_seconds": load_seconds, "gflop_per_window_per_model": gflop, "peak_gflops": peak,
        "roofline_ensemble_windows_per_s": roofline,
        "roofline_fraction": result["ensemble_windows_per_s"] / roofline,
        "models_roofline_fraction": result["models_only_model_windows_per_s"] * gflop / peak,
    })
    per_core = result["ensemble_windows_per_s"] / cores
    for year, (n_windows, _) in HIDDEN_TESTS.items():
        result[f"projected_minutes_{year}_4_cores"] = n_windows / (per_core * KAGGLE_CORES) / 60
    if checkpoints is not None:
        result["eager_windows_per_s"] = eager_rate(checkpoints, windows, predict_cfg.batch_windows)
    return result


def summary(
    e2e: list[float], parts: dict[str, float], predict_parts: dict[str, float], windows: int,
    models: int,
) -> dict[str, Any]:
    """Rates from the end-to-end seconds, and every part in milliseconds per window."""
    per_window = {name: 1000 * seconds / windows for name, seconds in parts.items()}
    fold_ms = sum(v for k, v in per_window.items() if k.startswith("model"))
    models_ms = per_window.get("fused_models", fold_ms)
    median_ms = 1000 * statistics.median(e2e) / windows
    per_window["overhead"] = median_ms - per_window["mel"] - models_ms - per_window["postprocess"]
    rates = [windows / seconds for seconds in e2e]
    return {
        "windows": windows, "models": models,
        "end_to_end_seconds": spread(e2e),
        "ensemble_windows_per_s": windows / statistics.median(e2e),
        "ensemble_windows_per_s_spread": spread(rates),
        "model_windows_per_s": models * windows / statistics.median(e2e),
        "models_only_model_windows_per_s": 1000 * models / models_ms,
        "ms_per_window": per_window,
        "predict_parts_ms_per_window": {k: 1000 * v / windows for k, v in predict_parts.items()},
    }


def report(result: dict[str, Any]) -> str:
    ms = result["ms_per_window"]
    e2e = result["end_to_end_seconds"]
    lines = [
        f"predict end to end: {result['engine']}{' fused' if result['fused'] else ''}, "
        f"{result['models']} models, {result['threads']} threads, {result['workers']} decode "
        f"workers, {result['windows']} windows in {result['files']} files, {result['repeats']} runs",
        f"  seconds: min {e2e['min']:.2f}, median {e2e['median']:.2f}, max {e2e['max']:.2f} "
        f"(models loaded in {result['load_seconds']:.1f} s, apart)",
        f"  {result['ensemble_windows_per_s']:.1f} ensemble windows/s, "
        f"{result['model_windows_per_s']:.1f} model windows/s (median run)",
        "  ms per window: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()),
        "  predict's own parts, ms per window: "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["predict_parts_ms_per_window"].items()),
        f"  {result['gflop_per_window_per_model']:.3f} GFLOP per window per model; fp32 peak "
        f"{result['peak_gflops']:.0f} GFLOP/s (matmul loop) -> roofline "
        f"{result['roofline_ensemble_windows_per_s']:.0f} ensemble windows/s: end to end at "
        f"{100 * result['roofline_fraction']:.0f} %, the models alone at "
        f"{100 * result['models_roofline_fraction']:.0f} %",
    ]
    for year, (n_windows, n_files) in HIDDEN_TESTS.items():
        lines.append(f"  projected {year} hidden test ({n_windows:,} windows, ~{n_files:,} files) on "
                     f"{KAGGLE_CORES} cores: {result[f'projected_minutes_{year}_4_cores']:.1f} min")
    if "eager_windows_per_s" in result:
        lines.append(f"  eager PyTorch (mel + models, no decode): {result['eager_windows_per_s']:.1f} "
                     "ensemble windows/s")
    return "\n".join(lines)


def numbers(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The result's numbers as flat MLflow metric names."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def cli(args: Any) -> None:
    params = load_params(args.params)
    threads = params.predict.threads if args.threads is None else args.threads
    rounds = paths.trained_rounds()
    checkpoints = paths.students(rounds[-1]) if rounds else None
    logged = {"predict": params.predict.model_dump(), "postprocess": params.postprocess.model_dump(),
              "benchmark": {"minutes": args.minutes, "models": args.models, "threads": threads}}
    with tracking.stage_run("benchmark", logged, params.tracking.experiment) as mlflow_run:
        result = run(args.minutes, Path(args.models), threads, params, checkpoints=checkpoints)
        write_json(Path("metrics/benchmark.json"), result)
        mlflow_run.log_metrics(numbers(result))
        mlflow_run.log_dict(result, "benchmark.json")
    print(report(result))


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
    for step, (audio, *_) in enumerate(epoch_loader(train_set, cfg, job.seed, 0)):
        if step == batches:
            break
        seen += audio.shape[0]
    loader_rate = seen / (time.perf_counter() - started)
    trainer = build_trainer(job, len(train_set) // min(cfg.batch_size, len(train_set)))
    stats = train_epoch(trainer, job, train_set, 0, "benchmark", max_steps=batches)
    train_rate = stats.items / stats.seconds
    return {"device": str(resolve_device(cfg.device)), "batch_size": cfg.batch_size,
            "num_workers": cfg.num_workers, "channels_last": cfg.channels_last,
            "loader_samples_per_s": loader_rate, "train_samples_per_s": train_rate,
            "loader_headroom": loader_rate / train_rate}


def training_cli(args: Any) -> None:
    result = training_run(args.params, args.batches)
    write_json(Path("metrics/benchmark_training.json"), result)
    for key, value in result.items():
        print(f"{key:25s} {value:.2f}" if isinstance(value, float) else f"{key:25s} {value}")
