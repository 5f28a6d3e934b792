"""The BirdCLEF+ 2025 layout of the main competition (`make_sample.layout: "2025"`):
`birdclef-2025/train.csv` with `collection` (XC, iNat or CSA), `taxonomy.csv` with `class_name`,
labels that are eBird codes for birds and numeric iNaturalist taxon ids for the other classes, and
1-minute `train_soundscapes/` named after their recorder and start time."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from birdclef.synth.fields import common_columns
from birdclef.synth.plan import BIRDS, MAIN, _Planner

BC25_COLUMNS = [
    "primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
    "latitude", "longitude", "scientific_name", "common_name", "author", "license",
]  # fmt: skip
TAXONOMY_2025_COLUMNS = [
    "primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name",
]  # fmt: skip
RECORD_URLS = {
    "XC": "https://xeno-canto.org/{id}",
    "iNat": "https://static.inaturalist.org/sounds/{id}.wav",
    "CSA": "https://colecciones.humboldt.org.co/rec/sonidos/IAvH-CSA-{id}",
}
# Soundscapes are named like H02_20230420_074000: recorder, date and start time.
RECORDERS = 5
FIRST_RECORDING = datetime(2023, 4, 20, 6, 0)
RECORDING_INTERVAL = timedelta(minutes=10)


def bc25_table(plan: _Planner) -> pd.DataFrame:
    """train.csv: one row per main record and species folder (two-folder records have two)."""
    rows = []
    for r in plan.records[MAIN]:
        for folder in [r.code, *r.extra_folders]:
            row = common_columns(r, plan.by_code[folder], plan.rng)
            label = plan.labels[folder]
            if folder == r.code:
                secondaries = [plan.labels.get(c, c) for c in r.secondaries]
            else:  # its row in the second species' folder names the first one as secondary
                secondaries = [plan.labels[r.code]]
            row.update(
                primary_label=label,
                # 2025 writes "no secondary species" as [''], not [].
                secondary_labels=repr(secondaries or [""]),
                filename=f"{label}/{r.stem}.ogg",
                collection=r.collection,
                url=RECORD_URLS[r.collection].format(id=r.xc_id),
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=BC25_COLUMNS).sort_values("filename")


def write_taxonomy_2025(plan: _Planner, path: Path) -> None:
    """taxonomy.csv: the competition's species only; a non-bird's taxon id is its label."""
    rows = [
        {
            "primary_label": plan.labels[code],
            "inat_taxon_id": (
                str(int(plan.rng.integers(1_000, 1_000_000)))
                if plan.class_names[code] == BIRDS
                else plan.labels[code]
            ),
            "scientific_name": plan.by_code[code].scientific_name,
            "common_name": plan.by_code[code].common_name,
            "class_name": plan.class_names[code],
        }
        for code in plan.codes
    ]
    table = pd.DataFrame(rows, columns=TAXONOMY_2025_COLUMNS).sort_values("primary_label")
    table.to_csv(path, index=False)


def recorder_stems(n: int) -> list[str]:
    """Stems of `n` soundscapes: recorders in turn, one recording every RECORDING_INTERVAL."""
    times = [FIRST_RECORDING + k * RECORDING_INTERVAL for k in range(n)]
    return [f"H{k % RECORDERS + 1:02d}_{t:%Y%m%d_%H%M%S}" for k, t in enumerate(times)]
