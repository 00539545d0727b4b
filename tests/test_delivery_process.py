"""The delivery process: a kernel's records are applied to MLflow by a child process (real ``%%track`` cells in a
real IPython shell, a real sqlite store), which is started again when it dies, never outlives its parent, and
is not needed for tracking to work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

TRIVIAL = "%%track\nalpha = 0.5\nacc = alpha * 2"


def _runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def _wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_tracked_cells_are_applied_by_a_child_process(shell, client, request) -> None:
    import nbmlops
    from nbmlops.backend.delivery_process import delivery_process

    for _ in range(3):
        assert shell.run_cell(TRIVIAL, store_history=True).success
    nbmlops.flush(120)
    child = delivery_process().pid
    assert child is not None and child != os.getpid()
    assert psutil.Process(child).ppid() == os.getpid()
    runs = _runs(client, request.node.name[:200])
    assert len(runs) == 3
    assert all(run.info.status == "FINISHED" and run.data.metrics["acc"] == 1.0 for run in runs)
    assert all({"code/cell.py", "code/history.json"} <= _artifact_paths(client, run.info.run_id) for run in runs)


def _artifact_paths(client, run_id: str) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, "code")}


def test_a_killed_delivery_process_is_started_again_and_nothing_is_delivered_twice(shell, client, request) -> None:
    """SIGKILL while it is stopped with requests in flight: the writer retries them carefully through a new
    child; every run is in the store exactly once, finished."""
    import nbmlops
    from nbmlops.backend.delivery_process import delivery_process

    assert shell.run_cell(TRIVIAL, store_history=True).success
    nbmlops.flush(120)
    first = delivery_process().pid
    assert first is not None
    os.kill(first, signal.SIGSTOP)  # requests now wait in its pipe, unanswered
    try:
        for _ in range(5):
            assert shell.run_cell(TRIVIAL, store_history=True).success
        time.sleep(0.3)  # the writer has sent a request the stopped child holds
    finally:
        os.kill(first, signal.SIGKILL)
    nbmlops.flush(120)
    second = delivery_process().pid
    assert second is not None and second != first
    runs = _runs(client, request.node.name[:200])
    keys = [run.data.tags["nbmlops.run_key"] for run in runs]
    assert len(keys) == 6 and len(set(keys)) == 6, keys
    assert all(run.info.status == "FINISHED" for run in runs)


CHILD = """
import os, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "nbmlops")
import nbmlops
from nbmlops.backend.delivery_process import delivery_process
assert shell.run_cell("%%track\\nalpha = 0.5", store_history=True).success
nbmlops.flush(120)
print("delivery process:", delivery_process().pid, flush=True)
time.sleep(600)
"""


def test_the_delivery_process_ends_with_its_parent(project: Path, store_uri: str) -> None:
    """A kernel killed with SIGKILL takes its delivery process with it (so no delivery goes on behind the
    recovery of its journal by another process)."""
    kernel = subprocess.Popen([sys.executable, "-c", CHILD], cwd=project, stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout is not None
        line = ""
        while not line.startswith("delivery process:"):
            line = kernel.stdout.readline()
            assert line, "the kernel ended early"
        child = int(line.split(":")[1])
        assert psutil.Process(child).ppid() == kernel.pid
    finally:
        kernel.kill()
        kernel.wait(timeout=60)
        if kernel.stdout is not None:
            kernel.stdout.close()
    assert _wait_until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE)


def test_without_a_delivery_process_records_are_delivered_from_the_kernel(
    shell, client, request, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A process that cannot start a child (here: the interpreter path is gone) still tracks: after two
    failed starts, one line says so and delivery stays in this process."""
    import nbmlops
    from nbmlops.backend import delivery_process as module

    fresh = module.DeliveryProcess()
    monkeypatch.setattr(module, "_process", fresh)
    monkeypatch.setattr(module, "_process_pid", os.getpid())
    monkeypatch.setattr(sys, "executable", str(Path(request.config.rootpath, "no-such-python")))
    for _ in range(2):
        assert shell.run_cell(TRIVIAL, store_history=True).success
    nbmlops.flush(120)
    assert fresh.pid is None
    runs = _runs(client, request.node.name[:200])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    err = capfd.readouterr().err
    assert err.count("the delivery process could not start") == 1, err
    assert "Traceback" not in err


def test_errors_in_the_delivery_process_come_back_as_nbmlops_errors_without_credentials(
    project: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A store the child cannot reach raises, here, the StoreUnavailableError it raised there (class,
    redacted URI, reason), within this process's budget (sent to the child with the request)."""
    from nbmlops.backend.delivery_process import DeliveryProcess
    from nbmlops.exceptions import StoreUnavailableError

    monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", "1")
    process = DeliveryProcess()
    try:
        store = process.open("http://alice:s3cr3t-pass@127.0.0.1:9/", None)
        with pytest.raises(StoreUnavailableError) as caught:
            store.experiment_id("anything")
        assert process.pid is not None  # an error of the store, not of the child
    finally:
        process.close()
    assert caught.value.uri == "http://***@127.0.0.1:9/"
    assert caught.value.reason and "s3cr3t-pass" not in str(caught.value)
    assert "s3cr3t-pass" not in capfd.readouterr().err
