"""Headless notebook runs started from the server: each job is ``nbmlops run`` in a process group of its own.

Parameters are checked against the notebook's declared ones (names, types) and against ``MAX_VALUE_BYTES``
before anything starts; they reach ``nbmlops run`` through a file only its owner can read, deleted when the
job ends, and a job shows them shortened and with secrets redacted (:func:`echoed`). A job's output
(papermill's progress bar, the run's summary, errors) goes to ``<root>/.nbmlops/jobs/<job_id>.log``;
its status, progress, run id and executed notebook are read back from there. Cancelling sends SIGINT
to the group (``nbmlops run`` then records the run as KILLED), then SIGTERM and SIGKILL if it lingers.
Jobs live in the server process; a thread per job reaps it when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.exceptions import NbmlopsError
from nbmlops.redact import Redactor

__all__ = [
    "ECHO_CHARS", "MAX_VALUE_BYTES", "Job", "JobLimitError", "JobManager", "JobNotFoundError",
    "NotebookUnreadableError", "ParameterTooLargeError", "echoed", "notebook_parameters",
]

MAX_RUNNING = 4
OUTPUT_FOLDER = "nbmlops-outputs"  # executed notebooks of jobs, under the server root
MAX_KEPT = 200
INTERRUPT_GRACE_S = 10.0
TERMINATE_GRACE_S = 5.0
_LOG_TAIL_BYTES = 64 * 1024
_PROGRESS = re.compile(r"Executing:[^|\r\n]*\|[^|\r\n]*\|\s*(\d+)/(\d+)")
_RUN_ID = re.compile(r"^\s*run: ([0-9a-f]{32}) in experiment", re.MULTILINE)
_OUTPUT = re.compile(r"^(?:FINISHED|FAILED|TIMEOUT|KILLED): .* in [\d.]+s -> (.+)$", re.MULTILINE)
_OUTCOME = re.compile(r"^(?:FAILED|TIMEOUT|KILLED): .* in [\d.]+s -> ")
_NOT_ERRORS = ("run:", "metrics:", "PASS ", "FAIL ")
_ERROR_LINES = 8
MAX_VALUE_BYTES = 64 * 1024
"""The most a job's parameter value may hold, as JSON (UTF-8)."""
ECHO_CHARS = 200
"""Parameter values longer than this (as text, or as JSON when not a string) are cut in what a job shows."""


class JobLimitError(NbmlopsError):
    """As many jobs as allowed are running already."""

    http_status = 429

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{limit} job(s) are running already; wait for one to end or cancel one")


