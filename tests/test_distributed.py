"""Two processes with PyTorch's own engine (torchrun + gloo on the CPU, GPUs hidden) on the tiny
profile: the training stage trains once and writes once; pseudo-labelling shares out the soundscapes
and gives the byte-identical table of one process. On a CUDA machine, more processes than GPUs is a
clear error."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from birdclef.profiles import profile_params
from birdclef.model import load_checkpoint
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def run(work: Path, *args: str) -> str:
    result = run_stage(work, *args, env={"CUDA_VISIBLE_DEVICES": ""})  # gloo on the CPU, GPUs or not
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def run_stage(work: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "LOCAL_RANK"))}
    return subprocess.run([sys.executable, "-m", "birdclef.cli", *args], cwd=work, env={**clean, **env},
                          capture_output=True, text=True, timeout=900)


def write_params(work: Path, **sections: dict) -> None:
    params = profile_params("tiny", REPO / "profiles")
    for section, values in sections.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ddp")
    (work / ".dvc").mkdir()  # marks the tracking root
    write_params(work)
    for stage in ("make-sample", "preprocess", "sample"):
        run(work, stage)
    return work


def test_two_processes_train_once_and_write_once(work: Path) -> None:
    write_params(work, teacher={"device": "ddp", "ddp_processes": 2, "threads": 1})
    out = run(work, "train-teacher")
    assert "resuming" not in out
    details = json.loads((work / "reports/details/teacher.json").read_text())
    assert details["environment"]["processes"] == "2"
    assert details["steps"] > 0
    for fold in (0, 1):
        model, meta = load_checkpoint(work / f"models/teacher/fold{fold}.pt")
        assert meta["extra"]["fold"] == fold and meta["classes"]
    db = sqlite3.connect(work / "mlflow.db")
    folds = sorted(n for (n,) in db.execute("select name from runs where name like 'teacher-fold%'"))
    assert folds == ["teacher-fold0", "teacher-fold1"]  # one MLflow run per fold, not per process
    assert db.execute("select count(*) from runs where name = 'train_teacher'").fetchone()[0] == 1
    assert not list((work / "models").glob(".teacher.tmp-*"))


def test_shared_pseudo_labelling_equals_one_process(work: Path) -> None:
    write_params(work, pseudo_label={"threads": 1})
    run(work, "pseudo-label")
    single = (work / "data/pseudo_labels/round1.parquet").read_bytes()
    write_params(work, pseudo_label={"threads": 1, "device": "ddp", "ddp_processes": 2})
    run(work, "pseudo-label")
    assert (work / "data/pseudo_labels/round1.parquet").read_bytes() == single
    assert not (work / ".resume/pseudo_label_round1").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_more_processes_than_gpus_is_a_clear_error(work: Path) -> None:
    gpus = torch.cuda.device_count()
    write_params(work, teacher={"device": "ddp", "ddp_processes": gpus + 1})
    result = run_stage(work, "train-teacher", env={})
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"ddp_processes: {gpus + 1} needs one GPU a process and this machine has {gpus}" in result.stderr
