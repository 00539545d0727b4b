"""Group commit and crashes: a process SIGKILLed while its writer delivers to a sqlite store (commits with
``synchronous=NORMAL``, the WAL fsync'd once per batch before the cursor moves), then ``nbmlops sync``, leaves
every run in the store exactly once, whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUNS = 300
CHILD = """
import sys, time
import nbmlops
for i in range({runs}):
    with nbmlops.track(f"r{{i}}", experiment="crash-mid-delivery"):
        nbmlops.log_param("i", i)
        nbmlops.log_metric("m", float(i))
print("journaled", flush=True)
time.sleep(600)
"""


def _env(store: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JPY_"))}
    env["NBMLOPS_TRACKING_URI"] = store
    return env


def _cursor_offset(journal_dir: Path) -> tuple[int, int] | None:
    """(cursor offset, journal size) of the one journal, once its cursor exists."""
    for cursor in journal_dir.glob("*.cursor"):
        journal = cursor.with_suffix(".journal")
        try:
            return json.loads(cursor.read_text())["offset"], journal.stat().st_size
        except (OSError, ValueError, KeyError):
            return None
    return None


def test_process_killed_mid_delivery_then_sync_delivers_every_run_exactly_once(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'crash'\n")
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = _env(store)
    journal_dir = project / ".nbmlops" / "journal"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(runs=RUNS)], cwd=project, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        seen = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None:
            seen = _cursor_offset(journal_dir)
            if seen is not None and 0 < seen[0] < seen[1]:
                break  # some records delivered, more waiting: the writer is at work
            time.sleep(0.005)
        assert seen is not None and 0 < seen[0] < seen[1], seen
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
        assert child.stdout is not None
        child.stdout.close()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("crash-mid-delivery")
    assert experiment is not None
    before_sync = len(client.search_runs([experiment.experiment_id], max_results=5000))

    synced = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "sync"], cwd=project, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert list(journal_dir.glob("*.journal")) == []

    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    keys = [run.data.tags["nbmlops.run_key"] for run in runs]
    assert len(keys) == len(set(keys)), "a run delivered twice"
    numbers = sorted(int(run.data.params["i"]) for run in runs if "i" in run.data.params)
    # every run the child journaled before it was killed is there once, with its param and metric; a run the
    # kill cut short (journaled its start only) is there once, FAILED
    finished = [run for run in runs if run.info.status == "FINISHED"]
    for run in finished:
        assert run.data.metrics["m"] == float(run.data.params["i"])
    assert len(numbers) == len(set(numbers)) >= len(runs) - 1
    assert numbers == list(range(len(numbers)))
    assert len(finished) >= len(runs) - 1
    assert len(runs) > before_sync  # the sync delivered what the killed writer had not
