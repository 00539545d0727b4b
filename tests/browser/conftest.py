"""Browser tier: a real JupyterLab on 127.0.0.1 driven by Playwright in Debian's Chromium.

Playwright's own browser downloads are never used: the browser is the system's ``chromium``, installed here with
apt when it is missing and the tests run as root (``.ci/run`` installs it up front, so CI never skips).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.lab import REPO, Lab, failed, failure_shot, new_project, open_page, own_store, start_lab


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell at teardown whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


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


@pytest.fixture
def lab_project(tmp_path: Path) -> Path:
    """The project JupyterLab serves in the ``lab`` fixture (a test module overrides it with its own)."""
    return new_project(tmp_path / "project", "demo")


@pytest.fixture
def lab(lab_project: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """``jupyter lab`` for one test, on ``lab_project`` with its own sqlite store (see :func:`start_lab`)."""
    with start_lab(lab_project, tmp_path / "jupyter", request, tracking_uri=own_store(tmp_path / "store")) as server:
        yield server


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
    """A fresh page for the test (see :func:`open_page`); a screenshot is saved if the test fails."""
    with open_page(browser) as page:
        yield page
        if failed(request):
            failure_shot(page, artifacts_dir, request.node.name)
