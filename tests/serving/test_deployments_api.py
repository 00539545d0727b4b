"""``GET /nbmlops/api/deployments`` on a real Jupyter server with the nbmlops extension: the model servers of the
store with their states (fresh or stale heartbeat, killed, stopped), figures, drift state (drifted, ok, never
checked) and last swap, serving first, names returned as they are (the page escapes them); a store that does not
answer is a 503 within seconds, as for every route that reads the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (jupyter_server's fixtures, for this module only)
from traitlets.config import Config

from tests.reliability.faults import silent_server
from tests.serving.deployments_seeding import ago, seed_monitor_run, seed_serving_run

ANSWER_BOUND_S = 9.0  # the store guard's bound (6 s), with room for a loaded 2-core machine


@pytest.fixture
def jp_server_config() -> Config:
    return Config({"ServerApp": {"jpserver_extensions": {"nbmlops": True}}})


@pytest.fixture
def store(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A sqlite store of the test's own, the one the server reads (it resolves its settings per request)."""
    uri = f"sqlite:///{tmp_path / 'deployments.db'}"
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
    monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT", raising=False)
    return uri


@pytest.fixture
def api(jp_fetch: Any, jp_root_dir: Path, jp_asyncio_loop: Any):
    """``api()`` -> ``(status, decoded JSON)`` of the deployments route (asked on the server's own loop: the
    async test plugin of pytest-jupyter is a conftest's, not this module's)."""
    import json

    (jp_root_dir / "pyproject.toml").write_text("[project]\nname = 'served'\n")

    async def fetch() -> tuple[int, Any]:
        response = await jp_fetch("nbmlops", "api", "deployments", method="GET", raise_error=False)
        return response.code, json.loads(response.body) if response.body else None

    return lambda: jp_asyncio_loop.run_until_complete(fetch())


def test_the_route_lists_each_deployment_with_its_state_figures_and_drift(api, store: str):
    from mlflow import MlflowClient

    c = MlflowClient(store)
    hostile = "<b>iris</b>"
    fresh = seed_serving_run(c, hostile, url="http://127.0.0.1:9201", version=2, heartbeat=ago(3),
                             last_swap=(ago(120), 1, 2), shadow="challenger")
    stale = seed_serving_run(c, "stale", url="http://127.0.0.1:9202", heartbeat=ago(3600), since=ago(4000))
    killed = seed_serving_run(c, "killed", url="http://127.0.0.1:9203", status="KILLED")
    stopped = seed_serving_run(c, "stopped", url="http://127.0.0.1:9204", status="FINISHED")
    drifted = seed_monitor_run(c, hostile, 2, drifted=True)
    seed_monitor_run(c, "stopped", 1, drifted=False)

    code, body = api()

    assert code == 200, body
    found = body["deployments"]
    assert [(d["model"], d["state"]) for d in found] == [
        (hostile, "serving"), ("killed", "dead"), ("stale", "dead"), ("stopped", "stopped"),
    ]
    by_run = {d["run_id"]: d for d in found}
    served = by_run[fresh]
    assert (served["alias"], served["url"], served["version"], served["status"]) == (
        "champion", "http://127.0.0.1:9201", 2, "RUNNING")
    assert (served["requests"], served["errors"], served["error_rate"]) == (200, 4, 0.02)
    assert (served["latency_p50_ms"], served["latency_p95_ms"], served["latency_p99_ms"]) == (3.25, 11.5, 19.0)
    assert served["shadow"] == "challenger"
    assert (served["last_swap"]["text"], served["last_swap"]["from"], served["last_swap"]["to"]) == ("v1 -> v2", 1, 2)
    assert abs(served["last_swap"]["at"] - ago(120).timestamp() * 1000) < 30_000
    assert abs(served["heartbeat"] - ago(3).timestamp() * 1000) < 30_000
    assert (served["drift"]["state"], served["drift"]["run_id"], served["drift"]["version"]) == ("drifted", drifted, 2)
    assert served["run_url"].endswith(f"/runs/{fresh}") and served["experiment_id"] in served["run_url"]
    assert by_run[stale]["status"] == "RUNNING" and by_run[stale]["drift"]["state"] == "never checked"
    assert by_run[killed]["status"] == "KILLED" and by_run[killed]["ended"] is not None
    assert by_run[stopped]["drift"]["state"] == "ok" and by_run[stopped]["drift"]["checked"] > 0
    assert body["stale_after_s"] > 0


def test_a_store_without_servers_is_an_empty_list(api, store: str):
    code, body = api()
    assert (code, body["deployments"]) == (200, [])


def test_a_store_that_never_answers_is_503_within_seconds(api, project: Path, monkeypatch):
    with silent_server() as uri:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        start = time.monotonic()
        code, body = api()
        took = time.monotonic() - start
    assert code == 503, body
    assert took < ANSWER_BOUND_S, f"took {took:.1f} s"
    assert "no answer within" in body["error"] and "\n" not in body["error"], body
