"""Runs from a dead machine (issue 11, item 8): a run whose process died on another host does not stay RUNNING.

Every process beats (tag ``nbmlops.heartbeat``) for its open runs; ``nbmlops runs reap`` and a new session fail
a RUNNING run of another host whose last beat is older than ``heartbeat_timeout`` (``nbmlops.failure=
heartbeat_lost``), and leave a run whose process still beats alone. Everything is real: an ``mlflow server`` on
127.0.0.1, tracking processes in their own project folders (each one a machine with its own journal) that tag
their runs with another host name, as a process on that host would, SIGKILL, the ``nbmlops`` CLI.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from mlflow import MlflowClient
from nbformat.v4 import new_code_cell, new_notebook

from tests.reliability.faults import Fault, FaultProxy, clean_env, nbmlops_cli, project_folder

HEARTBEAT = "nbmlops.heartbeat"
#: the timeout the reaping side is given: ten beats of the live process (interval 1 s), room for a loaded machine
TIMEOUT_S = 15.0

#: a process on ``sys.argv[1]`` (the host it tags) that opens a run, says its key, then waits on stdin:
#: the first line ends the run, the second ends the process
TRACKING_SCRIPT = """
import sys
import nbmlops
host = sys.argv[1]
with nbmlops.track(host, tags={"nbmlops.host": host}) as run:
    nbmlops.flush(120)
    print(run.key, flush=True)
    sys.stdin.readline()
