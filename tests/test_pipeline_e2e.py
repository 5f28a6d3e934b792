"""The real `dvc repro` of the whole pipeline on the tiny profile, in a fresh copy of the repo."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import exp_file, sh, stages_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tiny_repo: Path) -> Path:
    return tiny_repo


STAGES = ["make_sample", "preprocess", "sample", "train_teacher", "evaluate_teacher",
          "pseudo_label@1", "train_student@1", "pseudo_label@2", "train_student@2",
          "pseudo_label@3", "train_student@3", "export", "evaluate"]


def test_every_stage_ran_and_status_is_clean(repo: Path) -> None:
    ran = stages_run((repo / "first_repro.log").read_text())
    assert sorted(ran) == sorted(STAGES)
    for before, after in [("train_teacher", "evaluate_teacher"), ("train_teacher", "pseudo_label@1"),
                          ("pseudo_label@1", "train_student@1"), ("train_student@1", "export"),
                          ("export", "evaluate"), ("evaluate_teacher", "evaluate")]:
        assert ran.index(before) < ran.index(after)
    assert "up to date" in sh(repo, "dvc", "status").stdout
    again = sh(repo, "dvc", "repro").stdout
    assert stages_run(again) == []


def test_data_outputs(repo: Path) -> None:
    table = pd.read_parquet(repo / "data/processed/train.parquet")
    assert set(table["fold"]) == {0, 1}
    assert table["record_id"].is_unique
    classes = json.loads((repo / "data/processed/classes.json").read_text())
    assert classes == sorted(table["primary_label"].unique())
    sample = json.loads((repo / "reports/details/sample.json").read_text())
    assert sample["training_rows"] == len(table)
    assert not list(repo.glob("data/**/*.tmp-*")) and not list(repo.glob("data/**/.*.tmp-*"))


def test_teacher_and_pseudo_labels(repo: Path) -> None:
    teacher = json.loads((repo / "metrics/teacher.json").read_text())
    assert set(teacher) == {"oof_auc", "fold_auc_mean", "fold_auc_std"}  # headline only
    details = json.loads((repo / "reports/details/teacher.json").read_text())
    assert details["oof_auc"] == teacher["oof_auc"]
    assert details["environment"]["torch"] and details["environment"]["threads"]
    assert sorted(p.name for p in (repo / "models/teacher").glob("fold*.pt")) == ["fold0.pt", "fold1.pt"]
    pl_metrics = json.loads((repo / "reports/details/pseudo_label_round1.json").read_text())
    pl = pd.read_parquet(repo / "data/pseudo_labels/round1.parquet")
    # 2 soundscapes x 30 s -> 6 windows each, for each of 2 teacher folds
    assert len(pl) == pl_metrics["rows"] == 2 * 6 * 2
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["pseudo_label@1"]["outs"]}
    assert "md5" in outs["data/pseudo_labels/round1.parquet"]
    # rounds beyond pseudo_label.rounds (1) label nothing and train nothing
    assert pd.read_parquet(repo / "data/pseudo_labels/round2.parquet").empty
    assert [p.name for p in (repo / "models/student/round2").iterdir()] == ["inactive.json"]


def test_mlflow_runs_share_one_pipeline_id(repo: Path) -> None:
    db = sqlite3.connect(repo / "mlflow.db")
    rows = db.execute(
        "select r.name, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'birdclef.pipeline_id'"
    ).fetchall()
    by_stage = dict(rows)
    for stage in ("make_sample", "preprocess", "sample", "train_teacher", "pseudo_label_round1"):
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
        ("student", "epochs", 2, "train_student@1"),
    ],
)
def test_param_change_reruns_only_its_stage_and_after(repo: Path, section, key, value, first) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        ran = stages_run(sh(repo, "dvc", "repro", "--dry").stdout)
        # the first stage to run is the one that owns the param; nothing before it runs
        assert ran and ran[0] == first
        assert not set(ran) & set(STAGES[: STAGES.index(first)])
    finally:
        sh(repo, "git", "checkout", "params.yaml")


def test_forced_rerun_gives_byte_identical_checkpoints_and_pseudo_labels(repo: Path) -> None:
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())
    first = json.loads((repo / "reports/details/pseudo_label_round1.json").read_text())["sha256"]
    sh(repo, "dvc", "repro", "-f", "-s", "train_teacher")
    sh(repo, "dvc", "repro", "-f", "-s", "pseudo_label@1")
    assert json.loads((repo / "reports/details/pseudo_label_round1.json").read_text())["sha256"] == first
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    teacher_out = lambda lk: [o for o in lk["stages"]["train_teacher"]["outs"]  # noqa: E731
                              if o["path"] == "models/teacher"][0]["md5"]
    assert teacher_out(lock) == teacher_out(lock_before)  # the checkpoints hold no run ids
    assert stages_run(sh(repo, "dvc", "repro", "--dry").stdout) == []  # nothing downstream reruns


def test_export_and_evaluate(repo: Path) -> None:
    export = json.loads((repo / "reports/details/export.json").read_text())
    assert export["n_models"] == 2 and export["parity_max_abs_diff"] < 1e-3 and export["round"] == 1
    headline = json.loads((repo / "metrics/evaluate.json").read_text())
    evaluate = json.loads((repo / "reports/details/evaluate.json").read_text())
    assert headline == {  # few and short: `dvc exp show --only-changed` fits 120 columns
        **{role: {"auc": evaluate[role]["ensemble_smoothed"], "fold_auc": evaluate[role]["fold_mean"]}
           for role in ("teacher", "student")},
        "student_minus_teacher": evaluate["student_minus_teacher"]["difference"]}
    assert not (repo / "metrics/export.json").exists()  # a speed is no DVC metric
    assert not (repo / "metrics/student_round1.json").exists()
    for role in ("teacher", "student"):
        for key in ("fold0", "fold1", "fold_mean", "fold_std", "ensemble", "ensemble_smoothed"):
            assert 0.0 <= evaluate[role][key] <= 1.0, (role, key)
        assert 0.0 < evaluate[role]["ensemble_smoothed_se"] < 0.5
    assert evaluate["windows"] == 18  # three 30-s labelled soundscapes
    diff = evaluate["student_minus_teacher"]
    assert diff["difference"] == pytest.approx(
        evaluate["student"]["ensemble_smoothed"] - evaluate["teacher"]["ensemble_smoothed"])
    assert diff["ci95_low"] <= diff["ci95_high"]
    db = sqlite3.connect(repo / "mlflow.db")
    versions = db.execute("select name, version from model_versions").fetchall()
    assert ("birdclef-student-ensemble", 1) in versions
    runs = {name for (name,) in db.execute("select name from runs")}
    assert {"train_student_round1", "export", "evaluate", "student_round1-fold0"} <= runs


def test_training_benchmark_times_the_loader_and_the_engine(repo: Path) -> None:
    out = sh(repo, "birdclef", "benchmark-training", "--batches", "2").stdout
    result = json.loads((repo / "metrics/benchmark_training.json").read_text())
    sh(repo, "git", "checkout", "HEAD", "--", "metrics/benchmark_training.json")
    assert result["device"] == "cpu" and result["batch_size"] == 8
    assert result["train_samples_per_s"] > 0 and result["loader_samples_per_s"] > 0
    assert result["loader_headroom"] == pytest.approx(
        result["loader_samples_per_s"] / result["train_samples_per_s"])
    assert "train_samples_per_s" in out


def test_rounds_param_runs_two_rounds(repo: Path) -> None:
    dag = sh(repo, "dvc", "dag").stdout
    assert "train_student@2" in dag and "pseudo_label@2" in dag
    log = sh(repo, "dvc", "exp", "run", "--temp", "-n", "two-rounds",
             "-S", "pseudo_label.rounds=2").stdout
    ran = stages_run(log)
    assert {"pseudo_label@2", "train_student@2", "export", "evaluate"} <= set(ran)
    assert "train_teacher" not in ran and "train_student@1" not in ran  # only round 2 is new
    round2 = exp_file(repo, "two-rounds", "reports/details/student_round2.json")
    assert round2["steps"] > 0 and round2["pseudo_label_windows"] > 0
    assert exp_file(repo, "two-rounds", "reports/details/export.json")["round"] == 2
    evaluate = exp_file(repo, "two-rounds", "reports/details/evaluate.json")
    assert evaluate["rounds"] == [1, 2]
    assert {"teacher", "student_round1", "student", "student_minus_student_round1"} <= set(evaluate)
    labels = exp_file(repo, "two-rounds", "reports/details/pseudo_label_round2.json")
    assert labels["active"] and labels["rows"] == 2 * 6 * 2  # labelled by round 1's 2 students


def test_stage_runs_are_tagged_with_the_dvc_lock_hashes_of_their_inputs(repo: Path) -> None:
    """Lineage: the last workspace run of every stage carries `input.md5.<path>` tags equal to the
    hashes dvc.lock holds for that stage's deps, the raw data (which no stage writes) included."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    db = sqlite3.connect(repo / "mlflow.db")
    runs: dict[str, dict[str, str]] = {}
    for run_id, key, value in db.execute("select run_uuid, key, value from tags"):
        runs.setdefault(run_id, {})[key] = value
    started = dict(db.execute("select run_uuid, start_time from runs"))
    last: dict[str, dict[str, str]] = {}
    for run_id in sorted(runs, key=started.__getitem__):
        tags = runs[run_id]
        if "birdclef.stage" in tags and "birdclef.fold" not in tags and not tags["dvc.exp_name"]:
            last[tags["birdclef.stage"]] = tags
    inactive = {f"{s}@{r}" for s in ("pseudo_label", "train_student") for r in (2, 3)}
    assert set(last) == set(STAGES) - inactive
    for stage, tags in last.items():
        deps = {d["path"]: d["md5"] for d in lock[stage].get("deps", [])}
        inputs = {k.removeprefix("input.md5."): v for k, v in tags.items() if k.startswith("input.md5.")}
        assert all(deps.get(path) == md5 for path, md5 in inputs.items()), (stage, inputs, deps)
        data = {path for path in deps if not path.startswith("src/")}
        assert set(inputs) <= data and (inputs or stage == "make_sample"), stage
        if stage in ("preprocess", "sample", "evaluate_teacher", "evaluate"):
            assert set(inputs) == data, (stage, data - set(inputs))
    assert set(last["preprocess"]) >= {"input.md5.data/raw/sample", "process.pid"}  # the raw data
