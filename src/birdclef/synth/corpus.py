"""The corpus: one job per audio file, rendered in parallel, then the tables, swapped in whole."""

from __future__ import annotations

import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from birdclef.config import MakeSampleConfig
from birdclef.io import progress as io_progress
from birdclef.parallel import ordered_map, worker_count
from birdclef.synth.audiofile import write_audio
from birdclef.synth.layouts import (
    EVAL_DIR,
    _audio_paths,
    _metadata_tables,
    _write_tables,
    main_layout,
)
from birdclef.synth.plan import MAIN, _Planner
from birdclef.synth.render import (
    PEAK,
    FocalSpec,
    SongEvent,
    SoundscapeSpec,
    _render_focal,
    _render_soundscape,
    _rms,
)
from birdclef.synth.voices import SR

Rendered = tuple[int, float, list[SongEvent]]  # job index, seconds written, labelled songs


@dataclass(frozen=True)
class AudioJob:
    """One audio file to render; it is written to `paths[0]` and copied to the other paths."""

    paths: tuple[str, ...]  # relative to the corpus root
    spec: FocalSpec | SoundscapeSpec
    fmt: str = "ogg"
    sample_rate: int = SR
    channels: int = 1
    trim: tuple[float, float] = (0.0, 0.0)  # seconds cut from the start and the end
    gain_db: float = 0.0

    @property
    def cost(self) -> float:
        factor = 2.5 if self.fmt == "mp3" else 1.0
        return self.spec.seconds * factor * self.channels * self.sample_rate / SR


def _run_job(args: tuple[int, AudioJob, str]) -> Rendered:
    index, job, root = args
    rng = np.random.default_rng(job.spec.seed)
    events: list[SongEvent] = []
    if isinstance(job.spec, SoundscapeSpec):
        audio, events = _render_soundscape(job.spec, rng)
    else:
        audio = _render_focal(job.spec, rng)
    audio = _file_variations(job, audio)
    first = Path(root) / job.paths[0]
    write_audio(first, audio, job.sample_rate, job.fmt)
    for other_path in job.paths[1:]:
        target = Path(root) / other_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, target)
    return index, len(audio) / job.sample_rate, events


def _file_variations(job: AudioJob, audio: np.ndarray) -> np.ndarray:
    """Trim, gain, stereo and sample rate of this file, then a peak within PEAK."""
    # Variations of this file only (a duplicate of the record elsewhere keeps the plain sound).
    post = np.random.default_rng(
        [*job.spec.seed.generate_state(2), zlib.crc32(job.paths[0].encode())]
    )
    if job.trim != (0.0, 0.0):
        audio = audio[int(job.trim[0] * SR) : len(audio) - int(job.trim[1] * SR)]
    if job.gain_db:
        audio = audio * 10 ** (job.gain_db / 20)
    if job.channels == 2:
        delay = int(post.integers(3, 30))
        other = np.roll(audio, delay) * post.uniform(0.7, 1.0)
        other += 0.01 * _rms(audio) * post.standard_normal(len(audio))
        audio = np.stack([audio, other], axis=1)
    peak = np.abs(audio).max()
    if peak > PEAK:
        audio = audio * (PEAK / peak)
    if job.sample_rate != SR:
        audio = soxr.resample(audio, SR, job.sample_rate)
        audio = np.clip(audio, -PEAK, PEAK)
    return audio


def _record_jobs(plan: _Planner) -> list[AudioJob]:
    return [
        AudioJob(_audio_paths(r, plan), r.audio, r.fmt, r.sample_rate, r.channels, r.trim, r.gain_db)
        for source in (MAIN, "bc23", "bc22", "bc21", "bc20", "bc00")
        for r in plan.records[source]
    ]


def _render_all(jobs: list[AudioJob], root: Path, progress: bool) -> dict[int, Rendered]:
    """Every job rendered under `root`, keyed by job index."""
    # Longest first, so the last job a worker takes is a short one.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
    args = [(i, jobs[i], str(root)) for i in order]
    workers = min(worker_count(0), len(jobs))
    results: dict[int, Rendered] = {}
    with io_progress(total=len(jobs), desc="make_sample", unit="file", disable=not progress) as bar:
        for rendered in ordered_map(_run_job, args, workers):
            results[rendered[0]] = rendered
            bar.update()
    return results


def make_sample_corpus(
    cfg: MakeSampleConfig, out_dir: Path | None = None, progress: bool = True
) -> dict:
    """Generate the sample corpus into `out_dir` (default `cfg.out_dir`), replacing it atomically.

    Returns a summary: counts per source (numbers at the top level, usable as metrics) and the
    seconds taken.
    """
    started = time.perf_counter()
    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    plan = _Planner(cfg)
    plan.plan_all()
    tables = _metadata_tables(plan)
    main = main_layout(plan)
    unlabeled = plan.soundscape_specs(cfg.n_soundscapes, cfg.soundscape_seconds)
    unlabelled_ids = [sid for sid, _ in unlabeled]
    labelled = plan.soundscape_specs(
        cfg.n_eval_soundscapes, cfg.eval_soundscape_seconds or cfg.soundscape_seconds
    )
    scapes = f"{main.folder}/{main.soundscapes}"
    jobs = [
        *_record_jobs(plan),
        *(AudioJob((f"{scapes}/{stem}.ogg",), spec)
          for stem, (_, spec) in zip(main.soundscape_stems(unlabelled_ids), unlabeled, strict=True)),
        *(AudioJob((f"{EVAL_DIR}/{sid}.ogg",), s) for sid, s in labelled),
    ]
    first_eval = len(jobs) - len(labelled)

    tmp = _empty_tmp_dir(out)
    try:
        results = _render_all(jobs, tmp, progress)
        labelled_events = [results[first_eval + k][2] for k in range(len(labelled))]
        _write_tables(plan, tables, tmp, unlabelled_ids, labelled, labelled_events)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(out, tmp)

    return {
        "n_species": len(plan.codes),
        f"{main.source}_records": len(tables[MAIN]),
        "bc23_records": len(tables["bc23"]),
        "bc22_records": len(tables["bc22"]),
        "bc21_records": len(tables["bc21"]),
        "bc20_records": len(tables["bc20"]),
        "bc00_records": len(plan.records["bc00"]),
        "unlabeled_soundscapes": len(unlabeled),
        "labelled_soundscapes": len(labelled),
        "audio_seconds": round(sum(seconds for _, seconds, _ in results.values()), 1),
        "seconds_taken": round(time.perf_counter() - started, 2),
        "out_dir": str(out),
    }


def _empty_tmp_dir(out: Path) -> Path:
    """An empty folder next to `out` (so the final rename stays on one file system)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _replace_dir(out: Path, new: Path) -> None:
    """Rename `new` to `out`; an existing `out` is moved aside first and removed last."""
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old)
    else:
        os.replace(new, out)
