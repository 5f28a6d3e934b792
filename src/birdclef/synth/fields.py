"""Values of the metadata fields every layout shares: people, licences, call types, ratings,
dates, and the columns common to the competitions' tables (drawn from the plan's random stream)."""

from __future__ import annotations

import numpy as np

from birdclef.synth.plan import Record
from birdclef.synth.voices import Species

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


def rating(rng: np.random.Generator) -> float:
    return float(rng.choice([0.0, 2.5, 3.0, 3.5, 4.0, 4.0, 4.5, 4.5, 5.0, 5.0]))


def person(rng: np.random.Generator) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def common_columns(r: Record, sp: Species, rng: np.random.Generator) -> dict[str, object]:
    return {
        "primary_label": r.code,
        "secondary_labels": repr(r.secondaries),
        "type": str(rng.choice(CALL_TYPES)),
        "latitude": round(sp.lat + float(rng.normal(0, 1.5)), 4),
        "longitude": round(sp.lon + float(rng.normal(0, 1.5)), 4),
        "scientific_name": sp.scientific_name,
        "common_name": sp.common_name,
        "author": person(rng),
        "license": str(rng.choice(LICENSES)),
        "rating": rating(rng),
        "url": f"https://www.xeno-canto.org/{r.xc_id}",
    }


def date(rng: np.random.Generator) -> str:
    year, month, day = (
        int(rng.integers(2005, 2020)),
        int(rng.integers(1, 13)),
        int(rng.integers(1, 29)),
    )
    return f"{year}-{month:02d}-{day:02d}"


def clock(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(4, 20)):02d}:{int(rng.integers(0, 60)):02d}"
