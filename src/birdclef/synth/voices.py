"""Synthetic species and their voices: names, codes, vocal signatures, syllables and songs."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

SR = 32000  # every sound is synthesised at this rate; a job resamples at the end if it must

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

SHAPES = ("up", "down", "trill", "whistle", "chirp2")
RHYTHMS = ("even", "accelerating", "paired")


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
# Songs (run in the worker processes)


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
