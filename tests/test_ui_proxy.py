"""The MLflow UI that Jupyter Server serves at ``<base_url>mlflow/`` (nbmlops.server.ui_proxy).

Real parts only: a ``jupyter server`` process with the nbmlops extension, on a project whose default embedded store
(``.nbmlops/mlflow.db``) holds a run; the ``mlflow server`` it starts; ``requests`` as the browser. The server at
``/user/alice/`` (JupyterHub's shape) and its MLflow are started once for the module; a second server at ``/`` is
SIGKILLed. ``ui_url``'s default is checked on :func:`nbmlops.config.resolve_settings` itself.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from jupyter_server.auth import Authorizer

from nbmlops.config import SERVED_UI_STORE_VARIABLE, SERVED_UI_URL_VARIABLE, resolve_settings
from tests.conftest import free_port, stop_group

REPO = Path(__file__).resolve().parents[1]
HUB_HOST = "hub.example.test"
#: seconds for a request that starts the MLflow UI (importing mlflow on a loaded 2-core machine is slow)
FIRST_REQUEST_TIMEOUT = 180
GONE_TIMEOUT = 60


class NoWritesToNbmlops(Authorizer):
    """Jupyter's authorizer for the SIGKILLed server: the nbmlops resource may be read, not written."""

    def is_authorized(self, handler, user, action, resource):
        return not (resource == "nbmlops" and action == "write")


@dataclass
class Served:
    """A running ``jupyter server``: where, its token, its process, its project and the run in its store."""

    origin: str
    base_url: str
    token: str
    process: subprocess.Popen
    root: Path
    run_id: str
    experiment_id: str
    log: Path

    def url(self, path: str) -> str:
        return f"{self.origin}{self.base_url}{path}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


def make_project(folder: Path) -> tuple[Path, str, str]:
    """A project (``pyproject.toml``) whose default store holds one finished run ``proxied-run`` with
    ``accuracy`` 0.93; ``(root, experiment id, run id)``."""
    from mlflow import MlflowClient

    root = folder / "project"
    (root / ".nbmlops").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'proxied'\n")
    client = MlflowClient(f"sqlite:///{root / '.nbmlops' / 'mlflow.db'}")
    experiment_id = client.create_experiment("proxied/train", artifact_location=str(root / ".nbmlops" / "artifacts"))
    run = client.create_run(experiment_id, run_name="proxied-run")
    client.log_metric(run.info.run_id, "accuracy", 0.93)
    client.set_terminated(run.info.run_id)
    return root, experiment_id, run.info.run_id


