"""The study's plan: which arms run for a profile, and when a finished experiment may be reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.config import load_params
from birdclef.profiles import write_profile
from birdclef.study import SCORE, Experiment, Unit, summarise
from birdclef.study_params import arms_that_change_something, changed_params, dotted, with_overrides
from tests.conftest import REPO


@pytest.mark.parametrize(("profile", "arms"), [
    ("sample", ["student", "control", "labelled_only", "sharpened"]),
    ("full2024", ["student", "control", "labelled_only", "sharpened"]),
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


def scored_experiment(unit: Unit, arm: str, scores: dict[str, float], teacher_md5: str,
                      rng: np.random.Generator) -> Experiment:
    """A finished experiment as `collect` reads it: its evaluate scores, its teachers' hash and the
    teachers', students' and truth's tables of two soundscapes x 12 windows x 3 classes."""
    classes = ["a", "b", "c"]
    blocks = [f"ss{i}:0" for i in range(2) for _ in range(12)]
    base = pd.DataFrame({"row_id": [f"ss{i}_{5 * (w + 1)}" for i in range(2) for w in range(12)],
                         "block": blocks})
    truth = base.assign(**{c: (rng.random(len(base)) < 0.4).astype(np.float32) for c in classes})
    logits = [base.assign(fold=f, **{c: rng.normal(size=len(base)).astype(np.float32) for c in classes})
              for f in (0, 1)]
    frames = {"truth": truth, "teacher": pd.concat(logits), "student": pd.concat(logits[::-1])}
    evaluate = {name: {SCORE: scores[name], "ensemble": scores[name] - 0.01, "fold_mean": scores[name] - 0.02,
                       f"{SCORE}_se": 0.03} for name in ("teacher", "student")}
    return Experiment(f"t-{unit.label}-{arm}", unit, arm, {}, {
        "evaluate": evaluate, "teacher_md5": teacher_md5, "frames": frames, "ref": "r"})


def test_the_report_averages_training_seeds_then_compares_corpus_seeds() -> None:
    """Two corpus seeds x two training seeds, two arms, one of which trains teachers of its own:
    the training seeds are averaged first, then mean, SD, t-interval and paired differences over
    the corpus seeds, each arm with its own teachers."""
    rng = np.random.default_rng(0)
    scores = {  # (corpus seed, training seed) -> (teacher, student arm, other arm, other's teachers)
        (7, 0): (0.70, 0.74, 0.78, 0.72), (7, 1): (0.72, 0.76, 0.80, 0.74),
        (8, 0): (0.60, 0.70, 0.66, 0.62), (8, 1): (0.62, 0.68, 0.70, 0.64),
    }
    experiments = []
    for (seed, training), (teacher, student, other, other_teacher) in scores.items():
        unit = Unit(seed, training)
        experiments.append(scored_experiment(unit, "student", {"teacher": teacher, "student": student},
                                             f"md5-{seed}-{training}", rng))
        experiments.append(scored_experiment(unit, "wide", {"teacher": other_teacher, "student": other},
                                             f"other-{seed}-{training}", rng))
    report = summarise(experiments, ["student", "wide"], load_params(REPO / "params.yaml"))
    assert [(u["seed"], u["training"]) for u in report["per_unit"]] == list(scores)
    assert report["arms_with_own_teachers"] == ["wide"]
    by_seed = {"teacher": [0.71, 0.61], "student": [0.75, 0.69], "wide": [0.79, 0.68],
               "wide_teacher": [0.73, 0.63]}
    for name, values in by_seed.items():
        summary = report["summary"][name]
        assert summary["n"] == 2
        assert summary["mean"] == pytest.approx(np.mean(values))
        assert summary["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
        half = 12.706 * summary["sd"] / 2**0.5  # t(0.975, 1 degree of freedom)
        assert summary["ci95_high"] - summary["mean"] == pytest.approx(half, rel=1e-4)
    assert report["summary"]["student"]["fold_mean"] == pytest.approx(0.72 - 0.02)
    expected = {"student_minus_teacher": [0.04, 0.08], "wide_minus_teacher": [0.06, 0.05],
                "student_minus_wide": [-0.04, 0.01]}
    for key, per_seed in expected.items():
        diff = report["differences"][key]
        assert diff["per_seed"] == pytest.approx(per_seed)
        assert diff["seeds_above_zero"] == sum(v > 0 for v in per_seed)
        assert diff["bootstrap_ci95_low"] <= diff["bootstrap_ci95_high"]
