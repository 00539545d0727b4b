"""The Deployments view over serving runs made by the real serving parts, not seeded: a :class:`ServingRecorder`
delivering a traffic log (figures, swap, shadow; FINISHED on stop), and a real ``nbmlops.serve(..., block=False)``
answering requests, following a promotion of its alias (the view shows the new version and the swap) and stopped
(the view shows it stopped)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbmlops
from nbmlops.config import resolve_settings
from nbmlops.serving.deployments import SERVING, STOPPED, Deployment, list_deployments
from tests.serving.conftest import http, split_body, wait_for


def deployment(settings, run_id: str) -> Deployment | None:
    return next((d for d in list_deployments(settings) if d.run_id == run_id), None)


def test_a_recorded_server_is_listed_with_its_delivered_figures_then_stopped(project: Path, tmp_path: Path):
    from nbmlops.serving.recorder import ServingRecorder
    from nbmlops.serving.traffic_log import TrafficLog

    settings = resolve_settings(project, tracking_uri=f"sqlite:///{tmp_path / 'recorded.db'}")
    recorder = ServingRecorder(settings, interval=3600)  # rounds only when the test asks
    run_id, folder = recorder.start("recorded", "champion", 1, "http://127.0.0.1:9301", "127.0.0.1", os.getpid(),
                                    shadow="challenger")
    log = TrafficLog(folder)
    try:
        now = time.time()
        log.append({"kind": "start", "ts": now, "version": 1, "pid": os.getpid()})
        for i in range(20):
            failed = i < 2
            log.append({"kind": "request", "id": f"r{i}", "ts": now, "version": 1, "status": 500 if failed else 200,
                        "latency_ms": float(i + 1), "content_type": "application/json", "body": None,
                        "body_b64": None, "response": None, "error": "bad input" if failed else None})
        log.append({"kind": "swap", "ts": now + 1, "from": 1, "to": 2})
        recorder.deliver()

        found = deployment(settings, run_id)
        assert found is not None
        assert (found.reference, found.url, found.state, found.version) == (
            "recorded@champion", "http://127.0.0.1:9301", SERVING, 2)
        assert (found.requests, found.errors, found.error_rate) == (20, 2, 0.1)
        assert found.latency_p50_ms is not None and 9 <= found.latency_p50_ms <= 12
        assert found.latency_p95_ms is not None and 18 <= found.latency_p95_ms <= 20
        assert found.last_swap is not None and found.last_swap.text == "v1 -> v2"
        assert found.shadow == "challenger" and found.heartbeat_ms is not None
    finally:
        log.close()
        recorder.stop()
    stopped = deployment(settings, run_id)
    assert stopped is not None and (stopped.state, stopped.status) == (STOPPED, "FINISHED")


def test_a_real_server_is_listed_serving_follows_a_promotion_then_stopped(project: Path, models, serving):
    settings = resolve_settings(project)
    alias = models.point(1)
    handle = serving(f"{models.name}@{alias}", poll=0.5)
    for _ in range(3):
        status, _, _ = http("POST", handle.url + "/invocations", split_body(models.rows), "application/json")
        assert status == 200

    found = wait_for(lambda: (d := deployment(settings, handle.run_id)) is not None and (d.requests or 0) >= 3 and d,
                     "the server's first figures in the store", timeout=120)
    assert (found.reference, found.url, found.state, found.version) == (f"{models.name}@{alias}", handle.url,
                                                                        SERVING, 1)
    assert found.errors == 0 and found.latency_p50_ms is not None and found.last_swap is None

    nbmlops.promote(f"{models.name}/2", alias)  # the alias moves: the server swaps to version 2
    swapped = wait_for(lambda: (d := deployment(settings, handle.run_id)) is not None and d.version == 2 and d,
                       "the swap in the store", timeout=120)
    assert swapped.last_swap is not None and swapped.last_swap.text == "v1 -> v2"
    assert swapped.state == SERVING

    handle.stop()
    stopped = deployment(settings, handle.run_id)
    assert stopped is not None and (stopped.state, stopped.status, stopped.version) == (STOPPED, "FINISHED", 2)
