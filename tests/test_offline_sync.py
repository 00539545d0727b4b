"""Offline operation: records of runs made while the tracking store is down wait in the journal,
``nbmlops sync`` delivers them exactly once later, damaged journal records are reported and
skipped, and a dead store never breaks a tracked cell.

Everything is real: the journals are written by separate Python processes through the public API,
the store is a real ``mlflow server`` started on a port that was dead while the journals were written.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nbmlops
from nbmlops.exceptions import FlushTimeoutError
from nbmlops.journal import Cursor
from nbmlops.tracking.delivery import sync_journals
from nbmlops.tracking.session import close_session
from tests.conftest import free_port, mlflow_server

MAGIC = b"NBJ1"
HEADER = struct.Struct("<4sII")

ONE_RUN_SCRIPT = """
import nbmlops
from nbmlops.exceptions import FlushTimeoutError
with nbmlops.track("offline", params={"a": 1}) as run:
    for i in range(5):
        nbmlops.log_metric("loss", 1.0 / (i + 1))
print("script finished", run.key, run.status)
# wait (bounded) until the writer has met the dead store, so the exit path below is deterministic
for _ in range(240):
    try:
        nbmlops.flush(0.25)
    except FlushTimeoutError as exc:
        if "unavailable" in exc.reason:
            print("store is down:", exc.pending, "waiting")
            break
"""

THREE_RUNS_SCRIPT = """
import nbmlops
keys = []
for i in range(3):
    with nbmlops.track(f"run{i}", params={"i": i}) as run:
        nbmlops.log_metric("m", float(i * 10))
    keys.append(run.key)
print("keys", *keys)
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    env.update(extra)
    return env


@dataclass
class Frame:
    start: int
    end: int
    record: dict[str, Any]


def frames_of(path: Path | bytes) -> list[Frame]:
    """Parse a journal independently of nbmlops' reader: every intact frame with its byte range."""
    data = path if isinstance(path, bytes) else path.read_bytes()
    pos, frames = 0, []
    while pos < len(data):
        magic, length, crc = HEADER.unpack_from(data, pos)
        assert magic == MAGIC, f"unexpected bytes at {pos}"
        payload = data[pos + HEADER.size : pos + HEADER.size + length]
        assert zlib.crc32(payload) == crc
        frames.append(Frame(pos, pos + HEADER.size + length, json.loads(payload)))
        pos += HEADER.size + length
    return frames


def make_project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text("[project]\nname = 'offline'\n")
    return path


def only_journal(project: Path) -> Path:
    journals = sorted((project / ".nbmlops" / "journal").glob("*.journal"))
    assert len(journals) == 1, journals
    return journals[0]


@dataclass
class Produced:
    project: Path
    result: subprocess.CompletedProcess
    journal: Path
    journal_bytes: bytes


