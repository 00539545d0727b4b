"""Run links open the MLflow UI that Jupyter serves, in the light and the dark theme (one JupyterLab for the file,
at JupyterHub's kind of base URL ``/user/alice/``, on a project whose default sqlite store holds a run).

The link a kernel builds from its settings (the summary's, the dashboard's) is clicked in a notebook's output and
opens MLflow's run page in a new tab; the panel's link (the API's ``ui_url``, made absolute on the page as the panel
does) is the same address. Nothing else serves MLflow: no ``nbmlops ui``, nothing on 127.0.0.1:5000.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.browser.ui_helpers import RUN_NAME, UILab, background_luminance, start_ui_lab, text_contrast, use_theme

playwright = pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra")
expect = playwright.expect

BASE_URL = "/user/alice/"
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
def ui_lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[UILab]:
    root = tmp_path_factory.mktemp("ui") / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'ui'\n")
    yield from start_ui_lab(root, tmp_path_factory.mktemp("ui-lab"), BASE_URL, request)


def write_link_notebook(lab: UILab) -> str:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells.append(nbformat.v4.new_code_cell(
        LINK_CELL.format(experiment=lab.experiment_id, run=lab.run_id, run_name=RUN_NAME)))
    nbformat.write(notebook, lab.root / "links.ipynb")
    return "links.ipynb"


def expect_run_page(page, artifacts_dir: Path, shot: str) -> None:
    """MLflow's page of the run: its name and its metric, as a person reads them."""
    expect(page.get_by_text(RUN_NAME).first).to_be_visible(timeout=MLFLOW_TIMEOUT_MS)
    metric = page.get_by_role("row").filter(has_text="accuracy")
    expect(metric).to_be_visible(timeout=60_000)
    expect(metric).to_contain_text("0.93")
    page.screenshot(path=str(artifacts_dir / shot))


def test_run_links_open_the_mlflow_ui_jupyter_serves(ui_lab: UILab, page, artifacts_dir: Path):
    name = write_link_notebook(ui_lab)
    page.goto(ui_lab.url(f"lab/tree/{name}?token={ui_lab.token}"))
    kernel_idle = page.get_by_role("contentinfo").get_by_role("button", name=re.compile(r"\| Idle$"))
    expect(kernel_idle).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    use_theme(page, dark=False)
    expected = f"{ui_lab.origin}{BASE_URL}mlflow/#/experiments/{ui_lab.experiment_id}/runs/{ui_lab.run_id}"

    # the panel's link: the API's, from the settings of the server, made absolute on this page as safeHref does
    answer = page.request.get(ui_lab.url(f"nbmlops/api/runs/{ui_lab.run_id}"))
    assert answer.ok, answer.text()
    panel_link = json.loads(answer.text())["ui_url"]
    assert panel_link == f"{BASE_URL}mlflow/#/experiments/{ui_lab.experiment_id}/runs/{ui_lab.run_id}"
    assert page.evaluate("(url) => new URL(url, location.href).href", panel_link) == expected

    # the kernel's link, in a notebook's output: Lab leaves it as it is and opens it in a new tab
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Shift+Enter")
    link = page.locator(".jp-OutputArea-output a.ui-proxy-link")
    expect(link).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    assert link.evaluate("(a) => a.href") == expected
    assert link.get_attribute("target") == "_blank"

    with page.expect_popup(timeout=60_000) as opened:
        link.click()
    mlflow = opened.value
    assert mlflow.url == expected
    expect_run_page(mlflow, artifacts_dir, "mlflow-ui-proxied-light.png")
    assert background_luminance(mlflow.locator("body")) > 0.8
    mlflow.close()

    # the dark theme: the link reads in the output; MLflow follows a dark browser preference
    use_theme(page, dark=True)
    page.emulate_media(color_scheme="dark")
    assert background_luminance(link) < 0.2 and text_contrast(link) >= 3.0, text_contrast(link)
    page.screenshot(path=str(artifacts_dir / "mlflow-ui-link-dark.png"))
    with page.expect_popup(timeout=60_000) as opened:
        link.click()
    mlflow = opened.value
    mlflow.emulate_media(color_scheme="dark")
    mlflow.evaluate(f"localStorage.removeItem({MLFLOW_THEME_KEY!r})")  # MLflow keeps the scheme of the first visit
    mlflow.reload()
    expect_run_page(mlflow, artifacts_dir, "mlflow-ui-proxied-dark.png")
    assert background_luminance(mlflow.locator("body")) < 0.2
    assert text_contrast(mlflow.get_by_text(RUN_NAME).first) >= 3.0
    mlflow.close()
