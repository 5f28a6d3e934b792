"""The mel front end against SPEC 4.5: an independent numpy re-computation, and torchaudio's
MelSpectrogram + AmplitudeToDB (the implementation it replaced) within a pinned tolerance; its
torch-free twin (mel.py, the exported models' path) against both."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchaudio.transforms import AmplitudeToDB, MelSpectrogram

from birdclef.config import FrontendConfig
from birdclef.frontend import MelFrontend, mel_filterbank
from birdclef.mel import NumpyMelFrontend, htk_filterbank
from birdclef.windows import window_samples

CFG = FrontendConfig()
SR = CFG.sample_rate


@pytest.fixture(scope="module")
def frontend() -> MelFrontend:
    return MelFrontend(CFG).eval()


def _hz_to_htk(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _htk_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def _mel_centres() -> np.ndarray:
    """Centre frequency (Hz) of each HTK triangle: n_mels + 2 equally spaced mel points, inner ones."""
    pts = np.linspace(_hz_to_htk(CFG.f_min), _hz_to_htk(CFG.f_max), CFG.n_mels + 2)
    return _htk_to_hz(pts)[1:-1]


def _reference_image(x: np.ndarray) -> np.ndarray:
    """SPEC 4.5 in float64 numpy, written from the formulas (not from torchaudio): (n_mels, frames)."""
    x = x / x.std(ddof=1)
    half = CFG.n_fft // 2
    padded = np.pad(x, half, mode="reflect")
    n = np.arange(CFG.win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * math.pi * n / CFG.win_length)  # periodic Hann
    window = np.zeros(CFG.n_fft)
    left = (CFG.n_fft - CFG.win_length) // 2
    window[left : left + CFG.win_length] = hann
    frames = 1 + (len(padded) - CFG.n_fft) // CFG.hop_length
    idx = np.arange(frames)[:, None] * CFG.hop_length + np.arange(CFG.n_fft)[None, :]
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2  # (frames, n_freqs)
    # Triangles in Hz between consecutive HTK mel points, peak 1, no area normalisation.
    freqs = np.linspace(0.0, SR / 2, CFG.n_fft // 2 + 1)
    pts = _htk_to_hz(np.linspace(_hz_to_htk(CFG.f_min), _hz_to_htk(CFG.f_max), CFG.n_mels + 2))
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    rise = (freqs[:, None] - lo) / (mid - lo)
    fall = (hi - freqs[:, None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rise, fall))  # (n_freqs, n_mels)
    mel = (power @ fb).T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return (db - CFG.db_offset) / CFG.db_scale


def _test_signal(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(window_samples(CFG)) / SR
    return (0.3 * rng.standard_normal(t.size) + np.sin(2 * math.pi * 2500.0 * t)).astype(np.float32)


def test_hop_formula_and_shape_constants(frontend: MelFrontend) -> None:
    assert window_samples(CFG) == 160_000
    # SPEC 4.5: int((T - win_length + n_fft) / width) + 1 with width 224
    assert int((160_000 - CFG.win_length + CFG.n_fft) / 224) + 1 == 717 == CFG.hop_length
    # center=True: 1 + T // hop frames, so the image is 224 x 224
    assert frontend(torch.zeros(1, 160_000)).shape == (1, 3, 224, 224)


def test_output_shape_dtype_and_channels(frontend: MelFrontend) -> None:
    audio = torch.randn(2, window_samples(CFG))
    img = frontend(audio)
    assert img.shape == (2, 3, 224, 224)
    assert img.dtype == torch.float32
    assert not img.requires_grad
    assert torch.equal(img[:, 0], img[:, 1])
    ramp = torch.linspace(0.0, 1.0, CFG.n_mels)
    assert torch.equal(img[:, 2], ramp.view(1, -1, 1).expand(2, -1, 224))
    assert img[0, 2, 0, 0] == 0.0 and img[0, 2, -1, 0] == 1.0


def test_matches_numpy_reference(frontend: MelFrontend) -> None:
    x = _test_signal()
    got = frontend(torch.from_numpy(x)[None])[0, 0].numpy()
    want = _reference_image(x.astype(np.float64))
    assert got.shape == want.shape == (224, 224)
    # 1e-4 normalised units = 0.008 dB
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


# The banded front end against torchaudio, in normalised image units ((dB - 40) / 80): the largest
# difference measured on the signals below is 1.2e-7 (one float32 step near 1; 1e-5 dB).
TORCHAUDIO_ATOL = 1e-6


def _torchaudio_image(audio: torch.Tensor) -> torch.Tensor:
    """The reference: SPEC 4.5 with torchaudio's transforms, as the front end computed it before."""
    mel = MelSpectrogram(sample_rate=SR, n_fft=1536, win_length=1024, hop_length=717, f_min=90.0,
                         f_max=14000.0, n_mels=224, mel_scale="htk", power=2.0, center=True,
                         pad_mode="reflect", normalized=False, norm=None)
    std = audio.std(dim=1, keepdim=True).clamp_min(CFG.std_eps)
    db = AmplitudeToDB(stype="power", top_db=None)(mel(audio / std))
    image = (db - CFG.db_offset) / CFG.db_scale
    ramp = torch.linspace(0.0, 1.0, CFG.n_mels).view(1, -1, 1).expand_as(image)
    return torch.stack([image, image, ramp], dim=1)


