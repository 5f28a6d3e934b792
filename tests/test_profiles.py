"""Every profile is a working pipeline: `birdclef profile <name>` in a copy of the repository, then
`dvc dag`, `dvc status` and `dvc repro --dry` succeed (null optional inputs never reach dvc.yaml
as dependency paths), and the generated corpus is an upstream of preprocess only where it is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, copy_repository, restored, sh, stages_run

PROFILES = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml") if p.stem != "base")
ALL_STAGES = 13  # make_sample ... evaluate, with three pseudo-labelling round slots


def use_profile(repo: Path, name: str) -> dict:
    """`birdclef profile <name>`, and the raw-data folder in place where the profile reads real
    data (README, real data, step 1)."""
    sh(repo, "birdclef", "profile", name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    if params["sources"]["root"] != params["make_sample"]["out_dir"]:
        (repo / params["sources"]["root"]).mkdir(parents=True, exist_ok=True)
    return params


def edges(repo: Path) -> set[tuple[str, str]]:
    dot = sh(repo, "dvc", "dag", "--dot").stdout
    return {tuple(part.strip().strip('";') for part in line.split("->"))
            for line in dot.splitlines() if "->" in line}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("profiles") / "repo")


@pytest.mark.slow
@pytest.mark.parametrize("name", PROFILES)
def test_profile_resolves_in_a_fresh_clone(fresh: Path, name: str) -> None:
    params = use_profile(fresh, name)
    generated = params["sources"]["root"] == params["make_sample"]["out_dir"]
    graph = edges(fresh)
    assert (("make_sample", "preprocess") in graph) == generated
    assert ("preprocess", "sample") in graph and ("export", "evaluate") in graph
    assert "ERROR" not in sh(fresh, "dvc", "status").stderr
    # Without --force, a dry run of a clone with no outputs yet stops at the first stage whose
    # input another stage writes (DVC checks its run cache by their hashes): the next test.
    dry = sh(fresh, "dvc", "repro", "--dry", "--force")
    assert len(stages_run(dry.stdout)) == ALL_STAGES


@pytest.mark.e2e
def test_profile_dry_runs_in_a_reproduced_repository(tiny_repo: Path) -> None:
    """After `dvc repro` (tiny), a switch to any profile gives a working `dvc repro --dry`."""
    repo = tiny_repo
    with restored(repo):
        for name in PROFILES:
            use_profile(repo, name)
            dry = sh(repo, "dvc", "repro", "--dry")
            assert "ERROR" not in dry.stdout + dry.stderr, name
            assert "Running stage 'preprocess'" in dry.stdout or name.startswith("tiny"), name
            sh(repo, "dvc", "dag")
            sh(repo, "dvc", "status")
        # back from real data (make_sample wrote its placeholder) the corpus is generated again
        use_profile(repo, "full2024")
        sh(repo, "dvc", "repro", "make_sample")
        assert [p.name for p in (repo / "data/raw/sample").iterdir()] == ["NOT_GENERATED.txt"]
        use_profile(repo, "tiny")
        assert "sources.root" in sh(repo, "dvc", "status", "make_sample").stdout
        shutil.rmtree(repo / "data/raw/sample")  # dvc checkout puts the corpus back


KAGGLE_2024 = ("birdclef-2024", "Birdclef23", "Birdclef22", "Birdclef21", "Birdclef20",
               "birdclef2024-additional-mp3")


@pytest.mark.e2e
def test_readme_real_data_steps_for_2024(tiny_repo: Path) -> None:
    """README, real data, steps 1, 2 and 4 as written, with the tiny corpus's folders as the Kaggle
    downloads under data/raw/kaggle/: `make profile PROFILE=full2024` (`birdclef profile`), then
    `dvc repro` up to `sample` on the full profile's params (cap 500, 5 folds)."""
    repo = tiny_repo
    with restored(repo):
        for name in KAGGLE_2024:
            shutil.copytree(repo / "data/raw/sample" / name, repo / "data/raw/kaggle" / name)
        sh(repo, "birdclef", "profile", "full2024")
        assert stages_run(sh(repo, "dvc", "repro", "sample").stdout) == ["preprocess", "sample"]
        preprocess = json.loads((repo / "reports/details/preprocess.json").read_text())
        assert (preprocess["candidates"], preprocess["records_decoded"]) == (106, 81)
        sample = json.loads((repo / "reports/details/sample.json").read_text())
        assert (sample["training_rows"], sample["classes"], sample["species_cap_binds"]) == (81, 5, 0)


def test_real_data_profile_generates_nothing_and_scores_nothing_without_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """full2024 (no labelled soundscapes): make_sample writes a placeholder, evaluate_teacher and
    evaluate succeed and say that the evaluation is not available, and why."""
    from birdclef.config import Params
    from birdclef.profiles import profile_params
    from birdclef.stages import evaluate, evaluate_teacher, make_sample

    params = Params.model_validate(profile_params("full2024", REPO / "profiles"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    make_sample.main(params)
    assert [p.name for p in (tmp_path / "data/raw/sample").iterdir()] == ["NOT_GENERATED.txt"]
    details = json.loads((tmp_path / "reports/details/make_sample.json").read_text())
    assert details["generated"] is False and "sources.root is data/raw/kaggle" in details["reason"]

    evaluate_teacher.main(params)
    evaluate.main(params)
    for name in ("evaluate_teacher", "evaluate"):
        details = json.loads((tmp_path / f"reports/details/{name}.json").read_text())
        assert details == {"available": False,
                           "reason": "sources.eval_soundscapes is null: no labelled soundscapes to score"}
    assert json.loads((tmp_path / "metrics/evaluate.json").read_text()) == {"available": False}
    for table in ("teacher", "truth", "student"):
        assert pd.read_parquet(tmp_path / f"data/evaluation/{table}.parquet").empty
    assert (tmp_path / "reports/evaluate_per_class.csv").is_file()
    import mlflow

    runs = mlflow.search_runs(experiment_names=["birdclef-full2024"], output_format="list",
                              filter_string="attributes.run_name = 'evaluate'")
    assert runs[0].data.tags["evaluation"].startswith("not available: sources.eval_soundscapes")
