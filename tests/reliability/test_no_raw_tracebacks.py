"""No raw traceback reaches a user of the `nbmlops` command: every error is one line, `nbmlops: <message>`, with
the documented exit code (1 failed, 2 usage error, 70 internal error, 130 interrupted), and nothing is printed
by exit handlers ("Exception ignored in atexit callback"). Real `nbmlops` processes on real notebooks and
kernels, a real registry, a real `mlflow server` behind a loopback proxy that stops answering, real SIGINTs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port, mlflow_server, runs_of
from tests.test_monitor import _features, _frame, _registered
from tests.test_runner import notebook

EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 70, 130
MARK = "NBMLOPS_TEST_MARK"  # set for the command; its worker and kernels inherit it


def _start(*args: str, cwd: Path, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nbmlops.cli", *args], cwd=cwd, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen,
    )


def _nbmlops(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    process = _start(*args, cwd=cwd, env=env)
    try:
        out, err = process.communicate(timeout=600)
    finally:
        _kill(process)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _assert_one_line(result: subprocess.CompletedProcess, code: int, *named: str) -> str:
    """The command exited with ``code``, and its stderr holds no traceback and exactly one error line,
    which names ``named``; returns that line."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("nbmlops:")]
    assert len(lines) == 1, result.stderr
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


