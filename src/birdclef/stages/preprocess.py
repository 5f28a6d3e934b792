"""preprocess: read every source, apply the cap merge, decode only the records that are kept.

Outputs (data contracts in the README):
    data/interim/metadata.parquet   every candidate record of every source, with status and rank
    data/interim/clips/             sharded store: start and end 10 s of each kept record
    data/interim/soundscapes/       sharded store: every unlabelled soundscape of the main
                                    competition (sources.main), whole
    data/interim/bad_files.csv      every file that could not be used as it is, and why
    reports/details/preprocess.json counts, sizes, time, records/s, bad and repaired files

Every file is decoded before any is judged, so one run lists every bad file. A file that cannot
be decoded is skipped (`audio.on_error: skip`: a record's metadata status becomes
`dropped_<problem>`) or fails the stage once all are listed (`fail`); a file with NaN/inf samples
or a truncated one is repaired (audio.py) and used. Each is logged as a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from birdclef import paths, tracking
from birdclef.paths import BAD_FILES, CLIPS, METADATA, SOUNDSCAPES
from birdclef.audio import (AUDIO_SUFFIXES, NON_FINITE, TRUNCATED, Attempt, AudioDecodeError, attempt,
                            decode, decode_edges)
from birdclef.config import AudioConfig, Params
from birdclef.io import atomic_path, progress, write_csv, write_json, write_parquet
from birdclef.parallel import ordered_map, worker_count
from birdclef.selection import KEPT, is_main, merge_and_cap, records_to_decode
from birdclef.sources import (SourceError, read_near_duplicates, read_sources,
                              unlabelled_soundscape_folder)
from birdclef.store import ShardWriter

log = logging.getLogger(__name__)
DETAILS = paths.details("preprocess")
BAD_FILE_COLUMNS = ["path", "id", "role", "problem", "action", "detail", "non_finite_samples",
                    "missing_seconds"]
SKIPPED, USED = "skipped", "used"


class BadAudioError(AudioDecodeError):
    """Files that cannot be decoded, with `audio.on_error: fail` (all listed in bad_files.csv)."""


class StoreResult(NamedTuple):
    index: pd.DataFrame
    bytes: int
    issues: list[dict[str, Any]]  # rows of bad_files.csv


def decode_all(fn: Callable[[str], Attempt], files: list[str], workers: int,
               desc: str) -> Iterator[Attempt]:
    """fn over the files in a bounded worker pool, in order (deterministic stores), with a bar."""
    return iter(progress(ordered_map(fn, files, min(worker_count(workers), max(1, len(files)))),
                         total=len(files), desc=desc, unit="file", mininterval=1.0))


def issue_rows(result: Attempt, key: str, role: str) -> list[dict[str, Any]]:
    """bad_files.csv rows of one decoded file: one per problem, none for a clean file."""
    base = {"path": str(result.path), "id": key, "role": role}
    if result.value is None:
        return [{**base, "problem": result.problem, "action": SKIPPED, "detail": result.error,
                 "non_finite_samples": 0, "missing_seconds": 0.0}]
    return [{**base, "problem": problem, "action": USED, "detail": detail,
             "non_finite_samples": result.repairs.non_finite if problem == NON_FINITE else 0,
             "missing_seconds": result.repairs.missing_seconds if problem == TRUNCATED else 0.0}
            for problem, detail in result.repairs.problems().items()]


def write_clip_store(records: pd.DataFrame, cfg: AudioConfig, directory: Path) -> StoreResult:
    """Decode the first and last `clip_seconds` of each record into a store."""
    keep = int(round(cfg.clip_seconds * cfg.sample_rate))
    writer = ShardWriter(directory, cfg.store_dtype, cfg.shard_mb << 20)
    fn = partial(attempt, decode_edges, sample_rate=cfg.sample_rate, seconds=cfg.clip_seconds)
    rows, issues = [], []
    decoded = decode_all(fn, records["audio_path"].tolist(), cfg.workers, "clips")
    for record_id, result in zip(records["record_id"], decoded):
        issues += issue_rows(result, record_id, "record")
        if result.value is None:
            continue
        first, last, total, source_rate = result.value
        first_at = writer.append(first)
        # A record no longer than the clip is stored once; both addresses point at it.
        last_at = first_at if total <= keep else writer.append(last)
        rows.append((record_id, *first_at, *last_at, total, source_rate))
    index = pd.DataFrame(rows, columns=[
        "record_id", "first_shard", "first_offset", "first_length", "last_shard", "last_offset",
        "last_length", "total_samples", "source_sample_rate"])
    writer.close(index)
    return StoreResult(index, writer.total_bytes, issues)


def list_soundscapes(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def write_soundscape_store(paths: Iterable[Path], cfg: AudioConfig, directory: Path) -> StoreResult:
    paths = list(paths)
    writer = ShardWriter(directory, cfg.store_dtype, cfg.shard_mb << 20)
    fn = partial(attempt, decode, sample_rate=cfg.sample_rate)
    rows, issues = [], []
    for path, result in zip(paths, decode_all(fn, [str(p) for p in paths], cfg.workers,
                                              "soundscapes")):
        issues += issue_rows(result, path.stem, "soundscape")
        if result.value is not None:
            rows.append((path.stem, str(path), *writer.append(result.value)))
    index = pd.DataFrame(rows, columns=["soundscape_id", "path", "shard", "offset", "length"])
    writer.close(index)
    return StoreResult(index, writer.total_bytes, issues)


def drop_bad_records(candidates: pd.DataFrame, issues: pd.DataFrame) -> pd.DataFrame:
    """The selected rows (main records, kept extras) of skipped records get the status
    `dropped_<problem>`: out of the training table, with the reason."""
    skipped = issues[(issues["role"] == "record") & (issues["action"] == SKIPPED)]
    status = "dropped_" + skipped.set_index("id")["problem"]
    selected = is_main(candidates) | (candidates["status"] == KEPT)
    rows = selected & candidates["record_id"].isin(status.index)
    out = candidates.copy()
    out.loc[rows, "status"] = out.loc[rows, "record_id"].map(status)
    return out


def report_issues(issues: pd.DataFrame, on_error: str) -> None:
    """A warning per file; with on_error `fail`, BadAudioError once every file is listed."""
    for row in issues.itertuples():
        log.warning("preprocess: %s %s %s: %s", row.action, row.role, row.path, row.detail)
    skipped = issues[issues["action"] == SKIPPED]
    if on_error == "fail" and len(skipped):
        shown = "; ".join(skipped["detail"].head(3))
        raise BadAudioError(f"{len(skipped)} audio files cannot be decoded (audio.on_error: fail), "
                            f"all listed in {BAD_FILES}: {shown}")


def issue_metrics(issues: pd.DataFrame) -> dict[str, Any]:
    skipped = issues[issues["action"] == SKIPPED]
    return {
        "records_skipped": int((skipped["role"] == "record").sum()),
        "soundscapes_skipped": int((skipped["role"] == "soundscape").sum()),
        "files_repaired": int(issues.loc[issues["action"] == USED, "path"].nunique()),
        "non_finite_samples": int(issues["non_finite_samples"].sum()),
        "truncated_files": int((issues["problem"] == TRUNCATED).sum()),
        "truncated_missing_seconds": round(float(issues["missing_seconds"].sum()), 2),
    }


def check_inputs_under_root(params: Params) -> None:
    """Every configured input lies under sources.root, through no symlink: DVC hashes that folder
    without following the links inside it, so an input outside it or linked into it would be read
    here but missing from the input's hash, and its changes would go unseen."""
    root = Path(params.sources.root)
    for key, value in params.sources.model_dump(exclude={"root", "main"}).items():
        if value is None:
            continue
        path = Path(value)
        if not path.is_relative_to(root):
            raise SourceError(f"sources.{key}: {path} is not under sources.root ({root}), the "
                              "input DVC tracks: move it there")
        linked = [f for f in (path, *path.parents) if f.is_relative_to(root) and f != root
                  and f.is_symlink()]
        if linked:
            raise SourceError(f"sources.{key}: {linked[0]} is a symlink inside sources.root, which "
                              "DVC does not follow: move the folder there (or link sources.root)")


