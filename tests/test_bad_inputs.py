"""Acceptance check: one file of every bad or odd kind (NaN samples, truncated, corrupt, empty,
header only, 0.01 s, 8 kHz, 96 kHz, 6 channels, an upper-case extension) through preprocess (as
training records and as unlabelled soundscapes of a 2024 source tree) and through predict (with
exported models): every file is used or listed with its reason, the exit codes are the documented
ones, and no NaN reaches a store or the submission."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from birdclef.cli import main as cli_main
from birdclef.profiles import profile_params
from birdclef.prediction import NonFiniteSubmissionError, Prediction, submission_table
from birdclef.store import AudioStore
from tests.conftest import REPO, tone, write_audio, write_csv
from tests.test_audio import truncated_ogg
from tests.test_export_predict import CLASSES, workdir  # noqa: F401  (the exported models)

SR = 32000
NAN_SAMPLES = 3
# file -> (what happens to it, the problem listed for it: "" for a clean file)
EXPECTED = {
    "nan_samples.wav": ("used", "non_finite"),
    "truncated.ogg": ("used", "truncated"),
    "corrupt.ogg": ("skipped", "undecodable"),
    "empty.ogg": ("skipped", "undecodable"),
    "header_only.ogg": ("skipped", "no_samples"),
    "short.ogg": ("used", ""),
    "rate8k.ogg": ("used", ""),
    "rate96k.ogg": ("used", ""),
    "six_channels.ogg": ("used", ""),
    "upper.OGG": ("used", ""),
}
USED = sorted(Path(n).stem for n, (action, _) in EXPECTED.items() if action == "used")
SKIPPED = sorted(Path(n).stem for n, (action, _) in EXPECTED.items() if action == "skipped")


def write_kinds(folder: Path) -> list[Path]:
    """One file of each kind in `folder`."""
    nan = tone(4.0)
    nan[[10, 20_000, 70_000]] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "nan_samples.wav", nan, SR, subtype="FLOAT")
    truncated_ogg(folder / "truncated.ogg")
    (folder / "corrupt.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    (folder / "empty.ogg").write_bytes(b"")
    with sf.SoundFile(folder / "header_only.ogg", "w", SR, 1, format="OGG", subtype="VORBIS"):
        pass
    write_audio(folder / "short.ogg", tone(0.01))
    write_audio(folder / "rate8k.ogg", tone(3.0, sr=8000), sr=8000)
    write_audio(folder / "rate96k.ogg", tone(3.0, sr=96000), sr=96000)
    write_audio(folder / "six_channels.ogg", tone(3.0, channels=6))
    write_audio(folder / "upper.ogg", tone(3.0)).rename(folder / "upper.OGG")
    return sorted(folder / name for name in EXPECTED)


def source_tree(root: Path) -> None:
    """A 2024 layout: the ten kinds as records of aaa1 and as unlabelled soundscapes, beside
    two clean records of bbb1."""
    bc24 = root / "birdclef-2024"
    write_kinds(bc24 / "train_audio" / "aaa1")
    write_kinds(bc24 / "unlabeled_soundscapes")
    for record in ("XC1", "XC2"):
        write_audio(bc24 / "train_audio" / "bbb1" / f"{record}.ogg", tone(2.0))
    files = [*(f"aaa1/{name}" for name in EXPECTED), "bbb1/XC1.ogg", "bbb1/XC2.ogg"]
    write_csv(bc24 / "train_metadata.csv", [
        {"primary_label": f.split("/")[0], "secondary_labels": "[]", "filename": f, "rating": "4"}
        for f in files])


def write_params(work: Path, on_error: str) -> Path:
    params = profile_params("tiny", REPO / "profiles")
    params["sources"] = {"root": "raw", "bc24": "raw/birdclef-2024", "eval_soundscapes": None,
                         "near_duplicates": None}
    params["audio"].update(on_error=on_error, workers=2)
    params["tracking"]["experiment"] = "test-bad-inputs"
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source_tree(tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_preprocess_uses_or_lists_every_file(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--params", str(write_params(work, "skip")), "preprocess"]) == 0
    err = capsys.readouterr().err
    bad = pd.read_csv(work / "data/interim/bad_files.csv", keep_default_na=False)
    for role, stored in (("record", AudioStore(work / "data/interim/clips").index["record_id"]),
                         ("soundscape", AudioStore(work / "data/interim/soundscapes").index[
                             "soundscape_id"])):
        listed = bad[bad["role"] == role]
        assert sorted(listed.loc[listed["action"] == "skipped", "id"]) == SKIPPED
        assert sorted(set(stored) - {"XC1", "XC2"}) == USED  # every other file is in the store
        for name, (action, problem) in EXPECTED.items():
            rows = listed[listed["id"] == Path(name).stem]
            assert rows["problem"].tolist() == ([problem] if problem else []), name
            assert (rows["action"] == action).all() and (rows["detail"] != "").all(), name
            assert all(f"{action} {role} {path}" in err for path in rows["path"])  # a warning each
    assert "truncated: the header says 10.00 s" in err
    metadata = pd.read_parquet(work / "data/interim/metadata.parquet").set_index("record_id")
    assert metadata.loc[SKIPPED, "status"].tolist() == [
        "dropped_undecodable", "dropped_undecodable", "dropped_no_samples"]  # corrupt, empty, header
    assert (metadata.loc[[*USED, "XC1", "XC2"], "status"] == "bc24").all()
    details = json.loads((work / "reports/details/preprocess.json").read_text())
    assert (details["records_skipped"], details["soundscapes_skipped"]) == (3, 3)
    assert details["files_repaired"] == 4 and details["truncated_files"] == 2
    assert details["non_finite_samples"] == 2 * NAN_SAMPLES
    for store in ("clips", "soundscapes"):
        shards = (work / "data/interim" / store).glob("shard-*.npy")
        assert all(np.isfinite(np.load(s)).all() for s in shards)
    import mlflow

    (run,) = mlflow.search_runs(experiment_names=["test-bad-inputs"], output_format="list",
                                filter_string="attributes.run_name = 'preprocess'")
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "tables")] == [
        "tables/bad_files.csv", "tables/metadata.parquet"]
    assert run.data.metrics["records_skipped"] == 3


def test_preprocess_on_error_fail_lists_every_bad_file_then_stops(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--params", str(write_params(work, "fail")), "preprocess"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("birdclef preprocess: error: 6 audio files cannot be decoded")
    bad = pd.read_csv(work / "data/interim/bad_files.csv")
    assert sorted(bad.loc[bad["action"] == "skipped", "id"]) == sorted(SKIPPED * 2)
    assert not (work / "data/interim/clips").exists()  # no store and no table: the stage failed
    assert not (work / "data/interim/metadata.parquet").exists()
    assert not list((work / "data/interim").glob(".*tmp-*"))


def test_preprocess_refuses_inputs_that_dvc_would_not_hash(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An input outside sources.root, or linked into it, is read but not in the input's hash."""
    params = write_params(work, "skip")
    (work / "raw/birdclef-2024").rename(work / "elsewhere")
    (work / "raw/birdclef-2024").symlink_to(work / "elsewhere")
    assert cli_main(["--params", str(params), "preprocess"]) == 2
    assert "raw/birdclef-2024 is a symlink inside sources.root" in capsys.readouterr().err
    data = yaml.safe_load(params.read_text())
    data["sources"]["bc24"] = "elsewhere"
    params.write_text(yaml.safe_dump(data))
    assert cli_main(["--params", str(params), "preprocess"]) == 2
    assert "elsewhere is not under sources.root (raw)" in capsys.readouterr().err
    assert not (work / "data/interim").exists()


