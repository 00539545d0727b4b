"""Helpers of the Experiments panel's browser test: an ``mlflow server`` the test can kill and start again on the
same port and store, one JupyterLab per test module (as the ``lab`` fixture of conftest.py builds it, with that
server as its tracking store), the theme switched as a person does, and what a person sees of colours: the
contrast of every piece of text against the background it is drawn on."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.browser.conftest import Lab, _wait_until_up
from tests.conftest import free_port, stop_group

START_TIMEOUT_S = 120


class TrackingServer:
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store in ``folder``, stopped with SIGKILL and started
    again on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                 f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination", str(self.folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.folder / "server.log").read_text(errors="replace")
                    raise AssertionError(f"mlflow server did not start:\n{log_text[-5000:]}") from None
                time.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL the server and every process of its group (its workers), as a crash would."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process)


@contextlib.contextmanager
def lab_on(root: Path, state: Path, tracking_uri: str) -> Iterator[Lab]:
    """``jupyter lab`` serving ``root`` on 127.0.0.1 with its own settings, workspaces and runtime folders under
    ``state`` and ``tracking_uri`` as the store (see the ``lab`` fixture of conftest.py, which this mirrors for a
    module-scoped server)."""
    token = secrets.token_hex(24)
    port = free_port()
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(
        NBMLOPS_TRACKING_URI=tracking_uri,
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
    )
    log = state / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
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


def run_command(page, label: str) -> None:  # type: ignore[no-untyped-def]
    """Run a command from the command palette by its label, as a person would."""
    from playwright.sync_api import expect

    page.keyboard.press("Control+Shift+C")
    palette = page.locator("#command-palette")
    search = palette.locator("input")
    expect(search).to_be_visible()
    search.fill(label)
    palette.locator(".lm-CommandPalette-item", has_text=label).first.click()


def use_theme(page, dark: bool) -> None:  # type: ignore[no-untyped-def]
    """Switch JupyterLab to its dark (or light) theme from the command palette and wait until it applies."""
    from playwright.sync_api import expect

    run_command(page, f"Use Theme: JupyterLab {'Dark' if dark else 'Light'}")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false" if dark else "true",
                                                   timeout=30_000)
    page.wait_for_function(
        "dark => { const c = getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim();"
        " return dark ? c !== '' && c !== 'white' && c !== '#fff' && c !== '#ffffff' : true; }",
        arg=dark, timeout=30_000,
    )


#: for every visible element under ``root`` that draws text or a background of its own: its text colour and
#: background, both blended over what is behind them, as [r, g, b] 0..255, with a short description
_COLOURS_JS = """
root => {
  const parse = text => {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3]));
  const behind = el => {
    const chain = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) chain.push(node);
    let colour = [255, 255, 255];
    const page = parse(getComputedStyle(document.body).backgroundColor);
    if (page && page[3] > 0) colour = over(page, colour);
    for (const node of chain.reverse()) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg && bg[3] > 0) colour = over(bg, colour);
    }
    return colour;
  };
  const found = [];
  for (const el of root.querySelectorAll('*')) {
    if (el.closest('svg') || el.tagName === 'IMG' || el.tagName === 'INPUT') continue;
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === 'hidden' || style.display === 'none') continue;
    const text = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim() !== '');
    const bg = parse(style.backgroundColor);
    const ownBackground = bg && bg[3] > 0;
    if (!text && !ownBackground) continue;
    const background = behind(el);
    const fg = parse(style.color) || [0, 0, 0, 1];
    const label = el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
      ? '.' + el.className.trim().split(/\\s+/).join('.') : '') + ' "' + (el.textContent || '').trim().slice(0, 30) + '"';
    found.push({ label, text, ownBackground: !!ownBackground, color: over(fg, background), background });
  }
  return found;
}
"""


def _luminance(rgb: list[float]) -> float:
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    """WCAG's contrast ratio of two colours (1 to 21)."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def unreadable(page, selector: str, dark: bool, minimum: float = 3.0) -> list[str]:  # type: ignore[no-untyped-def]
    """What a person cannot read under ``selector``: text whose contrast with its background is below
    ``minimum``, and in the dark theme any element of ours with a light background (luminance above 0.6)."""
    problems = []
    for item in page.locator(selector).first.evaluate(_COLOURS_JS):
        if item["text"] and contrast(item["color"], item["background"]) < minimum:
            problems.append(f"{item['label']}: contrast {contrast(item['color'], item['background']):.2f} "
                            f"(text {item['color']} on {item['background']})")
        if dark and item["ownBackground"] and _luminance(item["background"]) > 0.6:
            problems.append(f"{item['label']}: light background {item['background']} in the dark theme")
    return problems
