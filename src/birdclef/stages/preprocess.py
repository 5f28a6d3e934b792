"""preprocess: read every source, apply the cap merge, decode only the records that are kept.

Outputs (data contracts in the README):
    data/interim/metadata.parquet   every candidate record of every source, with status and rank
    data/interim/clips/             sharded store: start and end 10 s of each kept record
    data/interim/soundscapes/       sharded store: every unlabelled soundscape of the main
                                    competition (sources.main), whole
    reports/details/preprocess.json counts, sizes, time, records/s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef import paths, tracking
from birdclef.paths import CLIPS, METADATA, SOUNDSCAPES
from birdclef.audio import AUDIO_SUFFIXES, decode, decode_edges
from birdclef.config import AudioConfig, Params
from birdclef.io import atomic_path, progress, write_json, write_parquet
from birdclef.parallel import ordered_map, worker_count
from birdclef.selection import merge_and_cap, records_to_decode
from birdclef.sources import read_near_duplicates, read_sources, unlabelled_soundscape_folder
from birdclef.store import ShardWriter

log = logging.getLogger(__name__)
DETAILS = paths.details("preprocess")


def decode_all(fn: Callable[[str], Any], files: list[str], workers: int, desc: str) -> Iterator:
    """fn over the files in a bounded worker pool, in order (deterministic stores), with a bar."""
    return iter(progress(ordered_map(fn, files, min(worker_count(workers), max(1, len(files)))),
                         total=len(files), desc=desc, unit="file", mininterval=1.0))


def write_clip_store(
    records: pd.DataFrame, cfg: AudioConfig, directory: Path
) -> tuple[pd.DataFrame, int]:
    """Decode the first and last `clip_seconds` of each record into a store: (index, bytes)."""
    keep = int(round(cfg.clip_seconds * cfg.sample_rate))
    writer = ShardWriter(directory, cfg.store_dtype, cfg.shard_mb << 20)
    fn = partial(decode_edges, sample_rate=cfg.sample_rate, seconds=cfg.clip_seconds)
    rows = []
    decoded = decode_all(fn, records["audio_path"].tolist(), cfg.workers, "clips")
    for record_id, (first, last, total, source_rate) in zip(records["record_id"], decoded):
        first_at = writer.append(first)
        # A record no longer than the clip is stored once; both addresses point at it.
        last_at = first_at if total <= keep else writer.append(last)
        rows.append((record_id, *first_at, *last_at, total, source_rate))
    index = pd.DataFrame(
        rows,
        columns=[
            "record_id",
            "first_shard",
            "first_offset",
            "first_length",
            "last_shard",
            "last_offset",
            "last_length",
            "total_samples",
            "source_sample_rate",
        ],
    )
    writer.close(index)
    return index, writer.total_bytes


def list_soundscapes(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def write_soundscape_store(
    paths: Iterable[Path], cfg: AudioConfig, directory: Path
) -> tuple[pd.DataFrame, int]:
    paths = list(paths)
    writer = ShardWriter(directory, cfg.store_dtype, cfg.shard_mb << 20)
    fn = partial(decode, sample_rate=cfg.sample_rate)
    rows = []
    decoded = decode_all(fn, [str(p) for p in paths], cfg.workers, "soundscapes")
    for path, audio in zip(paths, decoded):
        rows.append((path.stem, str(path), *writer.append(audio)))
    index = pd.DataFrame(rows, columns=["soundscape_id", "path", "shard", "offset", "length"])
    writer.close(index)
    return index, writer.total_bytes


def preprocess(params: Params) -> dict[str, Any]:
    started = time.perf_counter()
    tables = read_sources(params.sources)
    read_near_duplicates(params.sources.near_duplicates)  # fail early on a bad duplicates file
    candidates = merge_and_cap(tables, params.sample.cap, params.sample.xc_species_threshold,
                               params.sources.main)
    to_decode = records_to_decode(candidates)
    soundscapes = list_soundscapes(unlabelled_soundscape_folder(params.sources))

    t0 = time.perf_counter()
    with atomic_path(CLIPS) as tmp:
        _, clip_bytes = write_clip_store(to_decode, params.audio, tmp)
    clip_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    with atomic_path(SOUNDSCAPES) as tmp:
        _, scape_bytes = write_soundscape_store(soundscapes, params.audio, tmp)
    scape_seconds = time.perf_counter() - t0
    write_parquet(METADATA, candidates)

    metrics = {
        "candidates": int(len(candidates)),
        "records_decoded": int(len(to_decode)),
        "soundscapes": int(len(soundscapes)),
        "clip_store_mb": round(clip_bytes / 2**20, 2),
        "soundscape_store_mb": round(scape_bytes / 2**20, 2),
        "clip_decode_seconds": round(clip_seconds, 2),
        "records_per_second": round(len(to_decode) / max(clip_seconds, 1e-9), 1),
        "soundscape_decode_seconds": round(scape_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    for source, count in candidates["source"].value_counts().sort_index().items():
        metrics[f"rows_{source}"] = int(count)
    write_json(DETAILS, metrics)
    return metrics


def main(params: Params) -> None:
    logged = params.model_dump(include={"sources", "audio"})
    logged["sample"] = params.sample.model_dump(include={"cap", "xc_species_threshold"})
    with tracking.stage_run(
        "preprocess",
        logged,
        params.tracking.experiment,
        inputs=[params.make_sample.out_dir],
        upstream=["make_sample"],
    ) as run:
        metrics = preprocess(params)
        run.log_metrics(metrics)
        run.log_artifact(METADATA, "tables")
    log.info("preprocess: %d candidate records, %d decoded (%.0f records/s), %d soundscapes, %.1f s",
             metrics["candidates"], metrics["records_decoded"], metrics["records_per_second"],
             metrics["soundscapes"], metrics["seconds"])
