"""The study end to end on the tiny profile: a corpus seed, the student and control arms, each a
real `dvc exp run --temp`, the report, its MLflow runs, reuse and the refusal of stale experiments."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import exp_file, sh, tiny_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project with only its corpus made: the study refuses to start without labelled
    soundscapes, and its experiments run every stage themselves (seed 7's from scratch)."""
    root = tiny_project(tmp_path_factory.mktemp("study") / "repo")
    sh(root, "dvc", "repro", "make_sample")
    return root


def test_study_arms_seeds_and_report(repo: Path) -> None:
    """One corpus seed other than the repository's (the arithmetic over several seeds is
    tests/test_study.py's): the seed's corpus is made in the experiments, the arms share it."""
    args = ["--seeds", "1", "--first-seed", "8", "--arms", "student,control", "--name", "tstudy"]
    out = sh(repo, "birdclef", "study", *args).stdout
    assert "student_minus_control" in out
    report = json.loads((repo / "metrics/study.json").read_text())
    (unit,) = report["per_unit"]
    assert unit["seed"] == 8 and report["vary"] == "corpus"
    assert {"teacher", "student", "control"} <= set(unit)
    student = exp_file(repo, "tstudy-s8-student", "reports/details/student_round1.json")
    control = exp_file(repo, "tstudy-s8-control", "reports/details/student_round1.json")
    assert control["pseudo_label_windows"] == 0 < student["pseudo_label_windows"]
    assert control["steps"] == student["steps"] > 0
    made = exp_file(repo, "tstudy-s8-student", "reports/details/make_sample.json")
    ours = json.loads((repo / "reports/details/make_sample.json").read_text())
    assert made["generated"] and made["audio_seconds"] != ours["audio_seconds"]  # another corpus
    for arm in ("teacher", "student", "control"):
        assert report["summary"][arm]["mean"] == pytest.approx(unit[arm])
        assert report["summary"][arm]["n"] == 1
    for a, b in (("student", "teacher"), ("student", "control")):
        diff = report["differences"][f"{a}_minus_{b}"]
        assert diff["per_seed"] == pytest.approx([unit[a] - unit[b]])
        assert diff["bootstrap_ci95_low"] <= diff["mean"] <= diff["bootstrap_ci95_high"]
    shown = sh(repo, "dvc", "exp", "show", "--no-pager", "--csv").stdout
    assert all(f"tstudy-s8-{a}" in shown for a in ("student", "control"))
    db = sqlite3.connect(repo / "mlflow.db")
    (parent,) = db.execute("select run_uuid from runs where name = 'tstudy'").fetchone()
    children = db.execute("select count(*) from tags where key = 'mlflow.parentRunId' and value = ?",
                          (parent,)).fetchone()[0]
    assert children == 2
    again = sh(repo, "birdclef", "study", *args, "--report-only")
    assert "Running stage" not in again.stdout + again.stderr
    stale = sh(repo, "birdclef", "study", *args, "--report-only", "--set", "student.epochs=3", check=False)
    assert stale.returncode == 2 and "ran with other params (student.epochs)" in stale.stderr
