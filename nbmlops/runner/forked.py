"""A headless run as a command's own process does it: the notebook in a forked worker, delivery here.

The worker runs :func:`~nbmlops.runner.execute.run_notebook` as a sweep's local workers do: it and its kernel
only journal, under this process's hand-off tag. Meanwhile this process opens the tracking store and delivers
their records as they are written (:class:`~nbmlops.tracking.delivery.Handoff`). Importing MLflow and
delivering, over a second of CPU, then use another core instead of waiting behind papermill and the kernel,
and everything is in the store when :func:`run_notebook_forked` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nbmlops.config import resolve_settings
from nbmlops.exceptions import NbmlopsError, WorkerError
from nbmlops.runner.execute import (
    NotebookRun,
    check_run,
    import_engine,
    link_children,
    run_notebook,
    settle,
    share_snapshots,
)
from nbmlops.runner.parameters import ParameterError
from nbmlops.runner.summaries import finish_summaries, parameter_scrubber
from nbmlops.tracking.delivery import Handoff, RunListener, new_tag
from nbmlops.tracking.session import HANDOFF_ENV, HANDOFF_TAG_ENV, close_session

__all__ = ["WorkerError", "run_notebook_forked"]

#: seconds an interrupted worker gets to record its run as KILLED before it is interrupted again (and then
#: killed)
_GRACE_S = 30.0


def run_notebook_forked(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    on_run: RunListener | None = None,
    **options: Any,
) -> NotebookRun:
    """:func:`~nbmlops.runner.execute.run_notebook` (same arguments, same result), with the notebook run in
    a forked worker while this process delivers.

    ``on_run(key, run_id, experiment_id)`` is called from the delivering thread as each run the worker and its
    kernel started reaches the store: the notebook's run first (the worker journals its start before the kernel
    starts), then its cells'. It is not called where the notebook runs in this process.

    Only a process with no other thread may fork safely (a command, before it starts any); elsewhere, or
    where ``fork`` does not exist, this is :func:`~nbmlops.runner.execute.run_notebook` itself.
    """
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return run_notebook(notebook, output, parameters, cwd=cwd, **options)
    # usage errors before any process starts (the worker checks the parameters)
    source, _ = check_run(notebook, options.get("gates", ()), cwd, options.get("timeout"))
    settings = resolve_settings(experiment=options.get("experiment"))
    kernel_dir = resolve_settings(Path(cwd) if cwd else None).journal_dir
    tag, started_ms = new_tag(), int(time.time() * 1000)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(
        target=_work, args=(sender, tag, source, output, parameters, cwd, options), name="nbmlops-run"
    )
    sys.stdout.flush()  # nothing buffered here may be written again by the worker's copy
    sys.stderr.flush()
    with _counted_interrupts() as interrupts:
        worker.start()
        sender.close()
        handoff = Handoff(
            [settings.journal_dir, kernel_dir], tag, store=(settings.tracking_uri, settings.artifact_root), on_run=on_run
        )
        kind, payload = _receive(receiver, worker, interrupts)
        if kind == "refused":  # nothing was run or recorded
            handoff.abandon()
            raise payload
        runs = settle(settings, cwd, handoff)
    if kind == "interrupted" or (interrupts.count and kind == "error"):
        raise KeyboardInterrupt
    if kind == "error":
        raise WorkerError(payload)
    result: NotebookRun = payload
    run_id = runs.get(result.run_key)
    if settings.data_store == "mlflow":
        share_snapshots(settings, cwd, started_ms)
    if run_id is None:
        finish_summaries(result.output, settings, None, parameter_scrubber(result.parameters))
        return result  # not in the store yet: the warnings say why; `nbmlops sync` delivers it
    from nbmlops.backend.store import open_store

    try:
        experiment_id = open_store(settings.tracking_uri, settings.artifact_root).experiment_id(result.experiment)
    except NbmlopsError:
        return dataclasses.replace(result, run_id=run_id)
    run_id, url = link_children(settings, result.run_key, run_id, experiment_id)
    finish_summaries(result.output, settings, run_id, parameter_scrubber(result.parameters))
    return dataclasses.replace(result, run_id=run_id, url=url, experiment_id=experiment_id)


def _work(
    sender: Connection,
    tag: str,
    notebook: Path,
    output: str | os.PathLike[str] | None,
    parameters: Mapping[str, Any] | None,
    cwd: str | os.PathLike[str] | None,
    options: dict[str, Any],
) -> None:
    """The worker: run the notebook, journaling under ``tag``; send ``(kind, payload)`` once its journal is
    released: ``ok`` and the :class:`NotebookRun`, ``refused`` and the
    :class:`~nbmlops.runner.parameters.ParameterError` (or its :class:`ParameterTypeError`), ``interrupted``, or
    ``error`` and its text.

    Ctrl-C reaches it as ``KeyboardInterrupt`` (the run ends as KILLED and its kernel is stopped), except while
    it imports papermill: Python prints an interrupt that lands inside an import and drops it, so it is held
    until the import is done. Once the outcome is known, further interrupts are ignored: the worker only
    reports and exits.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)  # not the counting handler it was forked with
    os.environ[HANDOFF_ENV] = "1"
    os.environ[HANDOFF_TAG_ENV] = tag
    outcome: tuple[str, Any]
    try:
        try:
            with _interrupts_held():
                import_engine()
            outcome = ("ok", run_notebook(notebook, output, parameters, cwd=cwd, **options))
        finally:
            close_session()  # the journal is complete and unlocked before the delivering process hears of it
    except ParameterError as exc:  # unknown names or values of the wrong type, before any kernel started
        outcome = ("refused", exc)
    except KeyboardInterrupt:
        outcome = ("interrupted", None)
    except BaseException as exc:
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sender.send(outcome)
    sender.close()


class _Interrupts:
    """A SIGINT handler that counts (see :func:`_receive`) and raises nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.first = self.first or time.monotonic()


@contextlib.contextmanager
def _counted_interrupts() -> Iterator[_Interrupts]:
    """Count Ctrl-C instead of raising ``KeyboardInterrupt`` here while the worker runs: the worker, in the same
    process group, gets it too and ends its run; raised here, it could land inside an import, which Python
    prints as a traceback and drops."""
    interrupts = _Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT for the block; one that came meanwhile is delivered after it."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _receive(receiver: Connection, worker: Any, interrupts: _Interrupts) -> tuple[str, Any]:
    """The worker's outcome. After a Ctrl-C the worker gets :data:`_GRACE_S` to end its run, then it is
    interrupted again, then killed after as long again; each further Ctrl-C takes the next step at once."""
    interrupted = killed = False
    while not receiver.poll(0.1):
        if interrupts.first is None:
            continue
        step = interrupts.count + int((time.monotonic() - interrupts.first) // _GRACE_S)
        if step >= 2 and not interrupted:
            os.kill(worker.pid, signal.SIGINT)
            interrupted = True
        if step >= 3 and not killed:
            worker.kill()
            killed = True
    try:
        outcome: tuple[str, Any] = receiver.recv()
    except EOFError:
        outcome = ("error", "the process running the notebook died")
    worker.join()
    if outcome[0] == "error" and worker.exitcode:
        outcome = ("error", f"{outcome[1]} (exit code {worker.exitcode})")
    return outcome