nbmlops.flush(120)
print("ended", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def client(server: str) -> MlflowClient:
    return MlflowClient(server)


def machine(base: Path, name: str) -> Path:
    """A project folder standing for one machine: its own journal, out of every other's reach."""
    return project_folder(base / name)


class Tracker:
    """A real process tracking one run, started on ``folder`` as if on ``host``."""

    def __init__(self, folder: Path, uri: str, host: str, experiment: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRACKING_SCRIPT, host],
            cwd=folder,
            env=clean_env(NBMLOPS_TRACKING_URI=uri, NBMLOPS_EXPERIMENT=experiment, NBMLOPS_CAPTURE="params,metrics",
                          **env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.key = self.process.stdout.readline().strip()
        assert len(self.key) == 32, (self.key, self.process.stderr.read() if self.process.poll() is not None else "")

    def send_line(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)


StartTracker = Callable[..., Tracker]


@pytest.fixture
def start_tracker(server: str, tmp_path: Path) -> Iterator[StartTracker]:
    """``start_tracker(machine_name, host, experiment, uri=server, **env)``: a :class:`Tracker` on a machine (a
    folder below ``tmp_path``) of its own; every one started is ended with the test."""
    started: list[Tracker] = []

    def start(name: str, host: str, experiment: str, uri: str | None = None, **env: str) -> Tracker:
        started.append(Tracker(machine(tmp_path, name), uri or server, host, experiment, **env))
        return started[-1]

    yield start
    for tracker in started:
        tracker.close()


def killed_tracker(start_tracker: StartTracker, name: str, host: str, experiment: str) -> Tracker:
    """A tracker that beat every second until it was SIGKILLed, its run left RUNNING."""
    tracker = start_tracker(name, host, experiment, NBMLOPS_HEARTBEAT_INTERVAL="1")
    tracker.kill()
    return tracker


def run_of(client: MlflowClient, experiment: str, key: str) -> Any:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`nbmlops.run_key` = '{key}'")
    assert len(runs) == 1, runs
    return runs[0]


def last_sign_of_life(run: Any) -> float:
    return float(run.data.tags.get(HEARTBEAT, run.info.start_time / 1000))


def wait_until_silent(client: MlflowClient, experiment: str, key: str, seconds: float) -> None:
    """Sleep until the run has not beaten for more than ``seconds`` (its process is dead: no beat comes)."""
    silent_since = last_sign_of_life(run_of(client, experiment, key))
    time.sleep(max(0.0, silent_since + seconds + 1 - time.time()))


def wait_for_beats(client: MlflowClient, experiment: str, key: str, count: int, timeout: float = 90) -> list[float]:
    """The distinct heartbeat values the run shows in the store, once it has shown ``count`` of them."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only beats {seen} in {timeout} s"
        value = run_of(client, experiment, key).data.tags.get(HEARTBEAT)
        if value is not None and (not seen or float(value) != seen[-1]):
            seen.append(float(value))
        time.sleep(0.2)
    return seen


def reap_cli(folder: Path, uri: str, timeout: float) -> subprocess.CompletedProcess:
    return nbmlops_cli(
        folder, "runs", "reap", env=clean_env(NBMLOPS_TRACKING_URI=uri, NBMLOPS_HEARTBEAT_TIMEOUT=str(timeout)),
        timeout=180,
    )


def test_run_killed_on_another_host_is_failed_by_runs_reap_and_a_beating_run_stays_running(
    server: str, client: MlflowClient, start_tracker: StartTracker, tmp_path: Path
) -> None:
    experiment = "dead-machine"
    dead = killed_tracker(start_tracker, "host-a", "host-a.example", experiment)
    live = start_tracker("host-b", "host-b.example", experiment, NBMLOPS_HEARTBEAT_INTERVAL="1")

    beats = wait_for_beats(client, experiment, live.key, 3)
    assert beats == sorted(beats) and beats[-1] > beats[0] >= run_of(client, experiment, live.key).info.start_time / 1000 - 1

    here = machine(tmp_path, "operator")
    patient = reap_cli(here, server, timeout=600)  # the dead run has been silent for less than that: left alone
    assert patient.returncode == 0, patient.stderr
    assert run_of(client, experiment, dead.key).info.status == "RUNNING"

    wait_until_silent(client, experiment, dead.key, TIMEOUT_S)
    reaped = reap_cli(here, server, timeout=TIMEOUT_S)
    assert reaped.returncode == 0, reaped.stderr
    failed = run_of(client, experiment, dead.key)
    assert failed.info.status == "FAILED" and failed.info.end_time is not None
    assert failed.data.tags["nbmlops.failure"] == "heartbeat_lost"
    assert "host-a.example" in failed.data.tags["nbmlops.failure_reason"]
    line = next(line for line in reaped.stdout.splitlines() if failed.info.run_id in line)
    assert "heartbeat_lost" in line and "host-a.example" in line and f"heartbeat_timeout {TIMEOUT_S:g} s" in line
    assert "marked 1 run(s) of dead processes FAILED" in reaped.stdout, reaped.stdout

    alive = run_of(client, experiment, live.key)
    assert alive.info.status == "RUNNING" and "nbmlops.failure" not in alive.data.tags
    assert float(alive.data.tags[HEARTBEAT]) > beats[-1]  # it kept beating all along

    live.send_line()  # the live run ends; its process stays a while longer
    assert live.process.stdout.readline().strip() == "ended"
    time.sleep(4)  # four beat intervals: a beat after the end would show as a later heartbeat
    ended = run_of(client, experiment, live.key)
    assert ended.info.status == "FINISHED"
    assert float(ended.data.tags[HEARTBEAT]) <= ended.info.end_time / 1000
    live.send_line()
    assert live.process.wait(timeout=60) == 0


def test_new_session_fails_a_silent_run_of_another_host_by_itself(
    server: str, client: MlflowClient, start_tracker: StartTracker, tmp_path: Path
) -> None:
    experiment = "dead-machine-found-by-a-session"
    dead = killed_tracker(start_tracker, "host-c", "host-c.example", experiment)
    wait_until_silent(client, experiment, dead.key, TIMEOUT_S)
    assert run_of(client, experiment, dead.key).info.status == "RUNNING"

    # a process of this host that died a moment ago: its records may still be on their way; its project
    # ("another-project") is out of the newcomer's reach
    just_killed = killed_tracker(start_tracker, "another-project", socket.gethostname(), experiment)

    # a session of this host that starts tracking: nothing else asked it to look for dead runs
    newcomer = start_tracker("workstation", socket.gethostname(), experiment, NBMLOPS_HEARTBEAT_TIMEOUT=str(TIMEOUT_S))
    here = tmp_path / "workstation"
    deadline = time.monotonic() + 120
    while run_of(client, experiment, dead.key).info.status == "RUNNING":
        assert time.monotonic() < deadline, "the new session did not reap the silent run"
        time.sleep(0.5)
    failed = run_of(client, experiment, dead.key)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["nbmlops.failure"] == "heartbeat_lost"
    assert "host-c.example" in failed.data.tags["nbmlops.failure_reason"]
    assert run_of(client, experiment, newcomer.key).info.status == "RUNNING"  # its own run, alive here

    newcomer.send_line()
    newcomer.send_line()
    _, err = newcomer.process.communicate(timeout=60)
    assert newcomer.process.returncode == 0, err
    assert "marked 1 run(s) of dead processes or machines FAILED (heartbeat_lost)" in err, err
    # the session's reap is patient with a run of this host whose process just died ...
    assert run_of(client, experiment, just_killed.key).info.status == "RUNNING"
    # ... `nbmlops runs reap` is not: the process is gone (pid and start time), so is its run
    reaped = reap_cli(here, server, timeout=600)
    assert reaped.returncode == 0, reaped.stderr
    gone = run_of(client, experiment, just_killed.key)
    assert gone.info.status == "FAILED" and gone.data.tags["nbmlops.failure"] == "kernel_died"
    assert f"process {just_killed.process.pid} is gone" in gone.data.tags["nbmlops.failure_reason"]
    assert f"FAILED {gone.info.run_id}" in reaped.stdout and "kernel_died" in reaped.stdout, reaped.stdout


def test_run_reaped_while_its_machine_was_cut_off_takes_its_own_end_once_delivered(
    server: str, client: MlflowClient, start_tracker: StartTracker, tmp_path: Path
) -> None:
    """The reap is a verdict from silence: late beats leave it FAILED, the run's own end replaces it."""
    experiment = "cut-off-machine"
    with FaultProxy(server) as link:  # the cut-off machine reaches the store through this link only
        cut_off = start_tracker("host-d", "host-d.example", experiment, uri=link.uri, NBMLOPS_HEARTBEAT_INTERVAL="1")
        wait_for_beats(client, experiment, cut_off.key, 1)
        link.add(Fault("status", status=503))
        wait_until_silent(client, experiment, cut_off.key, TIMEOUT_S)
        reaped = reap_cli(machine(tmp_path, "operator"), server, timeout=TIMEOUT_S)
        assert reaped.returncode == 0, reaped.stderr
        failed = run_of(client, experiment, cut_off.key)
        assert failed.info.status == "FAILED" and failed.data.tags["nbmlops.failure"] == "heartbeat_lost"

        link.clear()  # the machine reaches the store again: its waiting beats, then new ones, are delivered
        deadline = time.monotonic() + 120
        while last_sign_of_life(run_of(client, experiment, cut_off.key)) <= failed.info.end_time / 1000:
            assert time.monotonic() < deadline, "the cut-off machine's beats never arrived"
            time.sleep(0.5)
        assert run_of(client, experiment, cut_off.key).info.status == "FAILED"  # a beat does not revive it

        cut_off.send_line()
        assert cut_off.process.stdout.readline().strip() == "ended"
        ended = run_of(client, experiment, cut_off.key)
        assert ended.info.status == "FINISHED"  # what its process said, delivered late, wins
        assert ended.data.tags["nbmlops.failure"] == "heartbeat_lost"  # the trace that it was reaped meanwhile
        cut_off.send_line()
        assert cut_off.process.wait(timeout=60) == 0


def test_headless_run_beats_through_its_runner(server: str, client: MlflowClient, tmp_path: Path) -> None:
    folder = machine(tmp_path, "ci")
    nb = new_notebook()
    nb.cells += [new_code_cell("%load_ext nbmlops"), new_code_cell("%%track --name nap\nimport time\ntime.sleep(4)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "slow.ipynb")
    result = nbmlops_cli(
        folder, "run", "slow.ipynb", "--no-progress",
        env=clean_env(NBMLOPS_TRACKING_URI=server, NBMLOPS_EXPERIMENT="headless-beats", NBMLOPS_HEARTBEAT_INTERVAL="1"),
    )
    assert result.returncode == 0, result.stderr
    found = client.get_experiment_by_name("headless-beats")
    runs = {run.info.run_name: run for run in client.search_runs([found.experiment_id])}
    assert set(runs) == {"slow", "nap"}, set(runs)
    for run in runs.values():  # the kernel's cell run and the notebook's run both beat, through the journal
        assert run.info.status == "FINISHED"
        beat = float(run.data.tags[HEARTBEAT])
        assert run.info.start_time / 1000 - 1 <= beat <= run.info.end_time / 1000
