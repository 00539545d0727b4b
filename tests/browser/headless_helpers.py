"""Helpers of the headless-run and Models browser tests: one JupyterLab for a whole test file (started beside a
registration of two model versions into its store), the theme switch, and what a person would see checked from
the page: no light background in the dark theme, readable text, a caret under the right character."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import Lab, _wait_until_up
from tests.conftest import free_port, stop_group

MODEL = "wine-classifier"
REGISTER_TIMEOUT_S = 300

REGISTER = """
import numpy as np
import nbmlops
from sklearn.dummy import DummyClassifier

evaluation = np.arange(12, dtype=float).reshape(6, 2)
for accuracy, f1 in ((0.95, 0.91), (0.82, 0.78)):
    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": accuracy, "f1": f1})
        nbmlops.register(model, NAME, evaluation_data=evaluation, timeout=120)
nbmlops.flush(60)
"""


def start_module_lab(root: Path, state_dir: Path, request: pytest.FixtureRequest,
                     register: str | None = None) -> Iterator[Lab]:
    """``jupyter lab`` on ``root`` with its own store and settings (as conftest's ``lab`` fixture), kept for the
    whole module; with ``register``, the model versions of :data:`REGISTER` go into its store meanwhile (another
    process: the server never loads a model). The server's log is printed when a test of the module failed."""
    token = secrets.token_hex(24)
    port = free_port()
    settings = state_dir / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    (state_dir / "store").mkdir()
    tracking_uri = f"sqlite:///{state_dir / 'store' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(NBMLOPS_TRACKING_URI=tracking_uri, PYTHONUNBUFFERED="1")
    registering = None
    if register:
        script = f"NAME = {register!r}\n" + textwrap.dedent(REGISTER)
        registering = subprocess.Popen([sys.executable, "-c", script], cwd=root,
                                       env={**env, "NBMLOPS_EXPERIMENT": "models"}, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    lab_env = {**env, "JUPYTER_CONFIG_DIR": str(state_dir / "config"),
               "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"), "JUPYTER_PLATFORM_DIRS": "1"}
    log = state_dir / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={state_dir / 'settings'}", f"--LabApp.workspaces_dir={state_dir / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=root, env=lab_env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, tracking_uri=tracking_uri, log=log)
    try:
        _wait_until_up(server, process)
        if registering is not None:
            output, _ = registering.communicate(timeout=REGISTER_TIMEOUT_S)
            assert registering.returncode == 0, f"registering the model versions failed:\n{output}"
        yield server
    finally:
        if registering is not None and registering.poll() is None:
            registering.kill()
            registering.wait()
        stop_group(process)
        if request.session.testsfailed:
            print(f"----- JupyterLab log ({log}) -----\n{log.read_text(errors='replace')}")


def run_command(page, label: str) -> None:
    """Run a command from the command palette by its label, as a person would: open the palette from the View
    menu (its keyboard shortcut depends on where the focus is), type, press Enter on the item (clicking it races
    the palette's filtering, which redraws the items)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    palette = page.locator("#command-palette")
    search = palette.locator("input")
    for _ in range(3):  # the palette closes when something takes the focus as it opens (a theme's restyling)
        if search.is_visible():
            break
        page.locator("#jp-menu-panel").get_by_role("menuitem", name="View", exact=True).click()
        page.get_by_role("menuitem", name="Activate Command Palette").click()
        try:
            search.wait_for(state="visible", timeout=5000)
        except PlaywrightTimeout:
            continue
    expect(search).to_be_visible()
    search.fill(label)
    active = palette.locator(".lm-CommandPalette-item.lm-mod-active")
    expect(active).to_contain_text(label)
    expect(active).not_to_have_class(re.compile(r"\blm-mod-disabled\b"))  # a disabled command would not run
    search.press("Enter")
    expect(search).to_be_hidden()


def use_theme(page, dark: bool) -> None:
    """Switch JupyterLab to its dark (or light) theme from the command palette, unless it is in it already, and
    wait until the theme's colours apply."""
    from playwright.sync_api import expect

    name = "JupyterLab Dark" if dark else "JupyterLab Light"
    if page.evaluate("document.body.dataset.jpThemeName") != name:
        run_command(page, f"Use Theme: {name}")
    body = page.locator("body")
    expect(body).to_have_attribute("data-jp-theme-name", name, timeout=30_000)
    expect(body).to_have_attribute("data-jp-theme-light", "false" if dark else "true")
    page.wait_for_function(_THEME_APPLIED, arg=dark, timeout=30_000)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=30_000)  # the switch shows a splash


