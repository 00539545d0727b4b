"""The MLflow UI of the project's local store, served by Jupyter Server at ``<base_url>mlflow/`` behind its login.

A local store (a sqlite or file URI) has no UI of its own: without this, run links point to 127.0.0.1:5000, where
nothing answers unless the user started ``nbmlops ui`` (and on a remote JupyterHub, nothing can). Here the first
authenticated request to ``<base_url>mlflow/`` starts ``mlflow server`` for the store of the project at Jupyter's
root (the store the panel shows), and every request is proxied to it by jupyter-server-proxy's handler:

- Jupyter's token or cookie is required (a 302 to the login page, or 403, without one), and Jupyter's authorizer
  is asked as for the nbmlops API (resource ``nbmlops``: GET reads, other methods write);
- MLflow listens on no TCP port at all, only on a Unix socket in a folder of its own that only this user may enter
  (uvicorn's ``--uds``): neither another user of the machine (a JupyterHub whose servers share one host) nor a web
  page in the browser (DNS rebinding) can reach it past Jupyter's login;
- a request from another site is refused as Jupyter's own API refuses it (an ``Origin`` other than the server's,
  on a cookie login; jupyter-server-proxy skips Jupyter's XSRF check, leaving that to the app), and MLflow sees the
  others as its own page's (``Host: localhost``, ``Origin: http://localhost``), so its host and cross-origin checks
  hold without ``--allowed-hosts`` or ``--cors-allowed-origins``;
- the Jupyter token never reaches MLflow (neither the ``token`` query parameter, which its access log would show,
  nor the ``Authorization`` header);
- MLflow's page uses relative addresses, so the prefix is stripped: no ``--static-prefix``.

The process is nbmlops' own rather than jupyter-server-proxy's (its ``jupyter_serverproxy_servers`` servers are
started through simpervisor, which replaces Jupyter Server's SIGTERM and SIGINT handlers, so a JupyterHub stop would
skip the server's own cleanup, and cannot be told the project's root or wait long enough for MLflow to start): it
runs under :mod:`nbmlops.server.tether` in a process group of its own, which ends with Jupyter Server however that
ends (normal stop, SIGTERM, SIGKILL); one uvicorn worker, MLflow's job runner off. It is restarted when the project's
store changes or it died. Its output goes to ``<root>/.nbmlops/mlflow-ui.log``.

Processes Jupyter Server starts (kernels, terminals, headless runs) inherit ``NBMLOPS_SERVED_UI_URL`` (the
origin-relative ``<base_url>mlflow/``) and ``NBMLOPS_SERVED_UI_STORE``: for that store, ``ui_url``'s default is the
served UI (:func:`nbmlops.config.resolve_settings`). Nothing is served when ``ui_url`` is set (``ui-url`` in
``[tool.nbmlops]``, ``NBMLOPS_UI_URL``): the links go there, and ``<base_url>mlflow/`` answers 404 with the reason,
as it does for an MLflow tracking server's store (its own UI is the link).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.utils import ensure_async, url_path_join
from jupyter_server_proxy.handlers import AddSlashHandler, NamedLocalProxyHandler
from jupyter_server_proxy.unixsock import UnixResolver
from tornado import httpclient, web
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from nbmlops.config import SERVED_UI_STORE_VARIABLE, SERVED_UI_URL_VARIABLE, Settings, resolve_settings
from nbmlops.exceptions import NbmlopsError
from nbmlops.redact import redact_uri
from nbmlops.server.tether import GRACE_S

__all__ = ["PROXY_NAME", "START_TIMEOUT_S", "MlflowUI", "not_served_because", "serve_mlflow_ui"]

#: the path under Jupyter's base URL
PROXY_NAME = "mlflow"
#: seconds a request waits for a starting MLflow UI to answer (importing mlflow alone takes seconds on a busy machine)
START_TIMEOUT_S = 120.0
LOG_NAME = "mlflow-ui.log"
_LOCAL_SCHEMES = ("sqlite", "file")


def not_served_because(settings: Settings) -> str | None:
    """Why Jupyter Server does not serve an MLflow UI for ``settings``' store, or None when it does."""
    if not settings.sources.get("ui_url", "default").startswith("default"):
        return f"ui_url is set ({redact_uri(settings.ui_url)}, from {settings.sources['ui_url']}): run links go there"
    if settings.tracking_uri.split(":", 1)[0] not in _LOCAL_SCHEMES:
        return (f"the tracking store {redact_uri(settings.tracking_uri)} is not local: its own UI is "
                f"{redact_uri(settings.ui_url)}")
    return None


