"""The mel front end of SPEC 4.5 as one torch module, shared by training, pseudo-labelling and predict.

Audio (B, T) -> image (B, 3, n_mels, frames): per-clip std normalisation, HTK mel power spectrogram,
dB, (dB - offset) / scale, then channels [mel, mel, frequency ramp]. It always runs in float32 with
autocast off and no gradient, whatever the caller's context, as in the original.
"""

from __future__ import annotations

import torch
from torch import nn
from torchaudio.transforms import AmplitudeToDB, MelSpectrogram

from birdclef.config import FrontendConfig


class MelFrontend(nn.Module):
    """Audio windows (B, T) -> (B, 3, n_mels, frames) float32 images. No parameters, only buffers."""

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        if cfg.f_max > cfg.sample_rate / 2:
            raise ValueError(f"frontend.f_max={cfg.f_max} is above Nyquist ({cfg.sample_rate / 2})")
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"frontend.win_length={cfg.win_length} exceeds n_fft={cfg.n_fft}")
        self.cfg = cfg
        self.mel = MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            mel_scale="htk",
            power=2.0,
            center=True,
            pad_mode="reflect",
            normalized=False,
            norm=None,
        )
        # stype='power' -> 10*log10(max(x, 1e-10)); no top_db, as in the original.
        self.to_db = AmplitudeToDB(stype="power", top_db=None)
        # Row 0 (lowest mel band) = 0, last row = 1. Derived from cfg, so not saved in state_dict.
        self.register_buffer("ramp", torch.linspace(0.0, 1.0, cfg.n_mels), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 2:
            raise ValueError(f"MelFrontend expects (batch, samples) audio, got shape {tuple(audio.shape)}")
        # The front end is not trained and must be fp32 even inside the training step's autocast.
        with torch.no_grad(), torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.float()
            # SPEC 9.10: the original divides by std with no guard, so a silent window gives NaN.
            # clamp_min leaves every normal window bit-identical and maps silence to a finite image.
            std = x.std(dim=1, keepdim=True).clamp_min(self.cfg.std_eps)
            x = x / std
            db = self.to_db(self.mel(x))  # (B, n_mels, frames)
            mel = (db - self.cfg.db_offset) / self.cfg.db_scale
            ramp = self.ramp.view(1, -1, 1).expand_as(mel)
            return torch.stack([mel, mel, ramp], dim=1)