def widen_sidebar(page, width: int) -> None:
    """Drag the handle between the left sidebar and the main area until the sidebar is ``width`` pixels wide,
    as a person would to give the Experiments panel more room."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    assert box is not None, "no handle beside the left sidebar"
    panel = page.locator("#nbmlops-experiments").bounding_box()
    assert panel is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(panel["x"] + width, y, steps=5)
    page.mouse.up()


#: Whether the shell's background is dark (arg true) or light (false): the theme's stylesheet has applied.
_THEME_APPLIED = r"""
(dark) => {
  const probe = document.createElement('div');
  probe.style.background = 'var(--jp-layout-color1)';
  document.body.appendChild(probe);
  const m = getComputedStyle(probe).backgroundColor.match(/\d+(\.\d+)?/g);
  probe.remove();
  if (!m) return false;
  const mean = (Number(m[0]) + Number(m[1]) + Number(m[2])) / 3;
  return dark ? mean < 80 : mean > 200;
}
"""


#: For each visible element under ``selector``: its own background (the first opaque one up its ancestors), its
#: text colour over that background, their luminances and contrast ratio.
_COLOURS = """
(selector) => {
  const parse = (text) => {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const [r, g, b, a] = m[1].split(',').map(Number);
    return { r, g, b, a: Number.isNaN(a) || a === undefined ? 1 : a };
  };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const found = [];
  for (const element of document.querySelectorAll(selector)) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const back = background(element);
    const text = parse(getComputedStyle(element).color);
    const lb = luminance(back), lt = luminance(text);
    const ratio = (Math.max(lb, lt) + 0.05) / (Math.min(lb, lt) + 0.05);
    const own = Array.from(element.childNodes).some(n => n.nodeType === 3 && n.textContent.trim() !== '');
    found.push({ tag: element.tagName.toLowerCase(), cls: element.className && element.className.baseVal === undefined
                 ? element.className : '', text: (element.textContent || '').trim().slice(0, 40),
                 background: lb, contrast: ratio, hasText: own });
  }
  return found;
}
"""


def colours(page, selector: str) -> list[dict]:
    """The background luminance and text contrast of every visible element matching ``selector``."""
    return page.evaluate(_COLOURS, selector)


def assert_dark_and_readable(page, selector: str, min_contrast: float = 3.0) -> int:
    """In the dark theme: no element under ``selector`` sits on a light background (luminance > 0.6), and each
    one holding text reads against its background (contrast ratio >= ``min_contrast``). Returns how many
    elements were checked (so a caller can tell the check saw something)."""
    seen = colours(page, f"{selector}, {selector} *")
    light = [c for c in seen if c["background"] > 0.6]
    assert not light, f"light backgrounds in the dark theme: {light[:5]}"
    faint = [c for c in seen if c["hasText"] and c["contrast"] < min_contrast]
    assert not faint, f"text that does not read against its background: {faint[:5]}"
    return len(seen)


#: The horizontal centres of the character at ``position`` of the gate's text and of the caret, in pixels.
_CARET = """
(root) => {
  const text = root.querySelector('.nbmlops-lab-gate-text').firstChild;
  const pointer = root.querySelector('.nbmlops-lab-gate-pointer').firstChild;
  const caretAt = pointer.textContent.indexOf('^');
  const centre = (node, start, end) => {
    const range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, end);
    const box = range.getBoundingClientRect();
    return box.left + box.width / 2;
  };
  // the text's characters may be outside the basic plane: the caret's column counts characters
  const units = Array.from(text.textContent).slice(0, caretAt).join('').length;
  const next = units < text.textContent.length ? units + Array.from(text.textContent.slice(units))[0].length : units;
  const caret = document.createRange();
  caret.setStart(pointer, caretAt);
  caret.setEnd(pointer, caretAt + 1);
  const caretBox = caret.getBoundingClientRect();
  let under;
  if (next > units) {
    under = centre(text, units, next);
  } else {  // past the end: where the next character would stand
    const whole = document.createRange();
    whole.selectNodeContents(text);
    under = whole.getBoundingClientRect().right + caretBox.width / 2;
  }
  return {
    character: next > units ? text.textContent.slice(units, next) : '',
    underX: under,
    caretX: caretBox.left + caretBox.width / 2,
    font: getComputedStyle(root.querySelector('.nbmlops-lab-gate-caret')).fontFamily,
    uiFont: getComputedStyle(document.body).fontFamily,
  };
}
"""


def caret_alignment(error) -> dict:
    """Where the caret of a gate error (a Playwright locator) stands against the character it points at."""
    return error.evaluate(_CARET)


#: The computed colour of ``element`` and of JupyterLab's link colour, as the page resolves them.
_LINK_COLOUR = """
(element) => {
  const probe = document.createElement('span');
  probe.style.color = 'var(--jp-content-link-color)';
  document.body.appendChild(probe);
  const link = getComputedStyle(probe).color;
  probe.remove();
  return { own: getComputedStyle(element).color, link, href: element.getAttribute('href') };
}
"""


def assert_looks_like_a_link(locator) -> None:
    """``locator`` is drawn in JupyterLab's link colour (a link that looks like text is never clicked)."""
    found = locator.evaluate(_LINK_COLOUR)
    assert found["own"] == found["link"], f"not in the link colour: {found}"
