"""Helpers of the MLflow UI browser test: one JupyterLab for the file, shaped like a JupyterHub single-user server
(base URL ``/user/alice/``), on a project whose default store holds a run; the theme switch; colours as seen."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_group

START_TIMEOUT_S = 120
RUN_NAME = "proxied-run"


@dataclass(frozen=True)
class UILab:
    """A running JupyterLab at ``origin + base_url``, its token, its project and the run in its store."""

    origin: str
    base_url: str
    token: str
    root: Path
    experiment_id: str
    run_id: str
    log: Path

    def url(self, path: str) -> str:
        """The address of ``path`` under the base URL (no token)."""
        return f"{self.origin}{self.base_url}{path}"


def seed_run(root: Path) -> tuple[str, str]:
    """One finished run :data:`RUN_NAME` (``accuracy`` 0.93) in the project's default store; its experiment and
    run ids."""
    from mlflow import MlflowClient

    (root / ".nbmlops").mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{root / '.nbmlops' / 'mlflow.db'}")
    experiment_id = client.create_experiment("ui/train", artifact_location=str(root / ".nbmlops" / "artifacts"))
    run = client.create_run(experiment_id, run_name=RUN_NAME)
    client.log_metric(run.info.run_id, "accuracy", 0.93)
    client.set_terminated(run.info.run_id)
    return experiment_id, run.info.run_id


def start_ui_lab(root: Path, state_dir: Path, base_url: str, request: pytest.FixtureRequest) -> Iterator[UILab]:
    """``jupyter lab`` on ``root`` at ``base_url`` with nothing of the user's Jupyter or nbmlops settings (the
    project's default embedded store), kept for the module; its log is printed when a test of the module failed.
    Every process it started (kernels, the MLflow UI) ends with it."""
    import requests

    experiment_id, run_id = seed_run(root)
    token = secrets.token_hex(24)
    port = free_port()
    settings = state_dir / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(JUPYTER_CONFIG_DIR=str(state_dir / "config"), JUPYTER_RUNTIME_DIR=str(state_dir / "runtime"),
               JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
    log = state_dir / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", f"--ServerApp.base_url={base_url}",
        f"--LabApp.user_settings_dir={state_dir / 'settings'}", f"--LabApp.workspaces_dir={state_dir / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    lab = UILab(f"http://127.0.0.1:{port}", base_url, token, root, experiment_id, run_id, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if requests.get(lab.url("api/status"), params={"token": token}, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"JupyterLab did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield lab
    finally:
        stop_group(process)
        if request.session.testsfailed:
            print(f"----- JupyterLab log ({log}) -----\n{log.read_text(errors='replace')}")
            ui_log = root / ".nbmlops" / "mlflow-ui.log"
            if ui_log.exists():
                print(f"----- MLflow UI log ({ui_log}) -----\n{ui_log.read_text(errors='replace')}")


def use_theme(page, dark: bool) -> None:
    """Switch JupyterLab to its dark (or light) theme from the command palette, as a person would, and wait until
    its colours apply."""
    from playwright.sync_api import expect

    name = "JupyterLab Dark" if dark else "JupyterLab Light"
    page.wait_for_function("document.body.dataset.jpThemeName !== undefined", timeout=60_000)  # Lab has loaded
    if page.evaluate("document.body.dataset.jpThemeName") != name:
        page.keyboard.press("Control+Shift+C")
        palette = page.locator("#command-palette")
        palette.locator("input").fill(f"Use Theme: {name}")
        palette.locator(".lm-CommandPalette-item", has_text=f"Use Theme: {name}").first.click()
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", name, timeout=30_000)
    page.wait_for_function(_THEME_APPLIED, arg=dark, timeout=30_000)


#: The relative luminance (0 black .. 1 white) of an element's background: its own or the first opaque one up its
#: ancestors (white when none is).
BACKGROUND_LUMINANCE = """
((element) => {
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  for (let node = element; node; node = node.parentElement) {
    const m = getComputedStyle(node).backgroundColor.match(/[\\d.]+/g);
    if (m && (m.length < 4 || Number(m[3]) > 0.5)) {
      return 0.2126 * channel(+m[0]) + 0.7152 * channel(+m[1]) + 0.0722 * channel(+m[2]);
    }
  }
  return 1;
})
"""

#: The contrast ratio of an element's text colour against its background (1 .. 21).
TEXT_CONTRAST = """
(element) => {
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const m = getComputedStyle(element).color.match(/[\\d.]+/g);
  const text = 0.2126 * channel(+m[0]) + 0.7152 * channel(+m[1]) + 0.0722 * channel(+m[2]);
  const back = """ + BACKGROUND_LUMINANCE + """(element);
  return (Math.max(text, back) + 0.05) / (Math.min(text, back) + 0.05);
}
"""


#: Whether the theme's own background colour (``--jp-layout-color1``) is dark (arg true) or light: it has applied.
_THEME_APPLIED = """
(dark) => {
  const probe = document.createElement('div');
  probe.style.background = 'var(--jp-layout-color1)';
  document.body.appendChild(probe);
  const luminance = """ + BACKGROUND_LUMINANCE + """(probe);
  probe.remove();
  return dark ? luminance < 0.2 : luminance > 0.8;
}
"""


def background_luminance(locator) -> float:
    """The luminance of the background under the element ``locator`` names."""
    return locator.evaluate(BACKGROUND_LUMINANCE)


def text_contrast(locator) -> float:
    """The contrast ratio of the element's text against its background."""
    return locator.evaluate(TEXT_CONTRAST)
