"""Signal synthesis (runs in the worker processes): noises, envelopes, focal recordings and
soundscapes, each drawn from the random stream of its own job."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from birdclef.synth.voices import SR, Voice, _song

PEAK = 0.9

SongEvent = tuple[str, float, float]  # a labelled song: species code, start and end in seconds


@dataclass(frozen=True)
class FocalSpec:
    """What a focal recording sounds like. Duplicated records share one spec, hence one sound."""

    seed: np.random.SeedSequence
    seconds: float
    primary: Voice
    secondaries: tuple[Voice, ...] = ()


@dataclass(frozen=True)
class SoundscapeSpec:
    seed: np.random.SeedSequence
    seconds: float
    voices: tuple[tuple[str, Voice], ...]  # the competition species, which are labelled
    distant: tuple[Voice, ...]  # other species, faint and never labelled


# ----------------------------------------------------------------------------------------------
# Noises and envelopes


def _rms(x: np.ndarray) -> float:
    # Not np.dot: a BLAS call may start threads that fight the other worker processes.
    return math.sqrt(float(np.einsum("i,i->", x, x)) / max(len(x), 1)) + 1e-12


def _add(track: np.ndarray, x: np.ndarray, start: int) -> tuple[int, int]:
    """Add `x` into `track` at `start` (truncated at the end); return the sample span used."""
    end = min(start + len(x), len(track))
    if end > start:
        track[start:end] += x[: end - start]
    return start, max(start, end)


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    # Uniform, not Gaussian: 4x cheaper, and after any filtering or mixing it sounds the same.
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _pink(white: np.ndarray) -> np.ndarray:
    # Paul Kellet's economy pink filter: -3 dB/octave over the audio band.
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1.0, -2.494956002, 2.017265875, -0.522189400]
    x = signal.lfilter(b, a, white)
    return x / _rms(x)


def _brown(white: np.ndarray) -> np.ndarray:
    x = signal.lfilter([1.0], [1.0, -0.995], white)
    return x / _rms(x - x.mean())


def _slow_envelope(
    rng: np.random.Generator, n: int, step_seconds: float, depth_db: float
) -> np.ndarray:
    """A smooth random gain curve (linear units) that moves every `step_seconds`, at 10-ms steps."""
    hop = SR // 100
    frames = n // hop + 1
    knots = max(int(n / (step_seconds * SR)) + 2, 2)
    points = rng.uniform(-depth_db, 0, knots)
    curve = np.interp(np.arange(frames), np.linspace(0, frames, knots), points)
    return np.repeat(10 ** (curve / 20), hop)[:n]


def _reverb_ir(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.3, 0.8)
    t = np.arange(int(rt60 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    return ir / np.sqrt(np.sum(ir**2))


# ----------------------------------------------------------------------------------------------
# Focal recordings


def _render_focal(spec: FocalSpec, rng: np.random.Generator) -> np.ndarray:
    n = int(round(spec.seconds * SR))
    birds = np.zeros(n)
    energy, active = 0.0, 0
    t = rng.uniform(0, min(1.5, 0.2 * spec.seconds))
    while t < spec.seconds:
        song = _song(spec.primary, rng) * 10 ** (rng.uniform(-3, 3) / 20)
        s, e = _add(birds, song, int(t * SR))
        energy += float(np.sum(song[: e - s] ** 2))
        active += e - s
        t += len(song) / SR + spec.primary.song_gap_seconds * rng.lognormal(0, 0.35)
    for voice in spec.secondaries:
        level = 10 ** (-rng.uniform(6, 15) / 20)
        t = rng.uniform(0, 0.7 * spec.seconds)
        for _ in range(int(rng.integers(1, 5))):
            if t >= spec.seconds:
                break
            song = _song(voice, rng) * level
            _add(birds, song, int(t * SR))
            t += len(song) / SR + voice.song_gap_seconds * rng.lognormal(0.3, 0.35)
    song_rms = math.sqrt(energy / max(active, 1))
    snr_db = rng.uniform(10, 30)
    white = _white(rng, n)
    noise = _pink(white) + rng.uniform(0.1, 0.5) * white
    noise *= song_rms / 10 ** (snr_db / 20) / _rms(noise)
    x = birds + noise
    return x * (rng.uniform(0.3, PEAK) / (np.abs(x).max() + 1e-12))


# ----------------------------------------------------------------------------------------------
# Soundscapes


def _render_soundscape(
    spec: SoundscapeSpec, rng: np.random.Generator
) -> tuple[np.ndarray, list[SongEvent]]:
    """A low-SNR soundscape through another channel; returns audio and (code, start, end) songs."""
    n = int(round(spec.seconds * SR))
    background = _background(rng, n, spec.seconds)
    # The recording channel, band-limited to about 150 Hz - 11 kHz, applied to the background
    # here and to each song (it is linear); SNRs are measured after it.
    channel = signal.butter(4, [150, 11000], btype="bandpass", fs=SR, output="sos")
    x = signal.sosfilt(channel, background)
    bg_rms = _rms(x)
    ir = _reverb_ir(rng)
    events = _add_labelled_songs(x, spec, rng, channel, ir, bg_rms)
    _add_distant_birds(x, spec, rng, channel, ir, bg_rms)
    x *= rng.uniform(0.3, 0.8) / (np.abs(x).max() + 1e-12)
    return x, sorted(events)


def _background(rng: np.random.Generator, n: int, seconds: float) -> np.ndarray:
    """Wind (brown + dulled pink noise in slow gusts) over a faint microphone hiss, sometimes rain
    and an insect band."""
    white = _white(rng, n)
    dull = math.exp(-2 * math.pi * rng.uniform(1000, 4000) / SR)  # one-pole lowpass above 1-4 kHz
    pink = signal.lfilter([1 - dull], [1.0, -dull], _pink(white[::-1]))
    wind = (_brown(white) + 2.0 * pink) * _slow_envelope(rng, n, 3.0, 12.0)
    background = wind + 0.01 * white
    if rng.random() < 0.4:
        background += _rain(rng, n, seconds)
    if rng.random() < 0.6:
        background += _insects(rng, n)
    return background


def _rain(rng: np.random.Generator, n: int, seconds: float) -> np.ndarray:
    rate = rng.uniform(5, 40)  # drops per second while it rains
    clicks = np.zeros(n)
    where = rng.integers(0, n, int(rate * seconds))
    clicks[where] = rng.standard_normal(len(where)) * rng.uniform(0.5, 3.0)
    kernel = rng.standard_normal(256) * np.exp(-np.arange(256) / 40.0)
    return signal.oaconvolve(clicks, kernel)[:n] * _slow_envelope(rng, n, 20.0, 20.0)


def _insects(rng: np.random.Generator, n: int) -> np.ndarray:
    # A pulsing narrow noise band; one second is computed and tiled (a whole-hertz pulse rate).
    centre = rng.uniform(4000, 7000)
    width = rng.uniform(200, 1200)
    band = signal.butter(
        2, [centre - width / 2, centre + width / 2], "bandpass", fs=SR, output="sos"
    )
    hiss = signal.sosfiltfilt(band, _white(rng, SR))
    gate = (0.5 + 0.5 * np.sin(2 * np.pi * int(rng.integers(20, 60)) * np.arange(SR) / SR)) ** 3
    insects = np.tile(hiss * gate / _rms(hiss * gate), n // SR + 1)[:n]
    return rng.uniform(0.02, 0.1) * insects * _slow_envelope(rng, n, 15.0, 25.0)


def _add_labelled_songs(
    x: np.ndarray,
    spec: SoundscapeSpec,
    rng: np.random.Generator,
    channel: np.ndarray,
    ir: np.ndarray,
    bg_rms: float,
) -> list[SongEvent]:
    """Bouts of songs of 2-6 competition species, reverberated, into `x`; returns the songs."""
    wet = rng.uniform(0.3, 0.7)
    events: list[SongEvent] = []
    n_present = int(rng.integers(2, min(6, len(spec.voices)) + 1))
    present = rng.choice(len(spec.voices), size=n_present, replace=False)
    for idx in sorted(int(i) for i in present):
        code, voice = spec.voices[idx]
        for _ in range(1 + int(rng.poisson(spec.seconds / 120))):
            t = rng.uniform(0, spec.seconds)
            snr_db = rng.uniform(-12, 6)
            for _ in range(int(rng.integers(1, 6))):
                if t >= spec.seconds:
                    break
                dry = _song(voice, rng)
                level = bg_rms * 10 ** ((snr_db + rng.uniform(-3, 3)) / 20) / _rms(dry)
                song = wet * signal.oaconvolve(dry, ir)
                song[: len(dry)] += dry
                s, _ = _add(x, level * signal.sosfilt(channel, song), int(t * SR))
                dry_end = min(s + len(dry), len(x))
                events.append((code, s / SR, dry_end / SR))
                t = dry_end / SR + voice.song_gap_seconds * rng.lognormal(0, 0.4)
    return events


def _add_distant_birds(
    x: np.ndarray,
    spec: SoundscapeSpec,
    rng: np.random.Generator,
    channel: np.ndarray,
    ir: np.ndarray,
    bg_rms: float,
) -> None:
    """Distant birds of other species into `x`: faint, dull, never labelled."""
    for voice in spec.distant:
        for _ in range(int(rng.poisson(spec.seconds / 60))):
            dry = _song(voice, rng)
            level = bg_rms * 10 ** (rng.uniform(-22, -12) / 20) / _rms(dry)
            song = signal.oaconvolve(dry, ir)
            song[: len(dry)] += dry
            song = signal.lfilter([0.25], [1.0, -0.75], song)  # distance takes the highs away
            _add(x, level * signal.sosfilt(channel, song), int(rng.uniform(0, spec.seconds) * SR))
