"""The one place that talks to MLflow (DESIGN 4).

Every stage opens one run through `stage_run`. The run is tagged with its lineage: the DVC stage,
the git commit (and whether the tree was dirty), the DVC experiment name and baseline, the content
hashes of the stage's inputs as DVC records them, the run ids of the upstream stages, the process
that runs it, and one pipeline id shared by all stages of one `dvc repro` / `dvc exp run`. The run
id is written to a small file that DVC caches as a stage output, so the link survives DVC restoring
a stage from its run cache. A stage's runs left RUNNING by a killed process are marked KILLED when
the stage starts again.

Store: a SQLite file at the DVC repo root, addressed by absolute path, with artifacts beside it in
`mlartifacts/`. `dvc exp run --temp/--queue` runs stages in a copy under .dvc/tmp/exps but sets
DVC_ROOT to the real root, so every run lands in the main repo's store. MLFLOW_TRACKING_URI
overrides this (use a tracking server when several experiments run at once). Outside a DVC
repository, with no MLFLOW_TRACKING_URI, there is no store to use: tracking refuses to create an
empty one there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from birdclef.io import write_json

RUNS_DIR = Path("runs")


class StoreNotFoundError(FileNotFoundError):
    """No MLflow store to log to: not in a DVC repository and MLFLOW_TRACKING_URI is not set."""


def nearest_dvc_folder() -> Path | None:
    """The nearest folder at or above the working directory that holds `.dvc`."""
    here = Path.cwd().resolve()
    return next((folder for folder in (here, *here.parents) if (folder / ".dvc").is_dir()), None)


def find_dvc_root() -> Path | None:
    """DVC_ROOT (set by DVC for stage commands: the main repository, also for an experiment that
    runs in a temp copy), else the nearest folder holding `.dvc`."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    return nearest_dvc_folder()


def repo_root() -> Path:
    return find_dvc_root() or Path.cwd().resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store at the DVC repository's root."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = find_dvc_root()
    if root is None:
        raise StoreNotFoundError(
            f"{Path.cwd()} is not inside a DVC repository and MLFLOW_TRACKING_URI is not set: "
            "there is no MLflow store here and birdclef will not create an empty one. Run from "
            "the repository, or set MLFLOW_TRACKING_URI=sqlite:///<repository>/mlflow.db")
    return f"sqlite:///{root / 'mlflow.db'}"


def _mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