def preprocess(params: Params) -> dict[str, Any]:
    started = time.perf_counter()
    check_inputs_under_root(params)
    tables = read_sources(params.sources)
    read_near_duplicates(params.sources.near_duplicates)  # fail early on a bad duplicates file
    candidates = merge_and_cap(tables, params.sample.cap, params.sample.xc_species_threshold,
                               params.sources.main)
    to_decode = records_to_decode(candidates)
    soundscapes = list_soundscapes(unlabelled_soundscape_folder(params.sources))

    # Both stores are committed together, and only when the run is not failed by bad files.
    with atomic_path(CLIPS) as clips_tmp, atomic_path(SOUNDSCAPES) as scapes_tmp:
        t0 = time.perf_counter()
        clips = write_clip_store(to_decode, params.audio, clips_tmp)
        t1 = time.perf_counter()
        scapes = write_soundscape_store(soundscapes, params.audio, scapes_tmp)
        t2 = time.perf_counter()
        issues = pd.DataFrame(clips.issues + scapes.issues, columns=BAD_FILE_COLUMNS)
        write_csv(BAD_FILES, issues)
        report_issues(issues, params.audio.on_error)
    candidates = drop_bad_records(candidates, issues)
    write_parquet(METADATA, candidates)

    metrics = {
        "candidates": int(len(candidates)),
        "records_decoded": int(len(clips.index)),
        "soundscapes": int(len(scapes.index)),
        **issue_metrics(issues),
        "clip_store_mb": round(clips.bytes / 2**20, 2),
        "soundscape_store_mb": round(scapes.bytes / 2**20, 2),
        "clip_decode_seconds": round(t1 - t0, 2),
        "records_per_second": round(len(to_decode) / max(t1 - t0, 1e-9), 1),
        "soundscape_decode_seconds": round(t2 - t1, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    for source, count in candidates["source"].value_counts().sort_index().items():
        metrics[f"rows_{source}"] = int(count)
    write_json(DETAILS, metrics)
    return metrics


def main(params: Params) -> None:
    logged = params.model_dump(include={"sources", "audio"})
    logged["sample"] = params.sample.model_dump(include={"cap", "xc_species_threshold"})
    # The generated corpus is this stage's upstream only where it is the data read.
    generated = params.sources.is_root(params.make_sample.out_dir)
    with tracking.stage_run(
        "preprocess", logged, params.tracking.experiment, inputs=[params.sources.root],
        upstream=["make_sample"] if generated else [],
    ) as run:
        try:
            metrics = preprocess(params)
        except BadAudioError:
            run.log_artifact(BAD_FILES, "tables")  # the list belongs to the run they failed too
            raise
        run.log_artifact(BAD_FILES, "tables")
        run.log_metrics(metrics)
        run.log_artifact(METADATA, "tables")
    log.info("preprocess: %d candidate records, %d decoded (%.0f records/s), %d soundscapes, "
             "%d records and %d soundscapes skipped, %d files repaired, %.1f s",
             metrics["candidates"], metrics["records_decoded"], metrics["records_per_second"],
             metrics["soundscapes"], metrics["records_skipped"], metrics["soundscapes_skipped"],
             metrics["files_repaired"], metrics["seconds"])
