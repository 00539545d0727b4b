"""Delivery in a child process: a kernel's records reach MLflow without MLflow's work holding the kernel's GIL.

Applying records is mostly MLflow's own Python (SQLAlchemy for a sqlite store, JSON and HTTP for a server):
about 6 ms per trivial run on sqlite. In the kernel's process that work competes with the user's cells for the
GIL; in a child process it runs on another core, and the kernel never imports mlflow to track.

:func:`delivery_process` is this process's child (one per process, shared by its sessions, started on first use
from the caller's thread: a background writer's). :class:`RemoteStore` is a store as the delivering side needs
it (``deliver``, ``settle``, ``experiment_id``), each call one request to the child, which applies it with the
same :class:`~nbmlops.backend.store.Store` a delivery in this process would use (its budgets, its classification
of errors, exactly-once creation). A request carries this process's environment, working directory and
:func:`~nbmlops.config.configure` settings whenever they changed, so the child opens the stores this process
would, with the same credentials and budgets; the pipes are private to the two processes (no credential is
written anywhere). What the child prints (MLflow's own warnings) is forwarded to this process's stderr, redacted.

The child ends when this process does: its requests pipe closes, and a watchdog thread ends it at once should
this process be killed mid-request (so a recovery by another process never races a delivery still under way).
A child that dies while a request is in flight is an outage of that request
(:class:`~nbmlops.exceptions.StoreUnavailableError`: the writer retries it carefully, finding its runs by key)
and is started again for the next one; a child that cannot be started (or ends before it answers) leaves delivery
in this process from that request on (one line says so), so tracking never depends on it.

Run as ``python -m nbmlops.backend.delivery_process`` by :class:`DeliveryProcess` only.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any, Protocol

from nbmlops.exceptions import StoreUnavailableError
from nbmlops.redact import redact_text, redact_uri

__all__ = ["DeliveryProcess", "RemoteStore", "StoreLike", "delivery_process"]

_HEADER = struct.Struct("!Q")
#: how often the child looks whether its parent still lives
_WATCH_S = 0.02
#: how long a starting child may take to answer (it imports nbmlops only: well under a second)
_START_S = 60.0


class StoreLike(Protocol):
    """What a delivery needs of a store: the in-process :class:`~nbmlops.backend.store.Store` or a
    :class:`RemoteStore`."""

    display_uri: str

    def deliver(self, records: Iterable[dict[str, Any]], runs: dict[str, str], careful: bool) -> None: ...

    def settle(self) -> None: ...

    def experiment_id(self, name: str) -> str: ...


class _Unstartable(Exception):
    """The child could not be started (or ended before it answered)."""


class DeliveryProcess:
    """This process's delivery child (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._broken: str | None = None  # why delivery stays in this process
        self._sent_context: tuple[Any, ...] | None = None

    def open(self, uri: str, artifact_root: str | None) -> StoreLike:
        """The store at ``uri`` (real, with its credentials) as the child delivers to it (from this process
        once the child could not be started: see :meth:`request`)."""
        return RemoteStore(self, uri, artifact_root)

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def request(self, display_uri: str, op: str, *args: Any) -> Any:
        """Ask the child to do ``op`` on a store; returns its answer, or raises what the store call raised there.

        Raises:
            StoreUnavailableError: the child died with the request in flight (what it did is unknown).
        """
        with self._lock:
            try:
                if self._broken is not None:
                    raise _Unstartable(self._broken)
                child = self._running()
            except _Unstartable:  # delivered from this process, as from now on
                runs: dict[str, str] = {}
                try:
                    return _handle(op, args, runs)
                except Exception as exc:
                    if runs:
                        raise _PartlyDelivered(runs, exc) from None
                    raise
            try:
                _send(child.stdin, (op, self._context(), args))
                reply = _receive(child.stdout)
            except (OSError, EOFError, pickle.PickleError) as exc:
                self._child_ended(child)
                raise StoreUnavailableError(
                    display_uri, f"the delivery process ended with a request in flight ({type(exc).__name__})"
                ) from None
        status, value, extra = reply
        if status == "ok":
            return value
        raise _rebuilt(value, extra)

    def close(self) -> None:
        """End the child (it finishes the request it has, if any)."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            _close_quietly(child.stdin)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            _close_quietly(child.stdout)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        if self._child is not None:
            self._child_ended(self._child)
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "nbmlops.backend.delivery_process", str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
            )
        except OSError as exc:
            self._start_failed(f"{type(exc).__name__}: {exc}")
            raise _Unstartable(str(exc)) from None
        threading.Thread(target=_forward, args=(child.stderr,), name="nbmlops-delivery-stderr", daemon=True).start()
        try:
            if child.stdout is None or not select.select([child.stdout], [], [], _START_S)[0]:
                raise EOFError(f"no greeting within {_START_S:g} s")
            if _receive(child.stdout) != "ready":
                raise EOFError("no greeting")
        except (OSError, EOFError, pickle.PickleError) as exc:
            child.kill()
            child.wait()
            self._start_failed(f"it ended at start (exit code {child.returncode})")
            raise _Unstartable(f"it ended at start ({type(exc).__name__})") from None
        self._child, self._sent_context = child, None
        return child

    def _start_failed(self, reason: str) -> None:
        self._broken = reason
        sys.stderr.write(f"nbmlops: the delivery process could not start ({reason}): records are delivered "
                         "from this process instead.\n")

    def _child_ended(self, child: subprocess.Popen[bytes]) -> None:
        child.kill()
        child.wait()
        _close_quietly(child.stdin)
        _close_quietly(child.stdout)
        if self._child is child:
            self._child = None

    def _context(self) -> tuple[Any, ...] | None:
        """This process's environment, working directory and settings, when they changed since last sent."""
        from nbmlops.config import session_settings

        context = (dict(os.environ), os.getcwd(), session_settings())
        if context == self._sent_context:
            return None
        self._sent_context = context
        return context


