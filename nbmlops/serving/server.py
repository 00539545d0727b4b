"""``nbmlops serve NAME@ALIAS``: serve a registered model through MLflow's scoring app, following its alias.

The main process resolves the alias, loads the version the way ``nbmlops monitor`` does (refusing what it cannot
load safely), binds the port, creates the serving run and its folder (:class:`~nbmlops.serving.recorder.ServingRecorder`,
which delivers the traffic log to the store while the server runs), then serves: in this process with one worker
(from a thread with ``block=False``), else through uvicorn's supervisor in a child process whose ``workers``
processes each load the model, follow the alias and log their own traffic (:func:`nbmlops.serving.app.create_app`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import ConfigError, ModelReferenceError, WorkerError
from nbmlops.registry.models import ModelReference, check_alias, get_version, parse_reference, registry_client
from nbmlops.serving.app import CONFIG_ENV, ServeConfig, build_app
from nbmlops.serving.follower import load_version

__all__ = ["ServingHandle", "serve"]

#: seconds a stop waits for requests in flight (then connections are closed)
GRACEFUL_S = 5
#: seconds the worker processes may take to load the model and answer
START_TIMEOUT_S = 300.0


@dataclass
class ServingHandle:
    """A model server started by :func:`serve`.

    Attributes:
        url: where it answers (``http://HOST:PORT``).
        run_id: its serving run (experiment ``serve/NAME``).
        folder: its serving folder (traffic log segments): ``<root>/.nbmlops/serve/<run id>/``.
        model: ``NAME@ALIAS``.
        version: the version it served at the start.
        notes: what was trusted explicitly to load it.
    """

    url: str
    run_id: str
    folder: Path
    model: str
    version: int
    notes: tuple[str, ...] = ()
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    def stop(self) -> None:
        """Stop serving (requests in flight are answered first), deliver the traffic, end the serving run."""
        self._stop()


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    log_requests: float = 1.0,
    shadow: str | None = None,
    trust_pickle: bool = False,
    poll: float = 2.0,
    block: bool = True,
    settings: Settings | None = None,
    log_max_mb: float | None = None,
) -> ServingHandle:
    """Serve ``model`` (``NAME@ALIAS``) with MLflow's scoring protocol, following the alias.

    Args:
        host, port: where to listen (port 0: a free port, see :attr:`ServingHandle.url`).
        workers: serving processes (1: this one).
        log_requests: the fraction of requests whose body and answer the traffic log keeps (every request's
            status, latency and version are kept).
        shadow: an alias of the same model (such as ``challenger``) that also scores each request, off the
            response path; both answers are logged.
        trust_pickle: trust this model: load it although it uses pickle, skops types outside nbmlops' list, or
            has no recorded SHA-256 (a changed artifact is refused all the same).
        poll: seconds between two questions to the registry about the aliases.
        block: serve until stopped (Ctrl-C, SIGTERM) and return then; False: serve from a thread of this process
            (or a child process with ``workers > 1``) and return at once, ready to answer.
        log_max_mb: the bound on the traffic log not yet delivered (default 1 GiB); past it, requests are served
            and counted but not logged.

    Raises:
        ModelReferenceError, ModelNotFoundError: not ``NAME@ALIAS``, or no such model or alias.
        UnsafeModelError: nbmlops refuses to load the version (see ``nbmlops monitor``).
        ConfigError: a bad option, or the port is in use.
    """
    _check_options(port, workers, log_requests, poll, log_max_mb)
    settings = settings or resolve_settings()
    ref = parse_reference(model)
    if ref.alias is None:
        raise ModelReferenceError(f"{model!r}: serve follows an alias: give NAME@ALIAS (such as {ref.name}@champion)")
    if shadow is not None:
        check_alias(shadow)
    sock = _bind(host, port)  # first: a port in use is said before the model is loaded
    try:
        client = registry_client(settings)
        trusted = trust_pickle or ref.name in settings.trusted_models
        version = get_version(ref, client=client)
        served = load_version(version, client=client, settings=settings, trusted=trusted)
        shadow_served = None
        if shadow is not None:
            found = get_version(ModelReference(ref.name, alias=shadow), client=client)
            shadow_served = load_version(found, client=client, settings=settings, trusted=trusted)
        url = _url(host, sock.getsockname()[1])
        from nbmlops.serving.recorder import ServingRecorder

        recorder = ServingRecorder(settings)
        run_id, folder = recorder.start(ref.name, ref.alias, version.version, url, host, os.getpid(), shadow)
    except BaseException:
        sock.close()
        raise
    config = ServeConfig(
        name=ref.name, alias=ref.alias, version=version.version, run_id=run_id, folder=str(folder),
        root=str(settings.root), tracking_uri=settings.tracking_uri, artifact_root=settings.artifact_root,
        shadow=shadow, shadow_version=None if shadow_served is None else shadow_served.version, trusted=trusted,
        poll=poll, log_rate=log_requests, log_max_bytes=None if log_max_mb is None else int(log_max_mb * 2**20),
    )
    notes = served.notes + (shadow_served.notes if shadow_served is not None else ())
    try:
        if workers == 1:
            runner: _Runner = _InProcess(build_app(config, served.started_now(),
                                                   shadow_served.started_now() if shadow_served else None,
                                                   client=client, settings=settings), sock)
        else:
            del served, shadow_served  # each worker loads its own
            runner = _Workers(config, sock, workers)
    except BaseException:
        sock.close()
        recorder.stop()
        raise
    stopped = threading.Lock()

    def stop() -> None:
        if stopped.acquire(blocking=False):
            try:
                runner.stop()
            finally:
                recorder.stop()

    handle = ServingHandle(url, run_id, Path(folder), str(ref), version.version, notes, stop)
    if not block:
        try:
            runner.start()
        except BaseException:
            stop()
            raise
        return handle
    for note in notes:
        print(f"note: {note}")
    print(f"serving {ref} (version {version.version}{f', shadow @{shadow}' if shadow else ''}) at {url} with "
          f"{workers} worker(s); serving run {run_id}; Ctrl-C to stop", flush=True)
    try:
        runner.run()
    finally:
        stop()
    print(f"stopped; the traffic log went to serving run {run_id}", flush=True)
    return handle


def _check_options(port: int, workers: int, log_requests: float, poll: float, log_max_mb: float | None) -> None:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("port", f"expected a port number from 0 to 65535, got {port!r}", "argument")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError("workers", f"expected a whole number >= 1, got {workers!r}", "argument")
    if not isinstance(log_requests, (int, float)) or not 0 <= log_requests <= 1:
        raise ConfigError("log_requests", f"expected a fraction from 0 to 1, got {log_requests!r}", "argument")
    if not isinstance(poll, (int, float)) or not 0 < poll < math.inf:
        raise ConfigError("poll", f"expected a number of seconds > 0, got {poll!r}", "argument")
    if log_max_mb is not None and (not isinstance(log_max_mb, (int, float)) or not 0 < log_max_mb < math.inf):
        raise ConfigError("log_max_mb", f"expected a number of megabytes > 0, got {log_max_mb!r}", "argument")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a port in use is a one-line :class:`ConfigError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError("host", f"cannot listen on {host!r}: {exc.strerror}", "argument") from None
    family, kind, proto = infos[0][:3]
    sock = socket.socket(family, kind, proto)  # IPPROTO_TCP: asyncio then sets TCP_NODELAY on each connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError("port", f"{host}:{port} is in use (another server listens there); choose another "
                                      "with --port", "argument") from None
        raise ConfigError("host", f"cannot listen on {host}:{port}: {exc.strerror or exc}", "argument") from None
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


class _Runner:
    def run(self) -> None:
        """Serve until stopped (in the main thread: Ctrl-C or SIGTERM stops it)."""
        raise NotImplementedError

    def start(self) -> None:
        """Serve in the background; return once it answers."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving gracefully."""
        raise NotImplementedError


class _InProcess(_Runner):
    """One worker: uvicorn in this process, on the bound socket."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.app = app
        self.sock = sock
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                                    timeout_graceful_shutdown=GRACEFUL_S))
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        with _term_interrupts():
            try:
                self.server.run(sockets=[self.sock])
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after uvicorn's graceful shutdown
                pass
            finally:
                self.app.close()
                self.sock.close()
        if not self.server.started:
            raise WorkerError("the server did not start (see the lines above)")

    def start(self) -> None:
        def serve() -> None:
            try:
                self.server.run(sockets=[self.sock])
            except BaseException as exc:
                self.failure = exc
            finally:
                self.app.close()
                self.sock.close()

        self.thread = threading.Thread(target=serve, name="nbmlops-serve", daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise WorkerError(f"the server did not start: {self.failure or 'see the lines above'}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(GRACEFUL_S + 30)


class _Workers(_Runner):
    """Several workers: uvicorn's supervisor in a child process, on the address this process bound; Prometheus'
    multiprocess files in ``<serving folder>/prometheus``."""

    def __init__(self, config: ServeConfig, sock: socket.socket, workers: int) -> None:
        self.config = config
        self.sock = sock
        self.workers = workers
        self.address = sock.getsockname()[:2]
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        metrics = Path(self.config.folder) / "prometheus"
        metrics.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, CONFIG_ENV: self.config.to_json(), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        host, port = self.sock.getsockname()[:2]
        # uvicorn's supervisor binds the address again itself (a socket it makes is TCP: TCP_NODELAY on each
        # connection); the port was free a moment ago, and another process taking it meanwhile stops the workers
        self.sock.close()
        command = [sys.executable, "-m", "uvicorn", "--factory", "nbmlops.serving.app:create_app", "--host", host,
                   "--port", str(port), "--workers", str(self.workers), "--log-level", "warning", "--no-access-log",
                   "--timeout-graceful-shutdown", str(GRACEFUL_S)]
        self.process = subprocess.Popen(command, env=env)

    def _wait_ready(self) -> None:
        """Until a worker answers ``/ping`` (the workers load the model first)."""
        assert self.process is not None
        host, port = self.address
        url = _url("127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host, port) + "/ping"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise WorkerError(f"the worker processes ended with exit code {self.process.returncode} before "
                                  "serving (see the lines above)")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        return
            if time.monotonic() > deadline:
                raise WorkerError(f"no worker answered within {START_TIMEOUT_S:g} s")
            time.sleep(0.2)

    def run(self) -> None:
        self._spawn()
        assert self.process is not None
        try:
            with _term_interrupts():
                self.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        if self.process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            raise WorkerError(f"the worker processes ended with exit code {self.process.returncode}")

    def start(self) -> None:
        self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(GRACEFUL_S + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sock.close()


@contextlib.contextmanager
def _term_interrupts() -> Any:
    """In the main thread, SIGTERM raises KeyboardInterrupt (as Ctrl-C does): the server stops gracefully and
    the serving run is ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
