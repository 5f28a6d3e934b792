"""Config: every shipped profile validates; bad files fail with one message naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from birdclef.cli import main as cli_main
from birdclef.config import ConfigError, load_params
from tests.conftest import REPO

PROFILES = sorted((REPO / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", [REPO / "params.yaml", *PROFILES], ids=lambda p: p.name)
def test_shipped_profiles_are_valid(path: Path) -> None:
    params = load_params(path)
    assert params.frontend.hop_length == 717


def test_params_yaml_is_the_sample_profile() -> None:
    assert (REPO / "params.yaml").read_text() == (REPO / "profiles" / "sample.yaml").read_text()


def _broken(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["sample"].pop("cap"), r"missing key 'sample.cap'"),
        (lambda d: d["teacher"].update(epoch=3), r"unknown key 'teacher.epoch' \(misspelt\?\)"),
        (lambda d: d["teacher"].update(epochs="many"), r"key 'teacher.epochs':.*integer"),
        (lambda d: d["sample"].update(n_folds=1), r"key 'sample.n_folds':.*greater than or equal"),
        (lambda d: d["postprocess"].update(reduction="median"), r"key 'postprocess.reduction'"),
        (lambda d: d.pop("student"), r"missing key 'student'"),
        (
            lambda d: d["student"]["pseudo_labels"].update(shufle=True),
            r"unknown key 'student.pseudo_labels.shufle'",
        ),
    ],
)
def test_bad_params_name_file_and_key(tmp_path: Path, edit, message: str) -> None:
    path = _broken(tmp_path, edit)
    with pytest.raises(ConfigError, match=rf"{path}: {message}"):
        load_params(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_cli_reports_config_error_in_one_line(tmp_path: Path, capsys) -> None:
    path = _broken(tmp_path, lambda d: d["sample"].update(capp=3))
    assert cli_main(["--params", str(path), "sample"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"birdclef sample: error: {path}: unknown key 'sample.capp' (misspelt?)"]
