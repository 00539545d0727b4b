"""Traffic delivery under real faults: a serving process SIGKILLed while it appends and delivers (every record it
reported written is delivered exactly once by the next server's orphan delivery, and a second one adds nothing);
a tracking server that answers 503 during delivery, first to everything, then only to the metrics after the
Parquet went up (nothing is lost, nothing doubled, once it answers again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from nbmlops.data.fingerprint import fingerprint
from nbmlops.exceptions import StoreUnavailableError
from nbmlops.serving.recorder import ServingRecorder, serve_root
from nbmlops.serving.traffic import read_traffic
from nbmlops.serving.traffic_log import TrafficLog
from tests.conftest import mlflow_server
from tests.reliability.faults import Fault, FaultProxy, clean_env, wait_for

WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from nbmlops.serving.recorder import ServingRecorder
    from nbmlops.serving.traffic_log import TrafficLog

    recorder = ServingRecorder(interval=0.05)  # delivering while it writes: the kill may cut a round short
    run_id, folder = recorder.start("killed", "champion", 1, "http://127.0.0.1:9", "host", os.getpid())
    print("RUN", run_id, flush=True)
    log = TrafficLog(folder, segment_bytes=4096)  # many rolled segments
    i = 0
    while True:
        rid = f"r{i:06d}"
        body = json.dumps({"dataframe_split": {"columns": ["x", "y"], "data": [[i, i / 2]]}})
        record = {"kind": "request", "id": rid, "ts": time.time(), "version": 1, "status": 200,
                  "latency_ms": 1.0, "content_type": "application/json", "body": body, "body_b64": None,
                  "response": json.dumps({"predictions": [i % 2]}), "error": None}
        if log.append(record):
            print(rid, flush=True)
        if i % 7 == 0 and log.append({"kind": "feedback", "id": rid, "ts": time.time(), "labels": [i % 2]}):
            print("F" + rid, flush=True)
        i += 1
        time.sleep(0.001)
    """
)


