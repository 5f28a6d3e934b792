"""`birdclef predict`: a folder of soundscapes -> the competition's submission.csv (ONNX, CPU).

Files are decoded in worker processes with a bounded number in flight (memory stays flat on 1,100
soundscapes), each soundscape's windows are batched, the mel is computed once per window for all
fold models, predictions are post-processed per soundscape. A file that cannot be decoded is
reported (stderr, `<output>.errors.txt`, the summary) and skipped, or fails the run (`on_error`).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from birdclef.audio import AUDIO_SUFFIXES, AudioDecodeError, decode_windows
from birdclef.config import FrontendConfig, Params, load_params
from birdclef.inference import OnnxEnsemble
from birdclef.io import atomic_path, write_csv
from birdclef.postprocess import postprocess


class Prediction(NamedTuple):
    row_ids: list[str]
    probs: np.ndarray  # (windows of all files, classes), post-processed
    logits: list[np.ndarray]  # per file (folds, windows, classes)
    skipped: list[str]  # "path: reason"


def decoded(paths: Sequence[Path], cfg: FrontendConfig, workers: int) -> Iterator[tuple]:
    """Decode in order with at most 2 x workers files in flight.

    Workers come from a fork server: forking this process, whose torch and ONNX Runtime thread
    pools are running, can crash the child.
    """
    window = int(round(cfg.window_seconds * cfg.sample_rate))
    fn = partial(decode_windows, sample_rate=cfg.sample_rate, window=window)
    if workers <= 1:
        yield from map(fn, paths)
        return
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        queue = iter(paths)
        pending = deque(pool.apply_async(fn, (p,)) for _, p in zip(range(2 * workers), queue))
        while pending:
            result = pending.popleft().get()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(pool.apply_async(fn, (nxt,)))
            yield result


def predict_files(
    paths: Sequence[Path],
    ensemble: OnnxEnsemble,
    params: Params,
    *,
    workers: int | None = None,
    on_error: str | None = None,
    smoothing: bool | None = None,
) -> Prediction:
    cfg = ensemble.frontend_cfg
    workers = params.predict.workers if workers is None else workers
    on_error = on_error or params.predict.on_error
    row_ids: list[str] = []
    probs: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    skipped: list[str] = []
    bar = tqdm(total=len(paths), desc="predict", unit="file", mininterval=1.0)
    for path, windows, error in decoded(paths, cfg, workers or os.cpu_count() or 1):
        bar.update()
        if windows is None:
            if on_error == "fail":
                raise AudioDecodeError(error)
            print(f"predict: skipped {error}", file=sys.stderr)
            skipped.append(error)
            continue
        file_logits = ensemble.logits(windows, params.predict.batch_windows)
        logits.append(file_logits)
        probs.append(postprocess(file_logits, params.postprocess, smoothing))
        seconds = cfg.window_seconds
        row_ids += [f"{path.stem}_{int(round((i + 1) * seconds))}" for i in range(len(windows))]
    bar.close()
    empty = np.zeros((0, len(ensemble.classes)), np.float32)
    return Prediction(row_ids, np.concatenate(probs) if probs else empty, logits, skipped)


def list_audio(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def predict_folder(
    input_dir: Path,
    models_dir: Path,
    output: Path,
    params: Params,
    *,
    threads: int | None = None,
    workers: int | None = None,
    on_error: str | None = None,
    smoothing: bool | None = None,
) -> dict[str, Any]:
    paths = list_audio(input_dir)
    ensemble = OnnxEnsemble(models_dir, params.predict.threads if threads is None else threads)
    result = predict_files(
        paths, ensemble, params, workers=workers, on_error=on_error, smoothing=smoothing
    )
    table = pd.DataFrame(result.probs, columns=ensemble.classes)
    table.insert(0, "row_id", result.row_ids)
    write_csv(output, table)
    errors = output.with_name(output.name + ".errors.txt")
    if result.skipped:
        with atomic_path(errors) as tmp:
            tmp.write_text("\n".join(result.skipped) + "\n")
    elif errors.exists():
        errors.unlink()
    return {"files": len(paths), "rows": len(result.row_ids), "skipped": result.skipped,
            "output": str(output)}


def cli(args: Any) -> None:
    params = load_params(args.params)
    summary = predict_folder(
        Path(args.input), Path(args.models), Path(args.output), params,
        threads=args.threads, workers=args.workers, on_error=args.on_error,
        smoothing=False if args.no_smoothing else None,
    )
    print(f"predict: {summary['rows']} rows from {summary['files']} files -> {summary['output']}"
          + (f"; {len(summary['skipped'])} skipped (see .errors.txt)" if summary["skipped"] else ""))
