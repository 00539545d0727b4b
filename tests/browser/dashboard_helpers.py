"""What the dashboard's browser test needs beside the shared fixtures: one JupyterLab and one page for the whole
module (built like the conftest's ``lab`` and ``page``), runs like the quickstart's seeded through nbmlops itself,
the theme switched as a person switches it, and what the eye judges measured in the page: contrast, and when the
Charts tab showed its loading line and its first chart."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import REPO, Lab, _wait_until_up
from tests.conftest import free_port, stop_group

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

#: per element of ``root`` that shows text: its text, the contrast of its colour (an SVG text's fill) with the
#: background it is drawn on (translucent layers composed, opacity applied), that background's luminance; and
#: the luminance of every background ``root`` paints. Colours may be ``rgb()``, ``rgba()`` or ``color(srgb ...)``
#: (what a ``color-mix()`` computes to).
CONTRAST_JS = """
(root) => {
  const parse = (c) => {
    let m = c.match(/^rgba?\\(([^)]+)\\)/);
    if (m) {
      const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
      return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
    }
    m = c.match(/^color\\(srgb ([^)]+)\\)/);
    if (m) {
      const p = m[1].split(/[ \\/]+/).filter(Boolean).map(Number);
      return {r: p[0] * 255, g: p[1] * 255, b: p[2] * 255, a: p.length > 3 ? p[3] : 1};
    }
    return null;
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  });
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let colour = {r: 255, g: 255, b: 255, a: 1};
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const texts = [];
  const painted = [];
  for (const el of [root, ...root.querySelectorAll('*')]) {
    const style = getComputedStyle(el);
    if (el.getClientRects().length === 0 || style.visibility === 'hidden') continue;
    const bg = parse(style.backgroundColor);
    if (bg && bg.a > 0.05) {
      painted.push({tag: el.tagName, cls: String(el.className.baseVal ?? el.className).slice(0, 60),
                    row: el.closest('tr') ? el.closest('tr').className : '',
                    luminance: luminance(over(bg, background(el.parentElement)))});
    }
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join(' ');
    if (!own) continue;
    const svg = el instanceof SVGElement;
    const fg = parse(svg ? style.fill : style.color);
    if (!fg) continue;
    const back = background(el);
    const seen = over({...fg, a: fg.a * opacity(el) * (svg ? Number(style.fillOpacity || 1) : 1)}, back);
    const [hi, lo] = [luminance(seen), luminance(back)].sort((x, y) => y - x);
    texts.push({text: own.slice(0, 40), contrast: (hi + 0.05) / (lo + 0.05), background: luminance(back)});
  }
  return {texts, painted};
}
"""

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
    """One ``jupyter lab`` for the module on a project holding ``examples/dashboard.ipynb``, with its own settings,
    workspaces and sqlite store (see the conftest's ``lab``); :data:`SEED` has tracked its runs before it starts."""
    base = tmp_path_factory.mktemp("dashboard-lab")
    root = base / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'dashboard-demo'\n")
    shutil.copy(REPO / "examples" / "dashboard.ipynb", root / "dashboard.ipynb")
    token = secrets.token_hex(24)
    port = free_port()
    state = base / "jupyter"
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no "Would you like to get notified about official Jupyter news?" toast over the screenshots
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    (base / "store").mkdir()
    tracking_uri = f"sqlite:///{base / 'store' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(NBMLOPS_TRACKING_URI=tracking_uri, JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
    seeded = subprocess.run([sys.executable, "-c", SEED], check=False, cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert seeded.returncode == 0, seeded.stderr
    log = base / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={state / 'settings'}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, tracking_uri=tracking_uri, log=log)
    try:
        _wait_until_up(server, process)
        yield server
    finally:
        stop_group(process)
        if request.session.testsfailed:
            print(f"----- JupyterLab log ({log}) -----\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def dashboard_page(browser: Any, dashboard_lab: Lab) -> Iterator[Any]:
    """One page (1400x1000) for the module; actions wait up to 30 s for their element. Its console errors are
    kept in ``page.console_errors`` and the dialogs it opened (none may) in ``page.dialogs``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.console_errors = []
    page.dialogs = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def failure_shot(page: Any, artifacts_dir: Path, name: str) -> None:
    """A full-page screenshot named for the failed test, and the page's console errors."""
    shot = artifacts_dir / f"{name}-failure.png"
    with contextlib.suppress(Exception):
        page.screenshot(path=str(shot), full_page=True)
        print(f"failure screenshot: {shot}")
    print("browser console errors:\n" + "\n".join(getattr(page, "console_errors", [])))


def set_theme(page: Any, dark: bool) -> None:
    """Choose JupyterLab's light or dark theme from the Settings menu, as a person does, and wait for it."""
    from playwright.sync_api import expect

    wanted = "JupyterLab Dark" if dark else "JupyterLab Light"
    if page.evaluate("document.body.dataset.jpThemeLight") == ("false" if dark else "true"):
        return
    page.locator("#jp-menu-panel").get_by_role("menuitem", name="Settings", exact=True).click()
    page.locator(".lm-Menu-item").filter(has=page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Theme$"))).hover()
    page.locator(".lm-Menu-item").filter(has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{wanted}$"))).click()
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false" if dark else "true",
                                                    timeout=30_000)
    page.wait_for_function("document.body.dataset.jpThemeName === " + json.dumps(wanted))


def contrast(element: Any) -> dict[str, Any]:
    """:data:`CONTRAST_JS` on ``element`` (a Playwright locator)."""
    return element.evaluate(CONTRAST_JS)


def assert_readable(element: Any, dark: bool, minimum: float = 3.0) -> dict[str, Any]:
    """Every text of ``element`` stands out from its background by at least ``minimum`` (WCAG's ratio for large
    text and interface parts: muted greys are muted, not invisible) and, in the dark theme, nothing is painted
    light (luminance above 0.6). Returns the measurements."""
    found = contrast(element)
    assert found["texts"], "no text measured"
    faint = [t for t in found["texts"] if t["contrast"] < minimum]
    assert not faint, f"text hard to read ({'dark' if dark else 'light'} theme): {faint[:8]}"
    if dark:
        light = [p for p in found["painted"] if p["luminance"] > 0.6]
        assert not light, f"light backgrounds in the dark theme: {light[:8]}"
        assert max(t["background"] for t in found["texts"]) <= 0.6
    return found
