"""The Deployments view over serving runs recorded as the serving design says (seeded with MLflow's client):
states from the run's status and heartbeat, figures from its summary metrics, the drift state from the model's
latest monitoring run, one row per NAME@ALIAS at one address, serving first; the dashboard's tab as escaped HTML,
and what it says when the store cannot be read. Real sqlite stores, a real dashboard widget."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from nbmlops.config import resolve_settings
from nbmlops.serving.deployments import DEAD, DRIFTED, NEVER_CHECKED, OK, SERVING, STOPPED, list_deployments
from nbmlops.widgets.deployments import deployments_html
from tests.conftest import mlflow_server
from tests.serving.deployments_seeding import FIGURES, ago, seed_monitor_run, seed_serving_run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sqlite store of the module's own: the view lists every serving run of its store."""
    return f"sqlite:///{tmp_path_factory.mktemp('deployments') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def mlflow_client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(store)


@pytest.fixture
def settings(project: Path, store: str):
    return resolve_settings(project, tracking_uri=store)


def mine(found, *models: str):
    """The deployments of ``models`` in the order listed (the store holds other tests' too)."""
    return [d for d in found if d.model in models]


def test_states_follow_status_and_heartbeat_and_serving_ones_come_first(settings, mlflow_client):
    c = mlflow_client
    stopped = seed_serving_run(c, "st-stopped", url="http://127.0.0.1:9101", status="FINISHED", since=ago(900))
    stale = seed_serving_run(c, "st-stale", url="http://127.0.0.1:9102", heartbeat=ago(3600), since=ago(4000))
    killed = seed_serving_run(c, "st-killed", url="http://127.0.0.1:9103", status="KILLED", since=ago(800))
    fresh = seed_serving_run(c, "st-fresh", url="http://127.0.0.1:9104", version=3, heartbeat=ago(5),
                             since=ago(7200), last_swap=(ago(60), 2, 3), shadow="challenger")

    found = mine(list_deployments(settings), "st-stopped", "st-stale", "st-killed", "st-fresh")

    assert [(d.model, d.state) for d in found] == [
        ("st-fresh", SERVING), ("st-killed", DEAD), ("st-stale", DEAD), ("st-stopped", STOPPED),
    ]  # serving first; dead then stopped, the newest first
    by_model = {d.model: d for d in found}
    assert by_model["st-fresh"].run_id == fresh and by_model["st-stale"].run_id == stale
    assert by_model["st-killed"].run_id == killed and by_model["st-stopped"].run_id == stopped
    serving = by_model["st-fresh"]
    assert serving.reference == "st-fresh@champion" and serving.url == "http://127.0.0.1:9104"
    assert serving.version == 3 and serving.shadow == "challenger" and serving.host == "127.0.0.1"
    assert (serving.requests, serving.errors, serving.error_rate) == (200, 4, 0.02)  # the last delivery's
    assert (serving.latency_p50_ms, serving.latency_p95_ms) == (FIGURES["latency_p50_ms"], FIGURES["latency_p95_ms"])
    assert serving.last_swap is not None and serving.last_swap.text == "v2 -> v3"
    assert (serving.last_swap.previous, serving.last_swap.version) == (2, 3)
    assert abs(serving.last_swap.at_ms - ago(60).timestamp() * 1000) < 30_000
    assert by_model["st-stale"].status == "RUNNING"  # dead because nothing beat for an hour
    assert by_model["st-stopped"].last_swap is None and by_model["st-stopped"].shadow is None


def test_the_heartbeat_bound_decides_serving_from_dead(settings, mlflow_client):
    seed_serving_run(mlflow_client, "hb-edge", url="http://127.0.0.1:9111", heartbeat=ago(300))
    (lenient,) = mine(list_deployments(settings, stale_after=600), "hb-edge")
    (strict,) = mine(list_deployments(settings, stale_after=60), "hb-edge")
    assert (lenient.state, strict.state) == (SERVING, DEAD)


def test_drift_state_is_the_latest_check_of_live_traffic(settings, mlflow_client):
    c = mlflow_client
    for model in ("dr-drifted", "dr-ok", "dr-never"):
        seed_serving_run(c, model, url=f"http://127.0.0.1:{9120 + len(model)}")
    seed_monitor_run(c, "dr-drifted", 1, drifted=False)
    latest = seed_monitor_run(c, "dr-drifted", 1, drifted=True)
    seed_monitor_run(c, "dr-ok", 2, drifted=True)
    ok = seed_monitor_run(c, "dr-ok", 2, drifted=False)
    seed_monitor_run(c, "dr-ok", 2, drifted=True, traffic=False)  # a data file's check: not the traffic's
    seed_monitor_run(c, "dr-never", 1, drifted=True, traffic=False)
    started = c.get_run(ok).info.start_time

    found = {d.model: d.drift for d in list_deployments(settings)}

    assert (found["dr-drifted"].state, found["dr-drifted"].run_id) == (DRIFTED, latest)
    assert (found["dr-ok"].state, found["dr-ok"].run_id, found["dr-ok"].version) == (OK, ok, 2)
    assert found["dr-ok"].checked_ms == started
    assert (found["dr-never"].state, found["dr-never"].checked_ms) == (NEVER_CHECKED, None)


