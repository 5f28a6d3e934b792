"""`birdclef predict`: a folder of soundscapes -> the competition's submission.csv (exported
models on ONNX Runtime or OpenVINO, CPU).

Files are decoded in worker processes with a bounded number in flight, ahead of the file whose
windows the models are running on; each soundscape's windows are batched, the mel is computed once
per window for all fold models, predictions are post-processed per soundscape and appended to the
CSV, so memory stays flat in the number of files. A file that cannot be decoded is
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
from birdclef.inference import Ensemble, Stopwatch, load_ensemble, predict_windows
from birdclef.io import atomic_path, progress
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
    seconds: dict[str, float] | None = None  # decode_wait, mel, models, postprocess


class FileResult(NamedTuple):
    """One decoded file's rows."""

    row_ids: list[str]
    probs: np.ndarray  # (windows, classes), post-processed
    logits: np.ndarray  # (folds, windows, classes)


class Problems(NamedTuple):
    """What a pass over the files reports besides the rows."""

    skipped: list[str]
    repaired: list[str]
    clock: Stopwatch


def decoded(paths: Sequence[Path], cfg: FrontendConfig, workers: int) -> Iterator[Attempt]:
    """Decode in input order with a bounded number of files in flight (birdclef.parallel)."""
    fn = partial(decode_windows, sample_rate=cfg.sample_rate, window=window_samples(cfg))
    return ordered_map(fn, paths, workers)


def predict_stream(
    paths: Sequence[Path], ensemble: Ensemble, params: Params, problems: Problems, *,
    workers: int | None = None, on_error: str | None = None, smoothing: bool | None = None,
) -> Iterator[FileResult]:
    """Each decodable file's rows, in input order; skipped and repaired files go to `problems`.

    The worker processes decode the next files while this process runs the models on the current
    one; `problems.clock` gets the seconds spent waiting for them (decode_wait), in the mel, the
    models and the post-processing. `workers` 0 means one decoding process per core; `on_error`
    "fail" raises AudioDecodeError.
    """
    cfg = ensemble.frontend_cfg
    workers = params.predict.workers if workers is None else workers
    on_error = on_error or params.predict.on_error
    clock = problems.clock
    # no more decoding processes than files: a pool costs about a second to start
    stream = decoded([Path(p) for p in paths], cfg, min(worker_count(workers), max(1, len(paths))))
    with contextlib.closing(stream), progress(
        total=len(paths), desc="predict", unit="file", mininterval=1.0
    ) as bar:
        while True:
            with clock.part("decode_wait"):
                attempt = next(stream, None)
            if attempt is None:
                return
            bar.update()
            path, windows, error, repairs, _ = attempt
            if windows is None:
                if on_error == "fail":
                    raise AudioDecodeError(error)
                tqdm.write(f"predict: skipped {error}", file=sys.stderr)
                problems.skipped.append(error)
                continue
            if repairs.problems():
                problems.repaired.append(f"{path}: {'; '.join(repairs.problems().values())}")
                tqdm.write(f"predict: repaired {problems.repaired[-1]}", file=sys.stderr)
            logits = predict_windows(ensemble, windows, params.predict.batch_windows, clock)
            with clock.part("postprocess"):
                probs = postprocess(logits, params.postprocess, smoothing)
            yield FileResult(row_ids(Path(path).stem, len(windows), cfg.window_seconds), probs, logits)


def predict_files(
    paths: Sequence[Path],
    ensemble: Ensemble,
    params: Params,
    *,
    workers: int | None = None,
    on_error: str | None = None,
    smoothing: bool | None = None,
) -> Prediction:
    """The predict path shared with evaluate and benchmark: decode, mel once, models, post-process,
    every file's rows and logits kept (`predict_folder` streams them to the CSV instead).

    `ensemble` is an exported ensemble (what `birdclef predict` submits) or a TorchEnsemble.
    """
    problems = Problems([], [], Stopwatch())
    results = list(predict_stream(paths, ensemble, params, problems, workers=workers,
                                  on_error=on_error, smoothing=smoothing))
    ids = [row for result in results for row in result.row_ids]
    probs = (np.concatenate([r.probs for r in results]) if results
             else np.zeros((0, len(ensemble.classes)), np.float32))
    return Prediction(ids, probs, [r.logits for r in results], problems.skipped, problems.repaired,
                      dict(problems.clock.seconds))


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


def write_submission(output: Path, classes: list[str], results: Iterator[FileResult]) -> int:
    """Each file's rows appended to `output` as they come (memory stays flat in the number of
    files); NonFiniteSubmissionError, and nothing written, if any probability is NaN or inf.
    Returns the number of rows."""
    rows = 0
    with atomic_path(output) as tmp, open(tmp, "w", newline="") as handle:
        pd.DataFrame(columns=["row_id", *classes]).to_csv(handle, index=False)
        for result in results:
            table = submission_table(Prediction(result.row_ids, result.probs, [], [], []), classes)
            table.to_csv(handle, header=False, index=False)
            rows += len(table)
    return rows


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
    """Every audio file of `input_dir` -> `output` (submission.csv), on predict.engine at
    predict.precision; returns a summary dict."""
    started = time.perf_counter()
    paths = list_audio(Path(input_dir))
    cfg = params.predict
    ensemble = load_ensemble(Path(models_dir), cfg.engine, cfg.precision,
                             cfg.threads if threads is None else threads)
    problems = Problems([], [], Stopwatch())
    results = predict_stream(paths, ensemble, params, problems, workers=workers, on_error=on_error,
                             smoothing=smoothing)
    output = Path(output)
    rows = write_submission(output, ensemble.classes, results)
    write_errors(output, Prediction([], np.zeros(0), [], problems.skipped, problems.repaired))
    seconds = time.perf_counter() - started
    return {"files": len(paths), "rows": rows, "skipped": problems.skipped,
            "repaired": problems.repaired, "output": str(output), "models": len(ensemble.folds),
            "engine": f"{ensemble.engine}/{ensemble.precision}", "fused": ensemble.fused,
            "seconds": seconds, "windows_per_s": rows / seconds if seconds > 0 else 0.0,
            "parts_seconds": dict(problems.clock.seconds)}


def cli(args: Any) -> None:
    params = load_params(args.params)
    summary = predict_folder(
        Path(args.input), Path(args.models), Path(args.output), params,
        threads=args.threads, workers=args.workers, on_error=args.on_error,
        smoothing=False if args.no_smoothing else None,
    )
    problems = [f"{len(summary[k])} {k}" for k in ("skipped", "repaired") if summary[k]]
    print(f"predict: {summary['rows']} rows from {summary['files']} files, {summary['models']} "
          f"models ({summary['engine']}), {summary['seconds']:.1f} s "
          f"({summary['windows_per_s']:.1f} windows/s) -> {summary['output']}" + (f"; {', '.join(problems)} (see .errors.txt)" if problems else ""))
