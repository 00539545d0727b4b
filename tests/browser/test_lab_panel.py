"""The Experiments panel as a person reads it, in the light and the dark theme, over a real ``mlflow server`` the
test owns: chips (key metrics, then the user's own params), a run's details (curves of its metric series, artifact
links that open, an image preview, a failed run's exception), two runs compared (metrics first, only differences,
columns named by run), every text readable; then the tracking server is killed: within 5 s the panel shows why,
with Retry, and the status bar turns red naming a refused connection; the server started again, Retry shows the
runs again. One JupyterLab for the whole module, one kernel."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
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

pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
from playwright.sync_api import Locator, Page, expect

NOTEBOOK = "train.ipynb"
LONG_NAME = "epochs_with_a_rather_long_descriptive_name_for_the_first_model"
RUN_TIMEOUT_MS = 180_000  # kernel start, nbmlops' and scikit-learn's first import, delivery to the server
ERROR_WITHIN_MS = 5_000  # the bound: the error state within 5 s of the store's death

SETUP = """%load_ext nbmlops
import numpy as np
import matplotlib.pyplot as plt
import nbmlops
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="60" height="30"><rect width="60" height="30" fill="teal"/>'
       '<script>window.top.__nbmlops_svg = 1</script></svg>')
X = np.random.RandomState(0).rand(60, 3)
y = (X[:, 0] + 0.3 * X[:, 1] > 0.6).astype(int)"""

TRAIN = """%%track --name {name}
C = {C}
lr = 0.1
clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced")).fit(X, y)
for epoch in range(30):
    nbmlops.log_metric("train_mse", 1 / (epoch + 1), step=epoch)
    nbmlops.log_metric("val_mse", 1.4 / (epoch + 1) + C / 10, step=epoch)
accuracy = float(clf.score(X, y))
figure = plt.figure(figsize=(3, 2))
plt.plot([1 / (e + 1) for e in range(30)])
nbmlops.active_run().log_bytes(SVG.encode(), "plots/shape.svg")"""

FAILING = """%%track --name broken
raise ValueError("bad input shape (3, 2)")"""


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    server = TrackingServer(tmp_path_factory.mktemp("tracking"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def panel_lab(tmp_path_factory: pytest.TempPathFactory, tracking: TrackingServer,
              request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One JupyterLab for the module, on a project holding NOTEBOOK, tracking to the test's server."""
    base = tmp_path_factory.mktemp("panel")
    cells = [SETUP, TRAIN.format(name=LONG_NAME, C=0.5), TRAIN.format(name="small-C", C=0.05), FAILING]
    root = new_project(base / "project", "panel-demo", {NOTEBOOK: cells})
    with start_lab(root, base / "jupyter", request, tracking_uri=tracking.uri, env={"MPLBACKEND": "Agg"}) as lab:
        yield lab


def run_named(panel: Locator, name: str) -> Locator:
    return panel.locator(".nbmlops-lab-run", has=panel.page.locator(".nbmlops-lab-run-name", has_text=name))


def open_details(panel: Locator, name: str) -> Locator:
    run = run_named(panel, name)
    details = run.locator(".nbmlops-lab-details")
    if details.count() == 0:
        run.locator(".nbmlops-lab-run-title").click()
    expect(details.locator(".nbmlops-lab-facts")).to_be_visible(timeout=30_000)
    return details


def close_details(panel: Locator, name: str) -> None:
    run = run_named(panel, name)
    if run.locator(".nbmlops-lab-details").count():
        run.locator(".nbmlops-lab-run-title").click()
    expect(run.locator(".nbmlops-lab-details")).to_have_count(0)