def test_one_row_per_deployment_the_serving_run_before_a_newer_dead_one(settings, mlflow_client):
    c = mlflow_client
    url = "http://127.0.0.1:9131"
    seed_serving_run(c, "one-per", url=url, status="FINISHED", since=ago(5000))
    serving = seed_serving_run(c, "one-per", url=url, since=ago(300))
    seed_serving_run(c, "one-per", url=url, status="KILLED", since=ago(10))  # orphans delivered after its start
    other = seed_serving_run(c, "one-per", "staging", url="http://127.0.0.1:9132", status="FINISHED")

    found = mine(list_deployments(settings), "one-per")

    assert [(d.reference, d.run_id, d.state) for d in found] == [
        ("one-per@champion", serving, SERVING), ("one-per@staging", other, STOPPED),
    ]


def test_a_store_without_servers_lists_none(project: Path, tmp_path: Path):
    from nbmlops import serving

    empty = resolve_settings(project, tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    assert serving.list_deployments is list_deployments  # the package exports it
    assert list_deployments(empty) == []
    page = deployments_html([])
    assert "No model is served yet" in page and "<code>nbmlops serve NAME@champion</code>" in page


def test_the_dashboard_tab_shows_every_deployment_escaped(settings, mlflow_client, dashboards):
    c = mlflow_client
    hostile = "<b>bold</b>"
    run_id = seed_serving_run(c, hostile, "champ'\"ion", url="http://127.0.0.1:9141/?a=<i>&b=1", version=7,
                              heartbeat=ago(1), last_swap=(ago(30), 6, 7), shadow="<script>x</script>")
    seed_monitor_run(c, hostile, 7, drifted=True)
    seed_serving_run(c, "dash-dead", url="javascript:alert(1)", status="KILLED")

    dashboard = dashboards(settings=settings)
    dashboard.tabs.selected_index = 4  # a person opens the Deployments tab
    page = dashboard.deployments_view.value

    assert dashboard.tabs.get_title(4) == "Deployments"
    assert "<b>bold</b>" not in page and "<script>" not in page and "<i>" not in page
    row = re.search(rf"<tr data-run-id='{run_id}' data-state='serving'>(.*?)</tr>", page)
    assert row is not None, page
    cells = [html.unescape(re.sub(r"<[^>]+>", " ", cell)).split() for cell in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                                        row.group(1))]
    assert cells[0] == ["<b>bold</b>@champ'\"ion", "shadow", "@<script>x</script>"]
    assert " ".join(cells[1]) == "http://127.0.0.1:9141/?a=<i>&b=1"
    assert "href='http://127.0.0.1:9141/?a=&lt;i&gt;&amp;b=1'" in row.group(1)
    assert cells[2] == ["v7"] and cells[3][0] == "serving" and cells[4] == ["200"] and cells[5] == ["2", "%"]
    assert cells[6] == ["3.25", "/", "11.5", "ms"]
    assert cells[7][:3] == ["drifted", "v7", "·"] and cells[8][:3] == ["v6", "->", "v7"]
    assert "href='javascript" not in page and "javascript:alert(1)</code>" in page  # shown, never a link
    assert re.search(r"data-state='dead'", page)
    assert page.index(f"data-run-id='{run_id}'") < page.index("data-state='dead'")  # serving first
    assert dashboard.to_html().count(f"data-run-id='{run_id}'") == 1  # the static page holds the tab too


def test_the_dashboard_tab_says_why_when_the_store_is_down(project: Path, tmp_path: Path, dashboards):
    with mlflow_server(tmp_path / "tracking") as uri:
        dashboard = dashboards(settings=resolve_settings(project, tracking_uri=uri))
        dashboard.wait_loaded(60)
        assert "No model is served yet" in dashboard.show_deployments()
    # the tracking server is gone: nothing listens at its address

    page = dashboard.show_deployments()

    assert "nbmlops-error" in page and "could not read the deployments" in page, page
    assert "No model is served yet" not in page
    dashboard.deployments_refresh.click()  # Refresh asks again, and says so again
    assert "could not read the deployments" in dashboard.deployments_view.value
