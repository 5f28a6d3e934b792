"""The cap merge (SPEC 3.2), two-folder and near-duplicate handling (SPEC 4.1), folds (SPEC 4.2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdclef.selection import (
    BC24,
    DUPLICATE,
    KEPT,
    NOT_2024_SPECIES,
    OVER_CAP,
    SAME_AS_BC24,
    XC_SPECIES_COMMON,
    SelectionError,
    assign_folds,
    drop_reasons,
    labelled_table,
    merge_and_cap,
    records_to_decode,
    species_report,
)
from birdclef.sources import SCHEMA, extra_sources, source_priority


def table(source: str, rows: list[tuple[str, str]], secondary=None) -> pd.DataFrame:
    """rows of (record_id, primary_label) in the normalised schema."""
    df = pd.DataFrame(
        {
            "record_id": [r for r, _ in rows],
            "source": source,
            "primary_label": [s for _, s in rows],
            "secondary_labels": secondary or [[] for _ in rows],
            "filename": [f"{s}/{r}.ogg" for r, s in rows],
            "audio_path": [f"/x/{s}/{r}.ogg" for r, s in rows],
            "rating": np.nan,
            "latitude": np.nan,
            "longitude": np.nan,
        },
        columns=SCHEMA,
    )
    if source == "bc20":
        df["common_name"] = [f"Common {s}" for _, s in rows]
    return df


def status_of(out: pd.DataFrame, record: str, source: str) -> str:
    row = out[(out["record_id"] == record) & (out["source"] == source)]
    assert len(row) == 1, (record, source, row)
    return row["status"].iloc[0]


def test_priority_by_competition_year_then_xeno_canto_and_cap() -> None:
    tables = {
        "bc24": table("bc24", [("A1", "aaa"), ("A2", "aaa")]),
        "bc22": table("bc22", [("A5", "aaa")]),
        "bc23": table("bc23", [("A3", "aaa"), ("A4", "aaa")]),
        "bc00": table("bc00", [("A6", "aaa"), ("A7", "aaa")]),
    }
    out = merge_and_cap(tables, cap=4, xc_species_threshold=500)
    kept = out[out["status"] == KEPT].sort_values("rank")
    assert kept["record_id"].tolist() == ["A3", "A4"]
    assert kept["rank"].tolist() == [3, 4]
    assert status_of(out, "A5", "bc22") == OVER_CAP
    assert status_of(out, "A6", "bc00") == OVER_CAP
    # with room, the order of ranks is bc23 > bc22 > bc00
    out = merge_and_cap(tables, cap=10, xc_species_threshold=500)
    ranked = out[out["status"] == KEPT].sort_values("rank")
    assert ranked["source"].tolist() == ["bc23", "bc23", "bc22", "bc00", "bc00"]


def test_ties_keep_concatenation_order() -> None:
    tables = {
        "bc24": table("bc24", [("B0", "bbb")]),
        "bc23": table("bc23", [("B9", "bbb"), ("B1", "bbb"), ("B5", "bbb")]),
    }
    out = merge_and_cap(tables, cap=3, xc_species_threshold=500)
    kept = out[out["status"] == KEPT].sort_values("rank")
    assert kept["record_id"].tolist() == ["B9", "B1"]  # file order, not sorted names
    assert status_of(out, "B5", "bc23") == OVER_CAP


@pytest.mark.parametrize(("bc24_count", "expected_extras"), [(499, 1), (500, 0), (498, 2)])
def test_cap_500_boundary(bc24_count: int, expected_extras: int) -> None:
    tables = {
        "bc24": table("bc24", [(f"X{i}", "ccc") for i in range(bc24_count)]),
        "bc23": table("bc23", [(f"Y{i}", "ccc") for i in range(5)]),
    }
    out = merge_and_cap(tables, cap=500, xc_species_threshold=500)
    assert (out["status"] == KEPT).sum() == expected_extras
    assert (out["status"] == OVER_CAP).sum() == 5 - expected_extras


def test_xeno_canto_only_for_species_below_threshold() -> None:
    tables = {
        "bc24": table("bc24", [("R1", "rare"), *[(f"C{i}", "common") for i in range(3)]]),
        "bc00": table("bc00", [("X1", "rare"), ("X2", "common"), ("X3", "absent")]),
    }
    out = merge_and_cap(tables, cap=100, xc_species_threshold=3)  # rule is count < threshold
    assert status_of(out, "X1", "bc00") == KEPT
    assert status_of(out, "X2", "bc00") == XC_SPECIES_COMMON
    assert status_of(out, "X3", "bc00") == NOT_2024_SPECIES


def test_species_absent_from_2024_and_records_already_in_2024_are_dropped() -> None:
    tables = {
        "bc24": table("bc24", [("S1", "sss")]),
        "bc21": table("bc21", [("S1", "sss"), ("S2", "zzz"), ("S3", "sss")]),
    }
    out = merge_and_cap(tables, cap=10, xc_species_threshold=10)
    assert status_of(out, "S1", "bc21") == SAME_AS_BC24
    assert status_of(out, "S2", "bc21") == NOT_2024_SPECIES
    assert status_of(out, "S3", "bc21") == KEPT


def test_duplicates_across_previous_years_keep_the_most_recent() -> None:
    tables = {
        "bc24": table("bc24", [("D0", "ddd")]),
        "bc22": table("bc22", [("D1", "ddd")]),
        "bc23": table("bc23", [("D1", "ddd")]),
    }
    out = merge_and_cap(tables, cap=10, xc_species_threshold=10)
    assert status_of(out, "D1", "bc23") == KEPT
    assert status_of(out, "D1", "bc22") == DUPLICATE


def test_bc20_secondary_names_mapped_after_species_filter() -> None:
    bc20 = table(
        "bc20",
        [("E1", "eee"), ("E2", "fff"), ("E3", "zzz")],
        secondary=[["Sci f_Common fff", "Sci z_Common zzz", "bad"], [], ["Sci e_Common eee"]],
    )
    tables = {"bc24": table("bc24", [("E0", "eee"), ("F0", "fff")]), "bc20": bc20}
    out = merge_and_cap(tables, cap=10, xc_species_threshold=10)
    row = out[out["record_id"] == "E1"].iloc[0]
    # zzz is not a 2024 species, so its bc20 row is filtered first and its name cannot be mapped
    assert row["secondary_labels"] == ["fff"]


def test_two_folder_record_counted_once_and_both_species_are_targets() -> None:
    bc24 = table("bc24", [("T1", "aaa"), ("T2", "aaa"), ("T1", "bbb"), ("T3", "bbb")])
    tables = {"bc24": bc24, "bc23": table("bc23", [("U1", "aaa"), ("U2", "bbb")])}
    out = merge_and_cap(tables, cap=3, xc_species_threshold=10)
    # T1 is ranked under the alphabetically later species (bbb); aaa has 1 ranked bc24 row + T2
    assert status_of(out, "U1", "bc23") == KEPT  # aaa: T2, (T1 unranked) -> room for U1 at rank 2
    assert status_of(out, "U2", "bc23") == KEPT
    assert (out["status"] == BC24).sum() == 4
    labelled = labelled_table(out, pd.DataFrame({"r0": [], "r1": []}))
    t1 = labelled[labelled["record_id"] == "T1"]
    assert len(t1) == 1
    assert t1.iloc[0][["primary_label", "first_species", "last_species"]].tolist() == [
        "aaa",
        "aaa",
        "bbb",
    ]


def test_near_duplicates_only_same_folder_pairs_removed() -> None:
    bc24 = table("bc24", [("N1", "aaa"), ("N2", "aaa"), ("N3", "bbb"), ("N4", "aaa")])
    out = merge_and_cap({"bc24": bc24}, cap=10, xc_species_threshold=10)
    pairs = pd.DataFrame({"r0": ["aaa/N1.ogg", "aaa/N4.ogg"], "r1": ["aaa/N2.ogg", "bbb/N3.ogg"]})
    labelled = labelled_table(out, pairs)
    assert sorted(labelled["record_id"]) == ["N1", "N3", "N4"]


def test_labelled_table_order_bc24_sorted_then_extras() -> None:
    tables = {
        "bc24": table("bc24", [("Z9", "aaa"), ("A1", "bbb")]),
        "bc23": table("bc23", [("M1", "aaa"), ("M2", "bbb")]),
    }
    out = merge_and_cap(tables, cap=10, xc_species_threshold=10)
    labelled = labelled_table(out, pd.DataFrame({"r0": [], "r1": []}))
    # bc24 by record string, then extras in the merge's (species, source) descending order
    assert labelled["record_id"].tolist() == ["A1", "Z9", "M2", "M1"]


def test_folds_are_per_species_deterministic_and_balanced() -> None:
    rows = [(f"P{i}", "ppp") for i in range(12)] + [(f"Q{i}", "qqq") for i in range(5)]
    labelled = table("bc24", rows)
    folds = assign_folds(labelled, n_folds=5, seed=0)
    assert folds.equals(assign_folds(labelled, n_folds=5, seed=0))
    q = folds[labelled["primary_label"] == "qqq"]
    assert sorted(q) == [0, 1, 2, 3, 4]
    p = folds[labelled["primary_label"] == "ppp"].value_counts()
    assert sorted(p.tolist()) == [2, 2, 2, 3, 3]
    assert not folds.equals(assign_folds(labelled, n_folds=5, seed=1))


def test_species_with_fewer_records_than_folds_gives_clear_error() -> None:
    labelled = table("bc24", [("P1", "ppp"), ("P2", "ppp"), *[(f"Q{i}", "qqq") for i in range(5)]])
    with pytest.raises(SelectionError, match=r"ppp \(2\)"):
        assign_folds(labelled, n_folds=5, seed=0)


def test_species_report_hand_count() -> None:
    tables = {
        "bc24": table("bc24", [*[(f"A{i}", "aaa") for i in range(4)], ("B1", "bbb")]),
        "bc23": table("bc23", [("C1", "aaa"), ("C2", "bbb"), ("C3", "bbb")]),
        "bc00": table("bc00", [("C4", "bbb")]),
    }
    out = merge_and_cap(tables, cap=4, xc_species_threshold=4)
    labelled = labelled_table(out, pd.DataFrame({"r0": [], "r1": []}))
    report = species_report(out, labelled, cap=4).set_index("species")
    assert report.loc["aaa", ["bc24_records", "kept_bc23", "dropped_over_cap"]].tolist() == [4, 0, 1]
    assert report.loc["bbb", ["bc24_records", "kept_bc23", "kept_bc00", "training_rows"]].tolist() == [
        1,
        2,
        1,
        4,
    ]
    assert bool(report.loc["aaa", "cap_binds"]) and not bool(report.loc["aaa", "extras_fill"])
    assert bool(report.loc["bbb", "extras_fill"]) and not bool(report.loc["bbb", "cap_binds"])


def test_2025_as_main_source_ranks_first_then_years_by_recency() -> None:
    tables = {
        "bc25": table("bc25", [("iNat1", "1139490"), ("XC1", "grekis")]),
        "bc24": table("bc24", [("XC2", "grekis"), ("XC1", "grekis"), ("XC9", "oldbird")]),
        "bc23": table("bc23", [("XC3", "grekis"), ("XC4", "1139490")]),
        "bc00": table("bc00", [("XC5", "grekis"), ("XC6", "1139490")]),
    }
    reasons = drop_reasons("bc25")
    out = merge_and_cap(tables, cap=3, xc_species_threshold=2, main="bc25")
    assert (out["status"] == "bc25").sum() == 2  # the main records keep their source as status
    kept = out[out["status"] == KEPT].sort_values(["primary_label", "rank"])
    assert kept[["record_id", "source", "rank"]].values.tolist() == [
        ["XC4", "bc23", 2],  # 1139490: a numeric iNaturalist code, compared as a string
        ["XC6", "bc00", 3],
        ["XC2", "bc24", 2],  # grekis: bc24 before bc23, the xeno-canto extra set last
        ["XC3", "bc23", 3],
    ]
    assert status_of(out, "XC5", "bc00") == OVER_CAP
    assert status_of(out, "XC1", "bc24") == reasons.same_record_as_main == "dropped_same_record_as_bc25"
    assert status_of(out, "XC9", "bc24") == reasons.not_main_species == "dropped_not_2025_species"
    decoded = sorted(records_to_decode(out)["record_id"])
    assert decoded == ["XC1", "XC2", "XC3", "XC4", "XC6", "iNat1"]


def test_xeno_canto_threshold_counts_the_main_source() -> None:
    tables = {
        "bc25": table("bc25", [("A1", "aaa"), ("A2", "aaa")]),
        "bc24": table("bc24", [(f"B{i}", "bbb") for i in range(5)] + [("B9", "aaa")]),
        "bc00": table("bc00", [("X1", "aaa"), ("X2", "bbb")]),
    }
    out = merge_and_cap(tables, cap=10, xc_species_threshold=2, main="bc25")
    assert status_of(out, "X1", "bc00") == "dropped_xc_species_has_enough_bc25"  # 2 bc25 records
    assert status_of(out, "X2", "bc00") == "dropped_not_2025_species"  # bbb is a 2024 species only


def test_main_2024_with_2025_as_extra_ranks_2025_after_2024() -> None:
    assert list(source_priority("bc24")) == ["bc24", "bc25", "bc23", "bc22", "bc21", "bc20", "bc00"]
    assert extra_sources("bc24") == ["bc20", "bc21", "bc22", "bc23", "bc25", "bc00"]
    assert extra_sources("bc25") == ["bc20", "bc21", "bc22", "bc23", "bc24", "bc00"]
    tables = {
        "bc24": table("bc24", [("A1", "aaa")]),
        "bc23": table("bc23", [("A3", "aaa")]),
        "bc25": table("bc25", [("A2", "aaa")]),
    }
    out = merge_and_cap(tables, cap=2, xc_species_threshold=10)
    assert status_of(out, "A2", "bc25") == KEPT
    assert status_of(out, "A3", "bc23") == OVER_CAP


def test_2025_labelled_table_and_report_name_the_main_source() -> None:
    bc25 = table("bc25", [("T1", "aaa"), ("T1", "65448"), ("Z2", "aaa")])
    tables = {"bc25": bc25, "bc24": table("bc24", [("U1", "aaa"), ("U2", "65448")])}
    out = merge_and_cap(tables, cap=3, xc_species_threshold=10, main="bc25")
    labelled = labelled_table(out, pd.DataFrame({"r0": [], "r1": []}))
    # main records first (two-folder T1 once, with both species), then the extras
    assert labelled[["record_id", "source"]].values.tolist() == [
        ["T1", "bc25"], ["Z2", "bc25"], ["U1", "bc24"], ["U2", "bc24"]]
    assert labelled.iloc[0][["first_species", "last_species"]].tolist() == ["65448", "aaa"]
    report = species_report(out, labelled, cap=3, main="bc25").set_index("species")
    assert list(report.columns[:2]) == ["bc25_records", "kept_bc24"]
    # T1 trains under its first species, 65448; it counts toward the cap of the later one, aaa
    assert report.loc["aaa", ["bc25_records", "kept_bc24", "training_rows"]].tolist() == [2, 1, 2]


def test_missing_main_source_is_a_clear_error() -> None:
    with pytest.raises(SelectionError, match="main source bc25 was not read: set sources.bc25"):
        merge_and_cap({"bc24": table("bc24", [("A1", "aaa")])}, 10, 10, main="bc25")
