"""The lab extension as a person meets it: JupyterLab opens a notebook, %%track is added from the cell toolbar, the
run appears in the Experiments panel with its details, and a headless run starts from the dialog and finishes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.lab import (
    cell,
    cell_errors,
    new_project,
    open_experiments,
    run_all_cells,
    run_command,
    screenshot,
    wait_for_kernel,
)

if TYPE_CHECKING:
    from tests.browser.lab import Lab

pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
from playwright.sync_api import Page, expect

NOTEBOOK = "train.ipynb"
HOSTILE_NAME = "<img src=x onerror=window.__nbmlops_xss=1>"
RUN_TIMEOUT_MS = 120_000  # kernel start, nbmlops' first import, delivery to a new sqlite store
HEADLESS_TIMEOUT_MS = 240_000  # a second kernel, the notebook run, its records delivered


#: the notebook the test opens: a parameters cell, the extension, a cell to track from the toolbar, and a cell
#: tracked under a name that is HTML
CELLS = [
    ("C = 0.5\nlabel = 'demo'", ["parameters"]),
    "%load_ext nbmlops",
    "alpha = 0.25\nscore = round(1 - alpha * C, 4)",
    f'%%track --name "{HOSTILE_NAME}"\nbeta = 2\nloss = beta * C',
]


@pytest.fixture
def lab_project(tmp_path: Path) -> Path:
    """The lab's root: a project holding NOTEBOOK (overrides the conftest's fixture)."""
    return new_project(tmp_path / "project", "lab-extension-demo", {NOTEBOOK: CELLS})


def test_track_a_cell_see_its_run_and_run_the_notebook_headlessly(lab: Lab, page: Page, artifacts_dir: Path):
    page.goto(lab.page_url(f"lab/tree/{NOTEBOOK}"))

    # the status bar names the store the server's nbmlops uses
    store = page.locator(".nbmlops-StoreStatus")
    expect(store).to_have_text("MLflow: sqlite: mlflow.db", timeout=60_000)
    expect(store).not_to_have_class(re.compile("nbmlops-lab-mod-error"))

    wait_for_kernel(page, 60_000)

    # %%track from the cell toolbar of the third cell
    tracked = cell(page, 2)
    tracked.locator(".jp-InputPrompt").click()
    toggle = tracked.locator("[data-command='nbmlops:toggle-track']")
    expect(toggle).to_be_visible()
    toggle.click()
    expect(tracked.locator(".jp-Editor")).to_contain_text("%%track")
    expect(tracked.locator(".cm-line").first).to_have_text("%%track")

    run_all_cells(page)

    # the Experiments panel shows the runs, grouped by cell
    panel = open_experiments(page)
    runs = panel.locator(".nbmlops-lab-run")
    try:
        expect(runs).to_have_count(2, timeout=RUN_TIMEOUT_MS)
    except AssertionError as exc:
        raise AssertionError(f"no runs in the panel; the notebook's error outputs:\n{cell_errors(page)}") from exc
    groups = panel.locator(".nbmlops-lab-group")
    expect(groups).to_have_count(2)
    expect(groups.nth(0).locator("h3")).to_contain_text("Cell 4")  # the newest run first
    expect(groups.nth(1).locator("h3")).to_contain_text("Cell 3")
    expect(panel.locator(".nbmlops-lab-run[data-status='FINISHED']")).to_have_count(2)
    expect(panel).to_contain_text(HOSTILE_NAME)  # an HTML run name is text
    expect(panel.locator("img")).to_have_count(0)

    # cells with runs show their last status
    expect(cell(page, 2)).to_have_attribute("data-nbmlops-status", "finished")
    expect(cell(page, 3)).to_have_attribute("data-nbmlops-status", "finished")
    expect(cell(page, 1)).not_to_have_attribute("data-nbmlops-status", re.compile(".*"))

    # a run's details: params, metrics, a link to the MLflow UI
    run = groups.nth(1).locator(".nbmlops-lab-run").first
    expect(run.locator(".nbmlops-lab-run-summary")).to_contain_text("score=0.875")
    run.locator(".nbmlops-lab-run-title").click()
    details = run.locator(".nbmlops-lab-details")
    expect(details).to_contain_text("alpha", timeout=30_000)
    expect(details).to_contain_text("0.875")
    expect(details.locator(".nbmlops-lab-mlflow-link")).to_have_attribute("href", re.compile(r"^https?://"))
    screenshot(page, artifacts_dir, "lab-extension-run-details")

    # two runs compared
    for index in range(2):
        runs.nth(index).locator("input[type='checkbox']").check()
    comparison = panel.locator(".nbmlops-lab-compare")
    expect(comparison).to_contain_text("score")
    expect(comparison).to_contain_text("loss")
    comparison.locator("button", has_text="Close").click()

    # the Models tab reads the registry (empty here)
    panel.get_by_role("tab", name="Models").click()
    expect(panel.locator(".nbmlops-lab-model-select")).to_contain_text("no registered models")
    panel.get_by_role("tab", name="Runs").click()
    expect(runs).to_have_count(2)

    # Run headlessly: the dialog lists the declared parameters with their defaults
    run_command(page, "Run Notebook Headlessly")
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Run Notebook Headlessly")
    parameter = dialog.locator("#nbmlops-lab-param-C")
    expect(parameter).to_have_value("0.5")
    expect(dialog.locator("#nbmlops-lab-param-label")).to_have_value("demo")
    parameter.fill("2.0")
    screenshot(page, artifacts_dir, "lab-extension-run-headless-dialog")
    dialog.get_by_role("button", name="Start").click()
    expect(dialog).to_have_count(0)

    job = panel.locator(".nbmlops-lab-job").first
    expect(job).to_be_visible()
    expect(job).to_contain_text("C=2")
    try:
        expect(job).to_have_attribute("data-status", "finished", timeout=HEADLESS_TIMEOUT_MS)
    except AssertionError as exc:
        raise AssertionError(f"the headless run did not finish: {job.inner_text()}") from exc
    output = job.locator(".nbmlops-lab-job-output")
    expect(output).to_be_visible()
    expect(output).to_contain_text(".ipynb")
    screenshot(page, artifacts_dir, "lab-extension-headless-finished")

    # the headless run and its child run of the tracked cells are in the panel too
    expect(panel.locator(".nbmlops-lab-group h3", has_text="Headless runs")).to_be_visible(timeout=30_000)

    # the link opens the executed notebook in the lab
    output_path = output.get_attribute("title") or ""
    assert (lab.root / output_path).is_file(), output_path
    output.click()
    opened = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=Path(output_path).name)
    try:
        expect(opened).to_be_visible(timeout=30_000)
    except AssertionError as exc:
        raise AssertionError(
            f"the executed notebook {output_path} did not open; Jupyter's contents API does not serve files in "
            "hidden folders (ContentsManager.allow_hidden is off by default)"
        ) from exc
    screenshot(page, artifacts_dir, "lab-extension-executed-notebook")

    assert page.dialogs == [], f"a run name ran as script: {page.dialogs}"
    assert page.evaluate("window.__nbmlops_xss") is None
