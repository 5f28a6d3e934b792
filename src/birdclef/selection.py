"""Which records are trained on: the cap-500 merge (SPEC 3.2), duplicates (SPEC 4.1), folds (SPEC 4.2).

All functions are pure pandas over the normalised schema of `sources`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from birdclef.sources import extra_sources, source_priority

# Status of every candidate record after the merge, for the report. A main-competition record's
# status is its source tag (bc24 or bc25); the reasons for dropping an extra name the main source.
KEPT = "kept"
BC24 = "bc24"
DUPLICATE = "dropped_duplicate_record"
OVER_CAP = "dropped_over_cap"


class DropReasons(NamedTuple):
    not_main_species: str
    same_record_as_main: str
    xc_species_has_enough_main: str


def drop_reasons(main: str) -> DropReasons:
    """The statuses of extras dropped by the main source's filters, e.g. dropped_not_2024_species."""
    return DropReasons(f"dropped_not_20{main[2:]}_species", f"dropped_same_record_as_{main}",
                       f"dropped_xc_species_has_enough_{main}")


NOT_2024_SPECIES, SAME_AS_BC24, XC_SPECIES_COMMON = drop_reasons(BC24)


class SelectionError(ValueError):
    """The data cannot be split or selected as configured; the message says which species."""


def is_main(candidates: pd.DataFrame) -> pd.Series:
    """Rows of the main competition: the only rows whose status is their source."""
    return candidates["status"] == candidates["source"]


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