class RemoteStore:
    """A tracking store as the delivery child applies records to it (see the module)."""

    def __init__(self, process: DeliveryProcess, uri: str, artifact_root: str | None) -> None:
        self.uri = uri
        self.display_uri = redact_uri(uri)
        self.artifact_root = artifact_root
        self._process = process
        self._experiments: dict[str, str] = {}

    def deliver(self, records: Iterable[dict[str, Any]], runs: dict[str, str], careful: bool) -> None:
        """As :meth:`nbmlops.backend.store.Store.deliver`, in the child: ``runs`` is updated in place with the
        runs created, also when the delivery fails part way."""
        records = list(records)
        named = {record["run"] for record in records} | {record["parent"] for record in records if record.get("parent")}
        known = {key: runs[key] for key in named if key in runs}
        try:
            found = self._process.request(self.display_uri, "deliver", self.uri, self.artifact_root, records, known,
                                          careful)
        except _PartlyDelivered as exc:
            runs.update(exc.runs)
            raise exc.cause from None
        runs.update(found)

    def settle(self) -> None:
        """As :meth:`nbmlops.backend.store.Store.settle`, in the child."""
        self._process.request(self.display_uri, "settle", self.uri, self.artifact_root)

    def experiment_id(self, name: str) -> str:
        """As :meth:`nbmlops.backend.store.Store.experiment_id`, in the child (remembered here)."""
        if name not in self._experiments:
            self._experiments[name] = self._process.request(
                self.display_uri, "experiment_id", self.uri, self.artifact_root, name
            )
        return self._experiments[name]


class _PartlyDelivered(Exception):
    """A delivery in the child failed after creating some runs: those, and what it raised."""

    def __init__(self, runs: dict[str, str], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.runs = runs
        self.cause = cause


_process: DeliveryProcess | None = None
_process_pid = 0
_process_lock = threading.Lock()


def delivery_process() -> DeliveryProcess:
    """This process's delivery child (a forked process gets its own)."""
    global _process, _process_pid
    with _process_lock:
        if _process is None or _process_pid != os.getpid():
            _process, _process_pid = DeliveryProcess(), os.getpid()
        return _process


# -- the pipe -----------------------------------------------------------------------------------


def _send(stream: IO[bytes] | None, message: Any) -> None:
    if stream is None:
        raise EOFError("no pipe")
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes] | None) -> Any:
    if stream is None:
        raise EOFError("no pipe")
    header = _read_exactly(stream, _HEADER.size)
    return pickle.loads(_read_exactly(stream, _HEADER.unpack(header)[0]))  # our own child's (or parent's) bytes


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the pipe closed")
        data += chunk
    return data