def check_details(page: Page, panel: Locator, artifacts_dir: Path, theme: str) -> None:
    """A run's curves, its artifacts (a preview that loaded, a link that opens), the link to the MLflow UI; the
    failed run's exception."""
    details = open_details(panel, LONG_NAME)
    curve = details.locator(".nbmlops-lab-curve[data-metric='mse']")
    expect(curve).to_be_visible()
    expect(curve.locator("polyline")).to_have_count(2)  # val_mse and train_mse in one chart
    assert len(curve.locator("polyline").first.get_attribute("points").split()) == 30
    expect(curve.locator(".nbmlops-lab-curve-legend")).to_contain_text("val_mse")
    expect(details.locator(".nbmlops-lab-mlflow-link")).to_have_attribute("href", re.compile(r"^https?://.*#/experiments/"))

    preview = details.locator(".nbmlops-lab-previews img").first
    expect(preview).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle(), timeout=30_000)
    svg = details.locator(".nbmlops-lab-previews img[alt='plots/shape.svg']")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=svg.element_handle(), timeout=30_000)
    assert page.evaluate("() => window.__nbmlops_svg") is None, "an SVG artifact ran its script in the page"
    svg_answer = page.request.get(svg.get_attribute("src") or "")
    assert svg_answer.headers["content-type"] == "image/svg+xml", svg_answer.headers
    assert svg_answer.headers["content-disposition"].startswith("attachment"), svg_answer.headers
    link = details.locator(".nbmlops-lab-artifact-link", has_text=re.compile(r"figures/.*\.png$")).first
    href = link.get_attribute("href") or ""
    assert "/nbmlops/api/runs/" in href and "token=" not in href, href
    answer = page.request.get(href)  # the page's own cookies: what the link sends
    assert answer.status == 200 and answer.headers["content-type"] == "image/png", (answer.status, answer.headers)
    assert answer.headers["x-content-type-options"] == "nosniff"
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == href
    assert tab.evaluate("() => document.images.length === 1 && document.images[0].naturalWidth > 0")
    tab.close()
    screenshot(page, artifacts_dir, f"lab-run-details-{theme}")

    failed = open_details(panel, "broken")
    error = failed.locator(".nbmlops-lab-run-error")
    expect(error).to_contain_text("ValueError")
    expect(error).to_contain_text("bad input shape (3, 2)")
    traceback = page.request.get(error.locator("a").get_attribute("href") or "")
    assert traceback.status == 200 and "ValueError: bad input shape" in traceback.text()
    assert_readable(panel, theme == "dark", where="run details")
    close_details(panel, "broken")
    close_details(panel, LONG_NAME)


def check_compare(page: Page, panel: Locator, artifacts_dir: Path, theme: str) -> None:
    """Metrics first, only the differences (a toggle shows all), columns named by run, nothing wrapped."""
    for name in (LONG_NAME, "small-C"):
        box = run_named(panel, name).locator("input[type='checkbox']")
        if not box.is_checked():
            box.check()
    comparison = panel.locator(".nbmlops-lab-compare")
    expect(comparison).to_be_visible()
    sections = comparison.locator(".nbmlops-lab-table-section")
    expect(sections).to_have_text(["Metrics", "Params"])
    keys = comparison.locator("td.nbmlops-lab-key")
    expect(keys.filter(has_text=re.compile("^C$"))).to_have_count(1)
    expect(keys.filter(has_text=re.compile("^val_mse$"))).to_have_count(1)
    expect(keys.filter(has_text=re.compile("^lr$"))).to_have_count(0)  # the same in both: hidden
    expect(keys.filter(has_text=re.compile("^train_mse$"))).to_have_count(0)
    expect(comparison.locator(".nbmlops-lab-compare-hidden")).to_contain_text("hidden")

    headings = comparison.locator("th.nbmlops-lab-compare-run")
    expect(headings).to_have_count(2)
    ids = {run_named(panel, name).get_attribute("data-run-id")[:8] for name in (LONG_NAME, "small-C")}
    for index in range(2):
        heading = headings.nth(index)
        expect(heading.locator(".nbmlops-lab-compare-time")).to_have_text(re.compile(r"\d\d:\d\d"))
        assert any(short in heading.inner_text() for short in ids), heading.inner_text()
    long_heading = headings.filter(has_text="epochs_with")
    assert LONG_NAME in (long_heading.get_attribute("title") or "")
    name = long_heading.locator(".nbmlops-lab-compare-name")
    cut = name.evaluate("el => ({ width: el.scrollWidth > el.clientWidth, lines: el.getClientRects().length,"
                        " height: el.offsetHeight, line: parseFloat(getComputedStyle(el).lineHeight) || 16 })")
    assert cut["width"] and cut["height"] < 2 * cut["line"], f"the long run name wraps instead of being cut: {cut}"
    for key in keys.all():
        height = key.evaluate("el => el.offsetHeight")
        assert height < 40, f"{key.inner_text()!r} is wrapped ({height} px high)"
    screenshot(page, artifacts_dir, f"lab-compare-{theme}")
    assert_readable(panel, theme == "dark", where="compare")

    comparison.locator(".nbmlops-lab-compare-toggle input").uncheck()
    expect(keys.filter(has_text=re.compile("^lr$"))).to_have_count(1)
    comparison.locator(".nbmlops-lab-compare-toggle input").check()
    comparison.locator("button", has_text="Close").click()
    expect(comparison).to_have_count(0)