def _varied_batch() -> torch.Tensor:
    """Tones from 100 Hz to 15 kHz over noise from -80 dB to 0 dB, a silent window, a click."""
    rng = np.random.default_rng(4)
    t = np.arange(window_samples(CFG)) / SR
    noise = rng.standard_normal((12, t.size)) * np.logspace(-4, 0, 12)[:, None]
    tones = np.sin(2 * math.pi * np.linspace(100.0, 15000.0, 12)[:, None] * t)
    audio = torch.from_numpy((noise + tones).astype(np.float32))
    audio[5] = 0.0
    audio[6] = 0.0
    audio[6, 80_000] = 1.0
    return audio


def test_matches_torchaudio_within_pinned_tolerance(frontend: MelFrontend) -> None:
    audio = _varied_batch()
    got, want = frontend(audio), _torchaudio_image(audio)
    assert got.shape == want.shape == (12, 3, 224, 224)
    torch.testing.assert_close(got, want, rtol=0, atol=TORCHAUDIO_ATOL)


def test_banded_filterbank_is_torchaudios(frontend: MelFrontend) -> None:
    reference = MelSpectrogram(sample_rate=SR, n_fft=1536, win_length=1024, hop_length=717,
                               f_min=90.0, f_max=14000.0, n_mels=224, mel_scale="htk", norm=None)
    assert torch.equal(mel_filterbank(CFG), reference.mel_scale.fb)
    # each band multiplies only the bins its filters touch: far fewer than the dense 224 x 769
    taps = sum(int(getattr(frontend, f"band{k}").numel()) for k in range(len(frontend.band_bounds)))
    assert taps < 224 * 769 * 2 / 10


def test_loads_checkpoints_with_torchaudio_buffers(frontend: MelFrontend) -> None:
    """Checkpoints written before the banded front end hold torchaudio's window and filterbank."""
    legacy = {"mel.spectrogram.window": torch.hann_window(1024),
              "mel.mel_scale.fb": mel_filterbank(CFG)}
    fresh = MelFrontend(CFG)
    fresh.load_state_dict(legacy, strict=True)
    torch.testing.assert_close(fresh(_varied_batch()[:2]), frontend(_varied_batch()[:2]), rtol=0, atol=0)


def test_sine_peaks_at_nearest_mel_band(frontend: MelFrontend) -> None:
    t = np.arange(window_samples(CFG)) / SR
    x = np.sin(2 * math.pi * 1000.0 * t).astype(np.float32)
    img = frontend(torch.from_numpy(x)[None])[0, 0]
    expected_row = int(np.argmin(np.abs(_mel_centres() - 1000.0)))
    assert int(img.mean(dim=1).argmax()) == expected_row
    # and in every frame but the two edge ones, where the reflect padding smears the spectrum
    assert torch.all(img[:, 1:-1].argmax(dim=0) == expected_row)


