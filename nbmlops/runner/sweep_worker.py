"""What a sweep's worker process does: execute one combination as an ordinary notebook run and send back its
outcome as plain, picklable data (the worker may be another machine's process).

A local worker runs the notebook where it is, in the sweep's working directory, as ``nbmlops run`` does. A
job that carries a :class:`~nbmlops.runner.workspace.Workspace` (a Dask sweep's) runs in a private directory
of the worker (:func:`~nbmlops.runner.workspace.open_workspace`), this process working there for the run (so
that its own journal is the worker's, never in the directory the worker was started in), and sends the
executed notebook back with its outcome.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.config import configure, session_settings
from nbmlops.runner.execute import run_notebook, temporary_environment
from nbmlops.runner.gates import Gate, GateResult
from nbmlops.runner.reports import NotebookReport
from nbmlops.runner.workspace import Placed, Workspace, open_workspace
from nbmlops.tracking.run import PARENT_ENV
from nbmlops.tracking.session import HANDOFF_ENV, close_session

__all__ = ["SweepJob", "SweepRun", "init_pool_worker", "run_combination"]


@dataclass(frozen=True)
class SweepRun:
    """One combination's outcome (what a worker sends back: plain, picklable data)."""

    index: int
    params: Mapping[str, Any]
    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    run_key: str | None = None
    run_id: str | None = None
    url: str | None = None
    error: str | None = None
    output: str | None = None
    duration_s: float = 0.0
    gates: tuple[GateResult, ...] = ()
    #: which run of the combination this is: 2 or more when its worker died and Dask ran it again (the
    #: earlier attempts' runs are KILLED, tagged ``nbmlops.superseded_by`` with this one's id)
    attempt: int = 1
    #: the executed notebook (JSON), from a worker that may not share the sweep's filesystem; the sweep writes
    #: it at ``output`` and drops it
    executed: str | None = None

    @property
    def gates_passed(self) -> bool:
        """True when every gate passed (or there were none)."""
        return all(result.passed for result in self.gates)

    @property
    def label(self) -> str:
        """The combination as text: ``alpha=0.1, depth=3``."""
        return ", ".join(f"{name}={value}" for name, value in self.params.items())

    def report(self, notebook: Path) -> NotebookReport:
        """This run as an entry of a JUnit report or a CI summary, named ``<notebook>[<combination>]``."""
        return NotebookReport(
            notebook=f"{notebook.name}[{self.label}]",
            status=self.status,
            duration_s=self.duration_s,
            error=self.error,
            gates=self.gates,
            params=dict(self.params),
            metrics=dict(self.metrics),
            run_id=self.run_id,
            url=self.url,
            output=self.output,
        )


@dataclass(frozen=True)
class SweepJob:
    """Everything a worker needs for one combination; it may be another machine's process."""

    index: int
    combination: dict[str, Any]
    notebook: str
    output: str
    parameters: dict[str, Any]
    experiment: str
    gates: tuple[Gate, ...]
    timeout: float | None
    kernel_name: str | None
    tags: dict[str, str]
    parent_key: str
    tracking_uri: str
    artifact_root: str | None
    #: the notebook and the project files it needs, for a worker that shares nothing with the sweep (Dask);
    #: None: run ``notebook`` where it is and write ``output`` (a local worker)
    workspace: Workspace | None = None


_one_at_a_time = threading.Lock()
_interrupted: Any = None  # in a pool's worker: the Event the sweep sets when it stops early


def init_pool_worker(interrupted: Any) -> None:
    """A local worker journals its runs and hands them to the sweep's process, which delivers them
    with its warm MLflow client: the workers never import mlflow."""
    global _interrupted
    _interrupted = interrupted
    os.environ[HANDOFF_ENV] = "1"


def run_combination(job: SweepJob) -> SweepRun:
    """Execute one combination in a worker process; never raises for a failed notebook.

    Notebook runs in one process are serialised (a Dask worker may run several tasks in threads, and a
    run's parent, its environment, its journal and, for a job with a workspace, this process's working
    directory are per process), and each gets a session, hence a journal, of its own, closed when it ends.
    """
    with _one_at_a_time:
        if _interrupted is not None and _interrupted.is_set():  # queued before the interrupt
            return SweepRun(job.index, job.combination, "KILLED", error="not run: the sweep was interrupted")
        previous = session_settings()
        configure(tracking_uri=job.tracking_uri, artifact_root=job.artifact_root)
        started = time.monotonic()
        executed: str | None = None
        try:
            with _placed(job) as placed, temporary_environment({PARENT_ENV: job.parent_key}):
                try:
                    result = run_notebook(
                        placed.notebook,
                        placed.output,
                        job.parameters,
                        experiment=job.experiment,
                        name=f"{Path(job.notebook).stem} #{job.index}",
                        gates=job.gates,
                        cwd=placed.cwd if job.workspace is not None else None,
                        kernel_name=job.kernel_name,
                        timeout=job.timeout,
                        tags=job.tags,
                        progress_bar=False,
                    )
                finally:
                    close_session()  # in the workspace: its journal is the worker's
                if job.workspace is not None and placed.output.is_file():
                    executed = placed.output.read_text(encoding="utf-8")
        except Exception as exc:  # a kernel that cannot start, say: this combination fails, not the sweep
            return SweepRun(
                job.index, job.combination, "FAILED", error=f"{type(exc).__name__}: {exc}", output=job.output,
                duration_s=time.monotonic() - started,
            )
        finally:
            configure(**{key: previous.get(key) for key in ("tracking_uri", "artifact_root")})
    return SweepRun(
        index=job.index,
        params=job.combination,
        status=result.status,
        metrics=dict(result.metrics),
        run_key=result.run_key,
        run_id=result.run_id,
        url=result.url,
        error=result.error,
        output=job.output if job.workspace is not None else str(result.output),
        duration_s=result.duration_s,
        gates=result.gates,
        executed=executed,
    )


@contextlib.contextmanager
def _placed(job: SweepJob) -> Iterator[Placed]:
    """Where the job's notebook runs: where it is (a local worker), or its workspace unpacked in a private
    directory that this process works in meanwhile."""
    if job.workspace is None:
        yield Placed(Path(job.notebook), Path.cwd(), Path(job.output))
        return
    with open_workspace(job.workspace, job.tracking_uri, job.artifact_root) as placed:
        here = os.getcwd()
        os.chdir(placed.cwd)
        try:
            yield placed
        finally:
            os.chdir(here)