def serve_mlflow_ui(serverapp: Any) -> MlflowUI:
    """Add ``<base_url>mlflow/`` to the server and tell the processes it will start where it is (see the module
    docstring)."""
    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    ui = MlflowUI(Path(web_app.settings["server_root_dir"]), serverapp.log)
    web_app.add_handlers(".*$", [
        (url_path_join(base_url, PROXY_NAME, "(.*)"), MlflowUIHandler, {"ui": ui}),
        (url_path_join(base_url, PROXY_NAME), AddSlashHandler),
    ])
    atexit.register(ui.stop)
    address = url_path_join(base_url, PROXY_NAME) + "/"
    try:
        settings = resolve_settings(ui.root)
    except NbmlopsError as exc:  # a broken pyproject.toml: the API says so on use; the server still starts
        serverapp.log.warning("nbmlops: the MLflow UI is not announced to kernels: %s", exc)
        return ui
    why_not = not_served_because(settings)
    if why_not is None:
        os.environ[SERVED_UI_URL_VARIABLE] = address
        os.environ[SERVED_UI_STORE_VARIABLE] = settings.tracking_uri
        serverapp.log.info("nbmlops: MLflow UI of %s at %s", redact_uri(settings.tracking_uri), address)
    else:
        serverapp.log.info("nbmlops: no MLflow UI at %s: %s", address, why_not)
    return ui


@dataclass(frozen=True)
class _Running:
    process: subprocess.Popen
    socket: str
    store: tuple[str, str | None]


class MlflowUI:
    """The ``mlflow server`` of the store of the project at ``root``: started on first use, restarted when the store
    changes or the process died, stopped by :meth:`stop` (at the server's exit) or with its parent."""

    def __init__(self, root: Path, log: Any) -> None:
        self.root = root
        self.log = log
        self._lock = asyncio.Lock()
        self._running: _Running | None = None

    async def socket(self) -> str:
        """The Unix socket of a running UI for the project's current store, started first when needed.

        Raises ``HTTPError`` 404 when nothing is served for the store (see :func:`not_served_because`) and 503 when
        MLflow did not start (the reason and where its log is)."""
        try:
            settings = resolve_settings(self.root)
        except NbmlopsError as exc:
            raise web.HTTPError(503, "nbmlops cannot tell which store to show: %s", exc) from None
        why_not = not_served_because(settings)
        if why_not is not None:
            raise web.HTTPError(404, "nbmlops serves no MLflow UI here: %s", why_not)
        store = (settings.tracking_uri, settings.artifact_root)
        async with self._lock:
            running = self._running
            if running is not None and running.store == store and running.process.poll() is None:
                return running.socket
            if running is not None:
                self._running = None
                await asyncio.get_running_loop().run_in_executor(None, _stop, running)
            self._running = await self._start(settings, store)
            return self._running.socket

    async def _start(self, settings: Settings, store: tuple[str, str | None]) -> _Running:
        log_path = settings.state_dir / LOG_NAME
        try:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "wb")
        except OSError as exc:
            raise web.HTTPError(503, "the MLflow UI cannot write its log %s: %s", log_path, exc) from None
        folder = tempfile.mkdtemp(prefix="nbmlops-mlflow-ui-")  # only this user may enter it (0700)
        socket_path = os.path.join(folder, "mlflow.sock")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "nbmlops.server.tether", "--remove", folder,
                 *mlflow_command(settings, socket_path)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=settings.state_dir, env=env,
            )
        running = _Running(process, socket_path, store)
        self.log.info("nbmlops: starting the MLflow UI of %s on %s (pid %d, log %s)",
                      redact_uri(settings.tracking_uri), socket_path, process.pid, log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = SimpleAsyncHTTPClient(force_instance=True, resolver=UnixResolver(socket_path))
        try:
            while True:
                if process.poll() is not None:
                    _remove_socket(running)
                    raise web.HTTPError(503, "the MLflow UI exited with code %s while starting: %s (log: %s)",
                                        process.returncode, _last_line(log_path), log_path)
                with contextlib.suppress(OSError, httpclient.HTTPClientError):
                    answer = await client.fetch("http://localhost/health", request_timeout=5, raise_error=False)
                    if answer.code == 200:
                        return running
                if time.monotonic() > deadline:
                    await asyncio.get_running_loop().run_in_executor(None, _stop, running)
                    raise web.HTTPError(503, "the MLflow UI did not answer within %d s (log: %s)",
                                        START_TIMEOUT_S, log_path)
                await asyncio.sleep(0.25)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the UI's process group, if one runs (waits up to the tether's grace period)."""
        running, self._running = self._running, None
        if running is not None:
            _stop(running)


def mlflow_command(settings: Settings, socket_path: str) -> list[str]:
    """``mlflow server`` for ``settings``' store listening on the Unix socket ``socket_path`` only (uvicorn's
    ``--uds``: no TCP port at all), one worker; the artifact root of experiments created in the UI as ``nbmlops ui``
    gives it."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri]
    if settings.artifact_root:
        command += ["--default-artifact-root", settings.artifact_root]
    return [*command, "--host", "127.0.0.1", "--workers", "1", "--uvicorn-opts", f"--uds {shlex.quote(socket_path)}"]