# MLflow 3 opens an experiment of this kind on its runs table, not on the GenAI (traces) overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(mlflow: Any, name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A tracking server stores artifacts itself (its --artifacts-destination); a local store keeps
    # them beside mlflow.db, addressed absolutely so DVC's temp experiment copies log there too.
    served = tracking_uri().startswith(("http://", "https://"))
    location = None if served else (repo_root() / "mlartifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except Exception:  # another process created it first
        return mlflow.get_experiment_by_name(name).experiment_id


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def git_commit() -> str:
    return _git("rev-parse", "HEAD")


def pipeline_id() -> str:
    """One id for every stage of one pipeline run.

    BIRDCLEF_PIPELINE_ID wins; otherwise the id of the nearest `dvc` process above this one (every
    stage of one `dvc repro` or one experiment is its child); otherwise a fresh id.
    """
    if os.environ.get("BIRDCLEF_PIPELINE_ID"):
        return os.environ["BIRDCLEF_PIPELINE_ID"]
    import psutil

    seed = f"standalone-{os.getpid()}"
    for proc in psutil.Process().parents():
        try:
            cmdline = " ".join(proc.cmdline())
            if "dvc" in Path(proc.exe()).name or "/dvc " in cmdline or cmdline.startswith("dvc "):
                seed = f"{proc.pid}-{proc.create_time()}"
                break
        except psutil.Error:
            continue
    digest = hashlib.sha1(seed.encode()).hexdigest()[:12]
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{exp}-{digest}" if exp else digest


def lock_outs() -> dict[str, str]:
    """path -> md5 of every stage output in dvc.lock (DVC updates a stage's entry as soon as the
    stage is done, so an upstream output's entry is current when the next stage starts)."""
    lock = Path("dvc.lock")
    data = (yaml.safe_load(lock.read_text()) or {}) if lock.is_file() else {}
    return {entry["path"]: entry["md5"] for stage in (data.get("stages") or {}).values()
            for entry in stage.get("outs", []) if "md5" in entry}


def dvc_hashes(paths: list[str]) -> dict[str, str]:
    """Each path's md5 computed by DVC itself (`<md5>.dir` for a folder): the value dvc.lock gets
    for it as a dependency. DVC's state database keeps the hashes of unchanged files, so a folder
    that `dvc repro` has just checked costs a walk of its file list, not a read of its bytes."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    # The working copy the stage runs in (an experiment's temp copy has its own .dvc); no_scm:
    # the hash does not involve git, and a copy without git still hashes. Outside a DVC working
    # copy there is no dvc.lock to agree with, and no state database: nothing is hashed.
    root = nearest_dvc_folder()
    if root is None:
        return {}
    with Repo(str(root), config={"core": {"no_scm": True}}) as repo:
        return {path: build(repo.cache.local, repo.fs.abspath(path), repo.fs, "md5",
                            ignore=repo.dvcignore, dry_run=True)[2].hash_info.value
                for path in paths}


def input_hashes(paths: list[str]) -> dict[str, str]:
    """Content hashes of a stage's inputs, as DVC records them: an upstream stage's output from
    that stage's `outs` in dvc.lock, any other input (the raw data) hashed by DVC here."""
    outs = lock_outs()
    found = {path: outs[path] for path in paths if path in outs}
    rest = [path for path in paths if path not in outs and Path(path).exists()]
    return {**found, **(dvc_hashes(rest) if rest else {})}


# Files that DVC and the stages themselves rewrite: their changes do not make the code dirty.
NOT_SOURCE = (":!dvc.lock", ":!metrics", ":!reports", ":!runs", ":!**/.gitignore")


def git_dirty() -> bool:
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_SOURCE))


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten("", params, out)
    return out


def run_file(stage: str) -> Path:
    return RUNS_DIR / f"{stage}.json"


def write_inactive_run_file(stage: str) -> None:
    """The run file of a stage that had nothing to do (a round beyond pseudo_label.rounds)."""
    write_json(run_file(stage), {"run_id": "", "active": False})


def read_run_file(stage: str) -> dict[str, Any] | None:
    path = run_file(stage)
    return json.loads(path.read_text()) if path.is_file() else None


class StageRun:
    """Handle on an open MLflow run; the only API stages use to log."""

    def __init__(self, mlflow: Any, run: Any, tags: Mapping[str, Any], parent_id: str = "") -> None:
        self._mlflow = mlflow
        self.run = run
        self.run_id: str = run.info.run_id
        self.parent_id = parent_id  # the pipeline run this stage run belongs to
        self.tags = dict(tags)
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self._mlflow.log_metrics(clean, step=step, run_id=self.run_id)

    def log_headline(self, metrics: Mapping[str, float]) -> None:
        """Numbers a user compares between experiments: on this run and on its pipeline run."""
        self.log_metrics(metrics)
        if self.parent_id:
            self.log_metrics_to(self.parent_id, metrics)

    def log_metrics_to(self, run_id: str, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self._mlflow.log_metrics(clean, run_id=run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[start : start + 100]), run_id=self.run_id)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update(tags)
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path, run_id=self.run_id)

    def log_dict(self, data: Any, name: str) -> None:
        self._mlflow.log_dict(data, name, run_id=self.run_id)

    @contextlib.contextmanager
    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> Iterator[StageRun]:
        """A nested run (one per fold), visible on its own in the MLflow UI."""
        experiment_id = self.run.info.experiment_id  # not the Default experiment
        with self._mlflow.start_run(run_name=name, nested=True, experiment_id=experiment_id) as run:
            yield StageRun(self._mlflow, run, {**self.tags, **(tags or {})})


def process_tags() -> dict[str, str]:
    """Which process runs a stage: its host, pid and start time (a reused pid has another)."""
    import psutil

    return {"process.host": socket.gethostname(), "process.pid": str(os.getpid()),
            "process.started": repr(psutil.Process().create_time())}


