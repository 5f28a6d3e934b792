"""The study end to end on the tiny profile: two corpus seeds, the student and control arms, each a
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
    out = sh(repo, "birdclef", "study", "--seeds", "2", "--arms", "student,control",
             "--name", "tstudy").stdout
    assert "student_minus_control" in out
    report = json.loads((repo / "metrics/study.json").read_text())
    units = report["per_unit"]
    assert [u["seed"] for u in units] == [7, 8] and report["vary"] == "corpus"
    for unit in units:
        assert {"teacher", "student", "control"} <= set(unit)
        student = exp_file(repo, f"tstudy-s{unit['seed']}-student",
                           "reports/details/student_round1.json")
        control = exp_file(repo, f"tstudy-s{unit['seed']}-control",
                           "reports/details/student_round1.json")
        assert control["pseudo_label_windows"] == 0 < student["pseudo_label_windows"]
        assert control["steps"] == student["steps"] > 0
    for arm in ("teacher", "student", "control"):
        values = [u[arm] for u in units]
        assert report["summary"][arm]["mean"] == pytest.approx(sum(values) / 2)
        assert report["summary"][arm]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    for a, b in (("student", "teacher"), ("student", "control")):
        diff = report["differences"][f"{a}_minus_{b}"]
        assert diff["per_seed"] == pytest.approx([u[a] - u[b] for u in units])
        assert diff["mean"] == pytest.approx(sum(diff["per_seed"]) / 2)
        assert diff["ci95_low"] < diff["mean"] < diff["ci95_high"]
    shown = sh(repo, "dvc", "exp", "show", "--no-pager", "--csv").stdout
    assert all(f"tstudy-s{s}-{a}" in shown for s in (7, 8) for a in ("student", "control"))
    db = sqlite3.connect(repo / "mlflow.db")
    (parent,) = db.execute("select run_uuid from runs where name = 'tstudy'").fetchone()
    children = db.execute("select count(*) from tags where key = 'mlflow.parentRunId' and value = ?",
                          (parent,)).fetchone()[0]
    assert children == 4
    again = sh(repo, "birdclef", "study", "--seeds", "2", "--arms", "student,control",
               "--name", "tstudy", "--report-only")
    assert "Running stage" not in again.stdout + again.stderr
    stale = sh(repo, "birdclef", "study", "--seeds", "2", "--arms", "student,control", "--name", "tstudy",
               "--report-only", "--set", "student.epochs=3", check=False)
    assert stale.returncode == 2 and "ran with other params (student.epochs)" in stale.stderr
