"""Which records are trained on: the cap-500 merge (SPEC 3.2), duplicates (SPEC 4.1), folds (SPEC 4.2).

All functions are pure pandas over the normalised schema of `sources`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from birdclef.sources import EXTRA_SOURCES, SOURCE_PRIORITY

# Status of every candidate record after the merge, for the report.
KEPT = "kept"
BC24 = "bc24"
NOT_2024_SPECIES = "dropped_not_2024_species"
SAME_AS_BC24 = "dropped_same_record_as_bc24"
XC_SPECIES_COMMON = "dropped_xc_species_has_enough_bc24"
DUPLICATE = "dropped_duplicate_record"
OVER_CAP = "dropped_over_cap"


class SelectionError(ValueError):
    """The data cannot be split or selected as configured; the message says which species."""


def map_bc20_secondaries(bc20: pd.DataFrame) -> pd.Series:
    """bc20 secondary "<Scientific>_<Common>" names -> eBird codes (SPEC 1.2).

    The lookup is built only from the bc20 rows passed in (those left after the species filter);
    names not found are dropped, as in the original.
    """
    lookup = dict(zip(bc20["common_name"], bc20["primary_label"], strict=True))
    mapped = []
    for names in bc20["secondary_labels"]:
        codes = []
        for name in names:
            parts = name.split("_")
            if len(parts) > 1 and parts[1] in lookup:
                codes.append(lookup[parts[1]])
        mapped.append(codes)
    return pd.Series(mapped, index=bc20.index, dtype=object)


def merge_and_cap(
    tables: dict[str, pd.DataFrame], cap: int, xc_species_threshold: int
) -> pd.DataFrame:
    """SPEC 3.2: every candidate record of every source, with `status` and `rank`.

    Rows with status KEPT form the original's `all_train.csv` (the extra records); bc24 rows are
    returned with status BC24. Output order is the original's sorted order (primary_label, source
    descending), with dropped candidates appended after it.
    """
    bc24 = tables["bc24"]
    bc24_names = set(bc24["record_id"])
    bc24_species = set(bc24["primary_label"])
    bc24_counts = bc24["primary_label"].value_counts()
    dropped: list[pd.DataFrame] = []
    extras: list[pd.DataFrame] = []

    def drop(df: pd.DataFrame, mask: pd.Series, status: str) -> pd.DataFrame:
        if mask.any():
            dropped.append(df[mask].assign(status=status))
        return df[~mask]

    for source in EXTRA_SOURCES:
        if source not in tables:
            continue
        df = tables[source].copy()
        if source == "bc00":
            # Notebook 135: only species with fewer than the threshold bc24 records get xc extras;
            # species missing from bc24 have a NaN count and are excluded too.
            counts = df["primary_label"].map(bc24_counts)
            df = drop(df, counts.isna(), NOT_2024_SPECIES)
            counts = df["primary_label"].map(bc24_counts)
            df = drop(df, counts >= xc_species_threshold, XC_SPECIES_COMMON)
            df = drop(df, df["record_id"].isin(bc24_names), SAME_AS_BC24)
        else:
            df = drop(df, df["record_id"].isin(bc24_names), SAME_AS_BC24)
            df = drop(df, ~df["primary_label"].isin(bc24_species), NOT_2024_SPECIES)
            if source == "bc20":
                df["secondary_labels"] = map_bc20_secondaries(df)
        extras.append(df)

    # Concatenation order bc20, bc21, bc22, bc23, bc00, bc24 decides ties in the stable sort.
    merged = pd.concat([*extras, bc24.assign(status=BC24)], ignore_index=True)
    merged["status"] = merged["status"].fillna(KEPT)
    merged["_pos"] = np.arange(len(merged))
    merged["_priority"] = merged["source"].map(SOURCE_PRIORITY)
    merged = merged.sort_values(
        ["primary_label", "_priority", "_pos"], ascending=[False, False, True], kind="stable"
    )
    duplicate = merged.duplicated("record_id", keep="first")
    # A bc24 record filed under two species is counted once, under the alphabetically later
    # species (the first in descending order); its other row stays a bc24 training row, unranked.
    two_folder = duplicate & (merged["source"] == "bc24")
    dropped.append(merged[duplicate & ~two_folder].assign(status=DUPLICATE))
    ranked = merged[~duplicate].copy()
    ranked["rank"] = ranked.groupby("primary_label", sort=False).cumcount() + 1
    over_cap = (ranked["source"] != "bc24") & (ranked["rank"] > cap)
    ranked.loc[over_cap, "status"] = OVER_CAP
    out = pd.concat([ranked, merged[two_folder], *dropped], ignore_index=True)
    out["rank"] = out["rank"].astype("Int64")
    return out.drop(columns=["_pos", "_priority", "common_name"], errors="ignore")


def records_to_decode(candidates: pd.DataFrame) -> pd.DataFrame:
    """One row per record whose audio is needed: bc24 records and kept extras (first occurrence)."""
    needed = candidates[candidates["status"].isin([BC24, KEPT])]
    return needed.drop_duplicates("record_id", keep="first").reset_index(drop=True)


def labelled_table(candidates: pd.DataFrame, near_duplicates: pd.DataFrame) -> pd.DataFrame:
    """SPEC 4.1: one row per training record, bc24 first (sorted by record), then the extras.

    Columns: record_id, source, primary_label, first_species, last_species, secondary_labels,
    filename. Two-folder bc24 records keep the alphabetically first species' row, with both
    species as targets. Same-folder near-duplicates (the r1 of each pair) are removed.
    """
    bc24 = candidates[candidates["status"] == BC24].copy()
    bc24 = bc24.sort_values(["primary_label", "filename"], kind="stable")
    bc24["record"] = bc24["filename"].map(lambda f: f.split("/")[-1])
    species = bc24.groupby("record")["primary_label"].agg(["first", "last"])
    bc24["first_species"] = bc24["record"].map(species["first"])
    bc24["last_species"] = bc24["record"].map(species["last"])

    pairs = near_duplicates.astype({"r0": str, "r1": str})
    same_folder = pairs[pairs["r0"].str.split("/").str[0] == pairs["r1"].str.split("/").str[0]]
    bc24 = bc24[~bc24["filename"].isin(set(same_folder["r1"]))]
    bc24 = bc24.groupby("record", sort=True).first().reset_index(drop=True)

    extras = candidates[candidates["status"] == KEPT].copy()
    extras["first_species"] = extras["primary_label"]
    extras["last_species"] = extras["primary_label"]
    columns = [
        "record_id",
        "source",
        "primary_label",
        "first_species",
        "last_species",
        "secondary_labels",
        "filename",
    ]
    return pd.concat([bc24[columns], extras[columns]], ignore_index=True)


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int) -> pd.Series:
    """SPEC 4.2: per species, KFold(n_folds, shuffle, random_state=seed) over its rows in order."""
    counts = table["primary_label"].value_counts()
    small = counts[counts < n_folds]
    if len(small):
        listed = ", ".join(f"{sp} ({n})" for sp, n in small.sort_index().items())
        raise SelectionError(
            f"every species needs at least n_folds={n_folds} records to be split into folds; "
            f"too few: {listed}. Lower sample.n_folds or add records for these species."
        )
    folds = pd.Series(-1, index=table.index, dtype=int)
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for _, rows in table.groupby("primary_label", sort=True):
        for fold, (_, valid) in enumerate(splitter.split(rows)):
            folds.loc[rows.index[valid]] = fold
    return folds


def species_report(candidates: pd.DataFrame, table: pd.DataFrame, cap: int) -> pd.DataFrame:
    """Per species: bc24 count, extras kept per source, extras dropped by the cap, training rows."""
    kept = candidates[candidates["status"] == KEPT]
    by_source = kept.pivot_table(
        index="primary_label", columns="source", values="record_id", aggfunc="count", fill_value=0
    )
    bc24 = candidates[candidates["status"] == BC24].groupby("primary_label")["record_id"].count()
    report = pd.DataFrame({"bc24_records": bc24})
    for source in EXTRA_SOURCES:
        report[f"kept_{source}"] = by_source[source] if source in by_source else 0
    over = candidates[candidates["status"] == OVER_CAP].groupby("primary_label")["record_id"]
    report["dropped_over_cap"] = over.count()
    report["training_rows"] = table.groupby("primary_label")["record_id"].count()
    report = report.fillna(0).astype(int)
    report["cap_binds"] = (report["dropped_over_cap"] > 0) | (report["bc24_records"] >= cap)
    report["extras_fill"] = report[[f"kept_{s}" for s in EXTRA_SOURCES]].sum(axis=1) > 0
    return report.rename_axis("species").reset_index()
