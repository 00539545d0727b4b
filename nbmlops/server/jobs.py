"""Headless notebook runs started from the server: each job is ``nbmlops run`` in a process group of its own.

Parameters are checked against the notebook's declared ones (names, types) and against ``MAX_VALUE_BYTES``
before anything starts; they reach ``nbmlops run`` through a file only its owner can read, deleted as soon as
the run has read them (its status file exists) or it ended, and a job shows them shortened and with secrets
redacted (:func:`echoed`).

A job may carry gates (``nbmlops run --gate``, checked on the run's metrics: a gate that fails ends the job
``failed`` with the gate's reason) and a timeout (``--timeout``: a cell running longer ends it ``timeout``); a
gate that does not parse is refused before anything starts.

A job's files live in ``<root>/.nbmlops/jobs/``: ``<job_id>.json``, its record (notebook, shown parameters,
gates, timeout, pid and the process's start time, start time, output, whether it was cancelled),
``<job_id>.status.json``, the status ``nbmlops run --status-file`` keeps (state, cells done, run id, output,
error, final metrics and gate outcomes: see :mod:`nbmlops.runner.status_file`), which is where everything a
job shows about its run comes from, and
``<job_id>.log``, the run's standard error, for the user to read. A new server on the same root lists the
jobs an earlier one started: one still running is followed through its status file and can be cancelled;
one whose process ended without a final status shows as failed, saying so.

Cancelling sends SIGINT to the job's process group (``nbmlops run`` then records the run as KILLED and
its status as ``cancelled``), then SIGTERM and SIGKILL if it lingers. A signal goes only to the process
the record names: same pid and same start time, so a pid the system gave to another process since is left
alone. Jobs outlive the server that started them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.exceptions import (
    JobLimitError,
    JobNotFoundError,
    NotebookUnreadableError,
    ParameterTooLargeError,
    RequestError,
)
from nbmlops.redact import Redactor
from nbmlops.runner.status_file import ENDED, read_status, write_whole

__all__ = [
    "ECHO_CHARS", "MAX_VALUE_BYTES", "Job", "JobLimitError", "JobManager", "JobNotFoundError",
    "NotebookUnreadableError", "ParameterTooLargeError", "echoed", "notebook_parameters",
]

MAX_RUNNING = 4
OUTPUT_FOLDER = "nbmlops-outputs"  # executed notebooks of jobs, under the server root
MAX_KEPT = 200
INTERRUPT_GRACE_S = 10.0
TERMINATE_GRACE_S = 5.0
NO_FINAL_STATUS = "the runner ended without a final status"
MAX_VALUE_BYTES = 64 * 1024
"""The most a job's parameter value may hold, as JSON (UTF-8)."""
ECHO_CHARS = 200
"""Parameter values longer than this (as text, or as JSON when not a string) are cut in what a job shows."""
_RECORD = re.compile(r"^([0-9a-f]{32})\.json$")
_RECORD_FORMAT = 1


