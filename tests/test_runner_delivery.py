"""Delivery of a headless kernel's records while it runs: `nbmlops run` follows the journals handed to it,
exactly once, and nobody else delivers them while it lives.

Everything is real: journals written by separate Python processes (a kernel papermill starts, or a script
through the public API), the runner's claim held by a live or killed process, a real sqlite MLflow store.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbmlops.journal import Claim, encode, journal_tag, list_journals
from nbmlops.tracking.delivery import Handoff, sync_journals
from nbmlops.tracking.session import HANDOFF_ENV, HANDOFF_TAG_ENV
from tests.conftest import runs_of
from tests.test_runner import notebook

#: a process that hands its records over: a run whose first metrics are journaled before it waits for a line
HANDED_SCRIPT = """
import sys
import nbmlops
with nbmlops.track("handed", params={"a": 1}) as run:
    for i in range(3):
        nbmlops.log_metric("loss", float(i))
    nbmlops.flush()
    print(run.key, flush=True)
    sys.stdin.readline()
    for i in range(3, 6):
        nbmlops.log_metric("loss", float(i))
"""


def _wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _handed_process(project: Path, tag: str) -> subprocess.Popen:
    env = {**os.environ, HANDOFF_ENV: "1", HANDOFF_TAG_ENV: tag}
    return subprocess.Popen(
        [sys.executable, "-c", HANDED_SCRIPT], cwd=project, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def _loss_history(client, run) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)]


def test_cell_runs_reach_the_store_while_the_kernel_still_runs(project, client, request):
    go = project / "go"
    wait = (
        "import pathlib, time\n"
        "for _ in range(900):\n"
        f"    if pathlib.Path({str(go)!r}).exists():\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "else:\n"
        "    raise TimeoutError('the first cell run never reached the store while the kernel ran')"
    )
    path = notebook(
        project / "live.ipynb", "%load_ext nbmlops", "%%track --name early\nscore = 0.25 * 2", wait,
        "%%track --name late\nlate_score = 0.5 * 2",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli", "run", str(path), "--no-progress"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def early_finished():
            return next(
                (r for r in runs_of(client, request.node.name) if r.info.run_name == "early" and r.info.status == "FINISHED"),
                None,
            )

        early = _wait_for(early_finished, "the early cell's run in the store", timeout=80)
        assert process.poll() is None  # the kernel is still waiting for us
        assert early.data.metrics == {"score": 0.5}
        go.touch()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out + err
    runs = {r.info.run_name: r for r in runs_of(client, request.node.name)}
    assert set(runs) == {"live", "early", "late"}
    parent = runs["live"]
    assert parent.info.status == "FINISHED" and parent.data.metrics == {"score": 0.5, "late_score": 1.0}
    assert runs["early"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert runs["late"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "notebook")}
    assert {"notebook/live.ipynb", "notebook/live.html"} <= artifacts  # stored before the command returned
    left = sorted(p.name for p in (project / ".nbmlops" / "journal").iterdir())
    assert [name for name in left if name.endswith((".journal", ".cursor", ".claim"))] == []


def test_a_kernel_that_cannot_start_fails_the_command_and_its_run_is_delivered_killed(project, client, request):
    path = notebook(project / "nokernel.ipynb", "x = 1")
    result = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "run", str(path), "--kernel", "no-such-kernel", "--no-progress"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "NoSuchKernel" in result.stderr and "Traceback" not in result.stderr
    (run,) = runs_of(client, request.node.name)
    assert run.info.status == "KILLED" and run.data.tags["nbmlops.kernel"] == "no-such-kernel"
    assert list_journals(project / ".nbmlops" / "journal") == []


def test_handoff_delivers_records_as_they_are_written_and_each_once(project, client, request):
    journal_dir = project / ".nbmlops" / "journal"
    handoff = Handoff([journal_dir])
    process = _handed_process(project, handoff.tag)
    try:
        key = process.stdout.readline().strip()
        assert key, process.stderr.read()

        def delivered_so_far():
            runs = [r for r in runs_of(client, request.node.name) if r.data.tags.get("nbmlops.run_key") == key]
            return runs if runs and len(_loss_history(client, runs[0])) == 3 else None

        (live,) = _wait_for(delivered_so_far, "the first three metrics while the process lives")
        assert live.info.status == "RUNNING" and process.poll() is None
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    report = handoff.finish("the process died")
    assert report.errors == [] and report.busy == [] and report.runs_failed == []
    (run,) = [r for r in runs_of(client, request.node.name) if r.data.tags.get("nbmlops.run_key") == key]
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"}
    assert _loss_history(client, run) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list_journals(journal_dir) == [] and list(journal_dir.glob("*.c*")) == []


def test_a_claimed_journal_is_left_to_its_runner_and_synced_once_the_runner_is_gone(project, client, request):
    journal_dir = project / ".nbmlops" / "journal"
    tag = "0123456789abcdef" * 2
    runner = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from pathlib import Path; from nbmlops.journal import Claim\n"
         f"claim = Claim(Path({str(journal_dir)!r}), {tag!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert runner.stdout.readline().strip() == "held"
        writer = _handed_process(project, tag)
        writer.communicate("go\n", timeout=60)
        assert writer.returncode == 0
        (journal,) = list_journals(journal_dir)
        assert journal_tag(journal) == tag
        with pytest.raises(BlockingIOError):
            Claim(journal_dir, tag)  # one runner per tag
        report = sync_journals(journal_dir)
        assert report.busy == [journal.name] and report.delivered == 0
        assert runs_of(client, request.node.name) == []
    finally:
        os.kill(runner.pid, signal.SIGKILL)  # the runner dies holding its claim
        runner.wait(timeout=30)
    report = sync_journals(journal_dir)
    assert report.busy == [] and report.journals == 1 and report.errors == []
    (run,) = runs_of(client, request.node.name)
    assert run.info.status == "FINISHED" and _loss_history(client, run) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert sorted(p.name for p in journal_dir.iterdir() if not p.name.startswith("refused")) == []


def test_a_record_half_written_is_delivered_once_it_is_whole_never_as_damage(project, client, request, store_uri):
    journal_dir = project / ".nbmlops" / "journal"
    handoff = Handoff([journal_dir])
    key, now = "a" * 32, int(time.time() * 1000)
    start = {"t": "start", "run": key, "store": store_uri, "artifact_root": os.environ["NBMLOPS_ARTIFACT_ROOT"],
             "experiment": request.node.name, "name": "torn", "ts": now, "tags": {}}
    metrics = encode({"t": "metrics", "run": key, "metrics": [["m", 1.5, 0, now]]})
    path = journal_dir / f"{now * 1000000:020d}-host-1-00000000@{handoff.tag}.journal"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live writer
    try:
        os.write(fd, encode(start) + metrics[:10])
        (run,) = _wait_for(lambda: runs_of(client, request.node.name), "the start record's run")
        time.sleep(5 * Handoff.POLL_S)
        os.write(fd, metrics[10:] + encode({"t": "end", "run": key, "status": "FINISHED", "ts": now + 1}))
        _wait_for(lambda: client.get_run(run.info.run_id).data.metrics, "the metric once its record is whole")
    finally:
        os.close(fd)
    report = handoff.finish("the writer died")
    assert report.damage == [] and report.errors == [] and report.runs_failed == []
    assert [m.value for m in client.get_metric_history(run.info.run_id, "m")] == [1.5]
    assert client.get_run(run.info.run_id).info.status == "FINISHED" and list_journals(journal_dir) == []
