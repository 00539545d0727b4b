"""Real faults for the reliability tests: a loopback HTTP proxy in front of a real ``mlflow server`` that
drops replies, answers for the server, holds requests or checks credentials, and a socket that accepts
connections and never answers; and the real processes they are applied to: a project folder, a clean
environment, a Python process (or the ``nbmlops`` command) run there with a bounded wait.

Everything listens on 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

#: how long a held request is kept at most (the proxy's close releases it earlier)
HOLD_LIMIT_S = 300.0
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "upgrade"}


@dataclass
class Fault:
    """What the proxy does to the requests it matches.

    ``action``:
      - ``drop_reply``: forward the request (the server applies it), then close the connection without the reply;
      - ``status``: answer ``status`` with ``body`` instead of the server (the request never reaches it);
      - ``hang``: hold the request and never answer (until the proxy closes);
      - ``late``: hold the request ``delay`` seconds, then forward it (the client has long given up) and answer.

    A request matches when its method is ``method`` (any if None) and its path contains ``path``. With
    ``times`` the fault applies to that many matching requests, then no more.
    """

    action: str
    path: str = ""
    method: str | None = None
    status: int = 503
    body: bytes = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected by the test proxy"}'
    times: int | None = None
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and self.path in path


@dataclass
class Seen:
    """One request the proxy received: its method, path, and what the proxy did (``forwarded``, or the
    fault's action; ``unauthorized`` when credentials were missing or wrong)."""

    method: str
    path: str
    action: str
    authorization: str | None = None


@dataclass
class _Credentials:
    header: str | None  # the Authorization header that is let through; None: every request is refused
    status: int = 401


@dataclass
class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of ``upstream`` (an ``http://host:port`` URI)."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    credentials: _Credentials | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        parts = urllib.parse.urlsplit(self.upstream)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> Fault:
        """Apply ``fault`` from now on (faults added first win)."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """No more faults (requests held until now stay held)."""
        with self._lock:
            self.faults.clear()

    def require_basic(self, user: str, password: str, status: int = 401) -> None:
        """Refuse with ``status`` every request but ``/health`` (which MLflow's auth app leaves open too) that
        does not carry these Basic credentials."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.credentials = _Credentials(f"Basic {token}", status)

    def require_bearer(self, token: str, status: int = 401) -> None:
        """As :meth:`require_basic`, for ``Authorization: Bearer <token>``."""
        self.credentials = _Credentials(f"Bearer {token}", status)

    def refuse_everyone(self, status: int) -> None:
        """Answer ``status`` (401 or 403) to every request but ``/health``, whatever credentials it carries."""
        self.credentials = _Credentials(None, status)

    def count(self, path: str, action: str | None = None, method: str | None = None) -> int:
        """How many requests whose path contains ``path`` were seen (with that action, that method)."""
        with self._lock:
            return sum(
                1
                for s in self.seen
                if path in s.path and (action is None or s.action == action) and (method is None or s.method == method)
            )

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the handler ------------------------------------------------------------------

    def _decide(self, method: str, path: str, authorization: str | None) -> tuple[str, Fault | None]:
        with self._lock:
            credentials = self.credentials
            refused = credentials is not None and (credentials.header is None or authorization != credentials.header)
            if refused and not path.startswith("/health"):
                self.seen.append(Seen(method, path, "unauthorized", authorization))
                return "unauthorized", None
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.seen.append(Seen(method, path, fault.action, authorization))
                    return fault.action, fault
            self.seen.append(Seen(method, path, "forwarded", authorization))
            return "forwarded", None

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, list, bytes]:
        connection = http.client.HTTPConnection(*self._target, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            sent["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            connection.close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up on a held request is no error
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._body()
        action, fault = proxy._decide(self.command, self.path, self.headers.get("Authorization"))
        if action == "unauthorized":
            assert proxy.credentials is not None
            status = proxy.credentials.status
            text = b"You are not authenticated." if status == 401 else b"Permission denied."
            self._reply(status, [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="mlflow"')], text)
            return
        if action == "status":
            assert fault is not None
            self._reply(fault.status, [("Content-Type", "application/json")], fault.body)
            return
        if action == "hang":
            proxy._released.wait(HOLD_LIMIT_S)
            self.close_connection = True
            return
        if action == "late":
            assert fault is not None
            proxy._released.wait(fault.delay)
        status, reason, headers, reply = proxy._forward(self.command, self.path, dict(self.headers.items()), body)
        if action == "drop_reply":
            self.close_connection = True  # applied by the server; the client never hears of it
            return
        try:
            self._reply(status, [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP], reply, reason)
        except OSError:  # the client gave up (a held request): the server applied it all the same
            self.close_connection = True

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes, reason: str | None = None) -> None:
        self.send_response(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A socket on 127.0.0.1 that accepts every connection and never answers; yields its ``http://`` URI."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for connection in held:
            connection.close()
        thread.join(timeout=5)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its ``NBMLOPS_*`` and ``MLFLOW_*`` settings, plus ``extra``: what a
    process started on a machine configured by nothing but ``extra`` sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    env.update(extra)
    return env


def project_folder(path: Path) -> Path:
    """``path`` made a project root (a ``pyproject.toml``): nbmlops keeps its journal in ``path/.nbmlops``, out of
    every other project's reach, as on a machine of its own."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(f"[project]\nname = '{path.name}'\n")
    return path


def run_python(folder: Path, *args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python *args`` in ``folder`` with ``env``, its output captured as text; fails the test, naming the
    command, when it still runs after ``timeout`` seconds."""
    import pytest

    try:
        return subprocess.run([sys.executable, *args], cwd=folder, env=dict(env), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`python {' '.join(args)[:200]}` still ran after {timeout} s")


def nbmlops_cli(folder: Path, *args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``nbmlops *args`` (the command line, in a process of its own) in ``folder``: see :func:`run_python`."""
    return run_python(folder, "-m", "nbmlops.cli", *args, env=env, timeout=timeout)
