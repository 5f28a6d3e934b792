"""Shared test helpers: real audio files written with soundfile, small source trees."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from xdist.scheduler import LoadScopeScheduling

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GIT_AUTHOR_NAME", "test")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
os.environ.setdefault("GIT_COMMITTER_NAME", "test")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")

REPO = Path(__file__).resolve().parents[1]


def sh(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
       timeout: int = 1200) -> subprocess.CompletedProcess:
    """A command with this environment's tools on PATH and no MLflow/DVC settings of the caller
    (plus `env`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    clean["DVC_NO_ANALYTICS"] = "1"
    result = subprocess.run(args, cwd=cwd, env={**clean, **(env or {})}, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def copy_repository(root: Path) -> Path:
    """The project's files (what a clone has) in a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "copy")
    return root


SHARED_STATE = ("params.yaml", "dvc.lock", "metrics", "reports")


@contextlib.contextmanager
def restored(repo: Path) -> Iterator[None]:
    """Put the shared repository back as it was after the block: params, the lock and the outputs
    DVC does not cache (metrics, plots) from a copy, then the cached outputs with `dvc checkout`.
    (Not `git checkout`: DVC's autostage stages what a repro changes, and earlier tests may have
    rerun stages since the last commit.)"""
    saved = repo.parent / f"{repo.name}-saved"
    shutil.rmtree(saved, ignore_errors=True)
    saved.mkdir()
    for name in SHARED_STATE:
        copy = shutil.copytree if (repo / name).is_dir() else shutil.copy2
        copy(repo / name, saved / name)
    try:
        yield
    finally:
        for name in SHARED_STATE:
            target = repo / name
            if target.is_dir():
                shutil.rmtree(target)
            copy = shutil.copytree if (saved / name).is_dir() else shutil.copy2
            copy(saved / name, target)
        shutil.rmtree(repo / "data/raw/kaggle", ignore_errors=True)
        shutil.rmtree(saved)
        sh(repo, "dvc", "checkout", "--force")


# Modules that share the reproduced tiny repository (the `tiny_repo` fixture, built once per
# process): one pytest-xdist work unit.
TINY_REPO_MODULES = ("tests/test_pipeline_e2e.py", "tests/test_profiles.py", "tests/test_scale_out.py")
# The longest work units (minutes each) start first, so that no worker is left with one at the end.
LONGEST_FIRST = ("tests/test_study_e2e.py", *TINY_REPO_MODULES)


class ModuleScheduling(LoadScopeScheduling):
    """pytest-xdist work units: a module (its module fixtures are built once), the tiny-repository
    modules together."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return "tiny_repo" if module in TINY_REPO_MODULES else module


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown under `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleScheduling:
    return ModuleScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker keeps to its share of the cores (its stage processes inherit it and
    size their threads by it): two workers on 2 cores never run 4 torch threads at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        share = cores[int(worker.removeprefix("gw")) :: count]
        if share:
            os.sched_setaffinity(0, share)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest work units first (every worker collects the same order)."""
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def tiny_project(root: Path) -> Path:
    """A copy of the project with the tiny profile, committed."""
    from birdclef.profiles import write_profile

    copy_repository(root)
    write_profile("tiny", root / "params.yaml", root / "profiles")
    sh(root, "git", "commit", "-qam", "tiny")
    return root


def exp_file(repo: Path, name: str, path: str) -> dict:
    """A JSON file of the DVC experiment `name`."""
    from birdclef.study import experiment_files

    refs = sh(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    (ref,) = [r for r in refs if r.endswith(f"/{name}")]
    return json.loads(experiment_files(ref, repo)(Path(path)))


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with the tiny profile, reproduced once for every e2e module (a test
    that changes it puts it back)."""
    root = tiny_project(tmp_path_factory.mktemp("e2e") / "repo")
    result = sh(root, "dvc", "repro")
    (root / "first_repro.log").write_text(result.stdout)
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "reproduced")  # the state tests put back
    return root


def tone(seconds: float, sr: int = 32000, freq: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    # a rising ramp makes the start and the end of a record distinguishable
    x = (0.1 + 0.8 * t / max(seconds, 1e-9)) * np.sin(2 * np.pi * freq * t) * 0.5
    x = x.astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_audio(path: Path, audio: np.ndarray, sr: int = 32000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III"), ".wav": ("WAV", "FLOAT")}
    container, subtype = fmt[path.suffix]
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    # in blocks: one huge write call can crash libsndfile's ogg/mp3 encoder
    with sf.SoundFile(path, "w", sr, channels, subtype=subtype, format=container) as handle:
        for start in range(0, len(audio), 10 * sr):
            handle.write(audio[start : start + 10 * sr])
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def kaggle_tree(tmp_path: Path) -> dict[str, Path]:
    """One small tree per source layout of SPEC 1.1 (2 s tones, 32 kHz unless stated)."""
    root = tmp_path / "raw"
    bc24 = root / "birdclef-2024"
    rows = []
    for species, record, secondary in [
        ("aaa1", "XC1", "['bbb1']"),
        ("aaa1", "XC2", "[]"),
        ("bbb1", "XC3", "['zzfake1', 'aaa1']"),
    ]:
        write_audio(bc24 / "train_audio" / species / f"{record}.ogg", tone(2.0))
        rows.append(
            {
                "primary_label": species,
                "secondary_labels": secondary,
                "type": "['call']",
                "latitude": "1.5",
                "longitude": "",
                "scientific_name": "S",
                "common_name": "C",
                "author": "a",
                "license": "l",
                "rating": "4.0",
                "url": "u",
                "filename": f"{species}/{record}.ogg",
            }
        )
    write_csv(bc24 / "train_metadata.csv", rows)

    for year in ("Birdclef23", "Birdclef22"):
        folder = root / year
        write_audio(folder / "train_audio" / "aaa1" / f"XC{year[-2:]}1.ogg", tone(2.0))
        write_csv(
            folder / "train_metadata.csv",
            [
                {
                    "primary_label": "aaa1",
                    "secondary_labels": "[]",
                    "rating": "3",
                    "filename": f"aaa1/XC{year[-2:]}1.ogg",
                }
            ],
        )

    bc21 = root / "Birdclef21"
    write_audio(bc21 / "train_short_audio" / "bbb1" / "XC211.ogg", tone(2.0, channels=2))
    write_csv(
        bc21 / "train_metadata.csv",
        [{"primary_label": "bbb1", "secondary_labels": "['aaa1']", "filename": "XC211.ogg"}],
    )

    bc20 = root / "Birdclef20"
    write_audio(bc20 / "train_audio" / "aaa1" / "XC201.mp3", tone(2.0, sr=44100), sr=44100)
    write_csv(
        bc20 / "train.csv",
        [
            {
                "ebird_code": "aaa1",
                "species": "Alpha Bird",
                "primary_label": "Alphus alphus_Alpha Bird",
                "secondary_labels": "['Betus betus_Beta Bird']",
                "filename": "XC201.mp3",
                "rating": "2.5",
            }
        ],
    )

    bc00 = root / "birdclef2024-additional-mp3" / "additional_audio"
    write_audio(bc00 / "bbb1" / "XC002.mp3", tone(2.0))
    write_audio(bc00 / "aaa1" / "XC001.mp3", tone(2.0))
    return {
        "root": root,
        "bc24": bc24,
        "bc23": root / "Birdclef23",
        "bc22": root / "Birdclef22",
        "bc21": bc21,
        "bc20": bc20,
        "bc00": root / "birdclef2024-additional-mp3",
    }


@pytest.fixture
def kaggle_tree_2025(tmp_path: Path) -> Path:
    """A small birdclef-2025 folder (BirdCLEF+): an eBird-coded bird and an insect labelled by its
    numeric iNaturalist taxon id, records from the XC, iNat and CSA collections, [''] for "no
    secondary species" as in the real train.csv, one unlabelled 6-s train soundscape."""
    bc25 = tmp_path / "raw" / "birdclef-2025"
    rows = []
    for label, stem, collection, secondary in [
        ("1139490", "CSA36385", "CSA", "['']"),
        ("1139490", "iNat1216197", "iNat", "['grekis']"),
        ("grekis", "XC134896", "XC", "['1139490', '65448']"),
    ]:
        write_audio(bc25 / "train_audio" / label / f"{stem}.ogg", tone(2.0))
        rows.append(
            {
                "primary_label": label,
                "secondary_labels": secondary,
                "type": "['']",
                "filename": f"{label}/{stem}.ogg",
                "collection": collection,
                "rating": "0.0" if collection != "XC" else "4.5",
                "url": "u",
                "latitude": "6.3",
                "longitude": "",
                "scientific_name": "S",
                "common_name": "C",
                "author": "a",
                "license": "cc-by-nc-sa 4.0",
            }
        )
    write_csv(bc25 / "train.csv", rows)
    write_csv(
        bc25 / "taxonomy.csv",
        [
            {"primary_label": "1139490", "inat_taxon_id": "1139490", "scientific_name": "S",
             "common_name": "C", "class_name": "Insecta"},
            {"primary_label": "grekis", "inat_taxon_id": "6421", "scientific_name": "S",
             "common_name": "C", "class_name": "Aves"},
        ],
    )
    write_csv(bc25 / "sample_submission.csv",
              [{"row_id": "soundscape_8358733_5", "1139490": 0.0, "grekis": 0.0}])
    write_audio(bc25 / "train_soundscapes" / "H02_20230420_074000.ogg", tone(6.0))
    return bc25
