"""The Deployments tab of the Experiments panel as a person reads it, in the light and the dark theme, over a real
``mlflow server`` holding serving runs recorded as the serving design says: the empty state names the command
that starts a server; then each deployment with its address (a link), version, state (serving first; dead by a
stale heartbeat or a kill; stopped), traffic, latency, drift state and last swap, a model name holding ``<b>``
shown as text; the dashboard's Deployments HTML in a notebook output, readable in both themes; the tracking server
killed, the tab shows the panel's error state with Retry (and the status bar turns red), and Retry shows the
deployments again once it is back.
One JupyterLab for the module, one kernel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.browser.lab import (
    Lab,
    cell_errors,
    new_project,
    open_experiments,
    run_all_cells,
    screenshot,
    start_lab,
    use_theme,
    wait_for_kernel,
)
from tests.browser.looks import assert_readable
from tests.browser.panel_helpers import TrackingServer
from tests.serving.deployments_seeding import ago, iso, seed_monitor_run, seed_serving_run

pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
from playwright.sync_api import Locator, Page, expect

NOTEBOOK = "deployments.ipynb"
HOSTILE = "<b>iris</b>"
SHOW = """from IPython.display import HTML
from nbmlops.config import resolve_settings
from nbmlops.widgets.deployments import DeploymentsView
HTML(DeploymentsView(resolve_settings()).html())"""


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    server = TrackingServer(tmp_path_factory.mktemp("tracking"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployments_lab(tmp_path_factory: pytest.TempPathFactory, tracking: TrackingServer,
                    request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One JupyterLab for the module, on a project holding NOTEBOOK, tracking to the test's server."""
    base = tmp_path_factory.mktemp("deployments")
    root = new_project(base / "project", "deployments-demo", {NOTEBOOK: [SHOW]})
    with start_lab(root, base / "jupyter", request, tracking_uri=tracking.uri) as lab:
        yield lab


def seed(uri: str) -> dict[str, str]:
    """Five deployments: serving (drifted, swapped, shadowed; a hostile name), serving on staging (never checked),
    dead by a stale heartbeat, killed, stopped (drift ok). Returns their run ids by role."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    runs = {
        "serving": seed_serving_run(c, HOSTILE, url="http://127.0.0.1:8080", version=2, since=ago(3600),
                                    last_swap=(ago(300), 1, 2), shadow="challenger"),
        "staging": seed_serving_run(c, "churn", "staging", url="http://127.0.0.1:8081", version=5, since=ago(60),
                                    figures={"requests": 12.0, "errors": 0.0, "error_rate": 0.0,
                                             "latency_p50_ms": 1.5, "latency_p95_ms": 2.75}),
        "stale": seed_serving_run(c, "fraud", url="http://127.0.0.1:8082", heartbeat=ago(3600), since=ago(7200)),
        "killed": seed_serving_run(c, "prices", url="http://127.0.0.1:8083", status="KILLED", since=ago(900)),
        "stopped": seed_serving_run(c, "spam", url="http://127.0.0.1:8084", status="FINISHED", since=ago(1800)),
    }
    seed_monitor_run(c, HOSTILE, 2, drifted=True)
    seed_monitor_run(c, "spam", 1, drifted=False)
    return runs


def beat(uri: str, *run_ids: str) -> None:
    """What a live server's recorder does on each delivery: refresh the heartbeat."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for run_id in run_ids:
        client.set_tag(run_id, "nbmlops.serve.heartbeat", iso(datetime.now(timezone.utc)))


def open_deployments(page: Page) -> Locator:
    panel = open_experiments(page)
    tab = panel.get_by_role("tab", name="Deployments")
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    view = panel.locator(".nbmlops-lab-deployments")
    expect(view).to_be_visible()
    return view


def refresh(view: Locator) -> None:
    view.get_by_role("button", name="Refresh deployments").click()
    expect(view).to_have_attribute("aria-busy", "false", timeout=30_000)


def check_list(view: Locator, runs: dict[str, str]) -> None:
    """Serving first, each deployment's facts as a person reads them; the hostile name is text, not markup."""
    items = view.locator(".nbmlops-lab-deployment")
    expect(items).to_have_count(5, timeout=30_000)
    expect(items.nth(0)).to_have_attribute("data-state", "serving")
    expect(items.nth(1)).to_have_attribute("data-state", "serving")
    states = [items.nth(i).get_attribute("data-state") for i in range(5)]
    assert states == ["serving", "serving", "dead", "dead", "stopped"], states
    expect(view.locator(".nbmlops-lab-deployments-summary")).to_have_text("2 of 5 serving")

    served = view.locator(f".nbmlops-lab-deployment[data-run-id='{runs['serving']}']")
    expect(served.locator(".nbmlops-lab-deployment-name")).to_have_text(f"{HOSTILE}@champion")
    expect(served.locator(".nbmlops-lab-deployment-name b")).to_have_count(0)  # shown, never made bold
    link = served.locator(".nbmlops-lab-deployment-address a")
    expect(link).to_have_attribute("href", "http://127.0.0.1:8080/")
    expect(link).to_have_text("http://127.0.0.1:8080")
    expect(served.locator(".nbmlops-lab-deployment-state")).to_have_text("serving")
    expect(served.locator(".nbmlops-lab-deployment-version")).to_have_text("v2 · shadow @challenger")
    expect(served.locator(".nbmlops-lab-deployment-traffic")).to_have_text("200 requests · 2 % errors")
    expect(served.locator(".nbmlops-lab-deployment-latency")).to_have_text("p50 3.25 ms · p95 11.5 ms")
    expect(served.locator(".nbmlops-lab-drift")).to_have_text("drifted")
    expect(served.locator(".nbmlops-lab-deployment-drift")).to_contain_text(re.compile(r"drifted v2 · \d\d:\d\d"))
    expect(served.locator(".nbmlops-lab-deployment-swap")).to_have_text(re.compile(r"^v1 -> v2 · \d\d:\d\d:\d\d$"))
    expect(served.locator(".nbmlops-lab-mlflow-link")).to_have_attribute("href", re.compile(rf"/runs/{runs['serving']}$"))

    staging = view.locator(f".nbmlops-lab-deployment[data-run-id='{runs['staging']}']")
    expect(staging.locator(".nbmlops-lab-deployment-name")).to_have_text("churn@staging")
    expect(staging.locator(".nbmlops-lab-drift")).to_have_text("never checked")
    expect(staging.locator(".nbmlops-lab-deployment-swap")).to_have_text("\u2014")
    stale = view.locator(f".nbmlops-lab-deployment[data-run-id='{runs['stale']}']")
    expect(stale.locator(".nbmlops-lab-deployment-detail")).to_have_text(re.compile(r"^no heartbeat since "))
    killed = view.locator(f".nbmlops-lab-deployment[data-run-id='{runs['killed']}']")
    expect(killed.locator(".nbmlops-lab-deployment-detail")).to_have_text(re.compile(r"^killed at "))
    stopped = view.locator(f".nbmlops-lab-deployment[data-run-id='{runs['stopped']}']")
    expect(stopped.locator(".nbmlops-lab-drift")).to_have_text("ok")


