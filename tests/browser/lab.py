"""A JupyterLab for the browser tests and what a person does in it.

:func:`start_lab` starts ``jupyter lab`` on a project with nothing of the user's Jupyter or nbmlops settings (the
conftest's function-scoped ``lab`` and every module's own JupyterLab start through it); the functions after it act
in a Playwright page as a person would: open a page, run a palette command, switch the theme, run all cells, open
the Experiments panel, take a screenshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.looks import THEME_APPLIED
from tests.conftest import free_port, stop_group

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
#: a notebook cell: its source, or its source and its tags
Cell = str | tuple[str, list[str]]


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test that requested a function-scoped fixture failed (in setup or in its body); for a fixture
    of a wider scope, whether any test of the session has failed so far."""
    if request.scope != "function":
        return request.session.testsfailed > 0
    node = request.node
    return any(getattr(getattr(node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: where it serves, how to get in, the project it serves and its store (None: the
    project's default one)."""

    origin: str
    token: str
    root: Path
    tracking_uri: str | None
    log: Path
    base_url: str = "/"

    def url(self, path: str) -> str:
        """The address of ``path`` under the base URL, without the token."""
        return f"{self.origin}{self.base_url}{path}"

    def page_url(self, path: str) -> str:
        """The address of ``path`` (e.g. ``lab/tree/x.ipynb``) with the token."""
        return f"{self.url(path)}?token={self.token}"


def clean_env(tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without the user's nbmlops, MLflow and Jupyter settings, with ``tracking_uri``
    as nbmlops' store (None: the project's default store) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    if tracking_uri is not None:
        env["NBMLOPS_TRACKING_URI"] = tracking_uri
    return env


def own_store(folder: Path) -> str:
    """The URI of a new sqlite store in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def new_project(root: Path, name: str, notebooks: dict[str, Iterable[Cell]] | None = None) -> Path:
    """A project folder ``root`` (its ``pyproject.toml`` makes it nbmlops' root) holding ``notebooks`` (name: its
    code cells) for the Python 3 kernel; returns ``root``."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(f"[project]\nname = '{name}'\n")
    for filename, cells in (notebooks or {}).items():
        write_notebook(root / filename, cells)
    return root


def write_notebook(path: Path, cells: Iterable[Cell]) -> None:
    """A notebook of code ``cells`` for the Python 3 kernel at ``path``."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        notebook.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags} if tags else {}))
    nbformat.write(notebook, path)


@contextlib.contextmanager
def start_lab(root: Path, state: Path, request: pytest.FixtureRequest, *, tracking_uri: str | None,
              base_url: str = "/", env: dict[str, str] | None = None, logs: Sequence[Path] = ()) -> Iterator[Lab]:
    """``jupyter lab`` from this interpreter serving ``root`` on 127.0.0.1 and a free port at ``base_url``, with a
    random token, ``tracking_uri`` as nbmlops' store (None: the project's default) and ``env`` added to a clean
    environment (see :func:`clean_env`). Its config, settings, workspaces and runtime files live in ``state``, so
    nothing of the user's Jupyter setup (open tabs, extensions' settings) leaks in. It ends (its kernels and
    every process it started with it) when the block does; then, if the test (a module's: any test) failed, its
    log and the ``logs`` that exist are printed."""
    token = secrets.token_hex(24)
    port = free_port()
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no "Would you like to get notified about official Jupyter news?" toast over the screenshots
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    lab_env = clean_env(tracking_uri, JUPYTER_CONFIG_DIR=str(state / "config"),
                        JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTER_PLATFORM_DIRS="1", **(env or {}))
    log = state / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.base_url={base_url}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=root, env=lab_env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    lab = Lab(origin=f"http://127.0.0.1:{port}", token=token, root=root, tracking_uri=tracking_uri, log=log,
              base_url=base_url)
    try:
        _wait_until_up(lab, process)
        yield lab
    finally:
        stop_group(process)
        if failed(request):
            for path in (log, *logs):
                if path.exists():
                    print(f"----- {path.name} ({path}) -----\n{path.read_text(errors='replace')}")


def _wait_until_up(lab: Lab, process: subprocess.Popen) -> None:
    """Poll ``/api/status`` until the server answers; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(lab.page_url("api/status"), timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if process.poll() is not None else f"not up in {START_TIMEOUT_S} s"
            raise AssertionError(f"JupyterLab {why}:\n{lab.log.read_text(errors='replace')}")
        time.sleep(0.2)


@contextlib.contextmanager
def open_page(browser: Any) -> Iterator[Page]:
    """A page (1400x1000) in a context of its own, closed with the block. Actions (clicks, typing) wait up to 30 s
    for their element: JupyterLab on a busy 2-core machine is slow. Its console errors are kept in
    ``page.console_errors``; the dialogs it opens (``alert()``: none should) are dismissed and their messages kept
    in ``page.dialogs``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield page
    finally:
        context.close()


def failure_shot(page: Page, artifacts_dir: Path, name: str) -> None:
    """A full-page screenshot named for the failed test ``name``, and the page's console errors, printed."""
    shot = artifacts_dir / f"{name}-failure.png"
    with contextlib.suppress(Exception):
        page.screenshot(path=str(shot), full_page=True)
        print(f"failure screenshot: {shot}")
    print("browser console errors:\n" + "\n".join(getattr(page, "console_errors", [])))


def screenshot(target: Page | Locator, artifacts_dir: Path, name: str) -> None:
    """A screenshot of the page or the element, ``<name>.png`` in ``artifacts_dir``."""
    path = artifacts_dir / f"{name}.png"
    target.screenshot(path=str(path))
    print(f"screenshot: {path}")


def run_command(page: Page, label: str) -> None:
    """Run a command from the command palette by its label, as a person would: open the palette from the View
    menu (its keyboard shortcut depends on where the focus is), type, press Enter on the item (clicking it races
    the palette's filtering, which redraws the items)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    palette = page.locator("#command-palette")
    search = palette.locator("input")
    active = palette.locator(".lm-CommandPalette-item.lm-mod-active")
    # the palette closes when something takes the focus as it opens or as one types in it (a theme's restyling,
    # a notebook that has just opened focusing its cell): then it is opened again
    for _ in range(3):
        if not search.is_visible():
            page.locator("#jp-menu-panel").get_by_role("menuitem", name="View", exact=True).click()
            page.get_by_role("menuitem", name="Activate Command Palette").click()
            try:
                search.wait_for(state="visible", timeout=5000)
            except PlaywrightTimeout:
                continue
        search.fill(label)
        try:
            expect(active).to_contain_text(label)
            expect(active).not_to_have_class(re.compile(r"\blm-mod-disabled\b"))  # a disabled command would not run
            break
        except AssertionError:
            if search.is_visible():
                raise
    expect(active).to_contain_text(label)
    search.press("Enter")
    expect(search).to_be_hidden()


def use_theme(page: Page, dark: bool) -> None:
    """Switch JupyterLab to its dark (or light) theme from the command palette, unless it is in it already, and
    wait until the theme's colours apply and the splash screen JupyterLab shows over the switch is gone (a
    screenshot taken before shows the splash)."""
    from playwright.sync_api import expect

    name = "JupyterLab Dark" if dark else "JupyterLab Light"
    page.wait_for_function("document.body.dataset.jpThemeName !== undefined", timeout=60_000)  # Lab has loaded
    if page.evaluate("document.body.dataset.jpThemeName") != name:
        run_command(page, f"Use Theme: {name}")
    body = page.locator("body")
    expect(body).to_have_attribute("data-jp-theme-name", name, timeout=30_000)
    expect(body).to_have_attribute("data-jp-theme-light", "false" if dark else "true")
    page.wait_for_function(THEME_APPLIED, arg=dark, timeout=30_000)
    # shown as the switch starts, faded out and removed once the theme's stylesheet has loaded
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=30_000)


def wait_for_kernel(page: Page, timeout_ms: float) -> None:
    """Wait until the status bar shows the notebook's Python kernel idle."""
    from playwright.sync_api import expect

    idle = page.get_by_role("contentinfo").get_by_role("button", name=re.compile(r"^Python 3\b.*\| Idle$"))
    expect(idle).to_be_visible(timeout=timeout_ms)


def run_all_cells(page: Page) -> None:
    """Run > Run All Cells, from the menu bar."""
    page.locator("#jp-menu-panel").get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def open_experiments(page: Page) -> Locator:
    """The Experiments panel, opened from its tab in the left sidebar unless it is open already."""
    from playwright.sync_api import expect

    panel = page.locator("#nbmlops-experiments")
    if not panel.is_visible():
        page.locator(".jp-SideBar .lm-TabBar-tab[data-id='nbmlops-experiments']").click()
    expect(panel).to_be_visible()
    return panel


def cell(page: Page, index: int) -> Locator:
    """The ``index``-th cell of the notebook shown."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)


def cell_errors(page: Page) -> str:
    """The text of every error output of the page's notebooks (for a failure's message)."""
    outputs = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return "\n".join(outputs.all_inner_texts()) or "(no error output)"