def test_scale_invariance(frontend: MelFrontend) -> None:
    x = torch.from_numpy(_test_signal(1))[None]
    a = frontend(x)
    b = frontend(3.0 * x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_silence_is_finite(frontend: MelFrontend) -> None:
    audio = torch.zeros(2, window_samples(CFG))
    audio[1] = torch.randn(window_samples(CFG))
    img = frontend(audio)
    assert torch.isfinite(img).all()
    # silent window: every mel cell is 10*log10(1e-10) = -100 dB -> (-100 - 40) / 80
    assert torch.all(img[0, :2] == -1.75)
    # the non-silent neighbour is unaffected by the silent one
    torch.testing.assert_close(img[1:], frontend(audio[1:]), rtol=0, atol=0)


def test_fp32_under_autocast_and_grad(frontend: MelFrontend) -> None:
    x = torch.from_numpy(_test_signal(2))[None].double().requires_grad_(True)
    plain = frontend(x.detach().float())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = frontend(x)
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got, plain, rtol=0, atol=0)


def test_rejects_wrong_rank(frontend: MelFrontend) -> None:
    with pytest.raises(ValueError, match="batch, samples"):
        frontend(torch.zeros(window_samples(CFG)))


def test_no_state_dict_parameters(frontend: MelFrontend) -> None:
    assert list(frontend.parameters()) == []
    assert frontend.state_dict() == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(frontend: MelFrontend) -> None:
    x = torch.from_numpy(_test_signal(3))[None]
    cpu = frontend(x)
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        gpu = frontend.to("cuda")(x.cuda()).cpu()
    frontend.to("cpu")
    assert gpu.dtype == torch.float32
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-4)


# The torch-free front end against the float64 reference, in image units, per window of the varied
# batch. Measured: mean error at most 2.0e-5 (the torch module 2.8e-5), largest 2.9e-3 (the torch
# module 2.7e-3): the float32 FFTs' rounding in bins 100 dB and more under a window's tone.
NUMPY_MEAN_ATOL = 5e-5
NUMPY_MAX_ATOL = 5e-3


def test_numpy_front_end_matches_the_reference_like_the_torch_module(frontend: MelFrontend) -> None:
    audio = _varied_batch()
    got, torch_images = NumpyMelFrontend(CFG)(audio.numpy()), frontend(audio).numpy()
    assert got.shape == torch_images.shape == (12, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 2], torch_images[:, 2], rtol=0, atol=1e-7)  # the ramp
    np.testing.assert_allclose(got[5, :2], -1.75, rtol=0, atol=1e-6)  # silence: -100 dB
    for k in [k for k in range(12) if k != 5]:
        error = np.abs(got[k, 0] - _reference_image(audio[k].numpy().astype(np.float64)))
        assert error.mean() < NUMPY_MEAN_ATOL and error.max() < NUMPY_MAX_ATOL, k
    x = _test_signal()
    np.testing.assert_allclose(NumpyMelFrontend(CFG)(x[None])[0, 0], _reference_image(x.astype(np.float64)),
                               rtol=0, atol=1e-5)


def test_numpy_filterbank_is_torchaudios_within_float32_rounding() -> None:
    ours, theirs = htk_filterbank(CFG), mel_filterbank(CFG).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (769, 224)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=5e-5)  # measured 2.4e-5


def test_numpy_front_end_rejects_bad_input_and_config() -> None:
    with pytest.raises(ValueError, match="batch, samples"):
        NumpyMelFrontend(CFG)(np.zeros(window_samples(CFG), np.float32))
    with pytest.raises(ValueError, match="Nyquist"):
        NumpyMelFrontend(CFG.model_copy(update={"f_max": 20000.0}))
