"""The mel front end of SPEC 4.5 as one torch module, shared by training, pseudo-labelling and predict.

Audio (B, T) -> image (B, 3, n_mels, frames): per-clip std normalisation, HTK mel power spectrogram
(torchaudio's MelSpectrogram settings: periodic Hann window of win_length centred in n_fft, reflect
padding, power 2, no filter normalisation), dB with no top_db, (dB - offset) / scale, then channels
[mel, mel, frequency ramp]. It always runs in float32 with autocast off and no gradient, whatever the
caller's context, as in the original. `mel.NumpyMelFrontend` is the same computation without torch,
for the exported models' predict path.

It computes what torchaudio's MelSpectrogram + AmplitudeToDB compute, at a fraction of the cost:
- the filterbank is banded: a mel filter spans 1 to 19 of the 769 FFT bins, so the filters are cut
  into groups of `BAND_FILTERS` neighbours and each group multiplies only the bins it touches (about
  11,300 multiply-adds per frame instead of the dense 224 x 769 = 172,000);
- the power is re^2 + im^2, squared in place on the STFT's own memory (no abs(), no square root),
  and the sum over re and im is folded into the band products (each filter row is repeated for the
  interleaved re and im).
The audio is divided by its std before the STFT, as in the original: scaling the power afterwards
would save a pass over the samples but moves quiet bins by up to 0.3 dB (the FFT's rounding noise
is relative to its input).
tests/test_frontend.py pins the difference from the torchaudio reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchaudio.functional import melscale_fbanks

from birdclef.config import FrontendConfig
from birdclef.mel import AMIN, BAND_FILTERS, bands, check_frontend

# Buffers of the torchaudio modules this front end replaced: derived from the config, so checkpoints
# that still hold them load with them dropped.
LEGACY_KEYS = ("mel.spectrogram.window", "mel.mel_scale.fb")


def mel_filterbank(cfg: FrontendConfig) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) HTK triangles, peak 1, no area normalisation (torchaudio's)."""
    return melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate,
                           norm=None, mel_scale="htk")


class MelFrontend(nn.Module):
    """Audio windows (B, T) -> (B, 3, n_mels, frames) float32 images. No parameters, and nothing in
    the state dict: every buffer is derived from the config."""

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        check_frontend(cfg)
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.band_bounds: list[tuple[int, int, int, int]] = []
        for k, (first, end, lo, hi, weights) in enumerate(bands(mel_filterbank(cfg).numpy(), BAND_FILTERS)):
            self.band_bounds.append((first, end, lo, hi))
            self.register_buffer(f"band{k}", torch.from_numpy(weights), persistent=False)
        # Row 0 (lowest mel band) = 0, last row = 1.
        self.register_buffer("ramp", torch.linspace(0.0, 1.0, cfg.n_mels), persistent=False)
        self.register_load_state_dict_pre_hook(_drop_legacy_buffers)

    def mel_power(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) float32 audio -> (n_mels, B, frames) mel power of the unnormalised audio."""
        cfg = self.cfg
        spec = torch.stft(audio, cfg.n_fft, cfg.hop_length, cfg.win_length, self.window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        batch, _, frames = spec.shape
        # torch.stft's result is a (B, bins, frames) view of (B, frames, bins) memory: rows of
        # interleaved re, im per frame, squared in place.
        squares = torch.view_as_real(spec.transpose(1, 2)).reshape(batch * frames, -1).square_()
        mel = torch.empty(cfg.n_mels, batch * frames, device=audio.device)
        for k, (first, end, lo, hi) in enumerate(self.band_bounds):
            torch.mm(getattr(self, f"band{k}"), squares[:, lo:hi].T, out=mel[first:end])
        return mel.view(cfg.n_mels, batch, frames)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 2:
            raise ValueError(f"MelFrontend expects (batch, samples) audio, got shape {tuple(audio.shape)}")
        # The front end is not trained and must be fp32 even inside the training step's autocast.
        with torch.no_grad(), torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.float()
            # SPEC 9.10: the original divides by std with no guard, so a silent window gives NaN.
            # clamp_min leaves every normal window bit-identical and maps silence to a finite image.
            x = x / x.std(dim=1, keepdim=True).clamp_min(self.cfg.std_eps)
            power = self.mel_power(x).clamp_min_(AMIN)
            scale = self.cfg.db_scale
            image = torch.empty(x.shape[0], 3, *power.shape[::2], device=x.device)
            # (10 * log10(power) - offset) / scale, written straight into channel 0
            torch.log10(power.permute(1, 0, 2), out=image[:, 0])
            image[:, 0].mul_(10.0 / scale).sub_(self.cfg.db_offset / scale)
            image[:, 1] = image[:, 0]
            image[:, 2] = self.ramp.view(1, -1, 1)
            return image


def _drop_legacy_buffers(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    for key in LEGACY_KEYS:
        state_dict.pop(prefix + key, None)
