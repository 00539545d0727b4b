"""What the dashboard's browser test needs beside the shared fixtures: one JupyterLab and one page for the whole
module, on a project where runs like the quickstart's were seeded through nbmlops itself, and when the Charts tab
showed its loading line and its first chart, measured in the page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.lab import REPO, Lab, clean_env, new_project, open_page, own_store, start_lab

EXPERIMENT = "project/dashboard"  # the example notebook's default experiment: <project folder>/<its path in it>
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
SERIES_STEPS = 30

#: runs like a person's after the quickstart, in the example notebook's experiment: a run whose name is HTML, a
#: ``train`` cell run with the user's params, many estimator params and 30-step loss series, and a headless
#: notebook run with its cell run (both carry ``accuracy``: the notebook's is rolled up from the cell's)
SEED = textwrap.dedent(f"""
    import math
    import nbmlops

    EXPERIMENT = {EXPERIMENT!r}
    with nbmlops.track({HOSTILE_NAME!r}, experiment=EXPERIMENT):
        nbmlops.log_metric("accuracy", 0.99)
    estimator = {{f"model.logisticregression__p{{i:02d}}": i for i in range(27)}}
    cell = {{"nbmlops.kind": "cell", "nbmlops.notebook": "quickstart.ipynb", "nbmlops.cell_key": "2cbd4751"}}
    with nbmlops.track("train", experiment=EXPERIMENT,
                       params={{"C": 0.5, "max_iter": 500, **estimator, "model.logisticregression__C": 0.5}},
                       tags={{**cell, "nbmlops.execution_count": "5"}}) as run:
        for step in range({SERIES_STEPS}):
            run.log_metric("train_mse", 1 / (1 + step) + 0.05, step=step)
            run.log_metric("val_mse", 1 / (1 + step) + 0.1 + step / 400, step=step)
        run.log_metric("accuracy", 0.961)
    with nbmlops.track("quickstart", experiment=EXPERIMENT,
                       tags={{"nbmlops.kind": "notebook", "nbmlops.notebook": "quickstart.ipynb"}}) as notebook:
        with nbmlops.track("train", experiment=EXPERIMENT,
                           params={{"C": 0.05, "max_iter": 500, **estimator, "model.logisticregression__C": 0.05}},
                           tags={{**cell, "nbmlops.execution_count": "3"}}) as child:
            child.log_metric("accuracy", 0.944)
        notebook.log_metric("accuracy", 0.944)
    nbmlops.flush(60)
""")

#: watches the Charts tab from the moment it is clicked: when its loading line was first and last seen, when the
#: kernel's first answer (the metric list) arrived and when the first plotly chart was drawn (ms after the click);
#: ``window.__nbmlopsCharts`` holds the answer
WATCH_CHARTS_JS = """
(dashboard) => {
  const started = performance.now();
  const seen = {loading: null, loadingLast: null, reply: null, chart: null, plot: null, sweep: null};
  window.__nbmlopsCharts = seen;
  const visible = (el) => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const look = () => {
    const now = performance.now() - started;
    const loading = dashboard.querySelector('.nbmlops-chart-message .nbmlops-loading');
    if (visible(loading)) { if (seen.loading === null) seen.loading = now; seen.loadingLast = now; }
    const metric = dashboard.querySelector('.nbmlops-metric select');
    if (seen.reply === null && metric && metric.options.length > 0) seen.reply = now;
    if (seen.plot === null && dashboard.querySelector('.nbmlops-chart-metric .js-plotly-plot')) seen.plot = now;
    if (seen.sweep === null && dashboard.querySelector('.nbmlops-chart-sweep .js-plotly-plot')) seen.sweep = now;
    const chart = dashboard.querySelector('.nbmlops-chart-metric .js-plotly-plot .main-svg');
    if (seen.chart === null && visible(chart) && chart.querySelector('.scatterlayer .trace')) seen.chart = now;
    if (seen.chart === null && now < 120000) requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
}
"""


@pytest.fixture(scope="module")
def dashboard_lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One JupyterLab for the module on a project holding ``examples/dashboard.ipynb``, with its own sqlite
    store; :data:`SEED` has tracked its runs before it starts."""
    base = tmp_path_factory.mktemp("dashboard-lab")
    root = new_project(base / "project", "dashboard-demo")
    shutil.copy(REPO / "examples" / "dashboard.ipynb", root / "dashboard.ipynb")
    tracking_uri = own_store(base / "store")
    seeded = subprocess.run([sys.executable, "-c", SEED], check=False, cwd=root, env=clean_env(tracking_uri),
                            capture_output=True, text=True, timeout=300)
    assert seeded.returncode == 0, seeded.stderr
    with start_lab(root, base / "jupyter", request, tracking_uri=tracking_uri) as lab:
        yield lab


@pytest.fixture(scope="module")
def dashboard_page(browser: Any, dashboard_lab: Lab) -> Iterator[Any]:
    """One page for the module (see :func:`open_page`)."""
    with open_page(browser) as page:
        yield page
