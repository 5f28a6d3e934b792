"""Decoding (soundfile/libsndfile), resampling (soxr, librosa's default resampler), mono.

The original decoded whole files with `librosa.load(path, sr=32000)` (mono = channel mean, soxr_hq
resampling, float32). Here only the needed part is read: libsndfile seeks in ogg/mp3/wav, so the
first and last 10 s of a 60-s record cost a third of the decode. When resampling a part, a margin of
extra input is read and trimmed afterwards so the kept samples match a whole-file resample except
within a few filter taps of a cut that the original did not have.

Nothing is repaired silently: NaN/inf samples are set to 0 and counted, and a file that decodes to
fewer frames than its header promises (a truncated download) is decoded as far as it goes and
reported; both come back as `Repairs` beside the audio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from birdclef.windows import frame_windows

RESAMPLE_MARGIN_SECONDS = 0.05
AUDIO_SUFFIXES = (".ogg", ".mp3", ".wav", ".flac")
# mp3 headers round the length to a codec frame (36 ms at 32 kHz): a shorter gap is not truncation
TRUNCATION_TOLERANCE_SECONDS = 0.1
# What can be wrong with a file: the first two skip it, the last two are repaired and it is used.
UNDECODABLE = "undecodable"
NO_SAMPLES = "no_samples"
NON_FINITE = "non_finite"
TRUNCATED = "truncated"


class AudioDecodeError(ValueError):
    """An audio file that cannot be decoded; the message names the file."""

    problem = UNDECODABLE


class NoSamplesError(AudioDecodeError):
    """An audio file that opens but holds no samples (empty, or its header only)."""

    problem = NO_SAMPLES


class Repairs(NamedTuple):
    """What decoding repaired in a file that is still used (zeros for a clean file)."""

    non_finite: int = 0  # NaN/inf samples set to 0
    missing_seconds: float = 0.0  # the header's length minus what decodes (a truncated file)
    header_seconds: float = 0.0  # the length the header promises (set when truncated)

    def problems(self) -> dict[str, str]:
        """NON_FINITE and TRUNCATED -> what was repaired, in words (empty for a clean file)."""
        out = {}
        if self.non_finite:
            out[NON_FINITE] = f"{self.non_finite} NaN/inf samples set to 0"
        if self.missing_seconds:
            decoded = self.header_seconds - self.missing_seconds
            out[TRUNCATED] = (f"truncated: the header says {self.header_seconds:.2f} s, "
                              f"{decoded:.2f} s decode ({self.missing_seconds:.2f} s missing)")
        return out


class Edges(NamedTuple):
    """The first and last `seconds` of a record (the same array for a short record)."""

    first: np.ndarray
    last: np.ndarray
    total_samples: int  # the whole record's length at the target rate
    source_rate: int


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
        raise NoSamplesError(f"{path}: audio file has no samples")
    return handle


def _read(handle: sf.SoundFile, path: str | Path, start: int, frames: int) -> tuple[np.ndarray, int]:
    """Up to `frames` frames from `start`, mono, with NaN/inf set to 0 before the channels are
    mixed and resampled (either would spread them): (samples, how many were set to 0)."""
    try:
        handle.seek(start)
        block = handle.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioDecodeError(f"{path}: cannot decode audio: {exc}") from exc
    bad = ~np.isfinite(block)
    non_finite = int(bad.sum())
    if non_finite:
        block[bad] = 0.0
    return _mono(block), non_finite


def _read_whole(handle: sf.SoundFile, path: str | Path, sample_rate: int) -> tuple[np.ndarray, Repairs]:
    """Every frame that decodes, at `sample_rate`; a short read is reported as truncation."""
    audio, non_finite = _read(handle, path, 0, handle.frames)
    if audio.size == 0:
        raise NoSamplesError(f"{path}: audio file has no samples")
    missing = (handle.frames - audio.size) / handle.samplerate
    if missing <= TRUNCATION_TOLERANCE_SECONDS:
        return _resample(audio, handle.samplerate, sample_rate), Repairs(non_finite)
    header = handle.frames / handle.samplerate
    return _resample(audio, handle.samplerate, sample_rate), Repairs(non_finite, missing, header)


def decode(path: str | Path, sample_rate: int) -> tuple[np.ndarray, Repairs]:
    """The whole file as float32 mono at `sample_rate` (librosa.load(path, sr=...) equivalent)."""
    with _open(path) as handle:
        return _read_whole(handle, path, sample_rate)


def decode_edges(path: str | Path, sample_rate: int, seconds: float) -> tuple[Edges, Repairs]:
    """First and last `seconds` of a record (SPEC 2), read by seeking.

    A record no longer than `seconds` is returned whole as both parts. When a seek-read comes back
    short (a truncated file: the header promises frames that do not decode), the file is decoded
    from the start as far as it goes and its edges are taken from that.
    """
    keep = int(round(seconds * sample_rate))
    with _open(path) as handle:
        sr_in, frames = handle.samplerate, handle.frames
        margin = 0 if sr_in == sample_rate else math.ceil(RESAMPLE_MARGIN_SECONDS * sr_in)
        keep_in = math.ceil(keep * sr_in / sample_rate) + margin
        if frames > 2 * keep_in:
            first, bad_first = _read(handle, path, 0, keep_in)
            last, bad_last = _read(handle, path, frames - keep_in, keep_in)
            if first.size == last.size == keep_in:
                total = int(round(frames * sample_rate / sr_in))
                edges = Edges(_resample(first, sr_in, sample_rate)[:keep],
                              _resample(last, sr_in, sample_rate)[-keep:], total, sr_in)
                return edges, Repairs(bad_first + bad_last)
        whole, repairs = _read_whole(handle, path, sample_rate)
    return Edges(whole[:keep], whole[-keep:], whole.size, sr_in), repairs


class Attempt(NamedTuple):
    """One file's decode in a worker process. Errors come back as values, so the caller can list
    every bad file and then decide whether they skip or fail the run."""

    path: str | Path
    value: Any  # the decoder's result; None when the file could not be decoded
    error: str  # why not ("" when decoded)
    repairs: Repairs
    problem: str = ""  # UNDECODABLE or NO_SAMPLES when the file could not be decoded


def attempt(decoder: Callable[..., tuple[Any, Repairs]], path: str | Path, **kwargs: Any) -> Attempt:
    """decoder(path, **kwargs) with its AudioDecodeError returned instead of raised."""
    try:
        value, repairs = decoder(path, **kwargs)
    except AudioDecodeError as exc:
        return Attempt(path, None, str(exc), Repairs(), exc.problem)
    return Attempt(path, value, "", repairs)


def _windows(path: str | Path, sample_rate: int, window: int) -> tuple[np.ndarray, Repairs]:
    audio, repairs = decode(path, sample_rate)
    return frame_windows(audio, window, sample_rate), repairs


def decode_windows(path: str | Path, sample_rate: int, window: int) -> Attempt:
    """A prediction worker's decode: (path, (windows, samples) or None, error, repairs)."""
    return attempt(_windows, path, sample_rate=sample_rate, window=window)
