"""Item 7 of the trust issue: Dask runs a combination again when the worker that ran it dies.

A real ``dask scheduler`` and two real ``dask worker`` processes (no nanny: a killed worker stays dead, as a
lost machine does), each in a directory of its own as on two machines, run a six-combination sweep that
tracks to a real ``mlflow server``. The first notebook that worker ``a`` runs writes a flag file (its
kernel's pid and its ``alpha``) and sleeps; the test SIGKILLs that kernel's parent, worker ``a``, and Dask
runs the combination again on worker ``b``. One combination must give one live run: the first attempt
KILLED naming its successor, the sweep counting the combination once and not as failed. The dead worker's
journal is then delivered late with ``nbmlops sync`` (which marks a run its process never ended FAILED,
kernel_died): the first attempt must end, or stay, KILLED.

Two cases: the first attempt's run was in the store when its worker died (the sweep marks it), and it was
not (worker ``a`` could not reach the store: its HTTP proxy is a closed port), so that the run reaches the
store only with the late sync, after the sweep has ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmlops.journal import list_journals
from nbmlops.runner.ranking import SweepResult, format_table
from nbmlops.runner.sweep import run_sweep
from tests.conftest import free_port, mlflow_server, runs_of, stop_group
from tests.test_runner import notebook

ALPHAS = [1, 2, 3, 4, 5, 6]

# the first notebook run on machine a (its worker folder, where its journals are) tells the test who runs it,
# then waits to be killed
WAIT_TO_BE_KILLED = """\
import os, pathlib, time
if os.environ.get("NBMLOPS_WORKER_DIR") == first_on and not os.path.exists(flag):
    pathlib.Path(flag + ".tmp").write_text(f"{os.getpid()} {alpha}")
    os.replace(flag + ".tmp", flag)
    time.sleep(600)"""


def _stat(pid: int) -> list[str]:
    """State, parent pid, ... of process ``pid`` (from /proc; empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _wait_for_the_orphaned_kernel(pid: int) -> None:
    """The killed worker's kernel notices its parent is gone and exits (ipykernel's parent poller);
    SIGKILL it if it lingers."""
    started = _stat(pid)[19:20]
    deadline = time.monotonic() + 60
    while (stat := _stat(pid)) and stat[0] != "Z" and stat[19:20] == started:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: dict[str, tuple[Path, dict[str, str]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A ``dask scheduler`` and, per entry ``name: (directory, environment)`` of ``workers``, one
    ``dask worker`` (one thread, no nanny) started there; yields the scheduler's address and the worker
    processes by name."""
    from distributed import Client

    scheduler_file = folder / "scheduler.json"
    started: list[subprocess.Popen] = []
    with contextlib.ExitStack() as logs:

        def start(args: list[str], cwd: Path, env: dict[str, str], log: str) -> subprocess.Popen:
            out = logs.enter_context(open(folder / log, "w"))
            started.append(subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True))
            return started[-1]

        try:
            start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", str(scheduler_file)], folder, dict(os.environ), "scheduler.log")
            deadline = time.monotonic() + 120
            while not scheduler_file.exists():
                assert time.monotonic() < deadline, (folder / "scheduler.log").read_text()
                time.sleep(0.2)
            address = json.loads(scheduler_file.read_text())["address"]
            processes = {
                name: start(["distributed.cli.dask_worker", address, "--no-nanny", "--nthreads", "1",
                             "--no-dashboard", "--name", name], cwd, env, f"worker-{name}.log")
                for name, (cwd, env) in workers.items()
            }
            with Client(address, timeout=60) as client:
                client.wait_for_workers(len(workers), timeout=120)
            yield address, processes
        finally:
            for process in reversed(started):
                stop_group(process, grace=10)


def _sweep_killing_a_worker(
    project: Path, machines: dict[str, Path], uri: str, experiment: str, a_reaches_the_store: bool
) -> tuple[SweepResult, dict[str, int]]:
    """Run the sweep on the cluster, SIGKILL worker ``a`` during its first notebook; returns the result and
    the killed worker's pid, its kernel's pid and the index of the combination it was running."""
    from mlflow import MlflowClient

    path = notebook(
        project / "train.ipynb",
        "%load_ext nbmlops",
        WAIT_TO_BE_KILLED,
        "%%track --name fit\nscore = alpha * 10",
        parameters="alpha = 1\nflag = ''\nfirst_on = ''",
    )
    flag = project / "first-attempt"
    env = {**os.environ, "NBMLOPS_TRACKING_URI": uri}
    env_a = env if a_reaches_the_store else {**env, "http_proxy": f"http://127.0.0.1:{free_port()}",
                                              "HTTP_PROXY": f"http://127.0.0.1:{free_port()}"}
    homes = {name: {"NBMLOPS_WORKER_DIR": str(machines[name].resolve())} for name in machines}  # as on two machines
    with dask_cluster(project, {"a": (machines["a"], {**env_a, **homes["a"]}), "b": (machines["b"], {**env, **homes["b"]})}
                      ) as (address, workers):
        killed: dict[str, int] = {}

        def kill_worker_a_during_its_first_notebook() -> None:
            deadline = time.monotonic() + 600
            while not flag.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            kernel, alpha = map(int, flag.read_text().split())
            worker = int(_stat(kernel)[1])
            if worker != workers["a"].pid:  # not the process the test started: kill nothing, the test fails
                return
            if a_reaches_the_store:  # the first attempt's run is RUNNING in the store before its worker dies
                server = MlflowClient(uri)
                while time.monotonic() < deadline and not server.search_runs(
                    [server.get_experiment_by_name(experiment).experiment_id],
                    f"tags.`nbmlops.pid` = '{worker}' and tags.`nbmlops.kind` = 'notebook'"
                    " and attributes.status = 'RUNNING'",
                ):
                    time.sleep(0.2)
            os.kill(worker, signal.SIGKILL)
            killed.update(worker=worker, kernel=kernel, index=ALPHAS.index(alpha), survivor=workers["b"].pid)

        killer = threading.Thread(target=kill_worker_a_during_its_first_notebook, daemon=True)
        killer.start()
        result = run_sweep(
            path, {"alpha": ALPHAS}, fixed={"flag": str(flag), "first_on": str(machines["a"].resolve())},
            dask=address, objective="score", progress=False,
        )
        killer.join(timeout=60)
        assert killed, "worker a was not the process running the flagged notebook"
        assert workers["a"].wait(timeout=30) == -signal.SIGKILL
    return result, killed


def _sync_the_dead_workers_journal(machine: Path, uri: str, kernel: int) -> None:
    """``nbmlops sync`` on machine a, once its orphaned kernel is gone: the late delivery."""
    journals = machine / ".nbmlops" / "journal"
    assert list_journals(journals)  # the first attempt, never ended, waits there
    _wait_for_the_orphaned_kernel(kernel)
    synced = subprocess.run(
        [str(Path(sys.executable).with_name("nbmlops")), "sync"], cwd=machine,
        env={**os.environ, "NBMLOPS_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert not list_journals(journals), synced.stdout + synced.stderr


def _counted_once(result: SweepResult) -> None:
    """The sweep's result and table: six combinations, each once, none failed."""
    assert sorted(r.index for r in result.runs) == list(range(len(ALPHAS)))
    assert [r.status for r in result.runs] == ["FINISHED"] * len(ALPHAS) and result.exit_code == 0
    assert result.best.index == 5 and result.best.metrics == {"score": 60}
    table = format_table(result).splitlines()
    assert table[0].startswith("sweep train.ipynb: 6 run(s), 0 failed")
    assert not any(line.startswith("failed:") for line in table)
    rows = [line.removeprefix("*").split() for line in table[2:8]]
    assert sorted(row[0] for row in rows) == [str(i) for i in range(len(ALPHAS))]
    assert all(row[1] == "FINISHED" for row in rows)


def _one_live_run_per_combination(server: Any, experiment: str, result: SweepResult, killed: dict[str, int]) -> Any:
    """Seven notebook runs: one live (FINISHED) per combination, the ones the result names; the first attempt
    KILLED naming its successor, which carries its attempt number and the run it supersedes. Returns the
    first attempt."""
    runs = {run.info.run_id: run for run in runs_of(server, experiment) if run.data.tags["nbmlops.kind"] == "notebook"}
    assert len(runs) == 7, sorted((r.data.tags["nbmlops.sweep.index"], r.info.status) for r in runs.values())
    live = [run for run in runs.values() if run.info.status != "KILLED"]
    assert sorted(run.data.tags["nbmlops.sweep.index"] for run in live) == [str(i) for i in range(len(ALPHAS))]
    assert {run.info.run_id for run in live} == {r.run_id for r in result.runs}
    assert all(run.info.status == "FINISHED" for run in live)
    (first,) = [run for run in runs.values() if run.info.status == "KILLED"]
    successor = runs[first.data.tags["nbmlops.superseded_by"]]
    assert successor.info.run_id == next(r.run_id for r in result.runs if r.index == killed["index"])
    assert first.data.tags["nbmlops.sweep.index"] == successor.data.tags["nbmlops.sweep.index"] == str(killed["index"])
    assert (first.data.tags["nbmlops.attempt"], successor.data.tags["nbmlops.attempt"]) == ("1", "2")
    assert successor.data.tags["nbmlops.supersedes"] == first.info.run_id
    assert first.data.tags["nbmlops.pid"] == str(killed["worker"])
    assert successor.data.tags["nbmlops.pid"] == str(killed["survivor"])
    return first


@pytest.fixture
def machines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two directories, each a worker's folder (so each worker has its own journal), as on two machines."""
    found = {name: tmp_path_factory.mktemp(f"machine-{name}") for name in ("a", "b")}
    for folder in found.values():
        (folder / ".nbmlops").mkdir()
    return found


@pytest.fixture
def tracking_server(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real ``mlflow server`` the project, hence the sweep and its workers, tracks to (it stores the artifacts
    too); yields its URI."""
    monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT")
    with mlflow_server(project / "server") as uri:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        yield uri


def test_retry_after_a_killed_worker_supersedes_the_first_attempt_and_the_sweep_counts_it_once(
    project: Path, machines: dict[str, Path], tracking_server: str, request: pytest.FixtureRequest
):
    from mlflow import MlflowClient

    experiment, uri = request.node.name, tracking_server
    result, killed = _sweep_killing_a_worker(project, machines, uri, experiment, a_reaches_the_store=True)
    _counted_once(result)
    retried = next(r for r in result.runs if r.index == killed["index"])
    assert retried.attempt == 2 and {r.attempt for r in result.runs if r is not retried} == {1}
    assert any(line.startswith(f"retried: #{killed['index']} alpha=") and retried.run_id in line
               for line in format_table(result).splitlines())
    server = MlflowClient(uri)
    first = _one_live_run_per_combination(server, experiment, result, killed)
    assert "nbmlops.failure" not in first.data.tags  # its journal has not been delivered yet
    sweep = server.get_run(result.run_id).data.tags
    assert (sweep["nbmlops.sweep.finished"], sweep["nbmlops.sweep.failed"], sweep["nbmlops.sweep.superseded"]) == (
        "6", "0", "1")

    # the late delivery of the dead worker's journal ends the never-ended attempt FAILED: not over the mark
    _sync_the_dead_workers_journal(machines["a"], uri, killed["kernel"])
    first = _one_live_run_per_combination(server, experiment, result, killed)
    assert first.data.tags["nbmlops.failure"] == "kernel_died"  # delivered, and the attempt stays KILLED


def test_first_attempt_that_reaches_the_store_only_after_the_sweep_ends_up_superseded(
    project: Path, machines: dict[str, Path], tracking_server: str, request: pytest.FixtureRequest
):
    from mlflow import MlflowClient

    experiment, uri = request.node.name, tracking_server
    result, killed = _sweep_killing_a_worker(project, machines, uri, experiment, a_reaches_the_store=False)
    _counted_once(result)
    assert {r.attempt for r in result.runs} == {1}  # the sweep never saw the first attempt
    server = MlflowClient(uri)
    notebooks = [run for run in runs_of(server, experiment) if run.data.tags["nbmlops.kind"] == "notebook"]
    assert sorted(run.data.tags["nbmlops.sweep.index"] for run in notebooks) == [str(i) for i in range(6)]

    _sync_the_dead_workers_journal(machines["a"], uri, killed["kernel"])
    first = _one_live_run_per_combination(server, experiment, result, killed)
    assert first.data.tags["nbmlops.failure"] == "kernel_died"
