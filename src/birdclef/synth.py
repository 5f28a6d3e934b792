"""The embedded sample corpus (DESIGN 5): synthetic birds in the exact Kaggle layouts.

Everything is decided up front in the main process from one seeded plan (species, record ids, label
lists, durations, duplicates); each audio file is then rendered by an independent job whose random
stream is a `SeedSequence` spawned for that item, so the corpus does not depend on how many worker
processes render it, nor on their order.

Layout written under `out_dir` (what the readers in `sources.py` expect):

    birdclef-2024/        train_metadata.csv, train_audio/<code>/XC<id>.ogg, unlabeled_soundscapes/,
                          sample_submission.csv, eBird_Taxonomy_v2021.csv
    Birdclef23/, Birdclef22/   train_metadata.csv, train_audio/<code>/XC<id>.ogg
    Birdclef21/           train_metadata.csv (filename XC<id>.ogg), train_short_audio/<code>/
    Birdclef20/           train.csv, train_audio/<ebird_code>/XC<id>.mp3
    birdclef2024-additional-mp3/additional_audio/<code>/XC<id>.mp3
    labelled_soundscapes/ <id>.ogg + labels.csv (row_id, one 0/1 column per species)
    near_duplicates.csv   r0, r1 (`<code>/XC<id>.ogg`)
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from scipy import signal
from birdclef.io import progress as io_progress

from birdclef.config import MakeSampleConfig
from birdclef.windows import row_ids, window_count

SR = 32000
WINDOW_SECONDS = 5.0
# A species counts as present in a 5-s window when one of its songs overlaps it by this much.
LABEL_MIN_OVERLAP = 0.5
PEAK = 0.9
# libsndfile's encoders are fed in blocks of this many seconds (one huge write can crash them).
WRITE_BLOCK_SECONDS = 10.0
FAKE_SECONDARY = "zzfake1"

BC24_COLUMNS = [
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "license", "rating", "url", "filename",
]  # fmt: skip
BC22_COLUMNS = [
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "license", "rating", "time", "url", "filename",
]  # fmt: skip
BC21_COLUMNS = [
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "date", "filename", "license", "rating", "time", "url",
]  # fmt: skip
BC20_COLUMNS = [
    "rating", "playback_used", "ebird_code", "channels", "date", "pitch", "duration", "filename",
    "speed", "species", "number_of_notes", "title", "secondary_labels", "bird_seen", "sci_name",
    "location", "latitude", "sampling_rate", "type", "elevation", "description", "bitrate_of_mp3",
    "file_type", "volume", "background", "xc_id", "url", "country", "author", "primary_label",
    "longitude", "length", "time", "recordist", "license",
]  # fmt: skip
TAXONOMY_COLUMNS = [
    "TAXON_ORDER", "CATEGORY", "SPECIES_CODE", "PRIMARY_COM_NAME", "SCI_NAME", "ORDER1", "FAMILY",
    "SPECIES_GROUP", "REPORT_AS",
]  # fmt: skip

# Folder names under out_dir.
BC24_DIR = "birdclef-2024"
YEAR_DIRS = {"bc23": "Birdclef23", "bc22": "Birdclef22", "bc21": "Birdclef21", "bc20": "Birdclef20"}
BC00_DIR = "birdclef2024-additional-mp3"
EVAL_DIR = "labelled_soundscapes"

# Share of each extra source's records that reuse the record id (and audio) of an earlier source.
# The real data has such duplicates, which is why the merge deduplicates by record name.
DUPLICATES_OF = {
    "bc23": (("bc24", 0.08),),
    "bc22": (("bc23", 0.12), ("bc24", 0.04)),
    "bc21": (("bc22", 0.10),),
    "bc20": (("bc21", 0.08), ("bc24", 0.04)),
    "bc00": (("bc24", 0.10),),
}
N_NON_2024_SPECIES = 4  # fake species outside the competition (previous years, bc00, taxonomy)

ADJECTIVES = [
    "Ashy", "Banded", "Black-rumped", "Blue", "Brown", "Chestnut", "Common", "Crested", "Crimson",
    "Dusky", "Emerald", "Golden", "Grey", "Indian", "Jungle", "Large", "Little", "Malabar",
    "Nilgiri", "Olive", "Orange", "Oriental", "Painted", "Pale", "Pied", "Plain", "Rufous",
    "Scaly", "Small", "Spotted", "Streaked", "Tawny", "Velvet", "White-browed", "Yellow",
    "Red-vented", "Hill", "Forest",
]  # fmt: skip
NOUNS = [
    "Babbler", "Barbet", "Bulbul", "Bunting", "Cuckoo", "Dove", "Drongo", "Fantail", "Flycatcher",
    "Hornbill", "Iora", "Kingfisher", "Lark", "Leafbird", "Minivet", "Munia", "Myna", "Nightjar",
    "Nuthatch", "Oriole", "Owlet", "Parakeet", "Pipit", "Prinia", "Robin", "Shrike", "Starling",
    "Sunbird", "Swift", "Tailorbird", "Thrush", "Tit", "Treepie", "Wagtail", "Warbler",
    "Whistler", "Woodpecker",
]  # fmt: skip
SYLLABLES = ["ca", "di", "lo", "mu", "ne", "phi", "ra", "so", "te", "ty", "xa", "ze", "bor", "cry",
             "gal", "mel", "pho", "ryn", "sca", "thr"]  # fmt: skip
ORDERS = ["Passeriformes", "Piciformes", "Cuculiformes", "Columbiformes", "Coraciiformes"]
FIRST_NAMES = [
    "Anil", "Bea", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kiran", "Lena",
    "Mateo", "Nora", "Omar", "Priya", "Ravi", "Sara", "Tomas", "Uma",
]  # fmt: skip
LAST_NAMES = [
    "Alvarez", "Bhat", "Costa", "Dubois", "Eriksen", "Fischer", "Gupta", "Haas", "Ito", "Jansen",
    "Kumar", "Lopez", "Menon", "Novak", "Okafor", "Pillai", "Rao", "Silva",
]  # fmt: skip
LICENSES = [
    "Creative Commons Attribution-NonCommercial-ShareAlike 4.0",
    "Creative Commons Attribution-NonCommercial-ShareAlike 3.0",
    "Creative Commons Attribution-ShareAlike 4.0",
]
CALL_TYPES = ["['call']", "['song']", "['call', 'song']", "['alarm call']", "['flight call']", "[]"]

SHAPES = ("up", "down", "trill", "whistle", "chirp2")
RHYTHMS = ("even", "accelerating", "paired")


# ----------------------------------------------------------------------------------------------
# Species and their voices


@dataclass(frozen=True)
class Voice:
    """A species' vocal signature: a song is `n_syllables` syllables of one shape in one band."""

    f_lo: float
    f_hi: float
    shape: str
    rhythm: str
    syllable_seconds: float
    gap_seconds: float
    n_syllables: tuple[int, int]
    song_gap_seconds: float  # typical silence between two songs of one bird
    harmonics: tuple[float, ...]  # amplitude of partial 1, 2, ...
    mod_hz: float  # trill pulse rate or whistle vibrato rate