def check_dashboard_html(page: Page, runs: dict[str, str], dark: bool) -> Locator:
    """The dashboard's Deployments HTML, as the notebook's output shows it: every row, readable."""
    output = page.locator(".jp-OutputArea-output .nbmlops-deployments-view")
    try:
        expect(output.locator("table.nbmlops-deployments-table")).to_be_visible(timeout=180_000)
    except AssertionError as exc:
        raise AssertionError(f"no deployments table in the output; the notebook's errors:\n{cell_errors(page)}") from exc
    expect(output.locator("tr[data-run-id]")).to_have_count(5)
    states = [row.get_attribute("data-state") for row in output.locator("tbody tr").all()]
    assert states == ["serving", "serving", "dead", "dead", "stopped"], states
    hostile = output.locator(f"tr[data-run-id='{runs['serving']}'] td").first
    expect(hostile).to_contain_text(f"{HOSTILE}@champion")
    expect(hostile.locator("b b")).to_have_count(0)  # the name is text inside the cell's bold, not markup
    assert_readable(output, dark, where="the dashboard's Deployments table")
    return output


def test_the_deployments_tab_reads_well_and_survives_a_dead_store(deployments_lab: Lab, tracking: TrackingServer,
                                                                  page: Page, artifacts_dir: Path):
    page.goto(deployments_lab.page_url(f"lab/tree/{NOTEBOOK}"))
    use_theme(page, dark=False)
    view = open_deployments(page)

    # nothing served yet: the empty state says how to start a server
    empty = view.locator(".nbmlops-lab-deployments-empty")
    expect(empty).to_be_visible(timeout=60_000)
    expect(empty.locator("code")).to_have_text("nbmlops serve NAME@champion")
    expect(view.locator(".nbmlops-lab-deployments-summary")).to_have_text("no deployments")

    sidebar_tab = page.locator(".jp-SideBar .lm-TabBar-tab[data-id='nbmlops-experiments']")
    runs = seed(tracking.uri)
    live = (runs["serving"], runs["staging"])
    wait_for_kernel(page, 120_000)
    run_all_cells(page)
    for theme in ("light", "dark"):
        dark = theme == "dark"
        if dark:
            use_theme(page, dark=True)
        beat(tracking.uri, *live)
        refresh(view)
        check_list(view, runs)
        screenshot(page.locator("#nbmlops-experiments"), artifacts_dir, f"deployments-panel-{theme}")
        assert_readable(view, dark, where=f"the Deployments tab ({theme})")
        output = check_dashboard_html(page, runs, dark)
        sidebar_tab.click()  # the sidebar closed, as a person reading the wide table would
        expect(page.locator("#nbmlops-experiments")).to_be_hidden()
        assert output.evaluate("el => el.querySelector('.nbmlops-scroll').scrollWidth <= el.clientWidth + 1"), (
            "the table does not fit the notebook's width")
        screenshot(output, artifacts_dir, f"deployments-dashboard-{theme}")
        open_experiments(page)
        expect(view).to_be_visible()

    # the tracking server dies: the tab shows the panel's error state, with Retry
    tracking.kill()
    refresh(view)
    failure = view.locator(".nbmlops-lab-store-error")
    expect(failure).to_be_visible(timeout=15_000)
    expect(failure.locator(".nbmlops-lab-store-error-title")).to_have_text("Deployments unavailable")
    expect(failure).to_contain_text("refused the connection")
    expect(view.locator(".nbmlops-lab-deployment")).to_have_count(0)
    store = page.locator(".nbmlops-StoreStatus")  # the status bar learns it from this tab's answer too
    expect(store).to_have_class(re.compile("nbmlops-lab-mod-error"), timeout=5_000)
    assert_readable(view, True, where="the Deployments error state")
    screenshot(view, artifacts_dir, "deployments-store-error-dark")

    # it is back: Retry shows the deployments again
    tracking.start()
    beat(tracking.uri, *live)
    failure.get_by_role("button", name="Retry").click()
    expect(failure).to_have_count(0, timeout=30_000)
    check_list(view, runs)
    expect(store).not_to_have_class(re.compile("nbmlops-lab-mod-error"), timeout=20_000)
