"""Beyond one machine, on the tiny profile: a DVC remote round trip, an MLflow tracking server that
two parallel queued experiments log to, and the server's basic authentication."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import sh, stages_run

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise AssertionError(f"mlflow server at {url} did not answer in {seconds} s")


def start_server(
    folder: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen]:
    """`mlflow server` as `make mlflow-server` starts it, on a free port of 127.0.0.1."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"), *extra]
    proc = subprocess.Popen(command, cwd=folder, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return url, proc


def stop(proc: subprocess.Popen) -> None:
    """The server and its workers (one process group)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    url, proc = start_server(tmp_path / "server")
    yield url
    stop(proc)


def test_dvc_remote_round_trip(tiny_repo: Path, tmp_path: Path) -> None:
    """Push every output to a (local-folder) remote; a fresh clone pulls them and reruns nothing."""
    head = sh(tiny_repo, "git", "rev-parse", "HEAD").stdout.strip()
    remote = tmp_path / "remote"
    sh(tiny_repo, "dvc", "remote", "add", "-d", "-f", "store", str(remote))
    try:
        # what earlier tests left in the workspace (forced reruns) is what gets pushed and cloned
        assert stages_run(sh(tiny_repo, "dvc", "repro").stdout) == []  # the state is a reproduced one
        sh(tiny_repo, "git", "add", "-A")
        sh(tiny_repo, "git", "commit", "-qm", "workspace and remote")
        sh(tiny_repo, "dvc", "push")
        clone = tmp_path / "clone"
        sh(tmp_path, "git", "clone", "-q", str(tiny_repo), str(clone))
        sh(clone, "dvc", "pull")
        assert (clone / "models/teacher/fold0.pt").is_file()
        status = sh(clone, "dvc", "status").stdout
        assert stages_run(sh(clone, "dvc", "repro").stdout) == [], status
        assert "up to date" in sh(clone, "dvc", "status").stdout
    finally:
        sh(tiny_repo, "dvc", "remote", "remove", "store")
        sh(tiny_repo, "git", "reset", "-q", head)  # the files stay as they were


def test_two_queued_experiments_in_parallel_log_to_one_server(tiny_repo: Path, server: str) -> None:
    env = {"MLFLOW_TRACKING_URI": server}
    # changes that rerun only `evaluate`: the point is two writers at once, not training
    for name, change in (("qa", "evaluate.bootstrap=200"), ("qb", "evaluate.bootstrap=300")):
        sh(tiny_repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", change, env=env)
    sh(tiny_repo, "dvc", "queue", "start", "-j", "2", env=env)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = sh(tiny_repo, "dvc", "queue", "status", env=env).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, status
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("birdclef-tiny")
    for name in ("qa", "qb"):
        runs = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`dvc.exp_name` = '{name}'")
        stages = {r.data.tags.get("birdclef.stage", "") for r in runs}
        assert "evaluate" in stages, (name, stages)
        pipelines = [r for r in runs if r.data.tags.get("birdclef.kind") == "pipeline"]
        assert len(pipelines) == 1 and pipelines[0].info.run_name == name
    sh(tiny_repo, "dvc", "queue", "stop", check=False)


def test_a_server_with_authentication_refuses_anonymous_requests(
    tiny_repo: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "auth"
    folder.mkdir()
    config = folder / "basic_auth.ini"  # outside the repository, as the README says
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{folder / 'users.db'}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    secret = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-pass-1234",
              "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key"}
    url, proc = start_server(folder, "--app-name", "basic-auth", env=secret)
    try:
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(search, timeout=10)
        assert refused.value.code == 401
        token = base64.b64encode(b"admin:s3cret-pass-1234").decode()
        request = urllib.request.Request(search, headers={"Authorization": f"Basic {token}"})
        assert urllib.request.urlopen(request, timeout=10).status == 200
        env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin",
               "MLFLOW_TRACKING_PASSWORD": "s3cret-pass-1234"}
        sh(tiny_repo, "dvc", "exp", "run", "--temp", "-n", "authed", "-f", "-s", "sample", env=env)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=url)
        os.environ.update({k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"})
        try:
            runs = client.search_runs([client.get_experiment_by_name("birdclef-tiny").experiment_id],
                                      filter_string="tags.`dvc.exp_name` = 'authed'")
        finally:
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(key, None)
        assert any(r.info.run_name == "sample" for r in runs)
    finally:
        stop(proc)
