"""The ``%%track`` summary as a person sees it in JupyterLab, light and dark: a tracked per-epoch loop run twice
with a changed param shows compact striped rows, curves for the series, the changed param flagged, and its link
once the run is in the store (a display update sent by the kernel's delivery thread); the saved notebook exported
with nbconvert holds that final summary; Notebook 7 and the exported page show it as compactly, as readably.
Screenshots: ``summary-light.png``, ``summary-dark.png``, ``summary-notebook7-dark.png``, ``summary-exported-light.png``."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.lab import (
    Lab,
    cell,
    cell_errors,
    new_project,
    own_store,
    run_all_cells,
    screenshot,
    start_lab,
    use_theme,
    wait_for_kernel,
)
from tests.browser.looks import assert_readable

pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
from playwright.sync_api import Locator, Page, expect

NOTEBOOK = "summary.ipynb"
RUN_TIMEOUT_MS = 120_000  # kernel start, nbmlops' first import, the delivery process, a new sqlite store
TRACKED = """%%track --name fit --params C
import nbmlops
for epoch in range(30):
    nbmlops.log_metric("train_mse", C / (epoch + 1) + 0.02)
    nbmlops.log_metric("val_mse", C / (epoch + 1) + 0.002 * epoch + 0.05)
accuracy = round(0.95 - C / 10, 4)"""
MAX_ROW_PX = 22


@pytest.fixture(scope="module")
def summary_lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One JupyterLab for the module, on a project holding NOTEBOOK (the extension, the param, the tracked loop),
    with its own sqlite store."""
    base = tmp_path_factory.mktemp("summary-lab")
    root = new_project(base / "project", "summary-demo", {NOTEBOOK: ["%load_ext nbmlops", "C = 0.5", TRACKED]})
    with start_lab(root, base / "jupyter", request, tracking_uri=own_store(base / "store")) as lab:
        yield lab


def wait_for_link(page: Page, summary: Locator) -> None:
    try:
        expect(summary.get_by_role("link", name=re.compile("open in MLflow"))).to_be_visible(timeout=RUN_TIMEOUT_MS)
    except AssertionError as exc:
        raise AssertionError(f"the summary never got its link; error outputs:\n{cell_errors(page)}") from exc


def check_what_a_person_sees(page: Page, summary: Locator, theme: str) -> None:
    """Compact rows, both curves, the changed param, readable text on backgrounds of the theme."""
    rows = summary.locator("table tr")
    heights = [box["height"] for box in (row.bounding_box() for row in rows.all()) if box and box["height"] > 0]
    assert len(heights) >= 6 and max(heights) < MAX_ROW_PX, heights
    curves = summary.locator("svg.nbmlops-curve")
    expect(curves).to_have_count(2)
    for curve in curves.all():
        expect(curve).to_be_visible()
        assert len(re.findall(r"[ML][\d.]+ [\d.]+", curve.locator("path").get_attribute("d") or "")) == 30
    flag = summary.locator("tr", has=page.locator(".nbmlops-changed"))
    expect(flag).to_have_count(1)
    expect(flag).to_contain_text("C")
    expect(flag).to_contain_text("0.5 \u2192 0.05")
    expect(flag.locator(".nbmlops-changed")).to_be_visible()
    expect(summary.locator(".nbmlops-delta-better").first).to_be_visible()  # a lower val_mse, coloured as better
    expect(summary.locator(".jupyter-widgets")).to_have_count(0)
    assert_readable(summary, theme == "dark", where="the summary")


def test_summary_of_a_tracked_loop_in_light_and_dark_and_in_the_exported_notebook(
    summary_lab: Lab, page: Page, artifacts_dir: Path
):
    import nbformat
    from mlflow import MlflowClient

    lab = summary_lab
    page.goto(lab.page_url(f"lab/tree/{NOTEBOOK}"))
    wait_for_kernel(page, RUN_TIMEOUT_MS)
    run_all_cells(page)
    tracked = cell(page, 2)
    wait_for_link(page, tracked.locator(".nbmlops-summary"))

    # the param changes and the tracked cell runs again
    editor = cell(page, 1).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("C = 0.05")
    page.keyboard.press("Shift+Enter")  # runs it and selects the tracked cell
    page.keyboard.press("Shift+Enter")
    summary = tracked.locator(".nbmlops-summary")
    expect(summary.locator(".nbmlops-changed")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_for_link(page, summary)
    expect(summary).to_have_count(1)
    expect(tracked.locator(".jp-OutputArea-output[data-mime-type='text/html']")).to_have_count(1)

    check_what_a_person_sees(page, summary, "light")
    tracked.scroll_into_view_if_needed()
    screenshot(tracked, artifacts_dir, "summary-light")

    use_theme(page, dark=True)
    check_what_a_person_sees(page, summary, "dark")
    screenshot(tracked, artifacts_dir, "summary-dark")

    # the notebook saved by JupyterLab holds the final summary, and nbconvert shows it
    client = MlflowClient(lab.tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="attributes.run_name = 'fit'", order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and runs[0].data.params["C"] == "0.05", [r.data.params for r in runs]
    link = f"#/experiments/{runs[0].info.experiment_id}/runs/{runs[0].info.run_id}"
    expect(summary.get_by_role("link", name=re.compile("open in MLflow"))).to_have_attribute("href", re.compile(re.escape(link)))
    page.keyboard.press("Control+s")
    expect(page.locator(".lm-TabBar-tab.jp-mod-dirty")).to_have_count(0, timeout=30_000)
    exported = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(lab.root / "export"), str(lab.root / NOTEBOOK)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert exported.returncode == 0, exported.stderr
    page_html = (lab.root / "export" / "summary.html").read_text()
    saved = [list(o.get("data", {})) for c in nbformat.read(lab.root / NOTEBOOK, as_version=4).cells for o in c.get("outputs", [])]
    assert len(re.findall(r"class=[\"']nbmlops-summary[\"']", page_html)) == 1 and link in page_html, saved
    assert "syncing to the tracking store" not in page_html and "nbmlops-changed" in page_html

    # the same summary in Notebook 7 (the theme JupyterLab's settings name: dark now) and in the exported page
    page.goto(lab.page_url(f"notebooks/{NOTEBOOK}"))
    in_notebook7 = page.locator(".jp-Cell").nth(2).locator(".nbmlops-summary")
    expect(in_notebook7).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.locator("body[data-jp-theme-light='false']")).to_have_count(1, timeout=30_000)
    check_what_a_person_sees(page, in_notebook7, "dark")
    screenshot(in_notebook7, artifacts_dir, "summary-notebook7-dark")
    page.set_content(page_html)
    exported_summary = page.locator(".nbmlops-summary")
    check_what_a_person_sees(page, exported_summary, "light")
    screenshot(exported_summary, artifacts_dir, "summary-exported-light")
