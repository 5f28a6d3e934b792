"""The BirdCLEF+ 2025 competition as the main source, by params alone: the real `dvc repro sample`
of the tiny2025 profile (a 2025-layout sample corpus) in a fresh copy of the repo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from birdclef import paths
from birdclef.profiles import write_profile
from birdclef.windows import window_count
from tests.conftest import REPO, sh, stages_run

pytestmark = pytest.mark.e2e

SAMPLE_RATE = 32000
# What the tiny2025 corpus holds (seed 7, 5 species): 42 bc25 rows (40 records, 2 filed under two
# species), 3 same-folder near duplicates; 2 of the 5 classes are numeric iNaturalist codes.
BC25_ROWS = 42
TRAINING_ROWS = 39  # 37 bc25 (42 - 2 two-folder rows - 3 near duplicates) + 2 extras
EXTRA_ROWS = {"bc23": 1, "bc22": 1}  # the rarest species (a bird) gets earlier years' records


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's files with the tiny2025 profile, reproduced up to `sample`."""
    root = tmp_path_factory.mktemp("layout2025") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    write_profile("tiny2025", root / "params.yaml", root / "profiles")
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny2025")
    result = sh(root, "dvc", "repro", "sample")
    (root / "repro.log").write_text(result.stdout)
    return root


def test_stages_ran_on_the_2025_layout(repo: Path) -> None:
    assert stages_run((repo / "repro.log").read_text()) == ["make_sample", "preprocess", "sample"]
    sample = repo / "data/raw/sample"
    assert (sample / "birdclef-2025" / "train.csv").is_file()
    assert not (sample / "birdclef-2024").exists()


def test_preprocess_reads_2025_as_main(repo: Path) -> None:
    details = json.loads((repo / paths.details("preprocess")).read_text())
    assert details["rows_bc25"] == BC25_ROWS and "rows_bc24" not in details
    assert details["soundscapes"] == 2
    metadata = pd.read_parquet(repo / paths.METADATA)
    main = metadata[metadata["source"] == "bc25"]
    assert (main["status"] == "bc25").all()
    assert set(main["record_id"].str.extract(r"^(XC|iNat|CSA)\d+$")[0]) == {"XC", "iNat", "CSA"}
    assert "dropped_not_2025_species" in set(metadata["status"])


def test_one_minute_soundscapes_give_12_windows(repo: Path) -> None:
    index = pd.read_parquet(repo / paths.SOUNDSCAPES / "index.parquet")
    assert index["soundscape_id"].str.fullmatch(r"H\d\d_\d{8}_\d{6}").all()
    assert index["path"].str.contains("birdclef-2025/train_soundscapes/").all()
    windows = [window_count(int(n), 5 * SAMPLE_RATE, SAMPLE_RATE) for n in index["length"]]
    assert windows == [12, 12]


def test_training_table_and_classes(repo: Path) -> None:
    table = pd.read_parquet(repo / paths.TRAIN)
    assert len(table) == TRAINING_ROWS
    main_rows = TRAINING_ROWS - sum(EXTRA_ROWS.values())
    assert table["source"].iloc[:main_rows].eq("bc25").all()  # the main source first
    assert table["source"].iloc[main_rows:].value_counts().to_dict() == EXTRA_ROWS
    assert set(table["fold"]) == {0, 1}
    classes = json.loads((repo / paths.CLASSES).read_text())
    numeric = [c for c in classes if c.isdigit()]
    assert len(classes) == 5 and len(numeric) == 2
    assert all(isinstance(v, str) for v in table["primary_label"])
    assert set(table["primary_label"]) == set(classes)
    submission = pd.read_csv(repo / "data/raw/sample/birdclef-2025/sample_submission.csv", nrows=0)
    assert list(submission.columns)[1:] == classes
    details = json.loads((repo / paths.details("sample")).read_text())
    assert details["bc25_rows"] == main_rows
    assert details["training_rows"] == TRAINING_ROWS and details["classes"] == 5
    assert details["two_folder_records"] == 2 and details["near_duplicates_removed"] == 3


def test_readme_real_data_steps_for_2025(repo: Path) -> None:
    """README, BirdCLEF+ 2025, steps 1-3 as written, with this corpus's folders as the downloads:
    birdclef-2025/ and one earlier year under data/raw/kaggle/, `make profile PROFILE=full2025`
    (`birdclef profile`), that year's path set in params.yaml, then `dvc repro` up to `sample`."""
    kaggle = repo / "data/raw/kaggle"
    for name in ("birdclef-2025", "Birdclef23"):
        shutil.copytree(repo / "data/raw/sample" / name, kaggle / name)
    sh(repo, "birdclef", "profile", "full2025")
    params = (repo / "params.yaml").read_text()
    assert "  bc23: null\n" in params
    (repo / "params.yaml").write_text(params.replace("  bc23: null\n", "  bc23: data/raw/kaggle/Birdclef23\n"))
    assert stages_run(sh(repo, "dvc", "repro", "sample").stdout) == ["preprocess", "sample"]
    details = json.loads((repo / paths.details("sample")).read_text())
    # no near-duplicate list on real data: 42 bc25 rows - 2 two-folder rows; under cap 500 every
    # bc23 record of a 2025 species that bc25 does not hold is kept
    assert (details["bc25_rows"], details["extra_rows"], details["classes"]) == (40, 6, 5)
    assert json.loads((repo / paths.details("preprocess")).read_text())["soundscapes"] == 2