class JobNotFoundError(NbmlopsError, LookupError):
    """No job with this id in this server."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} in this server")


class NotebookUnreadableError(NbmlopsError, ValueError):
    """A notebook whose parameters cannot be read (not JSON, no kernel name, ...)."""


class ParameterTooLargeError(NbmlopsError, ValueError):
    """A parameter value above :data:`MAX_VALUE_BYTES` (the API answers 413)."""

    http_status = 413

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        super().__init__(f"parameter {name}: its value is {size:,} bytes of JSON; at most {MAX_VALUE_BYTES:,}")


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
    """One ``nbmlops run`` started by the server."""

    job_id: str
    notebook: str
    parameters: Mapping[str, Any]  # as responses show them (see echoed)
    log_path: Path
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)
    ended: float | None = None
    exit_code: int | None = None
    cancel_requested: bool = False

    @property
    def status(self) -> str:
        """``running``, ``finished``, ``failed`` or ``cancelled``."""
        if self.exit_code is None:
            return "running"
        if self.cancel_requested:
            return "cancelled"
        return "finished" if self.exit_code == 0 else "failed"

    def describe(self, root: Path) -> dict[str, Any]:
        """The job as the API shows it; progress, run id, output and error are read from its log."""
        log = _tail(self.log_path)
        status = self.status
        progress = _PROGRESS.findall(log)
        run_id = _RUN_ID.findall(log)
        output = _OUTPUT.findall(log)
        return {
            "job_id": self.job_id,
            "notebook": self.notebook,
            "parameters": dict(self.parameters),
            "status": status,
            "exit_code": self.exit_code,
            "progress": {"done": int(progress[-1][0]), "total": int(progress[-1][1])} if progress else None,
            "run_id": run_id[-1] if run_id else None,
            "output": _inside(root, output[-1].strip()) if output else None,
            "error": _error_lines(log) if status == "failed" else None,
            "started": int(self.started * 1000),
            "ended": int(self.ended * 1000) if self.ended is not None else None,
        }


class JobManager:
    """The jobs of one server: start (at most ``max_running`` at once), look up, cancel, stop all."""

    def __init__(self, root: Path, max_running: int = MAX_RUNNING) -> None:
        self.root = root
        self.folder = root / ".nbmlops" / "jobs"
        self.max_running = max_running
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, notebook: str, path: Path, parameters: Mapping[str, Any]) -> Job:
        """Check ``parameters`` against the notebook's declared ones, then start ``nbmlops run`` on ``path``.

        Raises:
            ParameterTooLargeError: a value above :data:`MAX_VALUE_BYTES` (nothing was started).
            ParameterError: a name the notebook does not declare (nothing was started).
            ParameterTypeError: a value of the wrong type for its parameter (nothing was started).
            NotebookUnreadableError: the notebook's parameters cannot be read.
            JobLimitError: ``max_running`` jobs are running already.
        """
        import yaml

        from nbmlops.runner.parameters import ParameterError, ParameterTypeError, check_parameters

        for name, value in parameters.items():
            size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
            if size > MAX_VALUE_BYTES:
                raise ParameterTooLargeError(str(name)[:100], size)
        try:
            check_parameters(path, parameters, typed=True)
        except (ParameterError, ParameterTypeError):
            raise
        except Exception as exc:
            raise NotebookUnreadableError(f"cannot read the parameters of {path.name}: {_one_line(exc)}") from None
        with self._lock:
            if sum(job.exit_code is None for job in self._jobs.values()) >= self.max_running:
                raise JobLimitError(self.max_running)
            job_id = uuid.uuid4().hex
            self.folder.mkdir(parents=True, exist_ok=True)
            log_path = self.folder / f"{job_id}.log"
            parameters_file = _parameters_file(log_path)
            with os.fdopen(os.open(parameters_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                yaml.safe_dump(dict(parameters), handle, allow_unicode=True)
            # the executed notebook goes where JupyterLab can open it (it does not serve hidden folders)
            output = self.root / OUTPUT_FOLDER / f"{path.stem}-{job_id[:8]}.ipynb"
            command = [sys.executable, "-m", "nbmlops.cli", "run", str(path), "-f", str(parameters_file),
                       "--output", str(output)]
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    command, cwd=path.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                )
            job = Job(job_id, notebook, echoed(parameters), log_path, process)
            self._jobs[job_id] = job
            self._forget_oldest()
        threading.Thread(target=self._reap, args=(job,), name=f"nbmlops-job-{job_id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; :class:`JobNotFoundError` when there is none."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    def list(self) -> list[Job]:
        """Every job this server knows, newest first."""
        return sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Interrupt the job (SIGINT to its process group), escalating to SIGTERM then SIGKILL in the background."""
        job = self.get(job_id)
        if job.exit_code is None and not job.cancel_requested:
            job.cancel_requested = True
            _signal_group(job.process, signal.SIGINT)
            threading.Thread(target=_escalate, args=(job.process,), daemon=True).start()
        return job

    def stop_all(self, grace: float = INTERRUPT_GRACE_S) -> None:
        """Cancel every running job and wait for them to end (when the server stops)."""
        running = [job for job in self._jobs.values() if job.exit_code is None]
        for job in running:
            job.cancel_requested = True
            _signal_group(job.process, signal.SIGINT)
        for job in running:
            _escalate(job.process, grace, TERMINATE_GRACE_S)

    def _reap(self, job: Job) -> None:
        code = job.process.wait()
        _parameters_file(job.log_path).unlink(missing_ok=True)
        job.ended = time.time()
        job.exit_code = code

    def _forget_oldest(self) -> None:
        ended = sorted((job for job in self._jobs.values() if job.exit_code is not None), key=lambda job: job.started)
        for job in ended[: max(0, len(self._jobs) - MAX_KEPT)]:
            del self._jobs[job.job_id]


def _parameters_file(log_path: Path) -> Path:
    """Where a job's parameters wait for its ``nbmlops run``: beside its log."""
    return log_path.with_suffix(".parameters.yaml")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _escalate(
    process: subprocess.Popen[bytes], interrupt_grace: float = INTERRUPT_GRACE_S,
    terminate_grace: float = TERMINATE_GRACE_S,
) -> None:
    """After SIGINT: SIGTERM once ``interrupt_grace`` has passed, SIGKILL after ``terminate_grace`` more."""
    for signum, grace in ((signal.SIGTERM, interrupt_grace), (signal.SIGKILL, terminate_grace)):
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            _signal_group(process, signum)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _error_lines(log: str) -> str | None:
    """Why a job failed: the error under ``nbmlops run``'s outcome line, else its ``nbmlops:`` messages,
    else the last lines of its output."""
    lines = [line.rstrip() for line in re.split(r"[\r\n]+", log) if line.strip() and "Executing:" not in line]
    for index in range(len(lines) - 1, -1, -1):
        if _OUTCOME.match(lines[index]):
            detail = lines[index + 1].strip() if index + 1 < len(lines) else ""
            return detail if detail and not detail.startswith(_NOT_ERRORS) else lines[index]
    messages = [line for line in lines if line.startswith("nbmlops: ")]
    return "\n".join((messages or lines)[-_ERROR_LINES:]) or None


def _inside(root: Path, path: str) -> str | None:
    """``path`` relative to the server's root, or None when it lies outside."""
    real = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root))
    return "/".join(real.relative_to(base).parts) if real.is_relative_to(base) else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