def _stop(running: _Running) -> None:
    """End a tethered process (its input closes and it gets SIGTERM: it ends its group within its grace period),
    then remove its socket's folder."""
    process = running.process
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=GRACE_S + 5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _remove_socket(running)


def _remove_socket(running: _Running) -> None:
    shutil.rmtree(os.path.dirname(running.socket), ignore_errors=True)


def _last_line(path: Path) -> str:
    """The log's last non-empty line (where MLflow says why it stopped)."""
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return redact_uri(lines[-1][-300:])
    return "no output"


class MlflowUIHandler(NamedLocalProxyHandler):
    """``<base_url>mlflow/<path>``: authenticated (jupyter-server-proxy's ``prepare``), authorized as the nbmlops
    API is (resource ``nbmlops``: GET reads, other methods write), and proxied to the UI."""

    auth_resource = "nbmlops"

    def initialize(self, ui: MlflowUI) -> None:
        self.ui = ui
        self.name = self.proxy_base = PROXY_NAME

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        """Refuse (403), before anything is started or proxied, a request from another site (as Jupyter's own API
        does: an ``Origin`` that is not this server's, with a login cookie) and a user whom Jupyter's authorizer
        does not allow to read (GET) or write the nbmlops resource."""
        await super().prepare(*args, **kwargs)
        if self._finished:  # sent to the login page
            return
        if not self.check_origin():
            origin = self.request.headers["Origin"]
            raise web.HTTPError(403, "a request from another site (Origin %s) is refused", origin)
        action = HTTP_METHOD_TO_AUTH_ACTION.get(self.request.method.upper(), "write")
        if not await ensure_async(self.authorizer.is_authorized(self, self.current_user, action, self.auth_resource)):
            raise web.HTTPError(403, "User is not authorized to %s on resource: %s.", action, self.auth_resource)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Why nothing is served (404), MLflow did not start (503) or the user may not (403): the sentence, as plain
        text (Jupyter's error pages show a fixed text for some codes)."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{status_code}: {error.log_message % error.args}\n")
            return
        super().write_error(status_code, **kwargs)

    async def proxy(self, port: int, path: str) -> Any:
        """Proxy to the running UI's socket (``port`` plays no part)."""
        self.unix_socket = await self.ui.socket()
        return await super().proxy(0, path)

    async def open(self, path: str) -> Any:
        """A websocket, to the running UI's socket."""
        self.unix_socket = await self.ui.socket()
        return await self.proxy_open("localhost", 0, path)

    def get_request_headers_override(self) -> dict[str, str]:
        """The request as MLflow's own page would send it: to ``localhost``, from its origin (Jupyter has checked
        the request's own in :meth:`prepare`)."""
        headers = {"Host": "localhost"}
        if "Origin" in self.request.headers:
            headers["Origin"] = "http://localhost"
        return headers

    def proxy_request_headers(self) -> Any:
        """The request's headers less Jupyter's own credentials, plus :meth:`get_request_headers_override`."""
        headers = super().proxy_request_headers()
        headers.pop("Authorization", None)
        return headers

    def get_client_uri(self, protocol: str, host: str, port: int, proxied_path: str) -> str:
        """The address at the UI, without Jupyter's ``token`` query parameter."""
        uri = super().get_client_uri(protocol, host, port, proxied_path)
        parts = urlsplit(uri)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if not any(key == "token" for key, _ in pairs):
            return uri
        return urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in pairs if k != "token"])))
