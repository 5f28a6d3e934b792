"""The study's plan: which arms run for a profile, and when a finished experiment may be reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from birdclef.config import load_params
from birdclef.profiles import write_profile
from birdclef.study_params import arms_that_change_something, changed_params, dotted, with_overrides
from tests.conftest import REPO


@pytest.mark.parametrize(("profile", "arms"), [
    ("sample", ["student", "control", "pseudo_targets"]),
    ("full2024", ["student", "control", "labelled_only"]),
])
def test_an_arm_that_params_already_hold_is_left_out(profile: str, arms: list[str], tmp_path: Path) -> None:
    write_profile(profile, tmp_path / "params.yaml", REPO / "profiles")
    params = load_params(tmp_path / "params.yaml")
    assert arms_that_change_something(params, list(params.study.arms)) == arms


def test_dotted_keys_and_changed_params() -> None:
    tree = {"student": {"epochs": 6, "pseudo_labels": {"targets": "pseudo"}}, "study": {"seeds": 3}}
    assert dotted(tree, "student.pseudo_labels.targets") == "pseudo"
    with pytest.raises(KeyError, match="student.nope"):
        dotted(tree, "student.nope")
    other = {"student": {"epochs": 2, "pseudo_labels": {"targets": "pseudo"}, "new": 1},
             "study": {"seeds": 5}}
    assert changed_params(tree, other) == ["student.epochs", "student.new"]  # the study section aside
    assert changed_params(tree, tree) == []


def test_overrides_set_dotted_keys_on_a_copy() -> None:
    tree = {"student": {"epochs": 6, "pseudo_labels": {"targets": "pseudo"}}}
    changed = with_overrides(tree, {"student.pseudo_labels.targets": "labelled_only", "make_sample.seed": 8})
    assert changed == {"student": {"epochs": 6, "pseudo_labels": {"targets": "labelled_only"}},
                       "make_sample": {"seed": 8}}
    assert tree["student"]["pseudo_labels"]["targets"] == "pseudo"
