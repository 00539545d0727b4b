"""Shared fixtures: a real MLflow sqlite store, a project directory, a real IPython shell."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmlops.config import SETTING_NAMES, configure
from nbmlops.tracking.session import close_session

#: tiers of the suite run as separate processes while the main suite runs: name -> (process, its log file)
BACKGROUND = pytest.StashKey[dict[str, tuple[subprocess.Popen, Path]]]()
#: the tests that wait for those tiers (they run last)
#: the folders whose tests run in the background tier
BACKGROUND_DIRS = {"reliability", "team", "serving"}
TIER_TESTS = {"test_oldest_mlflow.py": "oldest-mlflow", "test_reliability_tier.py": "reliability"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the slow, mostly waiting tiers beside the main suite instead of after it.

    - the smoke tests on the oldest supported MLflow (``tests/oldest_mlflow.py``) whenever their test is collected;
    - ``tests/reliability/`` (fault injection: budgets, kills, outages), ``tests/team/`` (PostgreSQL, object
      storage, an authenticating server, Dask workers) and ``tests/serving/`` (model servers under load, killed,
      their store down), when collected with the rest of the suite: their tests are
      handed to a second pytest process and ``test_reliability_tier.py`` reports its outcome. Run on their own
      (``pytest tests/reliability``), or with ``NBMLOPS_TIERS_INLINE=1``, they run here as usual.
    """
    jobs: dict[str, tuple[subprocess.Popen, Path]] = {}
    names = {item.path.name for item in items}
    if "test_oldest_mlflow.py" in names:
        jobs["oldest-mlflow"] = _start_tier(config, "oldest-mlflow", [str(Path(__file__).with_name("oldest_mlflow.py"))])
    reliability = [item for item in items if BACKGROUND_DIRS & set(item.path.parts)]
    main = [item for item in items if not BACKGROUND_DIRS & set(item.path.parts)]
    inline = os.environ.get("NBMLOPS_TIERS_INLINE", "") not in ("", "0")
    if reliability and any(item.path.name not in TIER_TESTS for item in main) and not inline:
        jobs["reliability"] = _start_tier(
            config, "reliability", ["-m", "pytest", "-q", "-p", "no:cacheprovider", *[i.nodeid for i in reliability]]
        )
        config.hook.pytest_deselected(items=reliability)
        items[:] = main
    config.stash[BACKGROUND] = jobs
    items.sort(key=lambda item: item.path.name in TIER_TESTS)  # the waiting tests last; stable otherwise


def _start_tier(config: pytest.Config, name: str, arguments: list[str]) -> tuple[subprocess.Popen, Path]:
    log = Path(config.rootpath, f".tier-{name}.log")
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, *arguments], cwd=config.rootpath, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def pytest_unconfigure(config: pytest.Config) -> None:
    """A session that ends early takes its background tiers with it."""
    for process, _ in config.stash.get(BACKGROUND, {}).values():
        if process.poll() is None:
            stop_group(process, grace=5)


@pytest.fixture
def background_tier(request: pytest.FixtureRequest) -> tuple[subprocess.Popen, Path] | None:
    """The background tier the requesting test waits for, if this session started it."""
    return request.config.stash.get(BACKGROUND, {}).get(TIER_TESTS[request.node.path.name])


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real sqlite tracking store for the whole test session (creating one costs ~2 s)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    return f"sqlite:///{path}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_uri: str, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh project directory as the working directory, tracking to the shared store.

    Each test gets its own experiment (named after the test) and its own journal directory.
    """
    close_session()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", store_uri)
    monkeypatch.setenv("NBMLOPS_ARTIFACT_ROOT", str(Path(store_uri[len("sqlite:///"):]).parent / "artifacts"))
    monkeypatch.setenv("NBMLOPS_EXPERIMENT", request.node.name[:200])
    for name in ("MLFLOW_TRACKING_URI", "NBMLOPS_CAPTURE", "NBMLOPS_UI_URL", "NBMLOPS_SNAPSHOT_MAX_BYTES",
                 "NBMLOPS_DATA_STORE"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    close_session()
    configure(**dict.fromkeys(SETTING_NAMES))


@pytest.fixture
def client(store_uri: str):
    """An MlflowClient on the shared store, to read back what was recorded."""
    from mlflow import MlflowClient

    return MlflowClient(store_uri)


@pytest.fixture
def shell(project: Path):
    """A real IPython InteractiveShell with the extension loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    main = sys.modules["__main__"]  # IPython puts its user module there; later tests spawn processes
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbmlops")
    yield ip
    ip.run_line_magic("unload_ext", "nbmlops")
    ip.reset(new_session=True)  # history too: a test's cells are not the next test's history
    sys.modules["__main__"] = main


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: MLflow's job runner (huey consumers in processes of their own) is not needed by any test, and its consumers
#: outlived the server's process group
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextlib.contextmanager
def mlflow_server(folder: Path, port: int | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``mlflow server`` on a sqlite backend in ``folder``, on 127.0.0.1; yields its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=folder, env={**(os.environ if env is None else env), **NO_JOB_RUNNER}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow server did not start:\n{(folder / 'server.log').read_text()}") from None
                time.sleep(0.25)
        yield uri
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 20) -> None:
    """End a server started with ``start_new_session=True``: SIGTERM to its group, SIGKILL after ``grace`` s,
    then SIGKILL to whatever of the group outlived it (kernels it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def runs_of(client, experiment: str) -> list:
    """Every run of ``experiment``, oldest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(reversed(client.search_runs([found.experiment_id], max_results=1000)))


@pytest.fixture
def dashboards():
    """Make dashboards (``live=False`` unless asked) that are closed however the test ends; no live thread may
    outlive them."""
    from nbmlops.widgets.app import Dashboard

    made: list[Dashboard] = []

    def make(*args, **kwargs) -> Dashboard:
        kwargs.setdefault("live", False)
        made.append(Dashboard(*args, **kwargs))
        return made[-1]

    yield make
    for dashboard in made:
        dashboard.close()
    assert not [t for t in threading.enumerate() if t.name == "nbmlops-live"]
