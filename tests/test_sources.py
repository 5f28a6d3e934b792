"""Each source reader against small fixture trees in its real layout (SPEC 1.1)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pydantic import ValidationError

from birdclef.config import SourcesConfig
from birdclef.sources import (
    SCHEMA,
    SourceError,
    parse_label_list,
    read_bc00,
    read_bc20,
    read_bc21,
    read_near_duplicates,
    read_sources,
    read_species_folder_layout,
    unlabelled_soundscape_folder,
)


def test_bc24_layout(kaggle_tree: dict[str, Path]) -> None:
    df = read_species_folder_layout(kaggle_tree["bc24"], "bc24")
    assert list(df.columns) == SCHEMA
    assert df["record_id"].tolist() == ["XC1", "XC2", "XC3"]
    assert df["secondary_labels"].tolist() == [["bbb1"], [], ["zzfake1", "aaa1"]]
    assert df["audio_path"].map(lambda p: Path(p).is_file()).all()
    assert df["rating"].tolist() == [4.0, 4.0, 4.0]
    assert df["longitude"].isna().all()


@pytest.mark.parametrize(("key", "source"), [("bc23", "bc23"), ("bc22", "bc22")])
def test_previous_years_species_folder_layout(kaggle_tree, key: str, source: str) -> None:
    df = read_species_folder_layout(kaggle_tree[key], source)
    assert df.iloc[0][["record_id", "source", "primary_label"]].tolist() == [
        f"XC{key[-2:]}1",
        source,
        "aaa1",
    ]


def test_bc21_layout_has_no_species_folder_in_filename(kaggle_tree) -> None:
    df = read_bc21(kaggle_tree["bc21"])
    row = df.iloc[0]
    assert row["record_id"] == "XC211"
    assert row["audio_path"].endswith("train_short_audio/bbb1/XC211.ogg")
    assert row["secondary_labels"] == ["aaa1"]


def test_bc20_layout_uses_ebird_code_and_keeps_common_name(kaggle_tree) -> None:
    df = read_bc20(kaggle_tree["bc20"])
    row = df.iloc[0]
    assert row["primary_label"] == "aaa1"  # ebird_code, not the Scientific_Common primary_label
    assert row["record_id"] == "XC201"
    assert row["audio_path"].endswith("train_audio/aaa1/XC201.mp3")
    assert row["common_name"] == "Alpha Bird"
    assert row["secondary_labels"] == ["Betus betus_Beta Bird"]


def test_bc00_folder_tree_sorted(kaggle_tree) -> None:
    df = read_bc00(kaggle_tree["bc00"])
    assert df["filename"].tolist() == ["aaa1/XC001.mp3", "bbb1/XC002.mp3"]
    assert df["secondary_labels"].tolist() == [[], []]


def test_read_sources_skips_absent_and_rejects_unknown_path(kaggle_tree, tmp_path) -> None:
    cfg = SourcesConfig(root=str(kaggle_tree["root"]), bc24=str(kaggle_tree["bc24"]), bc21=None)
    assert list(read_sources(cfg)) == ["bc24"]
    bad = SourcesConfig(root=".", bc24=str(kaggle_tree["bc24"]), bc23=str(tmp_path / "nope"))
    with pytest.raises(SourceError, match=r"sources.bc23: folder .*nope does not exist"):
        read_sources(bad)


def test_missing_column_names_file_and_column(kaggle_tree) -> None:
    csv = kaggle_tree["bc23"] / "train_metadata.csv"
    pd.read_csv(csv).drop(columns=["secondary_labels"]).to_csv(csv, index=False)
    with pytest.raises(SourceError, match=r"Birdclef23/train_metadata.csv: missing column.*secondary"):
        read_species_folder_layout(kaggle_tree["bc23"], "bc23")


def test_missing_audio_file_is_reported(kaggle_tree) -> None:
    (kaggle_tree["bc24"] / "train_audio" / "aaa1" / "XC2.ogg").unlink()
    with pytest.raises(SourceError, match=r"1 audio file.*XC2.ogg"):
        read_species_folder_layout(kaggle_tree["bc24"], "bc24")


def test_secondary_labels_are_parsed_safely() -> None:
    assert parse_label_list("['a', 'b ']", "f") == ["a", "b"]
    assert parse_label_list("", "f") == []
    assert parse_label_list(float("nan"), "f") == []
    with pytest.raises(SourceError, match="row 7"):
        parse_label_list("__import__('os').system('true')", "file.csv row 7")
    with pytest.raises(SourceError, match="list of strings"):
        parse_label_list("[1, 2]", "f")


def test_near_duplicates_optional(tmp_path) -> None:
    assert read_near_duplicates(None).empty
    path = tmp_path / "pairs.csv"
    path.write_text("r0,r1\na/X1.ogg,a/X2.ogg\n")
    assert read_near_duplicates(str(path)).iloc[0].tolist() == ["a/X1.ogg", "a/X2.ogg"]
    path.write_text("first,second\n")
    with pytest.raises(SourceError, match="missing column"):
        read_near_duplicates(str(path))


def test_bc25_layout(kaggle_tree_2025: Path) -> None:
    df = read_species_folder_layout(kaggle_tree_2025, "bc25")
    assert list(df.columns) == SCHEMA
    assert (df["source"] == "bc25").all()
    # the stem is the record id, its collection prefix included
    assert df["record_id"].tolist() == ["CSA36385", "iNat1216197", "XC134896"]
    assert df["primary_label"].tolist() == ["1139490", "1139490", "grekis"]
    assert df["secondary_labels"].tolist() == [[], ["grekis"], ["1139490", "65448"]]
    assert df["audio_path"].map(lambda p: Path(p).is_file()).all()
    assert df["rating"].tolist() == [0.0, 0.0, 4.5]
    assert df["longitude"].isna().all()


def test_bc25_numeric_codes_stay_strings_through_parquet(kaggle_tree_2025, tmp_path) -> None:
    cfg = SourcesConfig(root=str(kaggle_tree_2025.parent), main="bc25", bc25=str(kaggle_tree_2025))
    df = read_sources(cfg)["bc25"]
    df.to_parquet(tmp_path / "t.parquet", index=False)
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["primary_label"].tolist() == ["1139490", "1139490", "grekis"]
    assert all(isinstance(v, str) for v in back["primary_label"])
    assert all(isinstance(v, str) for labels in back["secondary_labels"] for v in labels)


def test_main_source_chooses_the_soundscape_folder(kaggle_tree, kaggle_tree_2025) -> None:
    bc25 = SourcesConfig(root=".", main="bc25", bc25=str(kaggle_tree_2025))
    assert unlabelled_soundscape_folder(bc25) == kaggle_tree_2025 / "train_soundscapes"
    bc24 = SourcesConfig(root=".", bc24=str(kaggle_tree["bc24"]), bc25=str(kaggle_tree_2025))
    assert unlabelled_soundscape_folder(bc24) == kaggle_tree["bc24"] / "unlabeled_soundscapes"
    assert list(read_sources(bc24)) == ["bc25", "bc24"]  # bc25 read as an extra source


def test_main_source_folder_is_required() -> None:
    with pytest.raises(ValidationError, match=r"bc25\n.*required when sources.main is 'bc25'"):
        SourcesConfig(root=".", main="bc25", bc24="x")
    with pytest.raises(ValidationError, match=r"bc24\n.*required when sources.main is 'bc24'"):
        SourcesConfig(root=".", bc25="x")
    assert SourcesConfig(root=".", main="bc25", bc25="x").main_path == "x"


def test_bc25_errors_name_file_and_column(kaggle_tree_2025, kaggle_tree) -> None:
    csv = kaggle_tree_2025 / "train.csv"
    pd.read_csv(csv).drop(columns=["collection"]).to_csv(csv, index=False)
    with pytest.raises(SourceError, match=r"birdclef-2025/train.csv: missing column.*collection"):
        read_species_folder_layout(kaggle_tree_2025, "bc25")
    # a 2024 folder given as the 2025 one: no train.csv there
    with pytest.raises(SourceError, match=r"birdclef-2024/train.csv: metadata file not found"):
        read_species_folder_layout(kaggle_tree["bc24"], "bc25")


def test_bc25_missing_audio_is_reported(kaggle_tree_2025) -> None:
    (kaggle_tree_2025 / "train_audio" / "1139490" / "iNat1216197.ogg").unlink()
    with pytest.raises(SourceError, match=r"train.csv: 1 audio file.*1139490/iNat1216197.ogg"):
        read_species_folder_layout(kaggle_tree_2025, "bc25")
