"""The mel front end of SPEC 4.5 without PyTorch: what the exported models' predict path runs.

Audio (B, T) -> image (B, 3, n_mels, frames), the same computation as `frontend.MelFrontend` (the
training module, which documents the steps) in NumPy and SciPy's FFT, so that `birdclef predict` on
ONNX Runtime or OpenVINO imports no torch: about 450 MB less memory and a Kaggle notebook needs no
torch wheel. It is also faster on a CPU: 1.1 ms a window single-threaded against 2.7 ms for the
torch module (48 windows on this Zen 4).

The two differ only by floating-point rounding: the HTK filterbank is computed here in float64 (torchaudio's
in float32: weights differ by up to 3e-5) and the FFTs differ. tests/test_frontend.py pins the
difference in image units.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import ThreadpoolController

from birdclef.config import FrontendConfig

# Filters per band. Single-threaded on this CPU (Zen 4), 48 windows, torch module: 8 filters 97 ms,
# 16 91 ms, 32 95 ms, 64 100 ms; the dense product costs 170 ms (the STFT alone about 80 ms).
BAND_FILTERS = 16
AMIN = 1e-10  # AmplitudeToDB's floor for power: 10 * log10(1e-10) = -100 dB

Band = tuple[int, int, int, int, np.ndarray]


def check_frontend(cfg: FrontendConfig) -> None:
    if cfg.f_max > cfg.sample_rate / 2:
        raise ValueError(f"frontend.f_max={cfg.f_max} is above Nyquist ({cfg.sample_rate / 2})")
    if cfg.win_length > cfg.n_fft:
        raise ValueError(f"frontend.win_length={cfg.win_length} exceeds n_fft={cfg.n_fft}")


def htk_filterbank(cfg: FrontendConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32 HTK triangles, peak 1, no area normalisation: torchaudio's
    `melscale_fbanks(..., norm=None, mel_scale="htk")`, computed in float64."""
    freqs = np.linspace(0.0, cfg.sample_rate // 2, cfg.n_fft // 2 + 1)
    mel_min, mel_max = (2595.0 * np.log10(1.0 + f / 700.0) for f in (cfg.f_min, cfg.f_max))
    corners = 700.0 * (10.0 ** (np.linspace(mel_min, mel_max, cfg.n_mels + 2) / 2595.0) - 1.0)
    widths = np.diff(corners)
    slopes = corners[None, :] - freqs[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def bands(filterbank: np.ndarray, size: int) -> list[Band]:
    """Groups of `size` neighbouring filters: (first filter, end filter, first bin, end bin,
    weights (end filter - first filter, 2 x bins)) with each bin's weight repeated for the
    interleaved re and im of the FFT."""
    out = []
    for start in range(0, filterbank.shape[1], size):
        block = filterbank[:, start : start + size]
        used = np.flatnonzero(block.sum(axis=1) > 0)
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        weights = np.ascontiguousarray(np.repeat(block[lo:hi], 2, axis=0).T)
        out.append((start, start + block.shape[1], 2 * lo, 2 * hi, weights))
    return out


def hann(length: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default), float32."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


class NumpyMelFrontend:
    """Audio windows (B, T) float32 -> (B, 3, n_mels, frames) float32 images."""

    def __init__(self, cfg: FrontendConfig) -> None:
        check_frontend(cfg)
        self.cfg = cfg
        self.window = hann(cfg.win_length)
        self.bands = bands(htk_filterbank(cfg), BAND_FILTERS)
        self.ramp = np.linspace(0.0, 1.0, cfg.n_mels, dtype=np.float32)
        # The band products run on one BLAS thread: they are small, and BLAS threads left spinning
        # after them take the cores from the engine's (predict on 100 one-minute files: 18.0 s
        # with 2 BLAS threads, 14.1 s with 1).
        self.blas = ThreadpoolController()

    def mel_power(self, audio: np.ndarray) -> np.ndarray:
        """(B, T) float32 audio -> (n_mels, B, frames) mel power."""
        cfg = self.cfg
        half = cfg.n_fft // 2
        padded = np.pad(audio, ((0, 0), (half, half)), mode="reflect")
        # torch.stft centres the window in n_fft; the power spectrum does not change under the
        # circular shift that moves it to the start, so only its win_length samples are multiplied.
        left = (cfg.n_fft - cfg.win_length) // 2
        frames = sliding_window_view(padded, cfg.n_fft, axis=1)[:, :: cfg.hop_length, left : left + cfg.win_length]
        spec = scipy.fft.rfft(frames * self.window, n=cfg.n_fft, axis=-1)
        batch, n_frames = spec.shape[:2]
        squares = spec.view(np.float32).reshape(batch * n_frames, -1)  # interleaved re, im
        np.square(squares, out=squares)
        mel = np.empty((cfg.n_mels, batch * n_frames), np.float32)
        with self.blas.limit(limits=1, user_api="blas"):
            for first, end, lo, hi, weights in self.bands:
                np.matmul(weights, squares[:, lo:hi].T, out=mel[first:end])
        return mel.reshape(cfg.n_mels, batch, n_frames)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if audio.ndim != 2:
            raise ValueError(f"the mel front end expects (batch, samples) audio, got shape {audio.shape}")
        x = np.asarray(audio, dtype=np.float32)
        x = x / np.maximum(x.std(axis=1, ddof=1, keepdims=True), np.float32(self.cfg.std_eps))
        power = np.maximum(self.mel_power(x), np.float32(AMIN))
        scale = self.cfg.db_scale
        image = np.empty((x.shape[0], 3, power.shape[0], power.shape[2]), np.float32)
        np.log10(power.transpose(1, 0, 2), out=image[:, 0])
        image[:, 0] *= np.float32(10.0 / scale)
        image[:, 0] -= np.float32(self.cfg.db_offset / scale)
        image[:, 1] = image[:, 0]
        image[:, 2] = self.ramp[:, None]
        return image
