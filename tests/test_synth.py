"""The sample corpus generator (DESIGN 5): layouts, determinism, labels, atomic replacement."""

from __future__ import annotations

import ast
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.config import MakeSampleConfig
from birdclef.sources import read_species_folder_layout
from birdclef.synth import (
    BC20_COLUMNS,
    BC21_COLUMNS,
    BC22_COLUMNS,
    BC24_COLUMNS,
    BC25_COLUMNS,
    TAXONOMY_2025_COLUMNS,
    TAXONOMY_COLUMNS,
    make_sample_corpus,
)

SMALL = dict(
    out_dir="unused",
    seed=3,
    n_species=5,
    bc24_records_max=9,
    bc24_records_min=5,
    extra_records_per_species=2,
    n_soundscapes=2,
    n_eval_soundscapes=2,
    soundscape_seconds=32.0,  # not a multiple of 5: the last label window is partial
    record_seconds_min=3.0,
    record_seconds_max=8.0,
)


def small_config(**changes: object) -> MakeSampleConfig:
    return MakeSampleConfig(**{**SMALL, **changes})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "sample"
    make_sample_corpus(small_config(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def corpus_2025(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth2025") / "sample"
    make_sample_corpus(small_config(layout="2025", soundscape_seconds=60.0), out, progress=False)
    return out


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def species_codes(corpus: Path) -> list[str]:
    return sorted(read(corpus / "birdclef-2024" / "train_metadata.csv")["primary_label"].unique())


def record_ids(csv: Path) -> set[str]:
    return {Path(name).stem for name in read(csv)["filename"]}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_columns(corpus: Path) -> None:
    bc24 = corpus / "birdclef-2024"
    for path in [
        bc24 / "train_metadata.csv",
        bc24 / "sample_submission.csv",
        bc24 / "eBird_Taxonomy_v2021.csv",
        corpus / "Birdclef23" / "train_metadata.csv",
        corpus / "Birdclef22" / "train_metadata.csv",
        corpus / "Birdclef21" / "train_metadata.csv",
        corpus / "Birdclef20" / "train.csv",
        corpus / "labelled_soundscapes" / "labels.csv",
        corpus / "near_duplicates.csv",
    ]:
        assert path.is_file(), path
    assert list(read(bc24 / "train_metadata.csv").columns) == BC24_COLUMNS
    assert list(read(corpus / "Birdclef23" / "train_metadata.csv").columns) == BC24_COLUMNS
    assert list(read(corpus / "Birdclef22" / "train_metadata.csv").columns) == BC22_COLUMNS
    assert list(read(corpus / "Birdclef21" / "train_metadata.csv").columns) == BC21_COLUMNS
    assert list(read(corpus / "Birdclef20" / "train.csv").columns) == BC20_COLUMNS
    assert list(read(bc24 / "eBird_Taxonomy_v2021.csv").columns) == TAXONOMY_COLUMNS
    assert list(read(corpus / "near_duplicates.csv").columns) == ["r0", "r1"]

    codes = species_codes(corpus)
    assert len(codes) == SMALL["n_species"]
    assert all(c.isalnum() and c.islower() and 6 <= len(c) <= 7 for c in codes)
    submission = read(bc24 / "sample_submission.csv")
    assert list(submission.columns) == ["row_id", *codes]
    assert len(submission) == 3
    assert list(read(corpus / "labelled_soundscapes" / "labels.csv").columns) == ["row_id", *codes]

    taxonomy = read(bc24 / "eBird_Taxonomy_v2021.csv")
    assert set(codes) < set(taxonomy["SPECIES_CODE"])
    assert taxonomy["SPECIES_CODE"].is_unique and taxonomy["PRIMARY_COM_NAME"].is_unique
    assert not taxonomy["PRIMARY_COM_NAME"].str.contains("_").any()

    assert len(list((bc24 / "unlabeled_soundscapes").glob("*.ogg"))) == SMALL["n_soundscapes"]
    assert len(list((corpus / "labelled_soundscapes").glob("*.ogg"))) == SMALL["n_eval_soundscapes"]
    assert any((corpus / "birdclef2024-additional-mp3" / "additional_audio").glob("*/XC*.mp3"))
    assert not list(corpus.parent.glob("*.tmp-*"))


def test_every_metadata_file_exists(corpus: Path) -> None:
    bc24 = read(corpus / "birdclef-2024" / "train_metadata.csv")
    assert list(bc24["filename"]) == sorted(bc24["filename"])
    for source in ("birdclef-2024", "Birdclef23", "Birdclef22"):
        df = read(corpus / source / "train_metadata.csv")
        assert (df["filename"].str.split("/").str[0] == df["primary_label"]).all()
        for name in df["filename"]:
            assert (corpus / source / "train_audio" / name).is_file(), name
    bc21 = read(corpus / "Birdclef21" / "train_metadata.csv")
    assert not bc21["filename"].str.contains("/").any()
    for label, name in zip(bc21["primary_label"], bc21["filename"], strict=True):
        assert (corpus / "Birdclef21" / "train_short_audio" / label / name).is_file()
    bc20 = read(corpus / "Birdclef20" / "train.csv")
    for code, name in zip(bc20["ebird_code"], bc20["filename"], strict=True):
        assert name.endswith(".mp3")
        assert (corpus / "Birdclef20" / "train_audio" / code / name).is_file()
    # 2020 names species "<Scientific>_<Common>", and `species` is the common name
    assert (bc20["primary_label"].str.split("_").str[1] == bc20["species"]).all()
    for text in bc20["secondary_labels"]:
        assert all("_" in name for name in ast.literal_eval(text))


def test_audio_decodes(corpus: Path) -> None:
    bc24 = corpus / "birdclef-2024"
    infos = [sf.info(p) for p in sorted((bc24 / "train_audio").glob("*/*.ogg"))]
    assert all(i.format == "OGG" for i in infos)
    assert any(i.channels == 2 for i in infos)
    assert any(i.samplerate == 44100 for i in infos)
    assert any(i.duration < 5 for i in infos)
    assert any(i.frames == 320_000 and i.samplerate == 32000 for i in infos)  # exactly 10 s
    common = [i for i in infos if i.channels == 1 and i.samplerate == 32000]
    assert len(common) >= len(infos) - 2
    for i in common:
        assert SMALL["record_seconds_min"] - 1e-3 <= i.duration <= SMALL[
            "record_seconds_max"
        ] + 1e-3 or (i.duration in (2.5, 10.0))
    for folder in (bc24 / "unlabeled_soundscapes", corpus / "labelled_soundscapes"):
        for path in folder.glob("*.ogg"):
            audio, sr = sf.read(path, dtype="float32")
            assert sr == 32000 and audio.ndim == 1
            assert len(audio) == int(SMALL["soundscape_seconds"] * 32000)
            assert 0.05 < np.abs(audio).max() <= 1.0
    for path in list((corpus / "Birdclef20" / "train_audio").glob("*/*.mp3"))[:3]:
        audio, sr = sf.read(path, dtype="float32")
        assert sr in (32000, 44100) and len(audio) > sr
    for path in list((corpus / "birdclef2024-additional-mp3" / "additional_audio").glob("*/*.mp3"))[
        :3
    ]:
        audio, sr = sf.read(path, dtype="float32")
        assert sr == 32000 and np.isfinite(audio).all()


def test_labels_and_special_records(corpus: Path) -> None:
    bc24 = read(corpus / "birdclef-2024" / "train_metadata.csv")
    codes = species_codes(corpus)
    secondaries = [ast.literal_eval(s) for s in bc24["secondary_labels"]]
    assert any("zzfake1" in s for s in secondaries)
    assert any(s and "zzfake1" not in s for s in secondaries)
    assert all(isinstance(s, list) for s in secondaries)
    assert all(ast.literal_eval(t) is not None for t in bc24["type"])

    stems = bc24["filename"].str.split("/").str[1]
    two_folder = stems[stems.duplicated(keep=False)]
    assert two_folder.nunique() == 2 and len(two_folder) == 4
    for stem in two_folder.unique():
        folders = bc24.loc[stems == stem, "primary_label"].tolist()
        assert len(set(folders)) == 2
        files = [corpus / "birdclef-2024" / "train_audio" / f / stem for f in folders]
        assert files[0].read_bytes() == files[1].read_bytes()

    # Record ids: unique across the corpus except the intended duplicates.
    ids = {
        "bc24": set(stems.str.removesuffix(".ogg")),
        "bc23": record_ids(corpus / "Birdclef23" / "train_metadata.csv"),
        "bc22": record_ids(corpus / "Birdclef22" / "train_metadata.csv"),
        "bc21": record_ids(corpus / "Birdclef21" / "train_metadata.csv"),
        "bc20": record_ids(corpus / "Birdclef20" / "train.csv"),
        "bc00": {p.stem for p in (corpus / "birdclef2024-additional-mp3").rglob("*.mp3")},
    }
    assert ids["bc23"] & ids["bc24"], "some 2023 records must repeat 2024 ones"
    assert ids["bc22"] & ids["bc23"], "some records must repeat between previous years"
    assert ids["bc00"] & ids["bc24"], "some xeno-canto extra records must repeat 2024 ones"
    assert all(i.startswith("XC") and i[2:].isdigit() for s in ids.values() for i in s)

    # Every previous year has a species outside the competition, which readers must filter out.
    for source in ("Birdclef23", "Birdclef22", "Birdclef21"):
        labels = set(read(corpus / source / "train_metadata.csv")["primary_label"])
        assert set(codes) <= labels and labels - set(codes)
    assert set(read(corpus / "Birdclef20" / "train.csv")["ebird_code"]) - set(codes)

    pairs = read(corpus / "near_duplicates.csv")
    assert len(pairs) == 4
    same = pairs["r0"].str.split("/").str[0] == pairs["r1"].str.split("/").str[0]
    assert same.sum() == 3
    audio_dir = corpus / "birdclef-2024" / "train_audio"
    for r0, r1 in zip(pairs["r0"], pairs["r1"], strict=True):
        a, _ = sf.read(audio_dir / r0, dtype="float32", always_2d=True)
        b, _ = sf.read(audio_dir / r1, dtype="float32", always_2d=True)
        assert len(b) <= len(a) and len(b) > 0.5 * len(a)


def test_window_labels(corpus: Path) -> None:
    labels = read(corpus / "labelled_soundscapes" / "labels.csv")
    stems = sorted(p.stem for p in (corpus / "labelled_soundscapes").glob("*.ogg"))
    n_windows = math.ceil(SMALL["soundscape_seconds"] / 5)
    assert len(labels) == n_windows * len(stems)
    for stem in stems:
        rows = labels[labels["row_id"].str.rsplit("_", n=1).str[0] == stem]
        ends = rows["row_id"].str.rsplit("_", n=1).str[1].astype(int).tolist()
        assert ends == [5 * (i + 1) for i in range(n_windows)]
    values = labels.drop(columns="row_id").astype(int).to_numpy()
    assert set(np.unique(values)) <= {0, 1}
    assert values.sum() >= 1


@pytest.mark.slow
def test_same_seed_same_corpus_other_seed_differs(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_sample_corpus(small_config(), again, progress=False)
    first, second = tree_digest(corpus), tree_digest(again)
    assert first.keys() == second.keys()
    for name in first:
        if name.endswith(".csv"):
            assert first[name] == second[name], name
    audio = sorted(n for n in first if n.endswith((".ogg", ".mp3")))
    for name in audio[:: max(1, len(audio) // 5)]:
        a, _ = sf.read(corpus / name, dtype="float32")
        b, _ = sf.read(again / name, dtype="float32")
        np.testing.assert_array_equal(a, b)
    # The Ogg stream serials are fixed too, so even the files are byte-identical.
    assert first == second

    other = tmp_path / "other"
    make_sample_corpus(small_config(seed=4), other, progress=False)
    a = read(corpus / "birdclef-2024" / "train_metadata.csv")
    b = read(other / "birdclef-2024" / "train_metadata.csv")
    assert not a.equals(b)


@pytest.mark.slow
def test_replaces_existing_output_atomically(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    cfg = small_config(
        n_species=4,
        extra_records_per_species=0,
        n_soundscapes=1,
        n_eval_soundscapes=0,
        soundscape_seconds=6.0,
    )
    summary = make_sample_corpus(cfg, out, progress=False)
    assert not (out / "stale.txt").exists()
    assert (out / "birdclef-2024" / "train_metadata.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample"]  # no .tmp- or .old- left
    assert summary["bc24_records"] == len(read(out / "birdclef-2024" / "train_metadata.csv"))
    assert summary["labelled_soundscapes"] == 0
    assert len(read(out / "labelled_soundscapes" / "labels.csv")) == 0
    assert len(read(out / "Birdclef20" / "train.csv")) == 0


def test_bad_config_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    with pytest.raises(ValueError, match="record_seconds_min"):
        make_sample_corpus(
            small_config(record_seconds_min=9.0, record_seconds_max=4.0), out, progress=False
        )
    assert list(tmp_path.iterdir()) == []


def layout_digest(root: Path) -> str:
    """sha256 of every file's path and every table's bytes (audio bytes depend on the encoder)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            if path.suffix == ".csv":
                digest.update(path.read_bytes())
    return digest.hexdigest()


def test_2024_corpus_is_unchanged(corpus: Path) -> None:
    # The digest of this config's corpus (files and tables): the default 2024 layout must not
    # change by accident. Changed on purpose once since the 2025 layout arrived: labels.csv, when
    # songs shorter than 1 s began to count where half of them lies in a window.
    assert layout_digest(corpus) == "22031b29d6e03de71e9b8e0f6fa93d57360d638394b05a9846aa9818dc1b8269"


def test_2025_layout_columns_and_labels(corpus_2025: Path) -> None:
    bc25 = corpus_2025 / "birdclef-2025"
    assert not (corpus_2025 / "birdclef-2024").exists()
    for year in ("Birdclef23", "Birdclef22", "Birdclef21", "Birdclef20", "labelled_soundscapes"):
        assert (corpus_2025 / year).is_dir(), year
    train = read(bc25 / "train.csv")
    taxonomy = read(bc25 / "taxonomy.csv")
    assert list(train.columns) == BC25_COLUMNS
    assert list(taxonomy.columns) == TAXONOMY_2025_COLUMNS

    numeric = taxonomy[taxonomy["primary_label"].str.isdigit()]
    birds = taxonomy[~taxonomy["primary_label"].str.isdigit()]
    assert len(numeric) == 2 and set(numeric["class_name"]) <= {"Insecta", "Amphibia", "Mammalia"}
    assert (numeric["inat_taxon_id"] == numeric["primary_label"]).all()
    assert (birds["class_name"] == "Aves").all() and birds["primary_label"].str.isalnum().all()
    classes = sorted(taxonomy["primary_label"])
    assert set(train["primary_label"]) == set(classes)
    assert list(read(bc25 / "sample_submission.csv").columns) == ["row_id", *classes]
    assert list(read(corpus_2025 / "labelled_soundscapes" / "labels.csv").columns) == [
        "row_id", *classes]
    assert "['']" in set(train["secondary_labels"])  # 2025's "no secondary species"


def test_2025_layout_records_and_soundscapes(corpus_2025: Path) -> None:
    bc25 = corpus_2025 / "birdclef-2025"
    train = read(bc25 / "train.csv")
    assert set(train["collection"]) == {"XC", "iNat", "CSA"}
    stems = train["filename"].str.split("/").str[1].str.removesuffix(".ogg")
    assert all(stem.startswith(c) and stem[len(c):].isdigit()
               for stem, c in zip(stems, train["collection"], strict=True))
    assert (train["filename"].str.split("/").str[0] == train["primary_label"]).all()
    records = read_species_folder_layout(bc25, "bc25")  # every file named there exists
    assert records["primary_label"].map(type).eq(str).all()
    assert records["secondary_labels"].map(lambda labels: "" not in labels).all()
    for pair in read(corpus_2025 / "near_duplicates.csv").itertuples(index=False):
        assert (bc25 / "train_audio" / pair.r0).is_file() and (bc25 / "train_audio" / pair.r1).is_file()

    scapes = sorted((bc25 / "train_soundscapes").glob("*.ogg"))
    assert len(scapes) == SMALL["n_soundscapes"]
    assert all(re.fullmatch(r"H\d\d_\d{8}_\d{6}", p.stem) for p in scapes)
    assert all(sf.info(p).frames == 60 * 32000 for p in scapes)


def test_short_songs_count_where_half_of_them_is() -> None:
    from birdclef.synth.layouts import _window_labels

    events = [("a", 2.1, 2.4), ("b", 4.9, 5.2), ("c", 7.0, 9.0), ("c", 14.8, 15.1)]
    labels = _window_labels(events, 15.0, ["a", "b", "c"], 1)
    assert labels["row_id"].tolist() == ["1_5", "1_10", "1_15"]
    # a: a 0.3-s song inside window 0; b: 0.1 s in window 0, 0.2 s (over half) in window 1;
    # c: a long song needs 0.5 s (window 1), a 0.3-s song with 0.2 s before 15 s counts (window 2)
    assert labels[["a", "b", "c"]].to_numpy().tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