def filter_extra(
    df: pd.DataFrame, source: str, main: pd.DataFrame, xc_species_threshold: int, reasons: DropReasons
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """One extra source's candidates that pass the main source's filters, and the dropped ones
    (with their status)."""
    dropped: list[pd.DataFrame] = []

    def drop(df: pd.DataFrame, mask: pd.Series, status: str) -> pd.DataFrame:
        if mask.any():
            dropped.append(df[mask].assign(status=status))
        return df[~mask]

    main_names = set(main["record_id"])
    main_species = set(main["primary_label"])
    main_counts = main["primary_label"].value_counts()
    df = df.copy()
    if source == "bc00":
        # Notebook 135: only species with fewer than the threshold main records get xc extras;
        # species missing from the main source have a NaN count and are excluded too.
        counts = df["primary_label"].map(main_counts)
        df = drop(df, counts.isna(), reasons.not_main_species)
        counts = df["primary_label"].map(main_counts)
        df = drop(df, counts >= xc_species_threshold, reasons.xc_species_has_enough_main)
        df = drop(df, df["record_id"].isin(main_names), reasons.same_record_as_main)
    else:
        df = drop(df, df["record_id"].isin(main_names), reasons.same_record_as_main)
        df = drop(df, ~df["primary_label"].isin(main_species), reasons.not_main_species)
        if source == "bc20":
            df["secondary_labels"] = map_bc20_secondaries(df)
    return df, dropped


def merge_and_cap(
    tables: dict[str, pd.DataFrame], cap: int, xc_species_threshold: int, main: str = BC24
) -> pd.DataFrame:
    """SPEC 3.2: every candidate record of every source, with `status` and `rank`.

    Rows with status KEPT form the original's `all_train.csv` (the extra records); the main
    source's rows are returned with their source as status. Output order is the original's sorted
    order (primary_label, source descending), with dropped candidates appended after it.
    """
    if main not in tables:
        raise SelectionError(f"the main source {main} was not read: set sources.{main}")
    reasons = drop_reasons(main)
    dropped: list[pd.DataFrame] = []
    extras: list[pd.DataFrame] = []
    for source in extra_sources(main):
        if source in tables:
            kept, gone = filter_extra(tables[source], source, tables[main], xc_species_threshold,
                                      reasons)
            extras.append(kept)
            dropped.extend(gone)

    # Concatenation order (extra years oldest first, bc00, the main source) decides ties in the
    # stable sort.
    merged = pd.concat([*extras, tables[main].assign(status=main)], ignore_index=True)
    merged["status"] = merged["status"].fillna(KEPT)
    merged["_pos"] = np.arange(len(merged))
    merged["_priority"] = merged["source"].map(source_priority(main))
    merged = merged.sort_values(
        ["primary_label", "_priority", "_pos"], ascending=[False, False, True], kind="stable"
    )
    duplicate = merged.duplicated("record_id", keep="first")
    # A main record filed under two species is counted once, under the alphabetically later
    # species (the first in descending order); its other row stays a training row, unranked.
    two_folder = duplicate & (merged["source"] == main)
    dropped.append(merged[duplicate & ~two_folder].assign(status=DUPLICATE))
    ranked = merged[~duplicate].copy()
    ranked["rank"] = ranked.groupby("primary_label", sort=False).cumcount() + 1
    over_cap = (ranked["source"] != main) & (ranked["rank"] > cap)
    ranked.loc[over_cap, "status"] = OVER_CAP
    out = pd.concat([ranked, merged[two_folder], *dropped], ignore_index=True)
    out["rank"] = out["rank"].astype("Int64")
    return out.drop(columns=["_pos", "_priority", "common_name"], errors="ignore")


def records_to_decode(candidates: pd.DataFrame) -> pd.DataFrame:
    """One row per record whose audio is needed: main records and kept extras (first occurrence)."""
    needed = candidates[is_main(candidates) | (candidates["status"] == KEPT)]
    return needed.drop_duplicates("record_id", keep="first").reset_index(drop=True)


def labelled_table(candidates: pd.DataFrame, near_duplicates: pd.DataFrame) -> pd.DataFrame:
    """SPEC 4.1: one row per training record, the main competition's first (sorted by record),
    then the extras.

    Columns: record_id, source, primary_label, first_species, last_species, secondary_labels,
    filename. Two-folder main records keep the alphabetically first species' row, with both
    species as targets. Same-folder near-duplicates (the r1 of each pair) are removed.
    """
    main = candidates[is_main(candidates)].copy()
    main = main.sort_values(["primary_label", "filename"], kind="stable")
    main["record"] = main["filename"].map(lambda f: f.split("/")[-1])
    species = main.groupby("record")["primary_label"].agg(["first", "last"])
    main["first_species"] = main["record"].map(species["first"])
    main["last_species"] = main["record"].map(species["last"])

    pairs = near_duplicates.astype({"r0": str, "r1": str})
    same_folder = pairs[pairs["r0"].str.split("/").str[0] == pairs["r1"].str.split("/").str[0]]
    main = main[~main["filename"].isin(set(same_folder["r1"]))]
    main = main.groupby("record", sort=True).first().reset_index(drop=True)

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
    return pd.concat([main[columns], extras[columns]], ignore_index=True)


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


def species_report(
    candidates: pd.DataFrame, table: pd.DataFrame, cap: int, main: str = BC24
) -> pd.DataFrame:
    """Per species: main-source count (`<main>_records`), extras kept per extra source that was
    read, extras dropped by the cap, training rows."""
    kept = candidates[candidates["status"] == KEPT]
    by_source = kept.pivot_table(
        index="primary_label", columns="source", values="record_id", aggfunc="count", fill_value=0
    )
    main_rows = candidates[is_main(candidates)].groupby("primary_label")["record_id"].count()
    report = pd.DataFrame({f"{main}_records": main_rows})
    extras = [s for s in extra_sources(main) if s in set(candidates["source"])]
    for source in extras:
        report[f"kept_{source}"] = by_source[source] if source in by_source else 0
    over = candidates[candidates["status"] == OVER_CAP].groupby("primary_label")["record_id"]
    report["dropped_over_cap"] = over.count()
    report["training_rows"] = table.groupby("primary_label")["record_id"].count()
    report = report.fillna(0).astype(int)
    report["cap_binds"] = (report["dropped_over_cap"] > 0) | (report[f"{main}_records"] >= cap)
    report["extras_fill"] = report[[f"kept_{s}" for s in extras]].sum(axis=1) > 0
    return report.rename_axis("species").reset_index()
