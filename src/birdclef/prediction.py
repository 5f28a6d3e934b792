"""`birdclef predict`: a folder of soundscapes -> the competition's submission.csv (ONNX, CPU).

Files are decoded in worker processes with a bounded number in flight (memory stays flat on 1,100
soundscapes), each soundscape's windows are batched, the mel is computed once per window for all
fold models, predictions are post-processed per soundscape. A file that cannot be decoded is
reported (stderr, `<output>.errors.txt`, the summary) and skipped, or fails the run (`on_error`);
a file that decoding repaired (NaN/inf samples set to 0, a truncated file decoded as far as it
goes) is used and reported the same way. A submission with a non-finite value is never written.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from birdclef.audio import AUDIO_SUFFIXES, Attempt, AudioDecodeError, decode_windows
from birdclef.config import FrontendConfig, Params, load_params
from birdclef.inference import Ensemble, OnnxEnsemble
from birdclef.io import atomic_path, progress, write_csv
from birdclef.parallel import ordered_map, worker_count
from birdclef.postprocess import postprocess
from birdclef.windows import row_ids, window_samples


class NonFiniteSubmissionError(ValueError):
    """The predictions hold NaN or inf (a broken model): the submission is not written."""


class Prediction(NamedTuple):
    row_ids: list[str]
    probs: np.ndarray  # (windows of all files, classes), post-processed
    logits: list[np.ndarray]  # per decoded file: (folds, windows, classes)
    skipped: list[str]  # "path: reason"
    repaired: list[str]  # "path: what decoding repaired" (the file is used)


def decoded(paths: Sequence[Path], cfg: FrontendConfig, workers: int) -> Iterator[Attempt]:
    """Decode in input order with a bounded number of files in flight (birdclef.parallel)."""
    fn = partial(decode_windows, sample_rate=cfg.sample_rate, window=window_samples(cfg))
    return ordered_map(fn, paths, workers)


def predict_files(
    paths: Sequence[Path],
    ensemble: Ensemble,
    params: Params,
    *,
    workers: int | None = None,
    on_error: str | None = None,
    smoothing: bool | None = None,
) -> Prediction:
    """The predict path shared with evaluate and benchmark: decode, mel once, models, post-process.

    `ensemble` is an OnnxEnsemble (what `birdclef predict` submits) or a TorchEnsemble (benchmark).
    `workers` 0 means one decoding process per core; `on_error` "fail" raises AudioDecodeError.
    """
    cfg = ensemble.frontend_cfg
    workers = params.predict.workers if workers is None else workers
    on_error = on_error or params.predict.on_error
    ids: list[str] = []
    probs: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    skipped: list[str] = []
    repaired: list[str] = []
    # no more decoding processes than files: a pool costs about a second to start
    workers = min(worker_count(workers), max(1, len(paths)))
    stream = decoded([Path(p) for p in paths], cfg, workers)
    with contextlib.closing(stream), progress(
        total=len(paths), desc="predict", unit="file", mininterval=1.0
    ) as bar:
        for path, windows, error, repairs, _ in stream:
            bar.update()
            if windows is None:
                if on_error == "fail":
                    raise AudioDecodeError(error)
                tqdm.write(f"predict: skipped {error}", file=sys.stderr)
                skipped.append(error)
                continue
            if repairs.problems():
                repaired.append(f"{path}: {'; '.join(repairs.problems().values())}")
                tqdm.write(f"predict: repaired {repaired[-1]}", file=sys.stderr)
            file_logits = ensemble.logits(windows, params.predict.batch_windows)
            logits.append(file_logits)
            probs.append(postprocess(file_logits, params.postprocess, smoothing))
            ids += row_ids(path.stem, len(windows), cfg.window_seconds)
    empty = np.zeros((0, len(ensemble.classes)), np.float32)
    return Prediction(ids, np.concatenate(probs) if probs else empty, logits, skipped, repaired)


def list_audio(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def submission_table(result: Prediction, classes: list[str]) -> pd.DataFrame:
    """The submission; NonFiniteSubmissionError if any probability is NaN or inf."""
    bad_rows = ~np.isfinite(result.probs).all(axis=1)
    if bad_rows.any():
        shown = [result.row_ids[i] for i in np.flatnonzero(bad_rows)[:5]]
        raise NonFiniteSubmissionError(
            f"{int(bad_rows.sum())} of {len(bad_rows)} submission rows hold NaN or inf "
            f"(first: {', '.join(shown)}); the models' outputs are not finite, nothing written")
    table = pd.DataFrame(result.probs, columns=classes)
    table.insert(0, "row_id", result.row_ids)
    return table


def write_errors(output: Path, result: Prediction) -> None:
    """`<output>.errors.txt` lists the skipped and the repaired files (one `skipped <path>:
    <reason>` or `repaired <path>: <what>` line each); a stale one from an earlier run is removed."""
    errors = output.with_name(output.name + ".errors.txt")
    lines = [f"skipped {e}" for e in result.skipped] + [f"repaired {r}" for r in result.repaired]
    if lines:
        with atomic_path(errors) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    elif errors.exists():
        errors.unlink()


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
    """Every audio file of `input_dir` -> `output` (submission.csv); returns a summary dict."""
    started = time.perf_counter()
    paths = list_audio(Path(input_dir))
    ensemble = OnnxEnsemble(Path(models_dir), params.predict.threads if threads is None else threads)
    result = predict_files(
        paths, ensemble, params, workers=workers, on_error=on_error, smoothing=smoothing
    )
    output = Path(output)
    write_csv(output, submission_table(result, ensemble.classes))
    write_errors(output, result)
    seconds = time.perf_counter() - started
    return {"files": len(paths), "rows": len(result.row_ids), "skipped": result.skipped,
            "repaired": result.repaired, "output": str(output), "models": len(ensemble.sessions),
            "seconds": seconds, "windows_per_s": len(result.row_ids) / seconds if seconds > 0 else 0.0}


def cli(args: Any) -> None:
    params = load_params(args.params)
    summary = predict_folder(
        Path(args.input), Path(args.models), Path(args.output), params,
        threads=args.threads, workers=args.workers, on_error=args.on_error,
        smoothing=False if args.no_smoothing else None,
    )
    problems = [f"{len(summary[k])} {k}" for k in ("skipped", "repaired") if summary[k]]
    print(f"predict: {summary['rows']} rows from {summary['files']} files, {summary['models']} "
          f"models, {summary['seconds']:.1f} s ({summary['windows_per_s']:.1f} windows/s) -> "
          f"{summary['output']}" + (f"; {', '.join(problems)} (see .errors.txt)" if problems else ""))
