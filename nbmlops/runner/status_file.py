"""A headless run's status, kept in a JSON file that another process (the server's job list) reads.

``nbmlops run --status-file PATH`` keeps PATH up to date from nbclient's hooks, which papermill forwards: the
state (``queued`` until the kernel is up, ``running``, then one of :data:`ENDED`), the cells done out of all
cells (papermill's count: markdown and the injected-parameters cell included), the cell executing, the run's
MLflow id and experiment id as soon as the store has the run (also when it is interrupted), its experiment's
name, the executed notebook and the artifact path of its HTML render in the run, start and end times (epoch milliseconds), the exit code, and for a failure one
line naming the cell and its error (never a traceback; secrets the parameters or the environment hold, and
token shapes, redacted); once it ended, its final metrics (the notebook run's, rolled up from its cells: at
most 200, NaN and infinite values as null) and each gate's outcome (gate, passed, one-line message).

Each change replaces the whole file (a temporary file written, fsynced, then renamed over it), so a reader
never sees half of one. The runner's worker process (cell progress) and the process that delivers its records
(run id, final state) both write it: a lock on PATH's folder makes each change a read-modify-write of the
latest file. A status file that cannot be written costs the status, never the run: one warning on stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import NbmlopsError
from nbmlops.redact import Redactor, redact_text

if TYPE_CHECKING:
    from nbmlops.runner.execute import NotebookRun

__all__ = ["ENDED", "FORMAT", "STATES", "RunStatus", "chain_hooks", "read_status", "run_status", "write_whole"]

FORMAT = 1
"""The version of the status file's layout (its ``format`` field)."""
STATES = ("queued", "running", "finished", "failed", "timeout", "killed", "cancelled")
ENDED = frozenset(STATES[2:])
"""The states a run ends in: its status file changes no more."""
_EXIT_INTERRUPTED = 130
_EXIT_INTERNAL = 70
_ERROR_CHARS = 1000
_BY_OUTCOME = {"FINISHED": "finished", "FAILED": "failed", "TIMEOUT": "timeout", "KILLED": "killed"}
_MAX_METRICS = 200


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file at ``path``, or None when there is none yet (or it is not a status file)."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("state") in STATES else None


def chain_hooks(*hook_sets: Mapping[str, Callable[..., None]]) -> dict[str, Callable[..., None]]:
    """nbclient hooks that call, for each hook name, the hooks of every set in order."""
    chained: dict[str, list[Callable[..., None]]] = {}
    for hooks in hook_sets:
        for name, hook in hooks.items():
            chained.setdefault(name, []).append(hook)
    return {name: _calling(hooks) for name, hooks in chained.items()}


def _calling(hooks: list[Callable[..., None]]) -> Callable[..., None]:
    if len(hooks) == 1:
        return hooks[0]

    def call(**kwargs: Any) -> None:
        for hook in hooks:
            hook(**kwargs)

    return call