@dataclass(frozen=True)
class Species:
    code: str
    common_name: str
    scientific_name: str
    order: str
    family: str
    voice: Voice
    lat: float
    lon: float

    @property
    def bc20_name(self) -> str:
        return f"{self.scientific_name}_{self.common_name}"


def _make_voice(rng: np.random.Generator, like: Voice | None = None) -> Voice:
    shape = str(rng.choice(SHAPES))
    rhythm = str(rng.choice(RHYTHMS))
    if like is not None:
        # A confusable partner: the same band, a different shape or a different rhythm.
        if rng.random() < 0.5:
            shape = str(rng.choice([s for s in SHAPES if s != like.shape]))
        else:
            shape = like.shape
            rhythm = str(rng.choice([r for r in RHYTHMS if r != like.rhythm]))
        jitter = 1 + rng.uniform(-0.03, 0.03)
        f_lo, f_hi = like.f_lo * jitter, like.f_hi * jitter
    else:
        centre = math.exp(rng.uniform(math.log(1500), math.log(7000)))
        narrow = shape in ("trill", "whistle")
        ratio = rng.uniform(1.08, 1.3) if narrow else rng.uniform(1.3, 2.0)
        f_lo = max(1000.0, centre / math.sqrt(ratio))
        f_hi = min(10000.0, centre * math.sqrt(ratio))
    syllable = {
        "up": (0.05, 0.18),
        "down": (0.05, 0.18),
        "trill": (0.25, 0.6),
        "whistle": (0.15, 0.5),
        "chirp2": (0.08, 0.2),
    }[shape]
    lo = int(rng.integers(1, 4)) if shape in ("trill", "whistle") else int(rng.integers(2, 6))
    n_extra = int(rng.integers(0, 3))
    harmonics = (
        1.0,
        *sorted((10 ** (-rng.uniform(6, 20) / 20) for _ in range(n_extra)), reverse=True),
    )
    mod_hz = {"trill": rng.uniform(15, 45), "whistle": rng.uniform(3, 9)}.get(shape, 0.0)
    return Voice(
        f_lo=round(float(f_lo), 1),
        f_hi=round(float(f_hi), 1),
        shape=shape,
        rhythm=rhythm,
        syllable_seconds=float(rng.uniform(*syllable)),
        gap_seconds=float(rng.uniform(0.04, 0.25)),
        n_syllables=(lo, lo + int(rng.integers(1, 6))),
        song_gap_seconds=float(rng.uniform(1.0, 5.0)),
        harmonics=tuple(float(h) for h in harmonics),
        mod_hz=float(mod_hz),
    )


def _code_part(adjective: str) -> str:
    # eBird style: "Black-rumped" -> "blr", "Ashy" -> "ash"
    if "-" in adjective:
        first, second = adjective.split("-", 1)
        return (first[:2] + second[:1]).lower()
    return adjective[:3].lower()


def _make_species(rng: np.random.Generator, n: int) -> list[Species]:
    """`n` species with unique eBird-like codes, common and scientific names (in creation order)."""
    genera: dict[str, str] = {}
    codes: set[str] = set()
    names: set[str] = set()
    epithets: set[str] = set()
    out: list[Species] = []
    while len(out) < n:
        adjective = str(rng.choice(ADJECTIVES))
        noun = str(rng.choice(NOUNS))
        common = f"{adjective} {noun}"
        code = _code_part(adjective) + noun[:3].lower()
        if rng.random() < 0.6:
            code += "1"
        if common in names or code in codes or code.rstrip("1") in {c.rstrip("1") for c in codes}:
            continue
        if noun not in genera:
            genera[noun] = "".join(rng.choice(SYLLABLES, size=2)).capitalize() + str(
                rng.choice(["a", "us", "ia", "is"])
            )
        epithet = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) + str(
            rng.choice(["us", "a", "i", "ensis", "atus"])
        )
        if epithet in epithets:
            continue
        codes.add(code)
        names.add(common)
        epithets.add(epithet)
        genus = genera[noun]
        out.append(
            Species(
                code=code,
                common_name=common,
                scientific_name=f"{genus} {epithet}",
                order=str(rng.choice(ORDERS)),
                family=f"{genus[:-1].rstrip('aeiou')}idae ({noun}s)",
                voice=_make_voice(rng),
                lat=round(float(rng.uniform(8, 30)), 4),
                lon=round(float(rng.uniform(70, 92)), 4),
            )
        )
    return out


