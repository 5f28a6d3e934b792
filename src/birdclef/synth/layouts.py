"""The Kaggle layouts: folder names, audio paths, the metadata table of each source and the other
tables (sample submission, taxonomy, soundscape labels, near duplicates)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.synth.fields import clock, common_columns, date
from birdclef.synth.layout2025 import bc25_table, recorder_stems, write_taxonomy_2025
from birdclef.synth.plan import MAIN, Record, _Planner
from birdclef.synth.render import SongEvent, SoundscapeSpec
from birdclef.synth.voices import SR
from birdclef.windows import row_ids, window_count

WINDOW_SECONDS = 5.0
# A species counts as present in a 5-s window when one of its songs overlaps it by this much.
LABEL_MIN_OVERLAP = 0.5

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


@dataclass(frozen=True)
class MainLayout:
    """The main competition's folder in one year's layout (`make_sample.layout`), and how the
    files that differ between years are made."""

    source: str  # the tag its reader gives its rows
    folder: str
    metadata: str
    taxonomy: str
    soundscapes: str  # the folder of unlabelled soundscapes
    table: Callable[[_Planner], pd.DataFrame]
    write_taxonomy: Callable[[_Planner, Path], None]
    soundscape_stems: Callable[[list[int]], list[str]]  # file stems of the unlabelled soundscapes
    test_stem: Callable[[list[int]], str]  # the soundscape named in sample_submission.csv


def main_layout(plan: _Planner) -> MainLayout:
    return MAIN_LAYOUTS[plan.cfg.layout]


def _audio_paths(r: Record, plan: _Planner) -> tuple[str, ...]:
    name = f"{r.stem}.{r.fmt}"
    if r.source == MAIN:
        main = main_layout(plan)
        return tuple(
            f"{main.folder}/train_audio/{plan.labels[folder]}/{name}"
            for folder in [r.code, *r.extra_folders]
        )
    if r.source in ("bc23", "bc22"):
        return (f"{YEAR_DIRS[r.source]}/train_audio/{r.code}/{name}",)
    if r.source == "bc21":
        return (f"{YEAR_DIRS['bc21']}/train_short_audio/{r.code}/{name}",)
    if r.source == "bc20":
        return (f"{YEAR_DIRS['bc20']}/train_audio/{r.code}/{name}",)
    return (f"{BC00_DIR}/additional_audio/{r.code}/{name}",)


# ----------------------------------------------------------------------------------------------
# Metadata tables (drawn from the plan's random stream, so built in a fixed order)


def _metadata_tables(plan: _Planner) -> dict[str, pd.DataFrame]:
    # Built in this order: the tables draw from one random stream.
    return {
        MAIN: main_layout(plan).table(plan),
        "bc23": _bc23_table(plan),
        "bc22": _bc22_table(plan),
        "bc21": _bc21_table(plan),
        "bc20": _bc20_table(plan),
    }


def _bc24_table(plan: _Planner) -> pd.DataFrame:
    rows = []
    for r in plan.records[MAIN]:
        for folder in [r.code, *r.extra_folders]:
            row = common_columns(r, plan.by_code[folder], plan.rng)
            row["primary_label"] = folder
            if folder != r.code:
                row["secondary_labels"] = repr([r.code])
            row["filename"] = f"{folder}/{r.stem}.ogg"
            rows.append(row)
    return pd.DataFrame(rows, columns=BC24_COLUMNS).sort_values("filename")


def _bc23_table(plan: _Planner) -> pd.DataFrame:
    rng, sp = plan.rng, plan.by_code
    rows = [
        {**common_columns(r, sp[r.code], rng), "filename": f"{r.code}/XC{r.xc_id}.ogg"}
        for r in plan.records["bc23"]
    ]
    return pd.DataFrame(rows, columns=BC24_COLUMNS).sort_values("filename")


def _bc22_table(plan: _Planner) -> pd.DataFrame:
    rng, sp = plan.rng, plan.by_code
    rows = [
        {**common_columns(r, sp[r.code], rng), "time": clock(rng),
         "filename": f"{r.code}/XC{r.xc_id}.ogg"}
        for r in plan.records["bc22"]
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=BC22_COLUMNS).sort_values("filename")


def _bc21_table(plan: _Planner) -> pd.DataFrame:
    rng, sp = plan.rng, plan.by_code
    rows = [
        {**common_columns(r, sp[r.code], rng), "date": date(rng), "time": clock(rng),
         "filename": f"XC{r.xc_id}.ogg"}
        for r in plan.records["bc21"]
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=BC21_COLUMNS).sort_values(["primary_label", "filename"])


def _bc20_table(plan: _Planner) -> pd.DataFrame:
    # 2020 names species "<Scientific>_<Common>"; some secondary names are of no known species.
    unknown = plan.others[-1].bc20_name
    rows = [_bc20_row(r, plan, unknown) for r in plan.records["bc20"]]
    return pd.DataFrame(rows, columns=BC20_COLUMNS).sort_values(["ebird_code", "filename"])


def _bc20_row(r: Record, plan: _Planner, unknown: str) -> dict[str, object]:
    rng, sp = plan.rng, plan.by_code
    s = sp[r.code]
    names = [sp[c].bc20_name for c in r.secondaries if c in sp]
    if rng.random() < 0.1:
        names.append(unknown)
    common = common_columns(r, s, rng)
    country = str(rng.choice(["India", "Sri Lanka", "Nepal", "United States"]))
    return {
        "rating": common["rating"],
        "playback_used": str(rng.choice(["no", "no", "yes", "unknown"])),
        "ebird_code": r.code,
        "channels": "2 (stereo)" if r.channels == 2 else "1 (mono)",
        "date": date(rng),
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
        "time": clock(rng),
        "recordist": common["author"],
        "license": common["license"],
    }


# ----------------------------------------------------------------------------------------------
# Writing the tables (after the audio: the sample submission names a rendered soundscape)


def _write_tables(
    plan: _Planner,
    tables: dict[str, pd.DataFrame],
    root: Path,
    unlabelled_ids: list[int],
    labelled: list[tuple[int, SoundscapeSpec]],
    labelled_events: list[list[SongEvent]],
) -> None:
    main = main_layout(plan)
    _write_metadata(tables, root, main)
    _write_sample_submission(plan.classes, root / main.folder, main.test_stem(unlabelled_ids))
    main.write_taxonomy(plan, root / main.folder / main.taxonomy)
    _write_labels(labelled, labelled_events, plan, root)
    pairs = [
        (f"{plan.labels[a.code]}/{a.stem}.ogg", f"{plan.labels[b.code]}/{b.stem}.ogg")
        for a, b in plan.near_duplicates
    ]
    pd.DataFrame(pairs, columns=["r0", "r1"]).to_csv(root / "near_duplicates.csv", index=False)


def _write_metadata(tables: dict[str, pd.DataFrame], root: Path, main: MainLayout) -> None:
    tables[MAIN].to_csv(root / main.folder / main.metadata, index=False)
    for source in ("bc23", "bc22", "bc21"):
        folder = root / YEAR_DIRS[source]
        folder.mkdir(parents=True, exist_ok=True)
        tables[source].to_csv(folder / "train_metadata.csv", index=False)
    (root / YEAR_DIRS["bc20"]).mkdir(parents=True, exist_ok=True)
    tables["bc20"].to_csv(root / YEAR_DIRS["bc20"] / "train.csv", index=False)
    (root / BC00_DIR / "additional_audio").mkdir(parents=True, exist_ok=True)


def _write_sample_submission(classes: list[str], folder: Path, test_stem: str) -> None:
    """Three rows of a test soundscape, one column per class."""
    submission = pd.DataFrame({"row_id": [f"{test_stem}_{s}" for s in (5, 10, 15)]})
    submission = pd.concat([submission, pd.DataFrame(0.0, index=range(3), columns=classes)], axis=1)
    submission.to_csv(folder / "sample_submission.csv", index=False)


def _write_taxonomy(plan: _Planner, path: Path) -> None:
    """eBird_Taxonomy_v2021.csv: every species of the corpus, in a shuffled taxonomic order."""
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
    pd.DataFrame(taxon_rows, columns=TAXONOMY_COLUMNS).to_csv(path, index=False)


MAIN_LAYOUTS = {
    "2024": MainLayout(
        "bc24", BC24_DIR, "train_metadata.csv", "eBird_Taxonomy_v2021.csv", "unlabeled_soundscapes",
        _bc24_table, _write_taxonomy, lambda ids: [str(i) for i in ids],
        lambda ids: str(min(ids, default=0)),
    ),
    "2025": MainLayout(
        "bc25", "birdclef-2025", "train.csv", "taxonomy.csv", "train_soundscapes",
        bc25_table, write_taxonomy_2025, lambda ids: recorder_stems(len(ids)),
        lambda ids: f"soundscape_{min(ids, default=0)}",
    ),
}


def _write_labels(
    labelled: list[tuple[int, SoundscapeSpec]],
    labelled_events: list[list[SongEvent]],
    plan: _Planner,
    root: Path,
) -> None:
    """labels.csv: one column per class of the main competition, in the submission's order."""
    (root / EVAL_DIR).mkdir(parents=True, exist_ok=True)
    frames = [
        _window_labels(events, spec.seconds, plan.codes, sid)
        for (sid, spec), events in zip(labelled, labelled_events, strict=True)
    ]
    empty = pd.DataFrame(columns=["row_id", *plan.codes])
    labels = pd.concat(frames, ignore_index=True) if frames else empty
    labels = labels.rename(columns=plan.labels)[["row_id", *plan.classes]]
    labels.to_csv(root / EVAL_DIR / "labels.csv", index=False)


def _window_labels(
    events: list[SongEvent], seconds: float, codes: list[str], stem: int
) -> pd.DataFrame:
    """One row per window of a labelled soundscape (the window rule of birdclef.windows): a
    species is present where one of its songs overlaps the window by LABEL_MIN_OVERLAP seconds,
    or by half the song when the song is shorter than twice that (some species only sing
    0.2-0.5 s songs, which a fixed 0.5-s overlap would never count as present)."""
    n_windows = window_count(int(round(seconds * SR)), int(round(WINDOW_SECONDS * SR)), SR)
    labels = np.zeros((n_windows, len(codes)), dtype=int)
    column = {c: i for i, c in enumerate(codes)}
    for code, start, end in events:
        needed = min(LABEL_MIN_OVERLAP, (end - start) / 2)
        for w in range(n_windows):
            lo, hi = w * WINDOW_SECONDS, min((w + 1) * WINDOW_SECONDS, seconds)
            if min(end, hi) - max(start, lo) >= needed:
                labels[w, column[code]] = 1
    ids = row_ids(str(stem), n_windows, WINDOW_SECONDS)
    return pd.concat([pd.DataFrame({"row_id": ids}), pd.DataFrame(labels, columns=codes)], axis=1)