def test_sigkilled_server_every_reported_record_is_delivered_once_by_the_next(project: Path, client):
    process = subprocess.Popen([sys.executable, "-c", WRITER], cwd=project, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    reported: list[str] = []
    try:
        first = process.stdout.readline().split()
        assert first[:1] == ["RUN"], first
        run_id = first[1]
        deadline = time.monotonic() + 120
        while len(reported) < 400 or not list(serve_root_of(project).glob("*/delivery.json")):
            line = process.stdout.readline().strip()
            assert line, "the writer stopped"
            reported.append(line)
            assert time.monotonic() < deadline
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        reported += [line.strip() for line in process.stdout.read().splitlines() if line.strip()]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    requests = {line for line in reported if line.startswith("r")}
    labels = {line[1:] for line in reported if line.startswith("F")}
    assert client.get_run(run_id).info.status == "RUNNING"

    heir = ServingRecorder()
    assert heir.deliver_orphans() == [run_id], heir.waiting
    assert client.get_run(run_id).info.status == "KILLED"
    assert not (serve_root_of(project) / run_id).exists()
    traffic = read_traffic("killed")
    delivered = list(traffic.requests["request_id"])
    assert len(delivered) == len(set(delivered))  # none twice
    assert requests <= set(delivered)  # every record it said it wrote
    feedback = list(traffic.feedback["request_id"])
    assert len(feedback) == len(set(feedback)) and labels <= set(feedback)
    assert client.get_run(run_id).data.metrics["requests"] == len(delivered)  # the summary counted each once

    assert heir.deliver_orphans() == []  # a second call adds nothing
    assert list(read_traffic("killed").requests["request_id"]) == delivered


def serve_root_of(project: Path) -> Path:
    from nbmlops.config import resolve_settings

    return serve_root(resolve_settings(project))


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` (artifacts served by it) for the tests of this module."""
    with mlflow_server(tmp_path_factory.mktemp("server"), env=clean_env()) as uri:
        yield uri


@pytest.fixture
def proxied_store(tracking_server: str, project: Path, monkeypatch: pytest.MonkeyPatch):
    """The tracking server behind a loopback proxy the test can make answer 503."""
    uri = tracking_server
    with FaultProxy(uri) as proxy:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", proxy.uri)
        monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT", raising=False)
        monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", "2")
        yield uri, proxy


def test_store_down_during_delivery_loses_nothing_and_doubles_nothing(proxied_store):
    from mlflow import MlflowClient

    uri, proxy = proxied_store
    recorder = ServingRecorder(interval=3600)
    run_id, folder = recorder.start("outage", "champion", 1, "http://127.0.0.1:8080", "host", os.getpid())
    log = TrafficLog(folder)
    try:
        sent = []
        for i in range(5):
            body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[i], [i + 1]]}})
            assert log.append({"kind": "request", "id": f"before{i}", "ts": time.time(), "version": 1,
                               "status": 200, "latency_ms": 3.0, "content_type": "application/json", "body": body,
                               "body_b64": None, "response": json.dumps({"predictions": [0, 1]}), "error": None})
            sent.append(f"before{i}")
        everything = proxy.add(Fault("status", status=503))
        assert not recorder.deliver()  # the store is down: kept
        assert everything.hits
        proxy.clear()
        metrics_down = proxy.add(Fault("status", path="/runs/log-batch", status=503))
        body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[9]]}})
        assert log.append({"kind": "request", "id": "during", "ts": time.time(), "version": 1, "status": 200,
                           "latency_ms": 3.0, "content_type": "application/json", "body": body, "body_b64": None,
                           "response": json.dumps({"predictions": [1]}), "error": None})
        sent.append("during")

        def cut_short() -> bool:
            failed = not recorder.deliver()
            return failed and metrics_down.hits > 0 and proxy.count("/mlflow-artifacts/artifacts", method="PUT") > 0

        wait_for(cut_short, 120, "a round that uploaded its Parquet but not its metrics")
        proxy.clear()
        wait_for(recorder.deliver, 120, "the store to take the round")
        log.close()
        wait_for(recorder.stop, 120, "the final delivery")
    finally:
        log.close()
        recorder.stop()

    direct = MlflowClient(uri)
    run = direct.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["requests"] == 6
    rows = read_traffic("outage").requests
    assert sorted(set(rows["request_id"])) == sorted(sent)
    assert len(rows) == 11  # 5 requests of 2 rows, 1 of 1: none twice
    datasets = run.inputs.dataset_inputs
    files = [e.path for e in direct.list_artifacts(run_id, "traffic")]
    assert sorted(d.dataset.name for d in datasets) == sorted(files)  # one dataset per Parquet file, no stale twin
    for dataset in datasets:
        local = direct.download_artifacts(run_id, dataset.dataset.name, str(folder.parent))
        assert dataset.dataset.digest == fingerprint(pd.read_parquet(local))
    history = sorted((m.step, m.value) for m in direct.get_metric_history(run_id, "requests"))
    assert history == [(1, 5.0), (2, 6.0)]  # the round planned before the outage, sent again whole, once; then the next


def test_stop_while_the_store_is_down_leaves_the_run_for_the_next_server_which_ends_it_finished(proxied_store):
    from mlflow import MlflowClient

    uri, proxy = proxied_store
    recorder = ServingRecorder(interval=3600)
    run_id, folder = recorder.start("stopped-down", "champion", 1, "http://127.0.0.1:8080", "host", os.getpid())
    log = TrafficLog(folder)
    body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1]]}})
    for i in range(3):
        assert log.append({"kind": "request", "id": f"q{i}", "ts": time.time(), "version": 1, "status": 200,
                           "latency_ms": 1.0, "content_type": "application/json", "body": body, "body_b64": None,
                           "response": json.dumps({"predictions": [1]}), "error": None})
    log.close()
    proxy.add(Fault("status", status=503))
    assert not recorder.stop()  # could not deliver: nothing lost, the folder stays
    direct = MlflowClient(uri)
    assert direct.get_run(run_id).info.status == "RUNNING"
    assert folder.is_dir()
    proxy.clear()

    heir = ServingRecorder()

    def delivered() -> bool:
        try:
            return heir.deliver_orphans() == [run_id]
        except StoreUnavailableError:  # the budget after an outage: calls fail at once for a while
            return False

    wait_for(delivered, 120, "the next server to deliver the stopped one's log")
    run = direct.get_run(run_id)
    assert run.info.status == "FINISHED"  # it had stopped gracefully: not KILLED
    assert run.data.metrics["requests"] == 3
    assert sorted(read_traffic("stopped-down").requests["request_id"]) == ["q0", "q1", "q2"]
    assert not folder.exists()
