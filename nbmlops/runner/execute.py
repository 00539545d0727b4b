"""Execute a notebook headlessly with papermill (the only module that imports it), as one tracked run.

The pipeline of :func:`run_notebook`, one call per stage: check parameters, start the notebook's
run, log the data files its parameters name, execute (the kernel's records are delivered as it writes
them), roll the cells' metrics up, store the notebook (executed and as HTML), check gates, end the run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nbmlops.backend.addresses import StoreAddresses
from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import ConfigError, NbmlopsError, NotebookNotFoundError, ParameterFileError
from nbmlops.runner.gates import Gate, GateResult, evaluate_gates, gate_tags, parse_gate
from nbmlops.runner.parameters import check_parameters
from nbmlops.runner.render import HtmlRender
from nbmlops.runner.reports import NotebookReport
from nbmlops.runner.status_file import chain_hooks
from nbmlops.runner.summaries import finish_summaries
from nbmlops.tracking.delivery import Handoff, sync_journals
from nbmlops.tracking.run import PARENT_ENV, Run, experiment_for
from nbmlops.tracking.scraps import metric_number, read_payloads
from nbmlops.tracking.session import HANDOFF_ENV, HANDOFF_TAG_ENV, get_session
from nbmlops.tracking.summary import run_url

__all__ = ["NotebookRun", "run_notebook"]

#: the effective parameters with their types, for `nbmlops reproduce` (MLflow params are text)
PARAMETERS_ARTIFACT = "notebook/parameters.json"
#: exit codes of `nbmlops run`, by outcome
EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "TIMEOUT": 1, "KILLED": 1, "GATE_FAILED": 3}
#: seconds an interrupted kernel gets to end its cell before it is shut down all the same
_SETTLE_S = 10.0


@dataclass(frozen=True)
class NotebookRun:
    """The outcome of one headless execution."""

    notebook: Path
    output: Path
    status: str
    experiment: str
    run_key: str
    run_id: str | None
    url: str | None
    duration_s: float
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    gates: tuple[GateResult, ...] = ()
    error: str | None = None
    failure: str | None = None
    html: str | None = None  # the HTML render's artifact path in the run; None when there is none
    experiment_id: str | None = None  # the run's experiment in the store, where the runner learnt it

    @property
    def gates_passed(self) -> bool:
        """True when every gate passed (or there were none)."""
        return all(result.passed for result in self.gates)

    def report(self) -> NotebookReport:
        """This run as an entry of a JUnit report or a CI summary."""
        return NotebookReport(
            notebook=str(self.notebook),
            status=self.status,
            duration_s=self.duration_s,
            error=self.error,
            gates=self.gates,
            params=dict(self.parameters),
            metrics=dict(self.metrics),
            run_id=self.run_id,
            url=self.url,
            output=str(self.output),
        )

    @property
    def exit_code(self) -> int:
        """0 success, 1 the notebook failed, 3 a gate failed."""
        if self.status != "FINISHED":
            return EXIT_CODES[self.status]
        return 0 if self.gates_passed else EXIT_CODES["GATE_FAILED"]


def run_notebook(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    experiment: str | None = None,
    name: str | None = None,
    gates: Sequence[str | Gate] = (),
    cwd: str | os.PathLike[str] | None = None,
    kernel_name: str | None = None,
    timeout: float | None = None,
    tags: Mapping[str, str] | None = None,
    progress_bar: bool = True,
    hooks: Mapping[str, Callable[..., None]] | None = None,
) -> NotebookRun:
    """Execute ``notebook`` with papermill as one MLflow run (``nbmlops.kind=notebook``).

    Its ``%%track`` cells become child runs; their metrics, and ``nbmlops.log_metric`` calls made
    outside them, are rolled up to this run; ``gates`` are checked on those metrics. Each parameter
    naming an existing file (from the kernel's working directory) is a dataset input of this run,
    named after the parameter, and the file is snapshotted (within ``snapshot_max_bytes``) so that
    ``nbmlops reproduce`` can use it once the file has changed or is gone.

    Args:
        notebook: the ``.ipynb`` to execute.
        output: where to write the executed notebook (default: ``.nbmlops/outputs/<name>-<time>.ipynb``).
        parameters: values for the notebook's ``parameters`` cell (papermill's convention); names the
            notebook does not declare, and values of the wrong type for their parameter (see
            :mod:`nbmlops.runner.parameters`), are refused before any kernel starts.
        experiment: MLflow experiment (default: ``<project>/<the notebook's path in the project>``, see :func:`~nbmlops.tracking.run.experiment_for`).
        name: run name (default: the notebook's name).
        gates: conditions such as ``"accuracy >= 0.9"`` on the rolled-up metrics.
        cwd: working directory of the kernel (default: this process's).
        kernel_name: kernel to use (default: the notebook's).
        timeout: seconds one cell may run before the execution stops with status TIMEOUT.
        tags: extra tags for the notebook's run.
        progress_bar: show papermill's progress bar.
        hooks: more nbclient hooks (``on_cell_executed``, ...), called after the runner's own (see
            :class:`nbmlops.runner.status_file.RunStatus`).

    Raises:
        NbmlopsError: a usage problem found before execution (missing notebook, unknown parameter or
            one of the wrong type, malformed gate); nothing was run or recorded.
    """
    source, parsed_gates = check_run(notebook, gates, cwd, timeout)
    effective = check_parameters(source, dict(parameters or {}), typed=True)
    settings = resolve_settings(experiment=experiment)
    target = _output_path(source, output, settings)
    session = get_session()
    if not session.handoff:
        session.deliver_here()  # its kernel's journal is delivered here (Handoff): its own records too
    session.redactor.learn_namespace(effective)  # a secret-named parameter's value is scrubbed everywhere
    run = _start_run(source, settings, name, effective, tags, kernel_name)
    _log_data_parameters(run, effective, Path(cwd) if cwd else Path.cwd())
    html = HtmlRender(session)
    # the kernel's records are delivered while it writes them (a sweep worker leaves them to the sweep)
    where = resolve_settings(Path(cwd) if cwd else None)
    handoff = None if session.handoff else Handoff([where.journal_dir], addresses=_addresses(settings, where))
    started = time.monotonic()
    try:
        status, failure, error = _execute(
            source, target, parameters or {}, run, settings, cwd, kernel_name, timeout, progress_bar,
            handoff.tag if handoff is not None else session.handoff_tag, chain_hooks(html.hooks(), hooks or {}),
        )
    except BaseException:
        if handoff is not None:
            handoff.abandon()
        raise
    duration = time.monotonic() - started
    error = session.redactor.scrub(error) if error else error  # a cell's message may hold a parameter's secret
    executed = _read_notebook(target)
    if executed is not None:
        _redact_executed(target, executed, session.redactor)
    metrics = _roll_up(run, executed)
    html_artifact = _store_notebook(run, source, target, executed, html)
    results = tuple(evaluate_gates(parsed_gates, metrics)) if status == "FINISHED" else ()
    _end_run(run, status, failure, error, results, duration)
    run_id, url = deliver(run, settings, cwd, handoff)
    if handoff is not None and executed is not None:  # this process delivered the kernel's runs
        finish_summaries(target, settings, run_id, session.redactor.scrub)
    return NotebookRun(
        notebook=source,
        output=target,
        status=status,
        experiment=run.experiment,
        run_key=run.key,
        run_id=run_id,
        url=url,
        duration_s=duration,
        parameters=effective,
        metrics=metrics,
        gates=results,
        error=error,
        failure=failure,
        html=html_artifact,
    )


def check_run(
    notebook: str | os.PathLike[str],
    gates: Sequence[str | Gate] = (),
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> tuple[Path, tuple[Gate, ...]]:
    """The usage checks of :func:`run_notebook` that need no notebook parsing: the notebook is a file, the
    gates parse, ``cwd`` is a directory, ``timeout`` a number of seconds > 0. Returns the notebook's absolute
    path and the parsed gates.

    Raises:
        NotebookNotFoundError, GateSyntaxError, ConfigError.
    """
    source = Path(notebook).resolve()
    if not source.is_file():
        raise NotebookNotFoundError(str(notebook))
    parsed = tuple(g if isinstance(g, Gate) else parse_gate(g) for g in gates)
    if cwd is not None and not Path(cwd).is_dir():
        raise ConfigError("cwd", f"{cwd} is not a directory", "argument")
    if timeout is not None and not 0 < timeout < math.inf:
        raise ConfigError("timeout", f"must be a number of seconds > 0, got {timeout}", "argument")
    return source, parsed


def import_engine() -> None:
    """Import papermill and what it executes with (nbclient, jupyter_client, nbformat) now, not on first use."""
    import papermill  # noqa: F401


def _output_path(source: Path, output: str | os.PathLike[str] | None, settings: Settings) -> Path:
    if output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = settings.state_dir / "outputs" / f"{source.stem}-{stamp}-{os.getpid()}.ipynb"
    target = Path(output).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _start_run(
    source: Path,
    settings: Settings,
    name: str | None,
    parameters: Mapping[str, Any],
    tags: Mapping[str, str] | None,
    kernel_name: str | None,
) -> Run:
    import papermill

    run_tags = {
        "nbmlops.kind": "notebook",
        "nbmlops.notebook": str(source),
        "nbmlops.papermill_version": papermill.__version__,
        **(tags or {}),
    }
    if kernel_name:
        run_tags["nbmlops.kernel"] = kernel_name
    run = Run(
        name or source.stem,
        experiment=settings.experiment or experiment_for(str(source), settings.root),
        params=parameters,
        tags=run_tags,
        source=(str(source), "NOTEBOOK"),
        settings=settings,
    )
    run.start()
    run.log_text(_redacted_notebook_text(source), f"notebook/input/{source.name}")
    run.log_text(json.dumps(dict(parameters), indent=1, default=repr), PARAMETERS_ARTIFACT)
    return run


def _data_parameters(parameters: Mapping[str, Any], cwd: Path) -> dict[str, Path]:
    """The parameters whose value is the path of an existing file, relative to ``cwd``: name -> path."""
    found: dict[str, Path] = {}
    for name, value in parameters.items():
        if not isinstance(value, str) or not value.strip() or len(value) > 4096:
            continue
        try:
            path = (cwd / value).resolve()
            if path.is_file():
                found[name] = path
        except (OSError, ValueError):  # not a usable path: a label, a sentence, a NUL byte
            continue
    return found


def _log_data_parameters(run: Run, parameters: Mapping[str, Any], cwd: Path) -> None:
    """Fingerprint the files the parameters name, as dataset inputs (snapshotted in the background)."""
    for name, path in _data_parameters(parameters, cwd).items():
        try:
            run.log_dataset(path, name, context="input")
        except (OSError, NbmlopsError) as exc:  # unreadable: the run goes on without it
            sys.stderr.write(f"nbmlops: parameter {name} ({path}) not logged as a dataset: {exc}\n")


def _execute(
    source: Path,
    target: Path,
    parameters: Mapping[str, Any],
    run: Run,
    settings: Settings,
    cwd: str | os.PathLike[str] | None,
    kernel_name: str | None,
    timeout: float | None,
    progress_bar: bool,
    handoff_tag: str | None,
    hooks: Mapping[str, Callable[..., None]],
) -> tuple[str, str | None, str | None]:
    """Run papermill with nbclient's ``hooks``; returns ``(status, failure kind, error text)``.

    The kernel is stopped only once it is idle (:func:`_settling_kernel_manager`), and papermill's log, which
    only repeats what the result says, is kept off stderr.
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    env = {
        "NBMLOPS_NOTEBOOK": str(source),
        PARENT_ENV: run.key,
        "NBMLOPS_EXPERIMENT": run.experiment,
        "NBMLOPS_TRACKING_URI": settings.tracking_uri,
        HANDOFF_ENV: "1",  # the kernel journals; this process delivers
    }
    if handoff_tag is not None:  # the kernel's journal is named for whoever delivers it as it is written
        env[HANDOFF_TAG_ENV] = handoff_tag
    if settings.artifact_root:
        env["NBMLOPS_ARTIFACT_ROOT"] = settings.artifact_root
    executing: list[int] = []  # the index of the cell the kernel was last given

    def cell_sent(cell: Any, cell_index: int) -> None:
        executing[:] = [cell_index]

    try:
        with temporary_environment(env), _quiet_logger("papermill"), _no_kernel_left():
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=dict(parameters),
                cwd=str(cwd) if cwd else None,
                kernel_name=kernel_name,
                timeout_func=(lambda cell: timeout) if timeout else None,  # nbclient's `timeout`: whole seconds
                progress_bar=progress_bar,
                kernel_manager_class=_settling_kernel_manager(),
                on_cell_execute=cell_sent,
                **hooks,
            )
    except PapermillExecutionError as exc:
        if _only_expected_errors(target):
            return "FINISHED", None, None
        run.set_tags({"nbmlops.failure.cell_index": exc.cell_index, "nbmlops.failure.ename": exc.ename})
        return "FAILED", "cell_error", f"cell {exc.cell_index}: {exc.ename}: {exc.evalue}"
    except CellTimeoutError:
        if not executing:
            return "TIMEOUT", "timeout", f"a cell ran longer than {timeout:g} s"
        run.set_tags({"nbmlops.failure.cell_index": executing[0]})
        return "TIMEOUT", "timeout", f"cell {executing[0]} ran longer than {timeout:g} s"
    except DeadKernelError as exc:
        return "FAILED", "kernel_died", f"the kernel died: {exc}"
    except KeyboardInterrupt:
        run.end("KILLED", reason="interrupted while executing the notebook")
        raise
    return "FINISHED", None, None


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only critical records of the logger ``name`` for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _no_kernel_left() -> Iterator[None]:
    """Kill, after the block, the kernels it started that still run: nbclient stops a kernel only once it has
    started, so one whose start was interrupted (Ctrl-C) would run on until it noticed its parent had gone."""
    started = _settling_kernel_manager().started
    before = set(started)
    try:
        yield
    finally:
        for manager in set(started) - before:
            provisioner = manager.provisioner
            process = getattr(provisioner, "process", None)
            if process is None:
                continue
            with contextlib.suppress(OSError):
                os.killpg(getattr(provisioner, "pgid", None) or process.pid, signal.SIGKILL)
            process.wait()
            manager.cleanup_connection_file()


@functools.cache
def _settling_kernel_manager() -> type[Any]:
    """jupyter_client's ``AsyncKernelManager``, shutting a busy kernel down only once its cell has ended.

    nbclient shuts the kernel down as soon as a cell times out or the run is interrupted. jupyter_client then
    interrupts the kernel and at once asks it to shut down: ipykernel closes its sockets while the interrupted
    cell is still sending its reply, and prints a ``zmq.error.ZMQError`` traceback. This manager interrupts
    the kernel, waits until it answers a ``kernel_info`` request (it does once the cell has ended; at most
    :data:`_SETTLE_S`), then shuts it down as jupyter_client does.
    """
    from jupyter_client.manager import AsyncKernelManager

    class SettlingKernelManager(AsyncKernelManager):
        started: ClassVar[weakref.WeakSet[Any]] = weakref.WeakSet()  # for _no_kernel_left

        async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
            SettlingKernelManager.started.add(self)
            await super().start_kernel(**kwargs)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
            if not now and self.has_kernel:
                _disregard_cell_tasks()
                await self.interrupt_kernel()
                await _until_idle(self)
            await super().shutdown_kernel(now=now, restart=restart)

    return SettlingKernelManager


def _disregard_cell_tasks() -> None:
    """Mark as read the outcome of what is left of an interrupted cell's execution in this event loop
    (nbclient's tasks): it ends while the kernel stops, with an error asyncio would print as a traceback."""
    import asyncio

    for task in asyncio.all_tasks():
        name = getattr(task.get_coro(), "__qualname__", "")
        if task is not asyncio.current_task() and name.startswith("NotebookClient."):
            task.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _until_idle(manager: Any) -> None:
    """Return once the kernel of ``manager`` answers a ``kernel_info`` request, or after :data:`_SETTLE_S`."""
    from queue import Empty

    from jupyter_client.session import Session

    # a session of its own: the run's client, which shares the manager's, keeps its replies
    client = manager.client(session=Session(key=manager.session.key,
                                            signature_scheme=manager.session.signature_scheme))
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        request = client.kernel_info()
        deadline = time.monotonic() + _SETTLE_S
        while (left := deadline - time.monotonic()) > 0:
            reply = await client.get_shell_msg(timeout=left)
            if reply["parent_header"].get("msg_id") == request:
                return
    except Empty:
        return
    finally:
        client.stop_channels()


def _only_expected_errors(path: Path) -> bool:
    """True when every error in the executed notebook is in a cell tagged ``raises-exception``.

    nbclient runs on past such cells, as Jupyter does; papermill still fails the run and adds an error
    banner. Then the banner is removed and the run counts as successful.
    """
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        expected = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        if not expected and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return False
    notebook.cells = [c for c in notebook.cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    nbformat.write(notebook, path)
    return True


@contextlib.contextmanager
def temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (a kernel papermill starts inherits this process's)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _read_notebook(path: Path) -> Any:
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None


def _redacted_notebook_text(path: Path) -> str:
    """The notebook at ``path`` as JSON, its code cells without secret literals or secret-named options."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    redactor = get_session().redactor
    for cell in notebook.cells:
        if cell.get("cell_type") == "code":
            cell.source = redactor.redact_source(cell.source)
    return nbformat.writes(notebook)


def _redact_executed(path: Path, notebook: Any, redactor: Any) -> None:
    """Rewrite the executed notebook at ``path`` without secrets: papermill's injected parameters, secret
    literals and options in code, and learned values or token shapes in every text output."""
    import nbformat

    from nbmlops.redact import REDACTED, is_secret_name

    injected = notebook.metadata.get("papermill", {}).get("parameters", {})
    for name in list(injected):
        if is_secret_name(name):
            injected[name] = REDACTED
    for cell in notebook.cells:
        if cell.get("cell_type") != "code":
            continue
        cell.source = redactor.redact_source(cell.source)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = redactor.scrub(out["text"])
            if "evalue" in out:
                out["evalue"] = redactor.scrub(out["evalue"])
                out["traceback"] = [redactor.scrub(line) for line in out.get("traceback", [])]
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    out["data"][kind] = redactor.scrub(value)
    nbformat.write(notebook, path)


def _roll_up(run: Run, executed: Any) -> dict[str, float]:
    """Log the cells' metrics (and notebook-level ones) on the notebook's run; return the final values."""
    if executed is None:
        return {}
    final: dict[str, float] = {}
    steps: dict[str, int] = {}
    for payload in read_payloads(executed):
        rows: list[tuple[str, float, int | None]]
        if payload["kind"] == "run":
            rows = [(k, metric_number(v), None) for k, v in payload["metrics"].items()]
        else:
            rows = [(k, metric_number(v), int(step)) for k, v, step in payload["metrics"]]
        for key, value, step in rows:
            at = steps.get(key, -1) + 1 if step is None else step
            steps[key] = max(at, steps.get(key, -1))
            run.log_metric(key, value, step=at)
            final[key] = value
    return final


def _store_notebook(run: Run, source: Path, target: Path, executed: Any, html: HtmlRender) -> str | None:
    """The executed notebook, and its HTML render (a failed render costs the render, not the run); returns the
    render's artifact path."""
    if executed is None:
        return None
    run.log_text(target.read_text(), f"notebook/{source.name}")
    try:
        body = html.html(executed)
    except Exception as exc:
        sys.stderr.write(f"nbmlops: no HTML render of {source.name}: {type(exc).__name__}: {exc}\n")
        return None
    artifact = f"notebook/{source.stem}.html"
    run.log_text(body, artifact)
    return artifact


def _end_run(
    run: Run, status: str, failure: str | None, error: str | None, gates: tuple[GateResult, ...], duration: float
) -> None:
    tags: dict[str, str] = {"nbmlops.status": status, "nbmlops.execution_s": f"{duration:.3f}"}
    if failure:
        tags["nbmlops.failure"] = failure
    if error:
        tags["nbmlops.error.message"] = error[:5000]
    tags.update(gate_tags(gates))
    run.set_tags(tags)
    run.end("FINISHED" if status == "FINISHED" else "FAILED")


def deliver(
    run: Run, settings: Settings, cwd: str | os.PathLike[str] | None, handoff: Handoff | None = None
) -> tuple[str | None, str | None]:
    """Deliver the rest of what the kernel handed over (``handoff``) and replay what other ended processes
    left, wait for ``run``'s records, link late children.

    Returns the run's MLflow id and UI address, or ``(None, None)`` when the store did not take it in time.
    """
    from nbmlops.exceptions import FlushTimeoutError

    session = get_session()
    try:
        if session.handoff:  # a worker: the process it hands over to delivers this run and its kernel's
            session.flush(settings.flush_timeout)
            return None, None
        settle(settings, cwd, handoff)
        session.flush(settings.flush_timeout)
    except FlushTimeoutError:
        return None, None  # the warning has been written; `nbmlops sync` delivers later
    if settings.data_store == "mlflow":
        share_snapshots(settings, cwd, run.started)
    known = session.run_ids.get(run.key)
    if known is None:
        return None, None
    run_id, experiment_id = known
    return link_children(settings, run.key, run_id, experiment_id)


def _addresses(settings: Settings, where: Settings) -> StoreAddresses:
    """The stores the kernel's records may name: the runner's, the notebook folder's, the environment's."""
    return StoreAddresses.from_environment(settings.tracking_uri, where.tracking_uri)


def settle(settings: Settings, cwd: str | os.PathLike[str] | None, handoff: Handoff | None) -> dict[str, str]:
    """Deliver the rest of the journals ``handoff`` follows (their processes have ended), then those other
    ended processes left; report damage and failures. Returns local run key -> MLflow run id."""
    reason = "the kernel died before the run ended"
    reports = [handoff.finish(reason)] if handoff is not None else []
    where = resolve_settings(Path(cwd) if cwd else None)
    addresses = handoff.addresses if handoff is not None else _addresses(settings, where)
    reports += [sync_journals(journal_dir, reason, addresses) for journal_dir in {settings.journal_dir, where.journal_dir}]
    runs: dict[str, str] = {}
    for report in reports:
        for damage in report.damage:
            sys.stderr.write(f"nbmlops: skipped a damaged journal record: {damage}\n")
        runs.update(report.runs)
    for error in dict.fromkeys(e for report in reports for e in report.errors):  # a journal retried once told once
        sys.stderr.write(f"nbmlops: not delivered yet (`nbmlops sync` retries): {error}\n")
    return runs


def link_children(settings: Settings, key: str, run_id: str, experiment_id: str) -> tuple[str, str]:
    """Link the notebook run's children delivered before it; returns its MLflow id and UI address."""
    from nbmlops.backend.store import open_store

    with contextlib.suppress(NbmlopsError):
        open_store(settings.tracking_uri, settings.artifact_root).adopt_children(experiment_id, key, run_id)
    return run_id, run_url(settings.ui_url, experiment_id, run_id)


def share_snapshots(settings: Settings, cwd: str | os.PathLike[str] | None, since_ms: int) -> None:
    """Upload the snapshots stored since the run started (its kernel, which does not import mlflow,
    stored them locally) to the MLflow artifact store."""
    from nbmlops.data.snapshots import SnapshotError, SnapshotStore
    from nbmlops.tracking.artifact_snapshots import open_snapshot_store

    remote = open_snapshot_store(settings).remote
    folders = {settings.data_dir, resolve_settings(Path(cwd) if cwd else None).data_dir}
    for folder in folders:
        store = SnapshotStore(folder, remote=remote)
        for snapshot in store.list():
            if snapshot.created.timestamp() * 1000 < since_ms - 1000:
                break  # newest first: the rest are older than the run
            try:
                store.push(snapshot.fingerprint)
            except SnapshotError as exc:
                sys.stderr.write(f"nbmlops: {exc}\n")
                return


def parse_parameter_file(text: str) -> dict[str, Any]:
    """Parameters from YAML (``-f params.yaml`` or ``-y``); a mapping is required."""
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParameterFileError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParameterFileError(f"expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def describe(result: NotebookRun) -> str:
    """A one-paragraph account of a run for the terminal."""
    lines = [f"{result.status}: {result.notebook.name} in {result.duration_s:.1f}s -> {result.output}"]
    if result.error:
        lines.append(f"  {result.error}")
    if result.metrics:
        lines.append("  metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in result.metrics.items()))
    for gate in result.gates:
        lines.append(f"  {'PASS' if gate.passed else 'FAIL'} {gate.message}")
    lines.append(f"  run: {result.run_id or 'not yet in the store (see warnings)'} in experiment {result.experiment}")
    return "\n".join(lines)