@pytest.mark.slow
def test_predict_uses_or_lists_every_file(workdir: Path, tmp_path: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def predict(folder: Path, output: Path, *extra: str) -> int:
        return cli_main(["--params", str(REPO / "params.yaml"), "predict", str(folder), "--output",
                         str(output), "--models", str(workdir / "models/onnx"), "--workers", "2",
                         *extra])

    files = write_kinds(tmp_path / "in")
    out = tmp_path / "submission.csv"
    assert predict(tmp_path / "in", out) == 0
    assert "2 repaired" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert np.isfinite(table[CLASSES].to_numpy()).all()
    stems = sorted({row.rsplit("_", 1)[0] for row in table["row_id"]})
    assert stems == USED and len(files) == len(USED) + len(SKIPPED)
    assert table["row_id"].str.startswith(("short_", "truncated_")).sum() == 2  # one window each
    listed = (tmp_path / "submission.csv.errors.txt").read_text().splitlines()
    for name, (action, problem) in EXPECTED.items():
        mine = [line.split()[0] for line in listed if f"/{name}:" in line]
        assert mine == (["skipped"] if action == "skipped" else ["repaired"] if problem else []), name

    # NaN samples predict as zeros would: nothing spreads to the neighbouring windows
    zeroed = tmp_path / "zeroed"
    zeroed.mkdir()
    audio, _ = sf.read(tmp_path / "in/nan_samples.wav", dtype="float32")
    sf.write(zeroed / "nan_samples.wav", np.nan_to_num(audio, nan=0.0), SR, subtype="FLOAT")
    assert predict(zeroed, tmp_path / "zeroed.csv") == 0
    nan_rows = table[table["row_id"].str.startswith("nan_samples_")].reset_index(drop=True)
    pd.testing.assert_frame_equal(nan_rows, pd.read_csv(tmp_path / "zeroed.csv"))

    failed = tmp_path / "failed.csv"
    assert predict(tmp_path / "in", failed, "--on-error", "fail") == 2
    assert not failed.exists()


def test_a_non_finite_submission_is_never_written() -> None:
    probs = np.full((3, 2), 0.5, np.float32)
    probs[1, 0] = np.nan
    result = Prediction(["a_5", "a_10", "a_15"], probs, [], [], [])
    with pytest.raises(NonFiniteSubmissionError, match="1 of 3 submission rows.*a_10"):
        submission_table(result, ["x", "y"])

