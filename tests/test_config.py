"""Config: every shipped profile is a valid overlay; bad files fail with one message naming file and
key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from birdclef.cli import main as cli_main
from birdclef.config import ConfigError, load_params
from birdclef.profiles import merge, profile_params, write_profile
from tests.conftest import REPO

PROFILES = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profiles_are_small_valid_overlays(name: str, tmp_path: Path) -> None:
    overlay = (REPO / "profiles" / f"{name}.yaml").read_text().splitlines()
    assert len(overlay) < 60
    write_profile(name, tmp_path / "params.yaml", REPO / "profiles")
    params = load_params(tmp_path / "params.yaml")
    assert params.frontend.hop_length == 717
    assert params.model_dump(mode="json") == load_params(tmp_path / "params.yaml").model_dump(
        mode="json")


def test_params_yaml_is_the_sample_profile(tmp_path: Path) -> None:
    write_profile("sample", tmp_path / "params.yaml", REPO / "profiles")
    assert (REPO / "params.yaml").read_text() == (tmp_path / "params.yaml").read_text()


def test_merge_overlays_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 4}
    assert merge(base, {"a": {"c": [3]}, "e": 5}) == {"a": {"b": 1, "c": [3]}, "d": 4, "e": 5}
    tiny = profile_params("tiny", REPO / "profiles")
    assert tiny["sample"]["n_folds"] == 2 and tiny["sample"]["fold_seed"] == 0  # kept from base


def test_unknown_profile_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such profile.*tiny"):
        write_profile("nope", tmp_path / "params.yaml", REPO / "profiles")


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
        (lambda d: d["audio"].update(on_error="ignore"), r"key 'audio.on_error':.*'skip' or 'fail'"),
        # an optional input is a dependency of the stages that read it only through sources.root
        (
            lambda d: d["sources"].update(near_duplicates="data/near_duplicates_2024.csv"),
            r"key 'sources.near_duplicates':.*not under sources.root \(data/raw/sample\)",
        ),
        (
            lambda d: d["sources"].update(eval_soundscapes="data/raw/sample/../labelled"),
            r"key 'sources.eval_soundscapes':.*not under sources.root",
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


def keys(tree: object, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(keys(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in tree.items()))


def test_the_base_profile_spells_out_every_key() -> None:
    """DVC reads params.yaml, not the schema's defaults: a key a stage depends on must be there."""
    base = yaml.safe_load((REPO / "profiles" / "base.yaml").read_text())
    schema = load_params(REPO / "params.yaml").model_dump(mode="json")
    schema["study"]["arms"] = base["study"]["arms"]  # free-form mapping
    missing = sorted(keys(schema) - keys(base))
    assert not missing, f"profiles/base.yaml lacks {missing}"