class RunStatus:
    """The status file of one headless run (nothing is written when ``path`` is None).

    Give :meth:`hooks` to the runner; call :meth:`ended` with its result, or :meth:`stopped` when it raised.
    """

    def __init__(self, path: Path | None, notebook: str | os.PathLike[str], parameters: Mapping[str, Any]) -> None:
        self.path = Path(path).absolute() if path is not None else None
        self._redactor = Redactor()
        self._redactor.learn_namespace(parameters)
        self._redactor.learn_environment()
        self._warned = False
        self._write(
            format=FORMAT, state="queued", notebook=str(Path(notebook).absolute()), pid=os.getpid(),
            cells={"done": 0, "total": None, "current": None}, run_id=None, experiment=None, experiment_id=None,
            output=None, html=None,
            started=_now_ms(), ended=None, exit_code=None, error=None,
        )

    def hooks(self) -> dict[str, Callable[..., None]]:
        """nbclient hooks that keep the file's state and cells up to date."""
        if self.path is None:
            return {}
        return {
            "on_notebook_start": self._notebook_started,
            "on_cell_start": self._cell_started,
            "on_cell_executed": self._cell_executed,
            "on_cell_error": self._cell_failed,
        }

    def run_delivered(self, key: str, run_id: str, experiment_id: str) -> None:
        """A run reached the store (``Handoff``'s listener): the first one, the notebook's, is the run's id until
        :meth:`ended` says it for sure (an interrupted run, which has no result, keeps it)."""

        def change(status: dict[str, Any]) -> None:
            if status.get("run_id") is None:
                status.update(run_id=run_id, experiment_id=experiment_id)

        self._change(change)

    def ended(self, result: NotebookRun) -> None:
        """The run's outcome: its state (a failed gate is ``failed``), run id, experiment, output, exit code."""
        state = _BY_OUTCOME.get(result.status, "failed")
        error = result.error
        if state == "finished" and not result.gates_passed:
            state = "failed"
            error = "; ".join(f"gate failed: {gate.message}" for gate in result.gates if not gate.passed)
        fields = {
            "state": state, "experiment": result.experiment, "output": str(result.output), "html": result.html,
            "ended": _now_ms(),
            "exit_code": result.exit_code, "error": self._one_line(error) if state != "finished" else None,
            "metrics": _finite(dict(list(result.metrics.items())[:_MAX_METRICS])),
            "gates": [{"gate": gate.gate.text, "passed": gate.passed, "message": self._one_line(gate.message)}
                      for gate in result.gates],
        }

        def change(status: dict[str, Any]) -> None:
            status.update(fields)
            if result.run_id is not None:  # None: not in the store in time (`nbmlops sync` delivers it later)
                status["run_id"] = result.run_id
            if result.experiment_id is not None:
                status["experiment_id"] = result.experiment_id
            cells = status.get("cells", {})
            if state == "finished" and cells.get("total") is not None:  # markdown cells after the last code cell
                status["cells"] = {**cells, "done": cells["total"]}

        self._change(change)

    def stopped(self, exc: BaseException) -> None:
        """The runner raised ``exc``: ``cancelled`` for Ctrl-C (SIGINT), ``failed`` with its one line else."""
        if isinstance(exc, KeyboardInterrupt):
            self._write(state="cancelled", ended=_now_ms(), exit_code=_EXIT_INTERRUPTED, error=None)
            return
        code = exc.exit_code if isinstance(exc, NbmlopsError) else _EXIT_INTERNAL
        text = str(exc) if isinstance(exc, NbmlopsError) else f"{type(exc).__name__}: {exc}"
        self._write(state="failed", ended=_now_ms(), exit_code=code, error=self._one_line(text))

    def _notebook_started(self, notebook: Any) -> None:
        self._write(state="running", cells={"done": 0, "total": len(notebook.cells), "current": None})

    def _cell_started(self, cell: Any, cell_index: int) -> None:
        self._update_cells(done=cell_index, current=cell_index)

    def _cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        self._update_cells(done=cell_index + 1)

    def _cell_failed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        content = (execute_reply or {}).get("content", {})
        expected = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        if not expected:
            self._write(error=self._one_line(f"cell {cell_index}: {content.get('ename')}: {content.get('evalue')}"))

    def _update_cells(self, **cells: int) -> None:
        def change(status: dict[str, Any]) -> None:
            status["cells"] = {**status.get("cells", {}), **cells}

        self._change(change)

    def _one_line(self, text: str | None) -> str | None:
        if not text:
            return None
        line = " ".join(redact_text(self._redactor.scrub(text)).split())
        return line if len(line) <= _ERROR_CHARS else line[:_ERROR_CHARS] + "…"

    def _write(self, **fields: Any) -> None:
        self._change(lambda status: status.update(fields))

    def _change(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the latest status and replace the file with the result, under the lock."""
        if self.path is None:
            return
        try:
            with _locked(self.path.parent):
                status = read_status(self.path) or {}
                change(status)
                write_whole(self.path, json.dumps(status, indent=1, ensure_ascii=False) + "\n")
        except OSError as exc:
            if not self._warned:
                self._warned = True
                sys.stderr.write(f"nbmlops: the status file {self.path} is not kept up to date: {exc}\n")


@contextlib.contextmanager
def run_status(
    path: str | os.PathLike[str] | None, notebook: str | os.PathLike[str], parameters: Mapping[str, Any]
) -> Iterator[RunStatus]:
    """A :class:`RunStatus` for the block that runs the notebook; an exception leaving the block is recorded
    (:meth:`RunStatus.stopped`) and raised on."""
    status = RunStatus(Path(path) if path is not None else None, notebook, parameters)
    try:
        yield status
    except BaseException as exc:
        status.stopped(exc)
        raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock on the directory itself: no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_whole(path: Path, text: str) -> None:
    """Replace the file ``path`` with ``text`` so that a reader sees the old file or the new one, never a part:
    a temporary file beside it is written, fsynced, then renamed over it (readable by its owner only)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _finite(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """``metrics`` with NaN and infinite values as None (JSON has no spelling for them)."""
    return {name: value if math.isfinite(value) else None for name, value in metrics.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)
