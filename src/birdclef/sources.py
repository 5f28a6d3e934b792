"""One reader per source layout (SPEC 1.1), each returning the one normalised metadata schema.

Normalised schema (one row per audio file):
    record_id         file stem, e.g. "XC134896" (2025: also "iNat1216197", "CSA36385"): the identity
                      of a record across sources
    source            bc25 | bc24 | bc23 | bc22 | bc21 | bc20 | bc00
    primary_label     species code, always a string: an eBird code, or (2025) a numeric iNaturalist
                      taxon id such as "1139490"
    secondary_labels  list[str] of species codes (bc20's names are mapped in selection)
    filename          the path as the metadata names it (bc00: "<species>/<file>")
    audio_path        where the audio file is on disk
    rating, latitude, longitude   float, NaN where the source has none
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.audio import AUDIO_SUFFIXES
from birdclef.config import SourcesConfig

SCHEMA = [
    "record_id",
    "source",
    "primary_label",
    "secondary_labels",
    "filename",
    "audio_path",
    "rating",
    "latitude",
    "longitude",
]
# Competition years, most recent first, then the xeno-canto extra set (SPEC 3.2 step 5).
SOURCES_BY_RECENCY = ("bc25", "bc24", "bc23", "bc22", "bc21", "bc20", "bc00")
# The folder of the main competition's unlabelled soundscapes, the ones pseudo-labelled (SPEC 5).
UNLABELLED_SOUNDSCAPES = {"bc24": "unlabeled_soundscapes", "bc25": "train_soundscapes"}
LABEL_COLUMNS = ["primary_label", "secondary_labels", "filename"]


class SourceError(ValueError):
    """A source that cannot be read; the message names the file (and row or column)."""


def parse_label_list(text: object, where: str) -> list[str]:
    """Parse a stringified Python list of strings safely (literal parsing, never eval)."""
    if isinstance(text, float) and np.isnan(text) or text is None or text == "":
        return []
    if isinstance(text, list):
        value: object = text
    else:
        try:
            value = ast.literal_eval(str(text))
        except (ValueError, SyntaxError) as exc:
            raise SourceError(f"{where}: secondary_labels is not a list literal: {text!r}") from exc
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SourceError(f"{where}: secondary_labels must be a list of strings, got {text!r}")
    return [v.strip() for v in value if v.strip()]


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise SourceError(f"{path}: metadata file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"{path}: cannot read CSV: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    return df


def _float_column(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").astype(float)


def _normalise(
    df: pd.DataFrame,
    csv: Path,
    source: str,
    primary: pd.Series,
    record_id: pd.Series,
    audio_path: pd.Series,
) -> pd.DataFrame:
    secondary = [
        parse_label_list(text, f"{csv} row {i + 2}")
        for i, text in enumerate(df["secondary_labels"].tolist())
    ]
    out = pd.DataFrame(
        {
            "record_id": record_id.astype(str).values,
            "source": source,
            "primary_label": primary.astype(str).str.strip().values,
            "secondary_labels": secondary,
            "filename": df["filename"].astype(str).values,
            "audio_path": audio_path.astype(str).values,
            "rating": _float_column(df, "rating").values,
            "latitude": _float_column(df, "latitude").values,
            "longitude": _float_column(df, "longitude").values,
        }
    )
    _check_audio_exists(out, csv)
    return out


def _check_audio_exists(df: pd.DataFrame, where: Path) -> None:
    missing = [p for p in df["audio_path"] if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        raise SourceError(f"{where}: {len(missing)} audio file(s) named there are missing: {shown}")


def _stem(names: pd.Series) -> pd.Series:
    return names.map(lambda n: Path(n).stem)


def read_species_folder_layout(root: Path, source: str) -> pd.DataFrame:
    """2025, 2024, 2023 and 2022: filename `<species>/<stem>.ogg` under train_audio/.

    2025 (BirdCLEF+) names its metadata `train.csv` and adds `collection` (XC, iNat or CSA, where a
    record comes from; its stem starts with it); the earlier years name it `train_metadata.csv`.
    Requiring `collection` makes a 2025 path pointing at another year's folder fail clearly.
    """
    if source == "bc25":
        csv = root / "train.csv"
        df = _read_csv(csv, [*LABEL_COLUMNS, "collection"])
    else:
        csv = root / "train_metadata.csv"
        df = _read_csv(csv, LABEL_COLUMNS)
    audio = df["filename"].map(lambda f: str(root / "train_audio" / f))
    return _normalise(df, csv, source, df["primary_label"], _stem(df["filename"]), audio)


def read_bc21(root: Path) -> pd.DataFrame:
    """2021: filename `<XCid>.ogg` with no folder; audio under train_short_audio/<primary_label>/."""
    csv = root / "train_metadata.csv"
    df = _read_csv(csv, LABEL_COLUMNS)
    audio = root / "train_short_audio" / df["primary_label"].str.strip() / df["filename"]
    record = df["filename"].str.split(".", n=1).str[0]
    return _normalise(df, csv, "bc21", df["primary_label"], record, audio.map(str))


def read_bc20(root: Path) -> pd.DataFrame:
    """2020 (birdsong-recognition): `train.csv`, `ebird_code` is the label, mp3 audio.

    Secondary labels stay as "<Scientific>_<Common>" strings here; they can only be mapped to eBird
    codes after the species filter (SPEC 1.2), which `selection.map_bc20_secondaries` does.
    A `common_name` column (the `species` column) is kept for that mapping.
    """
    csv = root / "train.csv"
    df = _read_csv(csv, ["ebird_code", "species", "secondary_labels", "filename"])
    audio = root / "train_audio" / df["ebird_code"].str.strip() / df["filename"]
    record = df["filename"].str.split(".", n=1).str[0]
    out = _normalise(df, csv, "bc20", df["ebird_code"], record, audio.map(str))
    out["common_name"] = df["species"].str.strip().values
    return out


def read_bc00(root: Path) -> pd.DataFrame:
    """Xeno-canto extra: no metadata, the folder tree `additional_audio/<species>/<XCid>.mp3`.

    Deviation (SPEC 9.7): files are listed in sorted order, not filesystem glob order, so which
    records survive the cap is deterministic.
    """
    folder = root / "additional_audio"
    if not folder.is_dir():
        raise SourceError(f"{folder}: xeno-canto extra folder not found")
    files = sorted(
        p for p in folder.glob("*/*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    )
    df = pd.DataFrame(
        {
            "record_id": [p.stem for p in files],
            "source": "bc00",
            "primary_label": [p.parent.name for p in files],
            "secondary_labels": [[] for _ in files],
            "filename": [f"{p.parent.name}/{p.name}" for p in files],
            "audio_path": [str(p) for p in files],
            "rating": np.nan,
            "latitude": np.nan,
            "longitude": np.nan,
        },
        columns=SCHEMA,
    )
    return df


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "bc25": lambda root: read_species_folder_layout(root, "bc25"),
    "bc24": lambda root: read_species_folder_layout(root, "bc24"),
    "bc23": lambda root: read_species_folder_layout(root, "bc23"),
    "bc22": lambda root: read_species_folder_layout(root, "bc22"),
    "bc21": read_bc21,
    "bc20": read_bc20,
    "bc00": read_bc00,
}


def read_sources(cfg: SourcesConfig) -> dict[str, pd.DataFrame]:
    """Read every configured source; a configured path that does not exist is an error."""
    tables: dict[str, pd.DataFrame] = {}
    for source, reader in READERS.items():
        path = getattr(cfg, source)
        if path is None:
            continue
        root = Path(path)
        if not root.is_dir():
            raise SourceError(f"sources.{source}: folder {root} does not exist")
        tables[source] = reader(root)
    return tables


def source_priority(main: str) -> dict[str, int]:
    """The cap merge's rank of each source, higher first: the main competition, then the other
    years by recency, the xeno-canto extra set last (SPEC 3.2 step 5 with main = bc24)."""
    order = [main, *(s for s in SOURCES_BY_RECENCY if s != main)]
    return {source: len(order) - i for i, source in enumerate(order)}


def extra_sources(main: str) -> list[str]:
    """Every source but the main one, in the order the cap merge filters and concatenates them:
    the years oldest first, then bc00 (ties in the merge's sort never cross sources)."""
    years = [s for s in reversed(SOURCES_BY_RECENCY[:-1]) if s != main]
    return [*years, "bc00"]


def unlabelled_soundscape_folder(cfg: SourcesConfig) -> Path:
    """Where the main competition keeps its unlabelled soundscapes."""
    return Path(cfg.main_path) / UNLABELLED_SOUNDSCAPES[cfg.main]


def read_near_duplicates(path: str | None) -> pd.DataFrame:
    """Optional list of near-duplicate pairs (columns r0, r1 as `<species>/<file>`), SPEC 4.1."""
    if path is None:
        return pd.DataFrame({"r0": pd.Series(dtype=str), "r1": pd.Series(dtype=str)})
    return _read_csv(Path(path), ["r0", "r1"])[["r0", "r1"]]
