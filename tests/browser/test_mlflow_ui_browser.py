"""Run links open the MLflow UI that Jupyter serves, in the light and the dark theme (one JupyterLab for the file,
at JupyterHub's kind of base URL ``/user/alice/``, on a project whose default sqlite store holds a run).

The link a kernel builds from its settings (the summary's, the dashboard's) is clicked in a notebook's output and
opens MLflow's run page in a new tab; the panel's link (the API's ``ui_url``, made absolute on the page as the panel
does) is the same address. Nothing else serves MLflow: no ``nbmlops ui``, nothing on 127.0.0.1:5000.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.lab import Lab, cell, new_project, screenshot, start_lab, use_theme, wait_for_kernel, write_notebook
from tests.browser.looks import background_luminance, text_contrast

playwright = pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra")
expect = playwright.expect

BASE_URL = "/user/alice/"
RUN_NAME = "proxied-run"
KERNEL_TIMEOUT_MS = 120_000
MLFLOW_TIMEOUT_MS = 180_000  # the first request starts `mlflow server` (imports, a sqlite check) on a busy machine
#: where MLflow's UI remembers the colour scheme it chose (else it follows the browser's preference)
MLFLOW_THEME_KEY = "_mlflow_dark_mode_toggle_enabled"

#: the link as the summary builds it: the kernel's own settings, inherited from the server that started it
LINK_CELL = """\
from IPython.display import HTML
from nbmlops.config import resolve_settings
from nbmlops.tracking.summary import run_url

link = run_url(resolve_settings().ui_url, {experiment!r}, {run!r})
HTML(f'<a class="ui-proxy-link" href="{{link}}">open {run_name} in MLflow</a>')
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project JupyterLab serves."""
    return new_project(tmp_path_factory.mktemp("ui") / "project", "ui")


@pytest.fixture(scope="module")
def run_ids(project: Path) -> tuple[str, str]:
    """One finished run RUN_NAME (``accuracy`` 0.93) in the project's default store; its experiment and run ids."""
    from mlflow import MlflowClient

    (project / ".nbmlops").mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{project / '.nbmlops' / 'mlflow.db'}")
    experiment_id = client.create_experiment("ui/train", artifact_location=str(project / ".nbmlops" / "artifacts"))
    run = client.create_run(experiment_id, run_name=RUN_NAME)
    client.log_metric(run.info.run_id, "accuracy", 0.93)
    client.set_terminated(run.info.run_id)
    return experiment_id, run.info.run_id


@pytest.fixture(scope="module")
def ui_lab(project: Path, run_ids: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One JupyterLab for the module at BASE_URL, shaped like a JupyterHub single-user server, on the project's
    default store (no NBMLOPS_TRACKING_URI); the MLflow UI it starts ends with it."""
    with start_lab(project, tmp_path_factory.mktemp("ui-lab"), request, tracking_uri=None, base_url=BASE_URL,
                   logs=[project / ".nbmlops" / "mlflow-ui.log"]) as lab:
        yield lab




def expect_run_page(page, artifacts_dir: Path, shot: str) -> None:
    """MLflow's page of the run: its name and its metric, as a person reads them."""
    expect(page.get_by_text(RUN_NAME).first).to_be_visible(timeout=MLFLOW_TIMEOUT_MS)
    metric = page.get_by_role("row").filter(has_text="accuracy")
    expect(metric).to_be_visible(timeout=60_000)
    expect(metric).to_contain_text("0.93")
    screenshot(page, artifacts_dir, shot)


def test_run_links_open_the_mlflow_ui_jupyter_serves(ui_lab: Lab, run_ids: tuple[str, str], page,
                                                     artifacts_dir: Path):
    experiment_id, run_id = run_ids
    write_notebook(ui_lab.root / "links.ipynb",
                   [LINK_CELL.format(experiment=experiment_id, run=run_id, run_name=RUN_NAME)])
    page.goto(ui_lab.page_url("lab/tree/links.ipynb"))
    wait_for_kernel(page, KERNEL_TIMEOUT_MS)
    use_theme(page, dark=False)
    expected = f"{ui_lab.origin}{BASE_URL}mlflow/#/experiments/{experiment_id}/runs/{run_id}"

    # the panel's link: the API's, from the settings of the server, made absolute on this page as safeHref does
    answer = page.request.get(ui_lab.url(f"nbmlops/api/runs/{run_id}"))
    assert answer.ok, answer.text()
    panel_link = json.loads(answer.text())["ui_url"]
    assert panel_link == f"{BASE_URL}mlflow/#/experiments/{experiment_id}/runs/{run_id}"
    assert page.evaluate("(url) => new URL(url, location.href).href", panel_link) == expected

    # the kernel's link, in a notebook's output: Lab leaves it as it is and opens it in a new tab
    cell(page, 0).click()
    page.keyboard.press("Shift+Enter")
    link = page.locator(".jp-OutputArea-output a.ui-proxy-link")
    expect(link).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    assert link.evaluate("(a) => a.href") == expected
    assert link.get_attribute("target") == "_blank"

    with page.expect_popup(timeout=60_000) as opened:
        link.click()
    mlflow = opened.value
    assert mlflow.url == expected
    expect_run_page(mlflow, artifacts_dir, "mlflow-ui-proxied-light")
    assert background_luminance(mlflow.locator("body")) > 0.8
    mlflow.close()

    # the dark theme: the link reads in the output; MLflow follows a dark browser preference
    use_theme(page, dark=True)
    page.emulate_media(color_scheme="dark")
    assert background_luminance(link) < 0.2 and text_contrast(link) >= 3.0, text_contrast(link)
    screenshot(page, artifacts_dir, "mlflow-ui-link-dark")
    with page.expect_popup(timeout=60_000) as opened:
        link.click()
    mlflow = opened.value
    mlflow.emulate_media(color_scheme="dark")
    mlflow.evaluate(f"localStorage.removeItem({MLFLOW_THEME_KEY!r})")  # MLflow keeps the scheme of the first visit
    mlflow.reload()
    expect_run_page(mlflow, artifacts_dir, "mlflow-ui-proxied-dark")
    assert background_luminance(mlflow.locator("body")) < 0.2
    assert text_contrast(mlflow.get_by_text(RUN_NAME).first) >= 3.0
    mlflow.close()