def _add_confusable_pairs(rng: np.random.Generator, species: list[Species]) -> list[Species]:
    """Give some species the band of another one, with a different shape or rhythm."""
    n_pairs = max(1, len(species) // 5)
    order = rng.permutation(len(species))
    out = list(species)
    for k in range(n_pairs):
        a, b = int(order[2 * k]), int(order[2 * k + 1])
        out[b] = replace(out[b], voice=_make_voice(rng, like=out[a].voice))
    return out


# ----------------------------------------------------------------------------------------------
# Audio rendering (runs in the worker processes)


def _rms(x: np.ndarray) -> float:
    # Not np.dot: a BLAS call may start threads that fight the other worker processes.
    return math.sqrt(float(np.einsum("i,i->", x, x)) / max(len(x), 1)) + 1e-12


def _fade(n: int, share: float) -> np.ndarray:
    """Ones with raised-cosine edges, each `share` of the length (a Tukey window, cheaply)."""
    env = np.ones(n)
    k = max(int(n * share), 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
    env[:k] = ramp
    env[n - k :] = ramp[::-1]
    return env


def _syllable(v: Voice, f_lo: float, f_hi: float, seconds: float) -> np.ndarray:
    n = max(int(seconds * SR), 32)
    t = np.arange(n, dtype=np.float64) / SR
    u = t / seconds
    env = _fade(n, 0.2)
    centre = math.sqrt(f_lo * f_hi)
    if v.shape == "up":
        freq = f_lo * (f_hi / f_lo) ** u
    elif v.shape == "down":
        freq = f_hi * (f_lo / f_hi) ** u
    elif v.shape == "trill":
        freq = centre + 0.5 * (f_hi - f_lo) * np.sin(2 * np.pi * v.mod_hz * t)
        env = env * (0.5 - 0.5 * np.cos(2 * np.pi * v.mod_hz * t)) ** 2
    elif v.shape == "whistle":
        freq = centre * (1 + 0.012 * np.sin(2 * np.pi * v.mod_hz * t))
    else:  # chirp2: two rising-falling notes
        half = (2 * u) % 1.0
        freq = f_lo + (f_hi - f_lo) * np.sin(np.pi * half)
        env = env * np.sin(np.pi * half) ** 0.7
    phase = 2 * np.pi * np.cumsum(freq) / SR
    top = float(freq.max())
    out = np.zeros(n)
    for k, amp in enumerate(v.harmonics, start=1):
        if k * top < 0.45 * SR:
            out += amp * np.sin(k * phase)
    return out * env


def _song(v: Voice, rng: np.random.Generator) -> np.ndarray:
    """One song with within-species variation; peak 1."""
    band = 1 + rng.uniform(-0.05, 0.05)
    f_lo, f_hi = v.f_lo * band, min(v.f_hi * band, 0.45 * SR)
    tempo = 1 + rng.uniform(-0.2, 0.2)
    n = int(rng.integers(v.n_syllables[0], v.n_syllables[1] + 1))
    parts: list[np.ndarray] = []
    for i in range(n):
        seconds = v.syllable_seconds * tempo * (1 + rng.uniform(-0.05, 0.05))
        parts.append(_syllable(v, f_lo, f_hi, seconds) * 10 ** (rng.uniform(-2, 2) / 20))
        if i < n - 1:
            gap = v.gap_seconds * tempo * (1 + rng.uniform(-0.05, 0.05))
            if v.rhythm == "accelerating":
                gap *= 1.6 - 1.2 * i / max(n - 2, 1)
            elif v.rhythm == "paired":
                gap *= 0.35 if i % 2 == 0 else 1.8
            parts.append(np.zeros(int(gap * SR)))
    song = np.concatenate(parts)
    return song / (np.abs(song).max() + 1e-12)


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


def _reverb_ir(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.3, 0.8)
    t = np.arange(int(rt60 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    return ir / np.sqrt(np.sum(ir**2))


def _render_soundscape(
    spec: SoundscapeSpec, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """A low-SNR soundscape through another channel; returns audio and (code, start, end) songs."""
    n = int(round(spec.seconds * SR))
    # Background: wind (brown + dulled pink noise in slow gusts) over a faint microphone hiss,
    # sometimes rain and an insect band.
    white = _white(rng, n)
    dull = math.exp(-2 * math.pi * rng.uniform(1000, 4000) / SR)  # one-pole lowpass above 1-4 kHz
    pink = signal.lfilter([1 - dull], [1.0, -dull], _pink(white[::-1]))
    wind = (_brown(white) + 2.0 * pink) * _slow_envelope(rng, n, 3.0, 12.0)
    background = wind + 0.01 * white
    if rng.random() < 0.4:
        rate = rng.uniform(5, 40)  # drops per second while it rains
        clicks = np.zeros(n)
        where = rng.integers(0, n, int(rate * spec.seconds))
        clicks[where] = rng.standard_normal(len(where)) * rng.uniform(0.5, 3.0)
        kernel = rng.standard_normal(256) * np.exp(-np.arange(256) / 40.0)
        rain = signal.oaconvolve(clicks, kernel)[:n] * _slow_envelope(rng, n, 20.0, 20.0)
        background += rain
    if rng.random() < 0.6:
        # A pulsing narrow noise band; one second is computed and tiled (a whole-hertz pulse rate).
        centre = rng.uniform(4000, 7000)
        width = rng.uniform(200, 1200)
        band = signal.butter(
            2, [centre - width / 2, centre + width / 2], "bandpass", fs=SR, output="sos"
        )
        hiss = signal.sosfiltfilt(band, _white(rng, SR))
        gate = (0.5 + 0.5 * np.sin(2 * np.pi * int(rng.integers(20, 60)) * np.arange(SR) / SR)) ** 3
        insects = np.tile(hiss * gate / _rms(hiss * gate), n // SR + 1)[:n]
        background += rng.uniform(0.02, 0.1) * insects * _slow_envelope(rng, n, 15.0, 25.0)
    # The recording channel, band-limited to about 150 Hz - 11 kHz, applied to the background
    # here and to each song below (it is linear); SNRs are measured after it.
    sos = signal.butter(4, [150, 11000], btype="bandpass", fs=SR, output="sos")
    x = signal.sosfilt(sos, background)
    bg_rms = _rms(x)

    ir = _reverb_ir(rng)
    wet = rng.uniform(0.3, 0.7)
    events: list[tuple[str, float, float]] = []
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
                s, _ = _add(x, level * signal.sosfilt(sos, song), int(t * SR))
                dry_end = min(s + len(dry), n)
                events.append((code, s / SR, dry_end / SR))
                t = dry_end / SR + voice.song_gap_seconds * rng.lognormal(0, 0.4)
    # Distant birds of other species: faint, dull, never labelled.
    for voice in spec.distant:
        for _ in range(int(rng.poisson(spec.seconds / 60))):
            dry = _song(voice, rng)
            level = bg_rms * 10 ** (rng.uniform(-22, -12) / 20) / _rms(dry)
            song = signal.oaconvolve(dry, ir)
            song[: len(dry)] += dry
            song = signal.lfilter([0.25], [1.0, -0.75], song)  # distance takes the highs away
            _add(x, level * signal.sosfilt(sos, song), int(rng.uniform(0, spec.seconds) * SR))
    x *= rng.uniform(0.3, 0.8) / (np.abs(x).max() + 1e-12)
    return x, sorted(events)


# ----------------------------------------------------------------------------------------------
# Writing audio


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    # Ogg's CRC-32 is unreflected (poly 0x04C11DB7, init 0, no final xor); zlib's is the
    # reflected twin, so feed it bit-reversed bytes and reverse its result.
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _fix_ogg_serial(path: Path, serial: int) -> None:
    """Replace the random stream serial libsndfile writes with `serial`: byte-identical reruns."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: not an Ogg page at byte {pos}")
        n_segments = data[pos + 26]
        body = sum(data[pos + 27 : pos + 27 + n_segments])
        end = pos + 27 + n_segments + body
        data[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = _ogg_crc(bytes(data[pos:end])).to_bytes(4, "little")
        pos = end
    path.write_bytes(bytes(data))


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, fmt: str) -> None:
    """Write OGG Vorbis or MP3 in blocks; `audio` is (frames,) or (frames, channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    subtype = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}[fmt]
    block = int(WRITE_BLOCK_SECONDS * sample_rate)
    data = audio.astype(np.float32)
    # Variable-bitrate mp3 encodes a little faster than the default constant bitrate.
    options = {"bitrate_mode": "VARIABLE", "compression_level": 0.5} if fmt == "mp3" else {}
    with sf.SoundFile(
        path, "w", sample_rate, channels, format=fmt.upper(), subtype=subtype, **options
    ) as fh:
        for start in range(0, len(data), block):
            fh.write(data[start : start + block])
    if fmt == "ogg":
        _fix_ogg_serial(path, zlib.crc32(path.name.encode()) & 0x7FFFFFFF)


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


def _run_job(args: tuple[int, AudioJob, str]) -> tuple[int, float, list[tuple[str, float, float]]]:
    index, job, root = args
    rng = np.random.default_rng(job.spec.seed)
    events: list[tuple[str, float, float]] = []
    if isinstance(job.spec, SoundscapeSpec):
        audio, events = _render_soundscape(job.spec, rng)
    else:
        audio = _render_focal(job.spec, rng)
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
    first = Path(root) / job.paths[0]
    write_audio(first, audio, job.sample_rate, job.fmt)
    for other_path in job.paths[1:]:
        target = Path(root) / other_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, target)
    return index, len(audio) / job.sample_rate, events


# ----------------------------------------------------------------------------------------------
# The plan: metadata and jobs, decided in the main process


@dataclass
class Record:
    """One row of a metadata table (or one bc00 file)."""

    source: str
    xc_id: int
    code: str
    secondaries: list[str]
    audio: FocalSpec
    fmt: str = "ogg"
    sample_rate: int = SR
    channels: int = 1
    trim: tuple[float, float] = (0.0, 0.0)
    gain_db: float = 0.0
    extra_folders: list[str] = field(default_factory=list)  # two-folder records (bc24)
    nasty: str = ""


class _Planner:
    def __init__(self, cfg: MakeSampleConfig) -> None:
        if cfg.record_seconds_min > cfg.record_seconds_max:
            raise ValueError(
                f"make_sample: record_seconds_min ({cfg.record_seconds_min}) > "
                f"record_seconds_max ({cfg.record_seconds_max})"
            )
        self.cfg = cfg
        plan_seq, self.audio_seq = np.random.SeedSequence(cfg.seed).spawn(2)
        self.rng = np.random.default_rng(plan_seq)
        self.used_ids: set[int] = set()
        all_species = _make_species(self.rng, cfg.n_species + N_NON_2024_SPECIES)
        all_species = _add_confusable_pairs(self.rng, all_species)
        self.species = sorted(all_species[: cfg.n_species], key=lambda s: s.code)
        self.others = all_species[cfg.n_species :]  # not competition species
        self.by_code = {s.code: s for s in all_species}
        self.codes = [s.code for s in self.species]
        # Most common species first, in a seeded order that is not alphabetical.
        self.by_frequency = [self.codes[int(i)] for i in self.rng.permutation(len(self.codes))]
        self.records: dict[str, list[Record]] = {}

    def new_seed(self) -> np.random.SeedSequence:
        return self.audio_seq.spawn(1)[0]

    def new_id(self) -> int:
        while True:
            xc = int(self.rng.integers(10_000, 1_000_000))
            if xc not in self.used_ids:
                self.used_ids.add(xc)
                return xc

    def seconds(self) -> float:
        # Skewed short (median 8 s, two thirds within 4-15 s, a tail to the maximum): audio
        # encoding is most of the generation time.
        lo, hi = self.cfg.record_seconds_min, self.cfg.record_seconds_max
        median = min(max(8.0, lo), hi)
        return round(float(np.clip(median * self.rng.lognormal(0, 0.6), lo, hi)), 2)

    def secondaries_for(self, code: str) -> list[str]:
        if self.rng.random() >= 0.2:
            return []
        pool = [c for c in self.codes if c != code]
        chosen = list(
            self.rng.choice(pool, size=min(len(pool), int(self.rng.integers(1, 3))), replace=False)
        )
        if self.rng.random() < 0.15:  # a species outside the competition, as in the real lists
            chosen.append(self.others[int(self.rng.integers(len(self.others)))].code)
        return [str(c) for c in chosen]

    def new_record(self, source: str, code: str) -> Record:
        secondaries = self.secondaries_for(code)
        spec = FocalSpec(
            seed=self.new_seed(),
            seconds=self.seconds(),
            primary=self.by_code[code].voice,
            secondaries=tuple(self.by_code[c].voice for c in secondaries),
        )
        return Record(source, self.new_id(), code, secondaries, spec)

    def extra_count(self, code: str) -> int:
        """Records of `code` in one extra source: common species are common in every year too."""
        if code not in self.by_frequency:
            return self.cfg.extra_records_per_species
        rank = self.by_frequency.index(code)
        weight = 1.5 - rank / max(len(self.codes) - 1, 1)  # 1.5 for the most common, 0.5 the rarest
        return int(round(self.cfg.extra_records_per_species * weight))

    # -- sources ---------------------------------------------------------------------------------

    def plan_bc24(self) -> None:
        cfg = self.cfg
        counts = np.round(
            np.geomspace(cfg.bc24_records_max, cfg.bc24_records_min, len(self.codes))
        ).astype(int)
        rows = [
            self.new_record("bc24", code)
            for code, k in zip(self.by_frequency, counts, strict=True)
            for _ in range(k)
        ]
        by_species: dict[str, list[Record]] = {}
        for r in rows:
            by_species.setdefault(r.code, []).append(r)
        special: set[int] = set()

        def pick(code: str | None = None, min_seconds: float = 0.0) -> Record:
            pool = [
                r for r in (by_species[code] if code else rows)
                if r.xc_id not in special and r.audio.seconds >= min_seconds
            ]  # fmt: skip
            if not pool:
                pool = [r for r in (by_species[code] if code else rows) if r.xc_id not in special]
            r = pool[int(self.rng.integers(len(pool)))]
            special.add(r.xc_id)
            return r

        # Near duplicates: r1 is a slightly trimmed, re-gained copy of r0 in the same folder.
        self.near_duplicates: list[tuple[Record, Record]] = []
        common = self.by_frequency[: max(3, len(self.codes) // 2)]
        for k in range(3):
            code = common[k % len(common)]
            r0 = pick(code, min_seconds=4.0)
            r1 = pick(code)
            r1.audio, r1.secondaries = r0.audio, list(r0.secondaries)
            r1.trim = (
                round(float(self.rng.uniform(0.05, 0.5)), 3),
                round(float(self.rng.uniform(0, 0.5)), 3),
            )
            r1.trim = (min(r1.trim[0], r0.audio.seconds / 8), min(r1.trim[1], r0.audio.seconds / 8))
            r1.gain_db = round(float(self.rng.uniform(-3, 3)), 2)
            self.near_duplicates.append((r0, r1))
        # ...and one pair across two species folders, which consumers ignore.
        a, b = self.by_frequency[0], self.by_frequency[1]
        r0, r1 = pick(a, min_seconds=4.0), pick(b)
        r1.audio = r0.audio
        r1.gain_db = round(float(self.rng.uniform(-2, 2)), 2)
        self.near_duplicates.append((r0, r1))

        # Two-folder records: one file in two species folders, two metadata rows.
        for k in range(2):
            a = self.by_frequency[(2 + k) % len(self.codes)]
            b = self.by_frequency[(5 + k) % len(self.codes)]
            r = pick(a)
            r.secondaries = [b]
            r.audio = replace(r.audio, secondaries=(self.by_code[b].voice,))
            r.extra_folders = [b]

        # Nasty but legal records.
        pick().nasty = "stereo"
        pick().nasty = "sr44100"
        pick().nasty = "short"
        pick().nasty = "zzfake"
        pick().nasty = "exact10"
        for r in rows:
            if r.nasty == "stereo":
                r.channels = 2
            elif r.nasty == "sr44100":
                r.sample_rate = 44100
            elif r.nasty == "short":
                r.audio = replace(r.audio, seconds=2.5)
            elif r.nasty == "exact10":
                r.audio = replace(r.audio, seconds=10.0)
            elif r.nasty == "zzfake":
                r.secondaries = [*r.secondaries, FAKE_SECONDARY]
        self.records["bc24"] = rows

    def plan_extra(self, source: str, species: list[str], fmt: str) -> None:
        slots = [code for code in species for _ in range(self.extra_count(code))]
        rows: list[Record | None] = [None] * len(slots)
        reused: set[int] = set()
        for earlier, share in DUPLICATES_OF[source]:
            candidates = self.records.get(earlier, [])
            n_dup = max(1, int(round(share * len(slots)))) if slots and candidates else 0
            for i in self.rng.permutation(len(slots)):
                if n_dup == 0:
                    break
                if rows[i] is not None:
                    continue
                pool = [r for r in candidates if r.code == slots[i] and r.xc_id not in reused]
                if not pool:
                    continue
                original = pool[int(self.rng.integers(len(pool)))]
                reused.add(original.xc_id)
                rows[i] = Record(
                    source,
                    original.xc_id,
                    original.code,
                    list(original.secondaries),
                    original.audio,
                )
                n_dup -= 1
        out = [
            r if r is not None else self.new_record(source, code)
            for r, code in zip(rows, slots, strict=True)
        ]
        for r in out:
            r.source, r.fmt = source, fmt
            if source == "bc20":  # the 2020 mp3s come at several rates, some in stereo
                r.sample_rate = SR if self.rng.random() < 0.75 else 44100
                r.channels = 1 if self.rng.random() < 0.85 else 2
        self.records[source] = out

    def plan_all(self) -> None:
        self.plan_bc24()
        n_others = len(self.others)
        for source in ("bc23", "bc22", "bc21", "bc20"):
            k = int(self.rng.integers(1, 3))
            extra = [
                self.others[int(i)].code
                for i in self.rng.choice(n_others - 1, size=k, replace=False)
            ]
            self.plan_extra(source, self.codes + extra, "mp3" if source == "bc20" else "ogg")
        # bc00: most species, including frequent ones, plus one species outside the competition.
        dropped = set(
            self.rng.choice(
                self.by_frequency[2:], size=len(self.codes) // 4, replace=False
            ).tolist()
        )
        bc00_species = [c for c in self.codes if c not in dropped] + [self.others[0].code]
        self.plan_extra("bc00", bc00_species, "mp3")

    # -- soundscapes -----------------------------------------------------------------------------

    def soundscape_specs(self, n: int, seconds: float) -> list[tuple[int, SoundscapeSpec]]:
        voices = tuple((s.code, s.voice) for s in self.species)
        distant = tuple(s.voice for s in self.others)
        out = []
        for _ in range(n):
            spec = SoundscapeSpec(self.new_seed(), float(seconds), voices, distant)
            out.append((self.new_id(), spec))
        return out


# ----------------------------------------------------------------------------------------------
# Metadata tables


def _rating(rng: np.random.Generator) -> float:
    return float(rng.choice([0.0, 2.5, 3.0, 3.5, 4.0, 4.0, 4.5, 4.5, 5.0, 5.0]))


def _person(rng: np.random.Generator) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _common_columns(r: Record, sp: Species, rng: np.random.Generator) -> dict[str, object]:
    return {
        "primary_label": r.code,
        "secondary_labels": repr(r.secondaries),
        "type": str(rng.choice(CALL_TYPES)),
        "latitude": round(sp.lat + float(rng.normal(0, 1.5)), 4),
        "longitude": round(sp.lon + float(rng.normal(0, 1.5)), 4),
        "scientific_name": sp.scientific_name,
        "common_name": sp.common_name,
        "author": _person(rng),
        "license": str(rng.choice(LICENSES)),
        "rating": _rating(rng),
        "url": f"https://www.xeno-canto.org/{r.xc_id}",
    }


def _date(rng: np.random.Generator) -> str:
    year, month, day = (
        int(rng.integers(2005, 2020)),
        int(rng.integers(1, 13)),
        int(rng.integers(1, 29)),
    )
    return f"{year}-{month:02d}-{day:02d}"


def _clock(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(4, 20)):02d}:{int(rng.integers(0, 60)):02d}"


def _metadata_tables(plan: _Planner) -> dict[str, pd.DataFrame]:
    rng = plan.rng
    sp = plan.by_code
    tables: dict[str, pd.DataFrame] = {}

    rows = []
    for r in plan.records["bc24"]:
        for folder in [r.code, *r.extra_folders]:
            row = _common_columns(r, sp[folder], rng)
            row["primary_label"] = folder
            if folder != r.code:
                row["secondary_labels"] = repr([r.code])
            row["filename"] = f"{folder}/XC{r.xc_id}.ogg"
            rows.append(row)
    tables["bc24"] = pd.DataFrame(rows, columns=BC24_COLUMNS).sort_values("filename")

    rows = []
    for r in plan.records["bc23"]:
        rows.append(
            {**_common_columns(r, sp[r.code], rng), "filename": f"{r.code}/XC{r.xc_id}.ogg"}
        )
    tables["bc23"] = pd.DataFrame(rows, columns=BC24_COLUMNS).sort_values("filename")

    rows = []
    for r in plan.records["bc22"]:
        row = {**_common_columns(r, sp[r.code], rng), "time": _clock(rng)}
        rows.append({**row, "filename": f"{r.code}/XC{r.xc_id}.ogg"})
    tables["bc22"] = pd.DataFrame(rows, columns=BC22_COLUMNS).sort_values("filename")

    rows = []
    for r in plan.records["bc21"]:
        row = {**_common_columns(r, sp[r.code], rng), "date": _date(rng), "time": _clock(rng)}
        rows.append({**row, "filename": f"XC{r.xc_id}.ogg"})
    tables["bc21"] = pd.DataFrame(rows, columns=BC21_COLUMNS).sort_values(
        ["primary_label", "filename"]
    )

    # 2020 names species "<Scientific>_<Common>"; some secondary names are of no known species.
    unknown = [f"{o.scientific_name}_{o.common_name}" for o in plan.others[-1:]]
    rows = []
    for r in plan.records["bc20"]:
        s = sp[r.code]
        names = [sp[c].bc20_name for c in r.secondaries if c in sp]
        if rng.random() < 0.1:
            names.append(unknown[0])
        common = _common_columns(r, s, rng)
        country = str(rng.choice(["India", "Sri Lanka", "Nepal", "United States"]))
        rows.append({
            "rating": common["rating"],
            "playback_used": str(rng.choice(["no", "no", "yes", "unknown"])),
            "ebird_code": r.code,
            "channels": "2 (stereo)" if r.channels == 2 else "1 (mono)",
            "date": _date(rng),
            "pitch": "Not specified",
            "duration": int(round(r.audio.seconds)),
            "filename": f"XC{r.xc_id}.mp3",
            "speed": "Not specified",
            "species": s.common_name,
            "number_of_notes": "Not specified",
            "title": f"XC{r.xc_id} {s.common_name} ({s.scientific_name})",
            "secondary_labels": repr(names),
            "bird_seen": str(rng.choice(["yes", "no"])),
            "sci_name": s.scientific_name,
            "location": f"Site {int(rng.integers(1, 99))}, {country}",
            "latitude": common["latitude"],
            "sampling_rate": f"{r.sample_rate} (Hz)",
            "type": str(rng.choice(["call", "song", "call, song"])),
            "elevation": f"{int(rng.integers(0, 20)) * 100} m",
            "description": "",
            "bitrate_of_mp3": "128000 (bps)",
            "file_type": "mp3",
            "volume": "Not specified",
            "background": "",
            "xc_id": r.xc_id,
            "url": common["url"],
            "country": country,
            "author": common["author"],
            "primary_label": s.bc20_name,
            "longitude": common["longitude"],
            "length": "Not specified",
            "time": _clock(rng),
            "recordist": common["author"],
            "license": common["license"],
        })  # fmt: skip
    tables["bc20"] = pd.DataFrame(rows, columns=BC20_COLUMNS).sort_values(
        ["ebird_code", "filename"]
    )
    return tables


def _audio_paths(r: Record) -> tuple[str, ...]:
    name = f"XC{r.xc_id}.{r.fmt}"
    if r.source == "bc24":
        return tuple(
            f"{BC24_DIR}/train_audio/{folder}/{name}" for folder in [r.code, *r.extra_folders]
        )
    if r.source in ("bc23", "bc22"):
        return (f"{YEAR_DIRS[r.source]}/train_audio/{r.code}/{name}",)
    if r.source == "bc21":
        return (f"{YEAR_DIRS['bc21']}/train_short_audio/{r.code}/{name}",)
    if r.source == "bc20":
        return (f"{YEAR_DIRS['bc20']}/train_audio/{r.code}/{name}",)
    return (f"{BC00_DIR}/additional_audio/{r.code}/{name}",)


def _window_labels(
    events: list[tuple[str, float, float]], seconds: float, codes: list[str], stem: int
) -> pd.DataFrame:
    """One row per window of a labelled soundscape (the window rule of birdclef.windows): a
    species is present where one of its songs overlaps the window by LABEL_MIN_OVERLAP seconds."""
    n_windows = window_count(int(round(seconds * SR)), int(round(WINDOW_SECONDS * SR)), SR)
    labels = np.zeros((n_windows, len(codes)), dtype=int)
    column = {c: i for i, c in enumerate(codes)}
    for code, start, end in events:
        for w in range(n_windows):
            lo, hi = w * WINDOW_SECONDS, min((w + 1) * WINDOW_SECONDS, seconds)
            if min(end, hi) - max(start, lo) >= LABEL_MIN_OVERLAP:
                labels[w, column[code]] = 1
    ids = row_ids(str(stem), n_windows, WINDOW_SECONDS)
    return pd.concat([pd.DataFrame({"row_id": ids}), pd.DataFrame(labels, columns=codes)], axis=1)


# ----------------------------------------------------------------------------------------------
# Entry point


def _pool_context() -> mp.context.BaseContext:
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


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

    jobs: list[AudioJob] = []
    for source in ("bc24", "bc23", "bc22", "bc21", "bc20", "bc00"):
        for r in plan.records[source]:
            jobs.append(
                AudioJob(
                    _audio_paths(r), r.audio, r.fmt, r.sample_rate, r.channels, r.trim, r.gain_db
                )
            )
    unlabeled = plan.soundscape_specs(cfg.n_soundscapes, cfg.soundscape_seconds)
    labelled = plan.soundscape_specs(
        cfg.n_eval_soundscapes, cfg.eval_soundscape_seconds or cfg.soundscape_seconds
    )
    first_eval = len(jobs) + len(unlabeled)
    for sid, spec in unlabeled:
        jobs.append(AudioJob((f"{BC24_DIR}/unlabeled_soundscapes/{sid}.ogg",), spec))
    for sid, spec in labelled:
        jobs.append(AudioJob((f"{EVAL_DIR}/{sid}.ogg",), spec))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        results = _render_all(jobs, tmp, progress)
        _write_tables(plan, tables, tmp, labelled, results, first_eval)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)

    summary: dict = {
        "n_species": len(plan.codes),
        "bc24_records": len(tables["bc24"]),
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
    return summary


def _render_all(
    jobs: list[AudioJob], root: Path, progress: bool
) -> dict[int, tuple[int, float, list[tuple[str, float, float]]]]:
    # Longest first, so the last job a worker takes is a short one.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
    args = [(i, jobs[i], str(root)) for i in order]
    workers = min(os.cpu_count() or 1, len(jobs))
    results = {}
    with io_progress(total=len(jobs), desc="make_sample", unit="file", disable=not progress) as bar:
        if workers <= 1:
            for a in args:
                res = _run_job(a)
                results[res[0]] = res
                bar.update()
        else:
            with _pool_context().Pool(workers) as pool:
                for res in pool.imap_unordered(_run_job, args, chunksize=1):
                    results[res[0]] = res
                    bar.update()
    return results


def _write_tables(
    plan: _Planner,
    tables: dict[str, pd.DataFrame],
    root: Path,
    labelled: list[tuple[int, SoundscapeSpec]],
    results: dict[int, tuple[int, float, list[tuple[str, float, float]]]],
    first_eval: int,
) -> None:
    bc24 = root / BC24_DIR
    tables["bc24"].to_csv(bc24 / "train_metadata.csv", index=False)
    for source in ("bc23", "bc22", "bc21"):
        folder = root / YEAR_DIRS[source]
        folder.mkdir(parents=True, exist_ok=True)
        tables[source].to_csv(folder / "train_metadata.csv", index=False)
    (root / YEAR_DIRS["bc20"]).mkdir(parents=True, exist_ok=True)
    tables["bc20"].to_csv(root / YEAR_DIRS["bc20"] / "train.csv", index=False)
    (root / BC00_DIR / "additional_audio").mkdir(parents=True, exist_ok=True)

    codes = plan.codes
    stems = sorted(int(p.stem) for p in (bc24 / "unlabeled_soundscapes").glob("*.ogg"))
    first = stems[0] if stems else 0
    submission = pd.DataFrame({"row_id": [f"{first}_{s}" for s in (5, 10, 15)]})
    submission = pd.concat([submission, pd.DataFrame(0.0, index=range(3), columns=codes)], axis=1)
    submission.to_csv(bc24 / "sample_submission.csv", index=False)

    taxonomy = [*plan.species, *plan.others]
    orders = sorted(plan.rng.choice(30_000, size=len(taxonomy), replace=False).tolist())
    taxon_rows = [
        {
            "TAXON_ORDER": int(o) + 1,
            "CATEGORY": "species",
            "SPECIES_CODE": s.code,
            "PRIMARY_COM_NAME": s.common_name,
            "SCI_NAME": s.scientific_name,
            "ORDER1": s.order,
            "FAMILY": s.family,
            "SPECIES_GROUP": s.family.split("(")[-1].rstrip(")"),
            "REPORT_AS": "",
        }
        for o, s in zip(
            orders, [taxonomy[int(i)] for i in plan.rng.permutation(len(taxonomy))], strict=True
        )
    ]
    pd.DataFrame(taxon_rows, columns=TAXONOMY_COLUMNS).to_csv(
        bc24 / "eBird_Taxonomy_v2021.csv", index=False
    )

    (root / EVAL_DIR).mkdir(parents=True, exist_ok=True)
    frames = []
    for k, (sid, spec) in enumerate(labelled):
        events = results[first_eval + k][2]
        frames.append(_window_labels(events, spec.seconds, codes, sid))
    empty = pd.DataFrame(columns=["row_id", *codes])
    labels = pd.concat(frames, ignore_index=True) if frames else empty
    labels.to_csv(root / EVAL_DIR / "labels.csv", index=False)

    pairs = [
        (f"{a.code}/XC{a.xc_id}.ogg", f"{b.code}/XC{b.xc_id}.ogg") for a, b in plan.near_duplicates
    ]
    pd.DataFrame(pairs, columns=["r0", "r1"]).to_csv(root / "near_duplicates.csv", index=False)
