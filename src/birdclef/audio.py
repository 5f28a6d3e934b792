"""Decoding (soundfile/libsndfile), resampling (soxr, librosa's default resampler), mono.

The original decoded whole files with `librosa.load(path, sr=32000)` (mono = channel mean, soxr_hq
resampling, float32). Here only the needed part is read: libsndfile seeks in ogg/mp3/wav, so the
first and last 10 s of a 60-s record cost a third of the decode. When resampling a part, a margin of
extra input is read and trimmed afterwards so the kept samples match a whole-file resample except
within a few filter taps of a cut that the original did not have.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from birdclef.windows import frame_windows

RESAMPLE_MARGIN_SECONDS = 0.05
AUDIO_SUFFIXES = (".ogg", ".mp3", ".wav", ".flac")


class AudioDecodeError(ValueError):
    """An audio file that cannot be decoded; the message names the file."""


def _mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1) if block.ndim == 2 else block


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def _open(path: str | Path) -> sf.SoundFile:
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioDecodeError(f"{path}: cannot decode audio: {exc}") from exc
    if handle.frames == 0:
        handle.close()
        raise AudioDecodeError(f"{path}: audio file has no samples")
    return handle


def _read(handle: sf.SoundFile, path: str | Path, start: int, frames: int) -> np.ndarray:
    try:
        handle.seek(start)
        block = handle.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioDecodeError(f"{path}: cannot decode audio: {exc}") from exc
    return _mono(block)


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """The whole file as float32 mono at `sample_rate` (librosa.load(path, sr=...) equivalent)."""
    with _open(path) as handle:
        audio = _read(handle, path, 0, handle.frames)
        sr_in = handle.samplerate
    if audio.size == 0:
        raise AudioDecodeError(f"{path}: audio file has no samples")
    return _resample(audio, sr_in, sample_rate)


def decode_edges(
    path: str | Path, sample_rate: int, seconds: float
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """First and last `seconds` of a record (SPEC 2): (first, last, total_samples, source_rate).

    A record no longer than `seconds` is returned whole as both parts (the same array).
    `total_samples` is the whole record's length at `sample_rate`.
    """
    keep = int(round(seconds * sample_rate))
    with _open(path) as handle:
        sr_in, frames = handle.samplerate, handle.frames
        total = int(round(frames * sample_rate / sr_in))
        margin = 0 if sr_in == sample_rate else math.ceil(RESAMPLE_MARGIN_SECONDS * sr_in)
        keep_in = math.ceil(keep * sr_in / sample_rate) + margin
        if frames <= 2 * keep_in:
            whole = _resample(_read(handle, path, 0, frames), sr_in, sample_rate)
            if whole.size == 0:
                raise AudioDecodeError(f"{path}: audio file has no samples")
            return whole[:keep], whole[-keep:], whole.size, sr_in
        first = _resample(_read(handle, path, 0, keep_in), sr_in, sample_rate)[:keep]
        last = _resample(_read(handle, path, frames - keep_in, keep_in), sr_in, sample_rate)
    return first, last[-keep:], total, sr_in


def decode_windows(
    path: str | Path, sample_rate: int, window: int
) -> tuple[str | Path, np.ndarray | None, str]:
    """(path, windows or None, error message) for a prediction worker: errors are returned, so the
    caller decides whether a bad file skips or fails the run."""
    try:
        audio = decode(path, sample_rate)
    except AudioDecodeError as exc:
        return path, None, str(exc)
    return path, frame_windows(audio, window, sample_rate), ""
