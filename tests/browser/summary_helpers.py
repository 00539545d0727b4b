"""What the summary's browser test needs beside the shared fixtures: one JupyterLab for the whole module (built
like the conftest's ``lab``), and what a person's eyes judge, measured in the page: row heights and contrast."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import Lab, _wait_until_up
from tests.conftest import free_port, stop_group

if TYPE_CHECKING:
    from playwright.sync_api import Locator

#: per element of the summary that shows text: its text, its colour's contrast with the background it is drawn on
#: (the element's and its ancestors' opacity applied), and that background's relative luminance; plus the
#: luminance of every background the summary itself paints
CONTRAST_JS = """
(root) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
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
    for (let e = el; e && e !== root.parentElement; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const texts = [];
  const painted = [];
  for (const el of [root, ...root.querySelectorAll('*')]) {
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join(' ');
    const bg = parse(getComputedStyle(el).backgroundColor);
    if (bg && bg.a > 0) painted.push({tag: el.tagName, luminance: luminance(over(bg, background(el.parentElement)))});
    if (!own || el.getClientRects().length === 0) continue;
    const back = background(el);
    const fg = parse(getComputedStyle(el).color);
    const seen = over({...fg, a: fg.a * opacity(el)}, back);
    const [hi, lo] = [luminance(seen), luminance(back)].sort((x, y) => y - x);
    texts.push({text: own.slice(0, 40), contrast: (hi + 0.05) / (lo + 0.05), background: luminance(back)});
  }
  return {texts, painted};
}
"""


@pytest.fixture(scope="module")
def summary_lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One ``jupyter lab`` for the module, on a project made by the module's ``make_project(root)`` function, with
    its own settings, workspaces and sqlite store (see the conftest's ``lab``)."""
    base = tmp_path_factory.mktemp("summary-lab")
    root = base / "project"
    root.mkdir()
    request.module.make_project(root)
    token = secrets.token_hex(24)
    port = free_port()
    state = base / "jupyter"
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    (base / "store").mkdir()
    tracking_uri = f"sqlite:///{base / 'store' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(NBMLOPS_TRACKING_URI=tracking_uri, JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
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


def contrast(element: Locator) -> dict[str, Any]:
    """:data:`CONTRAST_JS` on ``element``."""
    return element.evaluate(CONTRAST_JS)