def _close_quietly(stream: IO[bytes] | None) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


def _forward(stream: IO[bytes] | None) -> None:
    """Copy what the child prints to this process's stderr, line by line, redacted."""
    if stream is None:
        return
    try:
        for line in iter(stream.readline, b""):
            sys.stderr.write(redact_text(line.decode("utf-8", "replace")))
    except (OSError, ValueError):  # closed, or this process's stderr is gone
        pass
    finally:
        _close_quietly(stream)


def _described(exc: BaseException) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """An exception as plain data: its class (module, name), args and attributes."""
    state = {key: value for key, value in vars(exc).items() if _picklable(value)}
    args = tuple(arg if _picklable(arg) else str(arg) for arg in exc.args)
    return type(exc).__module__, type(exc).__qualname__, args, state


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _rebuilt(described: tuple[str, str, tuple[Any, ...], dict[str, Any]], runs: dict[str, str] | None) -> BaseException:
    """The exception the child raised, rebuilt here (nbmlops' own classes as they were; anything else as a
    RuntimeError naming it); wrapped with the runs a failed delivery created, when it created any."""
    module, name, args, state = described
    exc: BaseException
    if module == "nbmlops.exceptions":
        import nbmlops.exceptions as errors

        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exc = cls.__new__(cls)
            exc.args = args
            exc.__dict__.update(state)
        else:
            exc = RuntimeError(f"{name}: {args[0] if args else ''}")
    else:
        exc = RuntimeError(f"{name}: {args[0] if args else ''}")
    return _PartlyDelivered(runs, exc) if runs else exc


# -- the child ----------------------------------------------------------------------------------


def _watch(parent: int) -> None:
    """End this process at once when its parent is gone (killed mid-request: never deliver behind a recovery)."""
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(_WATCH_S)


def _apply_context(context: tuple[Any, ...] | None) -> None:
    if context is None:
        return
    from nbmlops.config import SETTING_NAMES, configure

    environment, cwd, settings = context
    os.environ.clear()
    os.environ.update(environment)
    try:
        os.chdir(cwd)
    except OSError:
        pass  # removed meanwhile: settings then come from the environment
    configure(**dict.fromkeys(SETTING_NAMES))
    configure(**settings)


def _handle(op: str, args: tuple[Any, ...], runs_out: dict[str, str]) -> Any:
    from nbmlops.backend.store import open_store

    uri, artifact_root, *rest = args
    store = open_store(uri, artifact_root)
    if op == "deliver":
        records, runs, careful = rest
        runs_out.update(runs)
        store.deliver(records, runs_out, careful)
        return runs_out
    if op == "settle":
        store.settle()
        return None
    if op == "experiment_id":
        return store.experiment_id(rest[0])
    raise ValueError(f"unknown request {op!r}")


def main(argv: list[str]) -> int:
    """The child: answer requests on stdin until it closes."""
    parent = int(argv[0]) if argv else os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel's interrupt goes to its process group: not for us
    threading.Thread(target=_watch, args=(parent,), name="nbmlops-watch-parent", daemon=True).start()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr (forwarded), never into the replies
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    _send(replies, "ready")
    while True:
        try:
            op, context, args = _receive(requests)
        except EOFError:
            return 0
        runs: dict[str, str] = {}
        reply: tuple[str, Any, dict[str, str] | None]
        try:
            _apply_context(context)
            reply = ("ok", _handle(op, args, runs), None)
        except Exception as exc:  # every failure goes back to the caller, who decides
            reply = ("error", _described(exc), runs or None)  # with the runs a failed delivery made
        _send(replies, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