def test_the_panel_reads_well_and_survives_a_dead_store(panel_lab: Lab, tracking: TrackingServer, page: Page,
                                                        artifacts_dir: Path):
    page.goto(panel_lab.page_url(f"lab/tree/{NOTEBOOK}"))
    store = page.locator(".nbmlops-StoreStatus")
    expect(store).to_have_text(f"MLflow: 127.0.0.1:{tracking.port}", timeout=60_000)
    wait_for_kernel(page, 60_000)
    run_all_cells(page)

    panel = open_experiments(page)
    runs = panel.locator(".nbmlops-lab-run")
    try:
        expect(runs).to_have_count(3, timeout=RUN_TIMEOUT_MS)
        expect(panel.locator(".nbmlops-lab-run[data-status='FAILED']")).to_have_count(1, timeout=30_000)
    except AssertionError as exc:
        raise AssertionError(f"the runs did not reach the panel; the notebook's errors:\n{cell_errors(page)}") from exc

    # chips: the key metrics first, then the params the cell set (never the estimator's, by name)
    chips = run_named(panel, LONG_NAME).locator(".nbmlops-lab-chip")
    expect(chips.first).to_have_text(re.compile(r"^val_mse="))
    expect(chips.filter(has_text=re.compile(r"^C=0\.5$"))).to_have_count(1)
    expect(chips.filter(has_text="lr=0.1")).to_have_count(1)
    expect(chips.filter(has_text="clf.")).to_have_count(0)
    expect(chips.filter(has_text="class_weight")).to_have_count(0)

    for theme in ("light", "dark"):
        if theme == "dark":
            use_theme(page, dark=True)
        expect(runs).to_have_count(3)
        screenshot(page, artifacts_dir, f"lab-panel-{theme}")
        assert_readable(panel, theme == "dark", where="run list")
        check_details(page, panel, artifacts_dir, theme)
        check_compare(page, panel, artifacts_dir, theme)

    # the tracking server dies: within 5 s the panel says why, with Retry; the status bar is red, saying refused
    tracking.kill()
    killed = time.monotonic()
    failure = panel.locator(".nbmlops-lab-store-error")
    expect(failure).to_be_visible(timeout=ERROR_WITHIN_MS)
    expect(failure).to_contain_text("refused the connection")
    expect(failure).to_contain_text(f"127.0.0.1:{tracking.port}")
    expect(failure.get_by_role("button", name="Retry")).to_be_visible()
    expect(store).to_have_class(re.compile("nbmlops-lab-mod-error"), timeout=ERROR_WITHIN_MS)
    expect(store).to_have_attribute("title", re.compile("refused the connection"))
    print(f"error state and red status bar {time.monotonic() - killed:.1f} s after the kill")
    screenshot(page, artifacts_dir, "lab-store-error-dark")
    assert_readable(panel, True, where="the error state")

    # the server is back: Retry shows the runs again, the status bar turns back
    tracking.start()
    failure.get_by_role("button", name="Retry").click()
    expect(failure).to_have_count(0, timeout=20_000)
    expect(runs).to_have_count(3)
    expect(store).not_to_have_class(re.compile("nbmlops-lab-mod-error"), timeout=20_000)