def process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process these tags name has ended (only a process of this host can be asked)."""
    import psutil

    if tags.get("process.host") != socket.gethostname() or "process.pid" not in tags:
        return False
    try:
        return repr(psutil.Process(int(tags["process.pid"])).create_time()) != tags.get("process.started")
    except psutil.NoSuchProcess:
        return True


def end_dead_runs(client: Any, experiment_id: str, stage: str) -> list[str]:
    """Mark KILLED the runs of `stage` (and its fold runs) still RUNNING whose process is gone: a
    kill -9 or an out-of-memory kill ends a stage without closing its runs."""
    query = f"tags.`birdclef.stage` = '{stage}' and attributes.status = 'RUNNING'"
    dead = [run.info.run_id for run in client.search_runs([experiment_id], filter_string=query)
            if process_gone(run.data.tags)]
    for run_id in dead:
        client.set_terminated(run_id, "KILLED")
    return dead


def pipeline_run_name() -> str:
    """The DVC experiment's name, else the workspace at its commit."""
    return os.environ.get("DVC_EXP_NAME") or f"workspace@{git_commit()[:8] or 'no-commit'}"


def pipeline_parent(mlflow: Any, experiment_id: str, pid: str, tags: Mapping[str, Any]) -> str:
    """The run of this pipeline run (one `dvc repro` or experiment): found by its pipeline id, or
    created (with every param of params.yaml) by the first stage that runs. Stage runs nest under
    it, and it collects the headline metrics, so one row of the MLflow UI holds a change and its
    scores."""
    client = mlflow.MlflowClient()
    query = f"tags.`birdclef.pipeline_id` = '{pid}' and tags.`birdclef.kind` = 'pipeline'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=pipeline_run_name(), tags={
        **{k: str(v) for k, v in tags.items()
           if not k.startswith(("birdclef.stage", "input.", "upstream.", "process."))},
        "birdclef.kind": "pipeline"})
    params_file = Path("params.yaml")
    if params_file.is_file():
        items = list(flatten(yaml.safe_load(params_file.read_text()) or {}).items())
        for start in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=[
                mlflow.entities.Param(k, str(v)[:6000]) for k, v in items[start : start + 100]])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any],
    experiment: str,
    inputs: list[str] | None = None,
    upstream: list[str] | None = None,
) -> Iterator[StageRun]:
    """Open the stage's MLflow run with lineage tags; write runs/<stage>.json when it succeeds."""
    mlflow = _mlflow()
    experiment_id = _experiment_id(mlflow, experiment)
    upstream_runs = {name: read_run_file(name) for name in upstream or []}
    pid = pipeline_id()
    tags: dict[str, Any] = {
        "birdclef.stage": os.environ.get("DVC_STAGE", stage),
        "birdclef.pipeline_id": pid,
        "git.commit": git_commit(),
        "git.dirty": git_dirty(),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
    }
    for path, md5 in input_hashes(inputs or []).items():
        tags[f"input.md5.{path}"] = md5
    for name, info in upstream_runs.items():
        if info:
            tags[f"upstream.{name}.run_id"] = info["run_id"]
    end_dead_runs(mlflow.MlflowClient(), experiment_id, tags["birdclef.stage"])
    tags.update(process_tags())
    parent = pipeline_parent(mlflow, experiment_id, pid, tags)
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, parent_run_id=parent) as run:
        handle = StageRun(mlflow, run, tags, parent)
        handle.log_params(params)
        yield handle
    record = {"run_id": handle.run_id, "experiment_id": experiment_id, "pipeline_id": pid,
              "pipeline_run_id": parent}
    write_json(run_file(stage), record)


@contextlib.contextmanager
def parent_run(name: str, experiment: str, params: Mapping[str, Any]) -> Iterator[StageRun]:
    """A run that is not a stage's (a study): children are added with `child`."""
    mlflow = _mlflow()
    experiment_id = _experiment_id(mlflow, experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        handle = StageRun(mlflow, run, {"birdclef.kind": "study", "git.commit": git_commit()})
        handle.log_params(params)
        yield handle
