"""Browser tier: a real JupyterLab on 127.0.0.1 driven by Playwright in Debian's Chromium.

Playwright's own browser downloads are never used: the browser is the system's ``chromium``, installed here with
apt when it is missing and the tests run as root (``.ci/run`` installs it up front, so CI never skips).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_group

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell at teardown whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test that requested the fixture failed (in setup or in its body)."""
    node = request.node
    return any(getattr(getattr(node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's ``chromium``, installed with apt when missing (as root); skips where it cannot be."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("browser tests need Debian's chromium: run `apt-get install chromium` (or run as root with apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core"]):
        done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("apt-get installed chromium but it is not on PATH")
    version = subprocess.run([found, "--version"], check=False, capture_output=True, text=True).stdout.strip()
    print(f"installed {version} at {found}")
    return found


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go: ``$NBMLOPS_TEST_ARTIFACTS`` or ``tests/artifacts/`` (git-ignored)."""
    folder = Path(os.environ.get("NBMLOPS_TEST_ARTIFACTS") or REPO / "tests" / "artifacts").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"test artifacts: {folder}")
    return folder


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: where it serves, how to get in, and the project it serves."""

    url: str
    token: str
    root: Path
    tracking_uri: str
    log: Path

    def page_url(self, path: str) -> str:
        """The address of ``path`` (e.g. ``lab/tree/x.ipynb``) with the token."""
        return f"{self.url}/{path}?token={self.token}"


@pytest.fixture
def lab_project(tmp_path: Path) -> Path:
    """A project folder for JupyterLab's root: ``pyproject.toml`` (so it is nbmlops' root) and the example notebook."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'dashboard-demo'\n")
    shutil.copy(REPO / "examples" / "dashboard.ipynb", root / "dashboard.ipynb")
    return root


@pytest.fixture
def lab(lab_project: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """``jupyter lab`` from this interpreter on 127.0.0.1 and a free port, with a random token and its own store.

    JupyterLab's config, settings, workspaces and runtime files live in the test's temporary folder, so nothing
    from the user's own Jupyter setup (open tabs, extensions' settings) leaks in. The server's log (the kernel's
    output included) is printed when the test fails.
    """
    token = secrets.token_hex(24)
    port = free_port()
    state = tmp_path / "jupyter"
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no "Would you like to get notified about official Jupyter news?" toast over the screenshots
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    tracking_uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(
        NBMLOPS_TRACKING_URI=tracking_uri,
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={lab_project}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=lab_project, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=lab_project, tracking_uri=tracking_uri, log=log)
    try:
        _wait_until_up(server, process)
        yield server
    finally:
        stop_group(process)
        if failed(request):
            print(f"----- JupyterLab log ({log}) -----\n{log.read_text(errors='replace')}")


def _wait_until_up(server: Lab, process: subprocess.Popen) -> None:
    """Poll ``/api/status`` until the server answers; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(server.page_url("api/status"), timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if process.poll() is not None else f"not up in {START_TIMEOUT} s"
            raise AssertionError(f"JupyterLab {why}:\n{server.log.read_text(errors='replace')}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser(chromium: str):
    """Headless Debian Chromium under Playwright (``--no-sandbox``: the tests may run as root).

    Module-scoped, not session-scoped: while Playwright's sync API is open its asyncio loop counts as running in
    this thread, which breaks every later test that runs an event loop of its own (pytest-jupyter's, tornado's).
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the test extra: pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, artifacts_dir: Path, request: pytest.FixtureRequest):
    """A fresh page (1400x1000) whose console errors are kept; a screenshot is saved if the test fails.

    Actions (clicks, typing) wait up to 30 s for their element: JupyterLab on a busy 2-core machine is slow.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    yield page
    if failed(request):
        shot = artifacts_dir / f"{request.node.name}-failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
            print(f"failure screenshot: {shot}")
        print("browser console errors:\n" + "\n".join(console_errors))
    context.close()