def echoed(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` as a response may show them: a secret-named one (:func:`nbmlops.redact.is_secret_name`)
    as ``***``, secrets it learns from them (``{"db": {"password": ...}}``) and token shapes scrubbed, and a
    value longer than :data:`ECHO_CHARS` cut there, with an ellipsis. A value that had to change is shown as
    text (its JSON, when it is not a string)."""
    redactor = Redactor()
    redactor.learn_namespace(parameters)
    shown: dict[str, Any] = {}
    for name, value in parameters.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        clean = redactor.redact_value(name, text)
        if len(clean) > ECHO_CHARS:
            clean = clean[:ECHO_CHARS] + "…"
        shown[name] = value if clean == text else clean
    return shown


def notebook_parameters(path: Path) -> dict[str, dict[str, str]]:
    """The notebook's declared parameters (see :func:`nbmlops.runner.parameters.declared_parameters`)."""
    from nbmlops.runner.parameters import declared_parameters

    try:
        return declared_parameters(path)
    except Exception as exc:
        raise NotebookUnreadableError(f"cannot read the parameters of {path.name}: {_one_line(exc)}") from None


@dataclass
class Job:
    """One ``nbmlops run`` started by this server or an earlier one on the same root."""

    job_id: str
    notebook: str
    parameters: Mapping[str, Any]  # as responses show them (see echoed)
    folder: Path
    output: Path
    pid: int
    pid_started: str | None  # the process's start time as the system tells it; None: never seen alive
    started: float = field(default_factory=time.time)
    cancel_requested: bool = False
    killed: bool = False  # SIGTERM or SIGKILL followed the cancel's SIGINT
    gates: tuple[str, ...] = ()  # as given to ``nbmlops run --gate``
    timeout: float | None = None  # ``nbmlops run --timeout``: seconds one cell may run
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)  # None: an earlier server's job
    returncode: int | None = None  # this server's child, once reaped
    gone: float | None = None  # when this server saw the process end

    @property
    def record_path(self) -> Path:
        return self.folder / f"{self.job_id}.json"

    @property
    def status_path(self) -> Path:
        """The status file ``nbmlops run --status-file`` keeps."""
        return self.folder / f"{self.job_id}.status.json"

    @property
    def log_path(self) -> Path:
        """The run's standard error."""
        return self.folder / f"{self.job_id}.log"

    @property
    def parameters_path(self) -> Path:
        return self.folder / f"{self.job_id}.parameters.yaml"

    @property
    def running(self) -> bool:
        """True while the job's process lives (a pid now held by another process does not count)."""
        if self.process is not None:
            return self.returncode is None
        return self.pid_started is not None and _process_started(self.pid) == self.pid_started

    @property
    def exit_code(self) -> int | None:
        """The process's exit code (as its status file tells it for an earlier server's job); None while it runs
        or when it is not known."""
        if self.returncode is not None:
            return self.returncode
        report = read_status(self.status_path)
        return report.get("exit_code") if report and report["state"] in ENDED else None

    @property
    def status(self) -> str:
        """``queued``, ``running``, or how it ended: ``finished``, ``failed``, ``timeout``, ``killed``, ``cancelled``."""
        running = self.running
        return self._outcome(running, read_status(self.status_path) or {})[0]

    def describe(self, root: Path) -> dict[str, Any]:
        """The job as the API shows it; state, progress, run id, output, error, metrics and gate outcomes come
        from its status file. ``duration_ms`` is from the job's start to its end (None while it runs)."""
        running = self.running  # before the status is read: a process that ended has written its last one
        report = read_status(self.status_path) or {}
        state = report.get("state")
        status, error = self._outcome(running, report)
        cells = report.get("cells") or {}
        ended = report.get("ended") if state in ENDED else None
        if ended is None and not running:
            ended = int((self.gone or _modified(self.log_path) or self.started) * 1000)
        # papermill writes the executed notebook cell by cell: after a crash, what it holds so far
        output = report.get("output") or (str(self.output) if not running and self.output.is_file() else None)
        return {
            "job_id": self.job_id,
            "notebook": self.notebook,
            "parameters": dict(self.parameters),
            "status": status,
            "exit_code": self.returncode if self.returncode is not None else report.get("exit_code"),
            "progress": {"done": cells["done"], "total": cells["total"]} if cells.get("total") else None,
            "cell": cells.get("current"),
            "run_id": report.get("run_id"),
            "experiment": report.get("experiment"),
            "output": _inside(root, output) if output else None,
            "error": error,
            "experiment_id": report.get("experiment_id"),
            "gates": list(self.gates),
            "timeout": self.timeout,
            "metrics": report.get("metrics") if state in ENDED else None,
            "gate_results": report.get("gates") if state in ENDED else None,
            "started": int(self.started * 1000),
            "ended": ended,
            "duration_ms": max(0, ended - int(self.started * 1000)) if ended is not None else None,
        }

    def _outcome(self, running: bool, report: Mapping[str, Any]) -> tuple[str, str | None]:
        """The job's status and error, from whether its process runs and its status file's ``report``."""
        state = report.get("state")
        if state in ENDED:
            return str(state), report.get("error")
        if running:
            return str(state or "queued"), None
        if self.cancel_requested:  # it ended before its status said so (interrupted early, or killed)
            return ("killed" if self.killed else "cancelled"), None
        code = self.returncode
        return "failed", NO_FINAL_STATUS + (f" (exit code {code})" if code is not None else "")

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the job's process group if its process still runs; True when it was sent."""
        if not self.running:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
            return True
        return False

    def to_record(self) -> dict[str, Any]:
        """What :meth:`from_record` needs to follow the job from another server."""
        return {
            "format": _RECORD_FORMAT, "job_id": self.job_id, "notebook": self.notebook,
            "parameters": dict(self.parameters), "output": str(self.output), "pid": self.pid,
            "pid_started": self.pid_started, "started": self.started, "cancel_requested": self.cancel_requested,
            "killed": self.killed, "gates": list(self.gates), "timeout": self.timeout,
        }

    @classmethod
    def from_record(cls, folder: Path, record: Mapping[str, Any]) -> Job:
        """A job an earlier server started, from its record."""
        return cls(
            job_id=str(record["job_id"]), notebook=str(record["notebook"]), parameters=dict(record["parameters"]),
            folder=folder, output=Path(record["output"]), pid=int(record["pid"]),
            pid_started=record.get("pid_started"), started=float(record["started"]),
            cancel_requested=bool(record.get("cancel_requested")), killed=bool(record.get("killed")),
            gates=tuple(str(gate) for gate in record.get("gates") or ()),
            timeout=float(record["timeout"]) if record.get("timeout") is not None else None,
        )

    def save(self) -> None:
        """Write the job's record (replaced whole)."""
        write_whole(self.record_path, json.dumps(self.to_record(), ensure_ascii=False, default=str) + "\n")

    def files(self) -> list[Path]:
        """Every file of the job in the jobs folder."""
        return [self.record_path, self.status_path, self.log_path, self.parameters_path]


class JobManager:
    """The jobs of one server root: start (at most ``max_running`` at once), look up, cancel, stop all.

    A new manager lists the jobs an earlier one left on the same root (see the module's documentation).
    """

    def __init__(self, root: Path, max_running: int = MAX_RUNNING) -> None:
        self.root = root
        self.folder = root / ".nbmlops" / "jobs"
        self.max_running = max_running
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        for job in _recorded_jobs(self.folder):
            self._jobs[job.job_id] = job
        self._forget_oldest()

    def start(self, notebook: str, path: Path, parameters: Mapping[str, Any], gates: Sequence[str] = (),
              timeout: float | None = None) -> Job:
        """Check ``parameters`` against the notebook's declared ones and parse ``gates``, then start
        ``nbmlops run`` on ``path`` with them (``--gate`` each, ``--timeout`` when given: seconds > 0).

        Raises:
            GateSyntaxError: a gate that does not parse, with its position (nothing was started).
            RequestError: a timeout that is not a number of seconds > 0 (nothing was started).
            ParameterTooLargeError: a value above :data:`MAX_VALUE_BYTES` (nothing was started).
            ParameterError: a name the notebook does not declare (nothing was started).
            ParameterTypeError: a value of the wrong type for its parameter (nothing was started).
            NotebookUnreadableError: the notebook's parameters cannot be read.
            JobLimitError: ``max_running`` jobs are running already.
        """
        import yaml

        from nbmlops.runner.gates import parse_gate
        from nbmlops.runner.parameters import ParameterError, ParameterTypeError, check_parameters

        for gate in gates:
            parse_gate(gate)
        if timeout is not None and not 0 < timeout < math.inf:
            raise RequestError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        for name, value in parameters.items():
            size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
            if size > MAX_VALUE_BYTES:
                raise ParameterTooLargeError(str(name)[:100], size, MAX_VALUE_BYTES)
        try:
            check_parameters(path, parameters, typed=True)
        except (ParameterError, ParameterTypeError):
            raise
        except Exception as exc:
            raise NotebookUnreadableError(f"cannot read the parameters of {path.name}: {_one_line(exc)}") from None
        with self._lock:
            if sum(job.running for job in self._jobs.values()) >= self.max_running:
                raise JobLimitError(self.max_running)
            job_id = uuid.uuid4().hex
            self.folder.mkdir(parents=True, exist_ok=True)
            # the executed notebook goes where JupyterLab can open it (it does not serve hidden folders)
            output = self.root / OUTPUT_FOLDER / f"{path.stem}-{job_id[:8]}.ipynb"
            job = Job(job_id, notebook, echoed(parameters), self.folder, output, pid=0, pid_started=None,
                      gates=tuple(gates), timeout=timeout)
            with os.fdopen(os.open(job.parameters_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                yaml.safe_dump(dict(parameters), handle, allow_unicode=True)
            command = [sys.executable, "-m", "nbmlops.cli", "run", str(path), "-f", str(job.parameters_path),
                       "--output", str(output), "--status-file", str(job.status_path), "--no-progress"]
            command += [f"--gate={gate}" for gate in gates]  # "=": a gate starting with "-" is no option
            if timeout is not None:
                command.append(f"--timeout={timeout!r}")
            with open(job.log_path, "wb") as log:
                job.process = subprocess.Popen(
                    command, cwd=path.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                )
            job.pid = job.process.pid
            job.pid_started = _process_started(job.pid)
            job.save()
            self._jobs[job_id] = job
            self._forget_oldest()
        threading.Thread(target=self._reap, args=(job,), name=f"nbmlops-job-{job_id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; :class:`JobNotFoundError` when there is none."""
        try:
            job = self._jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None
        _drop_read_parameters(job)
        return job

    def list(self) -> list[Job]:
        """Every job this server knows, newest first."""
        jobs = sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)
        for job in jobs:
            _drop_read_parameters(job)
        return jobs

    def cancel(self, job_id: str) -> Job:
        """Interrupt the job (SIGINT to its process group), escalating to SIGTERM then SIGKILL in the background."""
        job = self.get(job_id)
        if job.running and not job.cancel_requested:
            job.cancel_requested = True
            _keep(job)
            job.signal(signal.SIGINT)
            threading.Thread(target=_escalate, args=(job,), daemon=True).start()
        return job

    def stop_all(self, grace: float = INTERRUPT_GRACE_S) -> None:
        """Cancel every running job and wait for them to end."""
        running = [job for job in self._jobs.values() if job.running]
        for job in running:
            self.cancel(job.job_id)
        for job in running:
            _escalate(job, grace, TERMINATE_GRACE_S)

    def _reap(self, job: Job) -> None:
        assert job.process is not None
        code = job.process.wait()
        job.parameters_path.unlink(missing_ok=True)
        job.gone = time.time()
        job.returncode = code

    def _forget_oldest(self) -> None:
        """Forget the oldest ended jobs beyond :data:`MAX_KEPT`, and delete their files."""
        ended = sorted((job for job in self._jobs.values() if not job.running), key=lambda job: job.started)
        for job in ended[: max(0, len(self._jobs) - MAX_KEPT)]:
            del self._jobs[job.job_id]
            for path in job.files():
                path.unlink(missing_ok=True)


def _recorded_jobs(folder: Path) -> list[Job]:
    """The jobs whose records are in ``folder`` (records that cannot be read are skipped)."""
    jobs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if not _RECORD.match(path.name):
            continue
        try:
            jobs.append(Job.from_record(folder, json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return jobs


def _drop_read_parameters(job: Job) -> None:
    """Delete the job's parameters file once ``nbmlops run`` has read it (it writes its status file after) or
    has ended."""
    if job.parameters_path.exists() and (job.status_path.exists() or not job.running):
        job.parameters_path.unlink(missing_ok=True)


def _process_started(pid: int) -> str | None:
    """When the process ``pid`` started, as the system tells it (Linux: clock ticks since boot); None when there
    is no such process or it has ended (a zombie)."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return _process_started_by_ps(pid)
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command's name, in parentheses, may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def _process_started_by_ps(pid: int) -> str | None:
    """:func:`_process_started` where there is no ``/proc`` (macOS): ``ps``'s start time."""
    try:
        shown = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not shown or shown.startswith("Z"):
        return None
    return shown.split(None, 1)[1] if " " in shown else None


def _escalate(job: Job, interrupt_grace: float = INTERRUPT_GRACE_S, terminate_grace: float = TERMINATE_GRACE_S) -> None:
    """After SIGINT: SIGTERM once ``interrupt_grace`` has passed, SIGKILL after ``terminate_grace`` more."""
    for signum, grace in ((signal.SIGTERM, interrupt_grace), (signal.SIGKILL, terminate_grace)):
        deadline = time.monotonic() + grace
        while job.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if not job.running:
            return
        job.killed = True
        _keep(job)
        job.signal(signum)


def _keep(job: Job) -> None:
    """Save the job's record; one that cannot be written costs what a later server shows of a cancel."""
    with contextlib.suppress(OSError):
        job.save()


def _modified(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _inside(root: Path, path: str) -> str | None:
    """``path`` relative to the server's root, or None when it lies outside."""
    real = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root))
    return "/".join(real.relative_to(base).parts) if real.is_relative_to(base) else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
