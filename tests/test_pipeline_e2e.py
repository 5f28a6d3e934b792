"""The real `dvc repro` of the whole pipeline on the tiny profile, in a fresh copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's files (what a clone would have) with the tiny profile, reproduced."""
    root = tmp_path_factory.mktemp("e2e") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    shutil.copy(root / "profiles" / "tiny.yaml", root / "params.yaml")
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny")
    result = sh(root, "dvc", "repro")
    (root / "first_repro.log").write_text(result.stdout)
    return root


def test_every_stage_ran_and_status_is_clean(repo: Path) -> None:
    ran = stages_run((repo / "first_repro.log").read_text())
    assert ran == ["make_sample", "preprocess", "sample", "train_teacher", "pseudo_label",
                   "train_student", "export", "evaluate"]
    assert "up to date" in sh(repo, "dvc", "status").stdout
    again = sh(repo, "dvc", "repro").stdout
    assert stages_run(again) == []


def test_data_outputs(repo: Path) -> None:
    table = pd.read_parquet(repo / "data/processed/train.parquet")
    assert set(table["fold"]) == {0, 1}
    assert table["record_id"].is_unique
    classes = json.loads((repo / "data/processed/classes.json").read_text())
    assert classes == sorted(table["primary_label"].unique())
    sample = json.loads((repo / "metrics/sample.json").read_text())
    assert sample["training_rows"] == len(table)
    assert not list(repo.glob("data/**/*.tmp-*")) and not list(repo.glob("data/**/.*.tmp-*"))


def test_teacher_and_pseudo_labels(repo: Path) -> None:
    teacher = json.loads((repo / "metrics/teacher.json").read_text())
    assert 0.0 <= teacher["oof_auc"] <= 1.0
    assert sorted(p.name for p in (repo / "models/teacher").glob("fold*.pt")) == ["fold0.pt", "fold1.pt"]
    pl_metrics = json.loads((repo / "metrics/pseudo_label.json").read_text())
    pl = pd.read_parquet(repo / "data/pseudo_labels/pseudo_labels.parquet")
    # 2 soundscapes x 30 s -> 6 windows each, for each of 2 teacher folds
    assert len(pl) == pl_metrics["rows"] == 2 * 6 * 2
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["pseudo_label"]["outs"]}
    assert "md5" in outs["data/pseudo_labels/pseudo_labels.parquet"]


def test_mlflow_runs_share_one_pipeline_id(repo: Path) -> None:
    db = sqlite3.connect(repo / "mlflow.db")
    rows = db.execute(
        "select r.name, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'birdclef.pipeline_id'"
    ).fetchall()
    by_stage = dict(rows)
    for stage in ("make_sample", "preprocess", "sample", "train_teacher", "pseudo_label"):
        assert stage in by_stage, by_stage
    assert len({by_stage[s] for s in ("make_sample", "preprocess", "sample", "train_teacher")}) == 1
    folds = db.execute("select name, experiment_id from runs where name like 'teacher-fold%'").fetchall()
    assert sorted(f for f, _ in folds) == ["teacher-fold0", "teacher-fold1"]
    (stage_experiment,) = db.execute("select experiment_id from runs where name = 'sample'").fetchone()
    assert {e for _, e in folds} == {stage_experiment}  # fold runs sit beside their stage run


@pytest.mark.parametrize(
    ("section", "key", "value", "first"),
    [
        ("sample", "fold_seed", 1, "sample"),
        ("teacher", "epochs", 2, "train_teacher"),
        ("student", "epochs", 2, "train_student"),
    ],
)
def test_param_change_reruns_only_its_stage_and_after(repo: Path, section, key, value, first) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    order = ["make_sample", "preprocess", "sample", "train_teacher", "pseudo_label",
             "train_student", "export", "evaluate"]
    try:
        ran = stages_run(sh(repo, "dvc", "repro", "--dry").stdout)
        # the first stage to run is the one that owns the param; nothing before it runs
        assert ran and ran[0] == first
        assert not set(ran) & set(order[: order.index(first)])
    finally:
        sh(repo, "git", "checkout", "params.yaml")


def test_pseudo_labels_are_byte_identical_on_rerun(repo: Path) -> None:
    first = json.loads((repo / "metrics/pseudo_label.json").read_text())["sha256"]
    teacher_first = json.loads((repo / "metrics/teacher.json").read_text())["state_sha256"]
    sh(repo, "dvc", "repro", "-f", "-s", "train_teacher")
    sh(repo, "dvc", "repro", "-f", "-s", "pseudo_label")
    assert json.loads((repo / "metrics/teacher.json").read_text())["state_sha256"] == teacher_first
    assert json.loads((repo / "metrics/pseudo_label.json").read_text())["sha256"] == first


def test_export_and_evaluate(repo: Path) -> None:
    export = json.loads((repo / "metrics/export.json").read_text())
    assert export["n_models"] == 2 and export["parity_max_abs_diff"] < 1e-3
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    for role in ("teacher", "student"):
        for key in ("fold0", "fold1", "fold_mean", "fold_std", "ensemble", "ensemble_smoothed"):
            assert 0.0 <= evaluate[role][key] <= 1.0, (role, key)
    assert evaluate["windows"] == 6  # one 30-s labelled soundscape
    db = sqlite3.connect(repo / "mlflow.db")
    versions = db.execute("select name, version from model_versions").fetchall()
    assert ("birdclef-student-ensemble", 1) in versions
    runs = {name for (name,) in db.execute("select name from runs")}
    assert {"train_student", "export", "evaluate", "student-fold0"} <= runs
