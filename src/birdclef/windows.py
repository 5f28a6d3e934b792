"""5-second windows of a recording and their row ids: the one rule for pseudo-labelling, the student's
soundscape windows, evaluation, prediction and the sample generator's window labels (SPEC 5, 12).

A recording of `s` seconds has ceil(round(s) / window seconds) windows, at least one; a last partial
window is zero-padded, centred (left pad = floor(deficit / 2)). A 240-s soundscape gives 48 windows,
a 37-s file 8. Row ids are `<stem>_<end second>`: 5, 10, ..., 240.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


class HasWindow(Protocol):
    window_seconds: float
    sample_rate: int


def window_samples(cfg: HasWindow) -> int:
    """Samples in one window (160,000 for 5 s at 32 kHz)."""
    return int(round(cfg.window_seconds * cfg.sample_rate))


def window_count(n_samples: int, window: int, sample_rate: int) -> int:
    """Windows of a recording of `n_samples`; a tail under half a second past a boundary is
    dropped, as in the original (its duration is rounded to whole seconds first)."""
    seconds = round(n_samples / sample_rate)
    return max(1, math.ceil(seconds * sample_rate / window))


def pad_centred(piece: np.ndarray, window: int) -> np.ndarray:
    """`piece` cut or zero-padded to `window` samples, the padding split with floor(deficit/2) on
    the left (the partial last window of SPEC 5 and the short validation clip of SPEC 4.3)."""
    if piece.size >= window:
        return np.asarray(piece[:window], dtype=np.float32)
    out = np.zeros(window, dtype=np.float32)
    left = (window - piece.size) // 2
    out[left : left + piece.size] = piece
    return out


def window_bounds(index: int, window: int) -> tuple[int, int]:
    """Sample range [start, stop) of window `index` in the recording (stop may pass its end)."""
    return index * window, (index + 1) * window


def frame_windows(audio: np.ndarray, window: int, sample_rate: int) -> np.ndarray:
    """(n_windows, window) non-overlapping float32 windows of one recording."""
    count = window_count(audio.size, window, sample_rate)
    out = np.zeros((count, window), dtype=np.float32)
    full = min(audio.size // window, count)
    out[:full] = audio[: full * window].reshape(full, window)
    if count > full:
        start, stop = window_bounds(full, window)
        out[full] = pad_centred(audio[start:stop], window)
    return out


def row_ids(stem: str, n_windows: int, window_seconds: float) -> list[str]:
    """`<stem>_<end second>` of each window (SPEC 12)."""
    return [f"{stem}_{int(round((i + 1) * window_seconds))}" for i in range(n_windows)]