def _marked(mark: str) -> list[psutil.Process]:
    """The live processes that carry ``mark`` in their environment (a command's worker and kernels)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARK) == mark:
                found.append(process)
        except psutil.Error:
            continue
    return found


def _assert_none_left(mark: str) -> None:
    deadline = time.monotonic() + 10  # the OS reaps what was killed; nothing may be running on
    while (left := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], [(p.pid, p.cmdline()[:3]) for p in left]


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the command ended before {what}:\n{process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s")
        time.sleep(0.02)


# -- nbmlops run --timeout, and Ctrl-C -------------------------------------------------------------------


def _sleeping_notebook(project: Path) -> Path:
    return notebook(
        project / "sleeps.ipynb",
        "%load_ext nbmlops",
        "%%track --name sleep\nimport time\nopen('started', 'w').close()\nx = 1\ntime.sleep(120)",
        parameters="pause = 120",
    )


def test_run_timeout_stops_the_cell_and_its_kernel_with_exit_1_and_no_traceback(project, client, request):
    mark = uuid.uuid4().hex
    result = _nbmlops("run", str(_sleeping_notebook(project)), "--timeout", "2", "--no-progress", cwd=project,
                      env={MARK: mark})
    assert result.returncode == EXIT_FAILED, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ZMQError" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    assert "TIMEOUT: sleeps.ipynb" in result.stdout and "cell 2 ran longer than 2 s" in result.stdout, result.stdout
    _assert_none_left(mark)
    runs = {r.data.tags["nbmlops.kind"]: r for r in runs_of(client, request.node.name)}
    assert runs["notebook"].data.tags["nbmlops.status"] == "TIMEOUT"
    assert runs["notebook"].data.tags["nbmlops.failure.cell_index"] == "2"
    assert runs["cell"].info.status == "KILLED"  # the kernel was interrupted, then shut down


def _worker_started(process: subprocess.Popen) -> Callable[[], bool]:
    return lambda: bool(psutil.Process(process.pid).children())


def _kernel_started(mark: str) -> Callable[[], bool]:
    return lambda: any("ipykernel" in " ".join(p.cmdline()) for p in _marked(mark))


@pytest.mark.parametrize("moment", ["worker-importing-papermill", "kernel-starting", "cell-running"])
def test_ctrl_c_during_run_exits_130_with_one_line_and_leaves_no_kernel(project, client, request, moment):
    mark = uuid.uuid4().hex
    process = _start("run", str(_sleeping_notebook(project)), "--no-progress", cwd=project, env={MARK: mark})
    try:
        if moment == "worker-importing-papermill":
            _wait_for(_worker_started(process), process, "worker")
        elif moment == "kernel-starting":
            _wait_for(_kernel_started(mark), process, "kernel")
        else:
            _wait_for((project / "started").exists, process, "running cell")
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
        out, err = process.communicate(timeout=300)
    finally:
        _kill(process)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert _assert_one_line(result, EXIT_INTERRUPTED) == "nbmlops: interrupted"
    assert "ZMQError" not in err, err
    _assert_none_left(mark)
    if moment == "cell-running":
        statuses = {r.data.tags["nbmlops.kind"]: r.info.status for r in runs_of(client, request.node.name)}
        assert statuses == {"notebook": "KILLED", "cell": "KILLED"}


def test_ctrl_c_during_sweep_exits_130_with_one_line_and_leaves_no_kernel(project, client, request):
    mark = uuid.uuid4().hex
    process = _start("sweep", str(_sleeping_notebook(project)), "--grid", "pause=100,110,120", "--workers", "2",
                     "--no-progress", cwd=project, env={MARK: mark})
    try:
        _wait_for((project / "started").exists, process, "running cell", seconds=240)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=300)
    finally:
        _kill(process)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert _assert_one_line(result, EXIT_INTERRUPTED) == "nbmlops: interrupted"
    _assert_none_left(mark)


# -- nbmlops monitor ---------------------------------------------------------------------------------------


def test_monitor_with_odd_input_gives_one_line_and_exit_2(project):
    name = f"odd-{uuid.uuid4().hex[:8]}"
    _, version = _registered(name, snapshot=True)
    _features(_frame(500, 1)).to_csv(project / "live.csv", index=False)
    (project / "binary.csv").write_bytes(b"\x00\x01\x02\xff\xfe\xfd" * 100)
    (project / "columns.csv").write_text("c,d\n1,2\n3,4\n")
    (project / "folder.csv").mkdir()
    (project / "reports").mkdir()
    model = f"{name}/{version}"
    cases = [
        (["nosuch@champion", "live.csv"], "no model nosuch@champion"),
        ([model, "missing.csv"], "missing.csv: no such file"),
        ([model, "binary.csv"], "binary.csv: cannot be read"),
        ([model, "columns.csv"], "lacks column(s) a, b"),
        ([model, "folder.csv"], "folder.csv: not a file"),
        ([model, "live.csv", "--report", "reports"], "cannot write reports"),
        ([model, "live.csv", "--report", "pyproject.toml/drift.html"], "cannot write pyproject.toml/drift.html"),
        ([model, "live.csv", "--threshold", "-1"], "threshold"),
    ]
    for args, named in cases:
        _assert_one_line(_nbmlops("monitor", *args, cwd=project), EXIT_USAGE, named)


@pytest.mark.parametrize("command", [["monitor", "model/1", "live.csv"], ["models", "list"], ["status"]])
def test_commands_with_the_store_down_give_one_line_and_exit_1(project, command):
    down = f"http://127.0.0.1:{free_port()}"
    _assert_one_line(_nbmlops("--tracking-uri", down, *command, cwd=project), EXIT_FAILED, "unavailable")


class HoldingProxy:
    """A loopback TCP proxy in front of an HTTP server: it relays bytes until a client sends a request that
    starts with ``trigger``; from then on nothing more is relayed or answered, on any connection, old or new
    (a server that hangs). ``held_at`` is when that happened (``time.monotonic()``)."""

    def __init__(self, upstream: int, trigger: bytes) -> None:
        self.upstream = upstream
        self.trigger = trigger
        self.held_at: float | None = None
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.held_at is None:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
                self._sockets.append(upstream)
                threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
                threading.Thread(target=self._replies, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while self.held_at is None and (data := client.recv(65536)):
                if self.trigger in data:
                    self.held_at = time.monotonic()
                    return
                upstream.sendall(data)

    def _replies(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while (data := upstream.recv(65536)) and self.held_at is None:
                client.sendall(data)


@contextlib.contextmanager
def _holding_proxy(upstream_uri: str, trigger: bytes) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(int(upstream_uri.rsplit(":", 1)[1]), trigger)
    try:
        yield proxy
    finally:
        proxy.close()


def test_ctrl_c_while_the_store_holds_the_last_records_exits_130_without_exit_handler_errors(
    project, tmp_path, monkeypatch
):
    """The monitoring run is written when the server has stopped answering: the command waits for it
    (flush_timeout), then ends its session; Ctrl-C during that last wait is one line and exit 130, never an
    exit handler's traceback, and the records stay in the journal for `nbmlops sync`."""
    flush_timeout = 4.0
    with mlflow_server(tmp_path / "server") as server:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", server)
        monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT")
        name = f"held-{uuid.uuid4().hex[:8]}"
        _, version = _registered(name, snapshot=True)
        _features(_frame(500, 1)).to_csv(project / "live.csv", index=False)
        with _holding_proxy(server, b"POST /api/2.0/mlflow/runs/create") as proxy:
            env = {"NBMLOPS_TRACKING_URI": f"http://127.0.0.1:{proxy.port}",
                   "NBMLOPS_FLUSH_TIMEOUT": str(flush_timeout)}
            process = _start("monitor", f"{name}/{version}", "live.csv", cwd=project, env=env)
            try:
                _wait_for(lambda: proxy.held_at is not None, process, "monitoring run sent to the store")
                # the command waits flush_timeout for the run, then as long again while it ends its session
                assert proxy.held_at is not None
                time.sleep(max(0.0, proxy.held_at + 1.5 * flush_timeout - time.monotonic()))
                assert process.poll() is None, process.communicate()
                os.killpg(process.pid, signal.SIGINT)
                out, err = process.communicate(timeout=120)
            finally:
                _kill(process)
    assert process.returncode == EXIT_INTERRUPTED, out + err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.splitlines()[-1] == "nbmlops: interrupted", err
    journals = [p for p in (project / ".nbmlops" / "journal").rglob("*") if p.is_file() and p.stat().st_size]
    assert journals, "the monitoring run's records must wait in the journal"


