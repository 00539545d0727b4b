"""What delivering a tracked run costs the tracking store: requests to a real ``mlflow server`` counted by a
loopback proxy, and what each run stores (a session's environment once, not once per run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import mlflow_server
from tests.reliability.faults import FaultProxy

TRIVIAL = "%%track\nalpha = 0.5\nacc = alpha * 2"
#: the issue's bound for a trivial tracked run against a tracking server (about 20 before)
MAX_REQUESTS_PER_RUN = 6


def _runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return sorted(runs, key=lambda run: run.info.start_time)


def _files(client, run_id: str, folder: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, folder):
        found |= _files(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def test_environment_is_stored_once_per_session_and_read_from_every_run(shell, client, store_uri, request) -> None:
    import nbmlops
    from nbmlops.runner.causes import environment_differences
    from nbmlops.tracking.query import artifact_text
    from nbmlops.tracking.search import read_artifact_text, row_of

    for _ in range(3):
        assert shell.run_cell(TRIVIAL, store_history=True).success
    nbmlops.flush(120)
    first, *later = _runs(client, request.node.name[:200])
    assert len(later) == 2 and all(run.info.status == "FINISHED" for run in [first, *later])
    environment = {"environment/python.json", "environment/requirements.txt"}
    assert environment <= _files(client, first.info.run_id)
    requirements = artifact_text(store_uri, first.info.run_id, "environment/requirements.txt")
    assert requirements and any(line.startswith("mlflow==") for line in requirements.splitlines())
    for run in later:
        assert not environment & _files(client, run.info.run_id)  # stored once: the first run holds it
        assert run.data.tags["nbmlops.stored_in.environment"] == first.data.tags["nbmlops.run_key"]
        assert run.data.tags["nbmlops.python"] == first.data.tags["nbmlops.python"]
        # every reader gets it from the run that holds it: reproduce's causes, the dashboard's compare view
        assert artifact_text(store_uri, run.info.run_id, "environment/requirements.txt") == requirements
        python = read_artifact_text(store_uri, run.info.run_id, "environment/python.json")
        assert python is not None and json.loads(python)["python_version"] == first.data.tags["nbmlops.python"]
        assert environment_differences(store_uri, row_of(first), store_uri, row_of(run)) == []
        assert {"code/cell.py", "code/history.json"} <= _files(client, run.info.run_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with mlflow_server(tmp_path_factory.mktemp("delivery-cost-server")) as uri:
        yield uri


def test_trivial_tracked_run_makes_at_most_six_requests_to_a_tracking_server(
    shell, server: str, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    from mlflow import MlflowClient

    import nbmlops

    with FaultProxy(server) as proxy:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", proxy.uri)
        monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT")  # the server stores the artifacts
        for _ in range(2):  # the session's first run: the experiment is looked up, the environment stored
            assert shell.run_cell(TRIVIAL, store_history=True).success
            nbmlops.flush(120)
        counts = []
        for _ in range(3):
            before = len(proxy.seen)
            assert shell.run_cell(TRIVIAL, store_history=True).success
            nbmlops.flush(120)
            counts.append([f"{seen.method} {seen.path.split('?')[0]}" for seen in proxy.seen[before:]])
        assert all(seen.action == "forwarded" for seen in proxy.seen)
    runs = _runs(MlflowClient(server), request.node.name[:200])
    assert len(runs) == 5 and all(run.info.status == "FINISHED" for run in runs)
    for run in runs:  # what was delivered in those few requests: the whole record of each run
        assert run.data.params == {"alpha": "0.5"} and run.data.metrics == {"acc": 1.0}
        assert {"code/cell.py", "code/history.json"} <= _files(MlflowClient(server), run.info.run_id)
    assert max(len(requests) for requests in counts) <= MAX_REQUESTS_PER_RUN, "\n".join(map(str, counts))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_later_runs_in_a_repository_ask_git_only_its_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbmlops.tracking.context import git_state

    real_git = shutil.which("git")
    root = tmp_path / "project"
    root.mkdir()
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", "https://example.com/x.git"]):
        subprocess.run([real_git, "-C", str(root), *args], check=True)
    (root / "train.py").write_text("lr = 0.1\n")
    subprocess.run([real_git, "-C", str(root), "add", "train.py"], check=True)
    subprocess.run([real_git, "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"],
                   check=True)
    log = tmp_path / "git.log"
    shim = tmp_path / "bin" / "git"  # the real git, each call logged by its first argument after -C <dir>
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$3" >> {log}\nexec {real_git} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    first = git_state(root)
    assert first is not None and first.remote == "https://example.com/x.git" and first.root == str(root)
    log.write_text("")
    for _ in range(3):
        assert git_state(root) == first
    assert log.read_text().split() == ["status"] * 3
    subprocess.run([real_git, "-C", str(root), "remote", "set-url", "origin", "https://example.com/y.git"], check=True)
    log.write_text("")
    changed = git_state(root)  # the repository's config changed: asked again (its remote read from the file)
    assert changed is not None and changed.remote == "https://example.com/y.git"
    assert sorted(log.read_text().split()) == ["rev-parse", "status"]


def test_consecutive_tracked_cells_share_one_heartbeat_thread(shell) -> None:
    import nbmlops

    def beaters() -> set[int]:
        return {thread.ident or 0 for thread in threading.enumerate() if thread.name == "nbmlops-heartbeat"}

    assert shell.run_cell(TRIVIAL, store_history=True).success
    first = beaters()
    for _ in range(3):
        assert shell.run_cell(TRIVIAL, store_history=True).success
        assert beaters() == first and len(first) == 1  # the same thread: none ended, none started
    nbmlops.flush(120)