@dataclass
class Offline:
    port: int
    uri: str
    base: Path
    one_run: Produced
    three_runs: Produced


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Offline:
    """Two journals written (concurrently, by two processes) while nothing listens on the store's port."""
    base = tmp_path_factory.mktemp("offline")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    jobs = {}
    for name, script, experiment in (
        ("one_run", ONE_RUN_SCRIPT, "offline"),
        ("three_runs", THREE_RUNS_SCRIPT, "damaged"),
    ):
        project = make_project(base / name)
        env = clean_env(NBMLOPS_TRACKING_URI=uri, NBMLOPS_FLUSH_TIMEOUT="2", NBMLOPS_EXPERIMENT=experiment)
        proc = subprocess.Popen(
            [sys.executable, "-c", script], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        jobs[name] = (project, proc)
    produced = {}
    for name, (project, proc) in jobs.items():
        out, err = proc.communicate(timeout=120)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        journals = sorted((project / ".nbmlops" / "journal").glob("*.journal"))
        journal = journals[0] if len(journals) == 1 else project / "missing.journal"
        produced[name] = Produced(project, result, journal, journal.read_bytes() if journal.exists() else b"")
    return Offline(port, uri, base, produced["one_run"], produced["three_runs"])


@pytest.fixture(scope="module")
def server(offline: Offline) -> Iterator[str]:
    """A real MLflow tracking server, started on the port that was dead while the journals were written."""
    with mlflow_server(offline.base / "server", port=offline.port, env=clean_env()) as uri:
        yield uri


def cli(project: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", *args],
        cwd=project,
        env=clean_env(NBMLOPS_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def runs_named(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=100)


def assert_single_complete_offline_run(client) -> Any:
    runs = runs_named(client, "offline")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"a": "1"}
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(i, 1.0 / (i + 1)) for i in range(5)]
    return run


def test_store_down_script_exits_normally_warns_once_and_keeps_its_journal(offline: Offline) -> None:
    produced = offline.one_run
    result = produced.result
    assert result.returncode == 0, result.stderr
    assert "script finished" in result.stdout and "FINISHED" in result.stdout
    assert "Traceback" not in result.stderr
    # the writer's outage warning is printed once, however many delivery attempts fail
    warnings = re.findall(r"nbmlops: (\d+) record\(s\) are waiting, safe in the local journal", result.stderr)
    assert len(warnings) == 1, result.stderr
    assert int(warnings[0]) >= 1
    # at exit, the flush gives up after NBMLOPS_FLUSH_TIMEOUT and names every record still waiting
    assert produced.journal.exists()
    total = len(frames_of(produced.journal))
    assert f"nbmlops: {total} record(s) still waiting for the tracking store" in result.stderr, result.stderr
    assert produced.journal.name.endswith(".journal")
    assert not produced.journal.with_suffix(".cursor").exists()


def test_sync_delivers_offline_run_once_and_a_second_sync_adds_nothing(offline: Offline, server: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(server)
    project = offline.one_run.project
    assert runs_named(client, "offline") == []

    first = cli(project, server, "sync")
    assert first.returncode == 0, first.stderr
    total = len(frames_of(offline.one_run.journal_bytes))
    assert f"delivered {total} record(s) from 1 journal(s)" in first.stdout, first.stdout
    run = assert_single_complete_offline_run(client)
    assert run.data.tags["nbmlops.run_key"] in offline.one_run.result.stdout
    assert list((project / ".nbmlops" / "journal").glob("*.journal")) == []

    second = cli(project, server, "sync")
    assert second.returncode == 0, second.stderr
    assert "delivered 0 record(s) from 0 journal(s)" in second.stdout
    assert_single_complete_offline_run(client)


def test_sync_resumed_after_a_crash_mid_delivery_adds_no_duplicates(offline: Offline, server: str) -> None:
    """A sync that died after the store took records but before its cursor said so, replayed."""
    from mlflow import MlflowClient

    client = MlflowClient(server)
    project = offline.one_run.project
    journal_dir = project / ".nbmlops" / "journal"
    if not runs_named(client, "offline"):
        assert cli(project, server, "sync").returncode == 0
    run_id = assert_single_complete_offline_run(client).info.run_id

    original = offline.one_run.journal
    original.write_bytes(offline.one_run.journal_bytes)
    frames = frames_of(original)
    key = frames[0].record["run"]
    # the cursor a sync saved after the start, the params and the first two metric records
    metric_frames = [f for f in frames if f.record["t"] == "metrics"]
    Cursor(offset=metric_frames[1].end, runs={key: run_id}).save(original)

    report = sync_journals(journal_dir)
    assert report.errors == [] and report.refused == [] and report.damage == []
    assert report.journals == 1
    assert report.delivered == len([f for f in frames if f.end > metric_frames[1].end])
    assert not original.exists() and not original.with_suffix(".cursor").exists()
    assert_single_complete_offline_run(client)

    # a sync that died before saving any cursor: the run is found by its key, nothing is created twice
    original.write_bytes(offline.one_run.journal_bytes)
    report = sync_journals(journal_dir)
    assert report.errors == [] and report.refused == [], report.refused
    assert report.delivered == len(frames)
    assert_single_complete_offline_run(client)
    assert not (journal_dir / "refused.jsonl").exists()


def test_sync_reports_damaged_records_by_offset_and_delivers_the_intact_ones(offline: Offline, server: str) -> None:
    from mlflow import MlflowClient

    produced = offline.three_runs
    assert produced.result.returncode == 0, produced.result.stderr
    keys = produced.result.stdout.split("keys", 1)[1].split()
    assert len(keys) == 3
    journal = produced.journal
    frames = frames_of(journal)

    # flip one byte inside the payload of run1's metric record, and cut the file's last record short
    target = next(f for f in frames if f.record["t"] == "metrics" and f.record["run"] == keys[1])
    data = bytearray(journal.read_bytes())
    flip_at = target.start + HEADER.size + (target.end - target.start - HEADER.size) // 2
    data[flip_at] ^= 0x20
    last = frames[-1]
    del data[-3:]
    journal.write_bytes(bytes(data))

    result = cli(produced.project, server, "sync")
    assert "Traceback" not in result.stderr, result.stderr
    assert f"{journal} at byte {target.start}: checksum mismatch" in result.stderr, result.stderr
    assert re.search(rf"{re.escape(str(journal))} at byte {last.start}: truncated record", result.stderr), result.stderr

    client = MlflowClient(server)
    runs = {r.data.tags["nbmlops.run_key"]: r for r in runs_named(client, "damaged")}
    assert set(runs) == set(keys)
    # before the damage: complete
    assert runs[keys[0]].data.params == {"i": "0"}
    assert runs[keys[0]].data.metrics == {"m": 0.0}
    assert runs[keys[0]].info.status == "FINISHED"
    # the damaged record alone is lost
    assert runs[keys[1]].data.params == {"i": "1"}
    assert "m" not in runs[keys[1]].data.metrics
    assert runs[keys[1]].info.status == "FINISHED"
    # after the damage: delivered
    assert runs[keys[2]].data.params == {"i": "2"}
    assert runs[keys[2]].data.metrics == {"m": 20.0}
    lost_end = last.record["t"] == "end" and last.record["run"] == keys[2]
    assert runs[keys[2]].info.status == ("FAILED" if lost_end else "FINISHED")


def test_unreachable_store_never_breaks_the_tracked_cell(shell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    try:
        result = shell.run_cell("%%track\nx = 41 + 1\nx\n")
        assert result.error_in_exec is None and result.error_before_exec is None
        assert result.result == 42
        assert shell.user_ns["x"] == 42
        with pytest.raises(FlushTimeoutError) as caught:
            nbmlops.flush(0.5)
        assert caught.value.pending > 0
    finally:
        close_session(0.5)  # do not let the fixture wait out its 10 s flush against a dead store