# -- any command ---------------------------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_with_exit_70_and_its_traceback_only_with_debug(project, tmp_path):
    """A dependency that fails on import (here PyYAML, which `-y` uses) is no usage error nbmlops knows of."""
    broken = tmp_path / "site" / "yaml"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("this yaml is broken")\n')
    path = notebook(project / "p.ipynb", "print(C)", parameters="C = 1.0")
    repo = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": os.pathsep.join([str(repo), str(broken.parent)])}
    plain = _nbmlops("run", str(path), "-y", "C: 2", cwd=project, env=env)
    line = _assert_one_line(plain, EXIT_INTERNAL)
    assert line == ("nbmlops: internal error: RuntimeError: this yaml is broken "
                    "(run with NBMLOPS_DEBUG=1 for the traceback)")
    debug = _nbmlops("run", str(path), "-y", "C: 2", cwd=project, env={**env, "NBMLOPS_DEBUG": "1"})
    assert debug.returncode == EXIT_INTERNAL
    assert "Traceback" in debug.stderr and debug.stderr.splitlines()[-1] == line


def test_output_into_a_closed_pipe_ends_quietly(project):
    process = _start("config", cwd=project)
    process.stdout.close()  # `nbmlops config | head -0`: the reader is gone before the command writes
    try:
        err = process.stderr.read()
        process.wait(timeout=120)
    finally:
        _kill(process)
    assert process.returncode == EXIT_FAILED
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("uri, named", [
    ("bogus://x", "unsupported URI"),
    ("sqlite:///{project}/pyproject.toml", "not a database"),
], ids=["unknown-scheme", "not-a-database"])
def test_a_tracking_uri_that_is_no_store_is_a_one_line_usage_error(project, uri, named):
    result = _nbmlops("status", cwd=project, env={"NBMLOPS_TRACKING_URI": uri.format(project=project)})
    _assert_one_line(result, 2, "tracking_uri", named)


def test_a_model_version_too_large_for_the_store_is_a_one_line_usage_error(project):
    _assert_one_line(_nbmlops("lineage", "m1/99999999999999999999", cwd=project), 2, "2**63-1")
