"""The dashboard as a person meets it: JupyterLab opens examples/dashboard.ipynb, runs it, and the app filters."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.browser.conftest import Lab

pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
from playwright.sync_api import Page, expect

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
EXPERIMENT = "project/dashboard"  # the example notebook's default experiment: <project folder>/<its path in it>
FILTER = "accuracy > 0.9"
RENDER_TIMEOUT_MS = 120_000  # kernel start, imports, six small fits, delivery to a new sqlite store
ROUND_TRIP_MS = 30_000  # a widget event to the kernel and the redrawn widgets back, on a busy 2-core machine


def seed_hostile_run(lab: Lab) -> None:
    """A run whose name is HTML that would run script if the dashboard inserted it as markup."""
    code = textwrap.dedent(f"""
        import nbmlops
        with nbmlops.track({HOSTILE_NAME!r}, experiment={EXPERIMENT!r}):
            nbmlops.log_metric("accuracy", 0.99)
        nbmlops.flush(60)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    env["NBMLOPS_TRACKING_URI"] = lab.tracking_uri
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=lab.root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def run_counts(lab: Lab) -> tuple[int, int]:
    """How many runs the experiment holds, and how many of them pass FILTER, read from the store itself."""
    from mlflow import MlflowClient

    client = MlflowClient(lab.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no experiment {EXPERIMENT!r}: {[e.name for e in client.search_experiments()]}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return len(runs), sum(1 for run in runs if run.data.metrics.get("accuracy", float("-inf")) > 0.9)


def run_all_cells(page: Page) -> None:
    """Open the notebook's Run menu and choose Run All Cells, as a person would, once the kernel is idle.

    The status bar names the kernel only once it is connected (the toolbar's indicator says "idle" earlier, while
    no kernel is there yet, and Run All then asks which kernel to start).
    """
    kernel_idle = page.get_by_role("contentinfo").get_by_role("button", name=re.compile(r"^Python 3\b.*\| Idle$"))
    expect(kernel_idle).to_be_visible(timeout=60_000)
    page.locator("#jp-menu-panel").get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def count_text(n: int) -> re.Pattern[str]:
    """What ``.nbmlops-count`` says for ``n`` runs: ``1 run``, ``7 runs``."""
    return re.compile(rf"^{n} runs?$")


def cell_errors(page: Page) -> str:
    """The text of every error or stderr output in the notebook, to explain a dashboard that never came."""
    outputs = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return "\n".join(outputs.all_inner_texts()) or "(no error output)"


def test_dashboard_renders_filters_and_shows_html_run_names_as_text(lab: Lab, page: Page, artifacts_dir: Path):
    seed_hostile_run(lab)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(lab.page_url("lab/tree/dashboard.ipynb"))
    run_all_cells(page)

    dashboard = page.locator(".nbmlops-dashboard")
    try:
        expect(dashboard).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    except AssertionError as exc:
        raise AssertionError(f"no dashboard; the notebook's error outputs:\n{cell_errors(page)}") from exc
    total, passing = run_counts(lab)
    assert 0 < passing < total, (passing, total)
    count = dashboard.locator(".nbmlops-count")
    runs = dashboard.locator(".nbmlops-runs")
    expect(count).to_have_text(count_text(total), timeout=ROUND_TRIP_MS)
    expect(runs.locator("tr[data-run-id]")).to_have_count(total, timeout=ROUND_TRIP_MS)
    expect(runs).to_contain_text(HOSTILE_NAME)
    dashboard.scroll_into_view_if_needed()
    shot = artifacts_dir / "dashboard-rendered.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")

    dashboard.locator(".nbmlops-filter input").fill(FILTER)
    dashboard.locator(".nbmlops-apply").click()
    expect(count).to_have_text(count_text(passing), timeout=ROUND_TRIP_MS)
    expect(runs.locator("tr[data-run-id]")).to_have_count(passing, timeout=ROUND_TRIP_MS)
    expect(runs).to_contain_text(HOSTILE_NAME)  # its accuracy passes the filter
    shot = artifacts_dir / "dashboard-filtered.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")

    expect(dashboard.locator(".nbmlops-error").first).to_have_text("")
    expect(runs.locator("img")).to_have_count(0)
    expect(page.locator("img[src='x']")).to_have_count(0)
    assert dialogs == [], f"the run name ran as script: {dialogs}"