def start_server(folder: Path, base_url: str, *extra: str) -> Served:
    """``jupyter server`` on 127.0.0.1 for a new project in ``folder``, with nothing of the user's Jupyter or
    nbmlops settings; as a JupyterHub single-user server is, reachable under another host name."""
    root, experiment_id, run_id = make_project(folder)
    token = secrets.token_hex(16)
    port = free_port()
    state = folder / "jupyter"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_", "JUPYTER", "JPY_"))}
    env.update(JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTER_DATA_DIR=str(state / "data"), JUPYTER_PLATFORM_DIRS="1", PYTHONPATH=str(REPO))
    log = folder / "jupyter.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             f"--ServerApp.base_url={base_url}", "--ServerApp.allow_remote_access=True", *extra,
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    served = Served(f"http://127.0.0.1:{port}", base_url, token, process, root, run_id, experiment_id, log)
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(served.url("api/status"), headers=served.auth, timeout=5).status_code == 200:
                return served
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_group(process)
            raise AssertionError(f"jupyter server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def ui_processes(served: Served) -> list[psutil.Process]:
    """The processes of the MLflow UI the server started: the tether and everything below it."""
    try:
        children = psutil.Process(served.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any(name in part for part in child.cmdline() for name in ("nbmlops.server.tether", "mlflow", "uvicorn")):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that are alive (a zombie waiting for its parent to read it has ended)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until_gone(processes: list[psutil.Process], timeout: float = GONE_TIMEOUT) -> list[psutil.Process]:
    """Wait for ``processes`` to end; those still running after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    return still_running(processes)


def socket_folder(processes: list[psutil.Process]) -> Path:
    """The folder of the one Unix socket the MLflow UI listens on."""
    sockets = {c.laddr for p in processes for c in p.net_connections("unix") if c.laddr}
    assert len(sockets) == 1, sockets
    return Path(next(iter(sockets))).parent


def failure_log(served: Served) -> str:
    ui_log = served.root / ".nbmlops" / "mlflow-ui.log"
    shown = served.log.read_text(errors="replace")
    if ui_log.exists():
        shown += f"\n----- {ui_log} -----\n" + ui_log.read_text(errors="replace")
    return shown


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server shaped like a JupyterHub single-user server (``/user/alice/``); its MLflow UI started by the first
    test that asks; every process of both is ended after the module."""
    served = start_server(tmp_path_factory.mktemp("hub"), "/user/alice/")
    try:
        yield served
    finally:
        left = ui_processes(served)
        stop_group(served.process)
        for process in still_running(left):
            process.kill()


def get_run(served: Served, session: requests.Session | None = None, **headers: str) -> requests.Response:
    return (session or requests).get(served.url("mlflow/ajax-api/2.0/mlflow/runs/get"),
                                     params={"run_id": served.run_id}, headers={**served.auth, **headers},
                                     timeout=FIRST_REQUEST_TIMEOUT)


def test_without_jupyter_login_the_ui_is_refused_and_nothing_starts(hub: Served):
    before = {p.pid for p in ui_processes(hub)}
    page = requests.get(hub.url("mlflow/"), allow_redirects=False, timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith("/user/alice/login"), page.status_code
    api = requests.get(hub.url("mlflow/ajax-api/2.0/mlflow/runs/get"), params={"run_id": hub.run_id},
                       allow_redirects=False, timeout=30)
    assert api.status_code in (302, 403) and "proxied-run" not in api.text
    wrong = requests.post(hub.url("mlflow/ajax-api/2.0/mlflow/runs/search"), json={"experiment_ids": ["0"]},
                          headers={"Authorization": "token not-the-token"}, allow_redirects=False, timeout=30)
    assert wrong.status_code == 403 and "proxied-run" not in wrong.text
    assert {p.pid for p in ui_processes(hub)} == before, "an unauthenticated request started a process"


def test_with_the_token_the_mlflow_page_and_its_assets_are_served_from_a_private_socket(hub: Served):
    page = requests.get(hub.url("mlflow/"), headers=hub.auth, timeout=FIRST_REQUEST_TIMEOUT)
    assert page.status_code == 200, failure_log(hub)
    assert "<title>MLflow</title>" in page.text
    script = re.search(r'src="(static-files/[^"]+\.js)"', page.text)
    assert script, page.text[:500]
    asset = requests.get(hub.url(f"mlflow/{script.group(1)}"), headers=hub.auth, timeout=60)
    assert asset.status_code == 200 and "javascript" in asset.headers["Content-Type"] and len(asset.content) > 10_000
    slashless = requests.get(hub.url("mlflow"), headers=hub.auth, allow_redirects=False, timeout=30)
    assert slashless.status_code in (301, 302) and slashless.headers["Location"].endswith("/user/alice/mlflow/")
    # MLflow listens on no TCP port, only on a Unix socket in a folder no other user may enter
    processes = ui_processes(hub)
    assert [c.laddr for p in processes for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN] == []
    assert socket_folder(processes).stat().st_mode & 0o777 == 0o700


def test_mlflow_rest_api_through_the_proxy_returns_the_run(hub: Served):
    answer = get_run(hub)
    assert answer.status_code == 200, failure_log(hub)
    run = answer.json()["run"]
    assert run["info"]["run_name"] == "proxied-run" and run["info"]["experiment_id"] == hub.experiment_id
    assert [(m["key"], m["value"]) for m in run["data"]["metrics"]] == [("accuracy", 0.93)]


def test_behind_a_hub_host_a_logged_in_browser_reads_and_searches_and_other_sites_are_refused(hub: Served):
    browser = requests.Session()
    login = browser.get(hub.url("api/status"), params={"token": hub.token}, headers={"Host": HUB_HOST}, timeout=30)
    assert login.status_code == 200 and any(c.name.startswith("username-hub") for c in browser.cookies)
    page = browser.get(hub.url("mlflow/"), headers={"Host": HUB_HOST}, timeout=FIRST_REQUEST_TIMEOUT)
    assert page.status_code == 200 and "<title>MLflow</title>" in page.text
    search = {"experiment_ids": [hub.experiment_id]}
    same_site = browser.post(hub.url("mlflow/ajax-api/2.0/mlflow/runs/search"), json=search,
                             headers={"Host": HUB_HOST, "Origin": f"https://{HUB_HOST}"}, timeout=60)
    assert same_site.status_code == 200, same_site.text[:300]
    assert [r["info"]["run_name"] for r in same_site.json()["runs"]] == ["proxied-run"]
    other_site = browser.post(hub.url("mlflow/ajax-api/2.0/mlflow/runs/search"), json=search,
                              headers={"Host": HUB_HOST, "Origin": "https://evil.example"}, timeout=60)
    assert other_site.status_code == 403 and "another site" in other_site.text
    assert "proxied-run" not in other_site.text


def test_the_jupyter_token_never_reaches_mlflow(hub: Served):
    page = requests.get(hub.url("mlflow/"), params={"token": hub.token, "o": "0"}, timeout=FIRST_REQUEST_TIMEOUT)
    assert page.status_code == 200
    assert get_run(hub).status_code == 200  # the Authorization header
    ui_log = (hub.root / ".nbmlops" / "mlflow-ui.log").read_text(errors="replace")
    assert "GET /?o=0 " in ui_log, ui_log[-2000:]
    assert hub.token not in ui_log


def test_api_and_processes_of_the_server_name_the_served_ui(hub: Served):
    status = requests.get(hub.url("nbmlops/api/status"), headers=hub.auth, timeout=60).json()
    assert status["ui_url"] == "/user/alice/mlflow/"
    tether = next(p for p in ui_processes(hub) if "nbmlops.server.tether" in " ".join(p.cmdline()))
    environment = tether.environ()  # what every process the server starts inherits
    assert environment[SERVED_UI_URL_VARIABLE] == "/user/alice/mlflow/"
    assert environment[SERVED_UI_STORE_VARIABLE] == f"sqlite:///{hub.root / '.nbmlops' / 'mlflow.db'}"


def test_a_dead_mlflow_is_started_again_on_the_next_request(hub: Served):
    assert get_run(hub).status_code == 200
    first = ui_processes(hub)
    server = next(p for p in first if p.cmdline()[1:4] == ["-m", "mlflow", "server"])
    server.send_signal(signal.SIGKILL)
    assert wait_until_gone(first) == [], "the tether left part of a dead MLflow UI behind"
    again = get_run(hub)
    assert again.status_code == 200 and again.json()["run"]["info"]["run_name"] == "proxied-run", failure_log(hub)
    assert {p.pid for p in ui_processes(hub)}.isdisjoint(p.pid for p in first)


def test_setting_ui_url_turns_the_served_ui_off(hub: Served):
    pyproject = hub.root / "pyproject.toml"
    original = pyproject.read_text()
    assert get_run(hub).status_code == 200
    running = ui_processes(hub)
    try:
        pyproject.write_text(original + '\n[tool.nbmlops]\nui-url = "http://mlflow-ui.example"\n')
        refused = requests.get(hub.url("mlflow/"), headers=hub.auth, timeout=60)
        assert refused.status_code == 404 and "ui_url is set" in refused.text and "mlflow-ui.example" in refused.text
    finally:
        pyproject.write_text(original)
    assert {p.pid for p in ui_processes(hub)} == {p.pid for p in running}


def test_stopping_jupyter_server_stops_the_mlflow_ui(hub: Served):
    assert get_run(hub).status_code == 200
    started = ui_processes(hub)
    assert len(started) >= 2, [p.cmdline() for p in started]  # the tether, mlflow server (and its uvicorn)
    folder = socket_folder(started)
    hub.process.send_signal(signal.SIGTERM)  # as JupyterHub stops a single-user server
    hub.process.wait(timeout=120)
    assert wait_until_gone(started) == [], f"left running: {[p.cmdline() for p in still_running(started)]}"
    assert not folder.exists()


def test_a_killed_jupyter_server_at_the_root_url_leaves_no_mlflow_behind(tmp_path: Path):
    served = start_server(tmp_path, "/", "--ServerApp.authorizer_class=tests.test_ui_proxy.NoWritesToNbmlops")
    started: list[psutil.Process] = []
    try:
        answer = get_run(served)
        assert answer.status_code == 200, failure_log(served)
        assert answer.json()["run"]["info"]["run_name"] == "proxied-run"
        written = requests.post(served.url("mlflow/ajax-api/2.0/mlflow/runs/delete"), json={"run_id": served.run_id},
                                headers=served.auth, timeout=60)
        assert written.status_code == 403 and "not authorized" in written.text
        assert get_run(served).json()["run"]["info"]["lifecycle_stage"] == "active"
        started = ui_processes(served)
        assert len(started) >= 2
        folder = socket_folder(started)
        served.process.send_signal(signal.SIGKILL)
        served.process.wait(timeout=30)
        assert wait_until_gone(started) == [], f"left running: {[p.cmdline() for p in still_running(started)]}"
        assert not folder.exists()
    finally:
        stop_group(served.process)
        for process in still_running(started):
            process.kill()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("NBMLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBMLOPS_UI_URL", SERVED_UI_URL_VARIABLE,
                 SERVED_UI_STORE_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'kernel-side'\n")
    return tmp_path


def test_ui_url_default_is_the_served_ui_for_the_served_store_only(clean_environment: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    store = f"sqlite:///{clean_environment / '.nbmlops' / 'mlflow.db'}"
    assert resolve_settings(clean_environment).ui_url == "http://127.0.0.1:5000"  # outside Jupyter: nbmlops ui
    monkeypatch.setenv(SERVED_UI_URL_VARIABLE, "/user/alice/mlflow/")
    monkeypatch.setenv(SERVED_UI_STORE_VARIABLE, store)
    settings = resolve_settings(clean_environment)
    assert settings.ui_url == "/user/alice/mlflow/" and settings.sources["ui_url"].startswith("default")
    # a ui_url the user set, and a tracking server's own UI, still win
    monkeypatch.setenv("NBMLOPS_UI_URL", "http://127.0.0.1:5111")
    assert resolve_settings(clean_environment).ui_url == "http://127.0.0.1:5111"
    monkeypatch.delenv("NBMLOPS_UI_URL")
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", "http://bob:secret@mlflow.example:5000")
    assert resolve_settings(clean_environment).ui_url == "http://mlflow.example:5000"
    # a kernel whose project has a store of its own: nbmlops ui's address
    monkeypatch.delenv("NBMLOPS_TRACKING_URI")
    monkeypatch.setenv(SERVED_UI_STORE_VARIABLE, "sqlite:////elsewhere/mlflow.db")
    assert resolve_settings(clean_environment).ui_url == "http://127.0.0.1:5000"
