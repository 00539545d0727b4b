"""The per-process tracking session: the journal, the background writer and the run stack."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from nbmlops.config import resolve_settings
from nbmlops.exceptions import FlushTimeoutError
from nbmlops.journal import Journal
from nbmlops.redact import Redactor
from nbmlops.tracking.delivery import Writer, sync_journals

if TYPE_CHECKING:
    from nbmlops.tracking.run import Run

__all__ = ["Session", "close_session", "get_session"]

RunListener = Callable[[str, str], None]

#: set by ``nbmlops run`` for its kernel: records stay in the journal, and the runner (whose MLflow
#: client is already warm) delivers them, so the kernel never imports mlflow
HANDOFF_ENV = "NBMLOPS_HANDOFF"
#: set with :data:`HANDOFF_ENV` by a runner that delivers while the kernel writes: the tag of its
#: :class:`~nbmlops.tracking.delivery.Handoff`, which names the kernel's journal
HANDOFF_TAG_ENV = "NBMLOPS_HANDOFF_TAG"


class Session:
    """Everything tracking holds for the life of one process (one kernel, one script)."""

    def __init__(self, journal_dir: Path, handoff: bool = False, handoff_tag: str | None = None) -> None:
        self.journal_dir = journal_dir
        self.handoff = handoff
        self.handoff_tag = handoff_tag if handoff else None
        self.redactor = Redactor()
        self.redactor.learn_environment()
        self.runs: list[Run] = []
        self._lock = threading.RLock()
        self._journal: Journal | None = None
        self._writer: Writer | None = None
        self._tasks: set[concurrent.futures.Future[Any]] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbmlops-capture")
        self._listeners: dict[str, RunListener] = {}
        self._holds = 0
        self._held: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.run_ids: dict[str, tuple[str, str]] = {}
        if not handoff:
            self.background(self._recover)

    # -- records ------------------------------------------------------------------------------

    def emit(self, records: list[dict[str, Any]]) -> None:
        """Journal ``records``, then hand them to the background writer (which fsyncs before delivering).

        In a hand-off session (see :data:`HANDOFF_ENV`) they stay in the journal for the runner.
        """
        if not records:
            return
        with self._lock:
            if self._journal is None:
                self._journal = Journal(self.journal_dir, self.handoff_tag)
                if not self.handoff:
                    self._writer = Writer(self._journal.path, on_run=self._run_created, sync=self._journal.sync)
            ends = self._journal.append(records)
            if self._writer is not None:
                self._writer.submit(list(zip(ends, records)))

    @property
    def pending(self) -> int:
        """Records journaled but not yet in the store."""
        return self._writer.pending if self._writer else 0

    @property
    def store_error(self) -> str | None:
        """Why the store is not taking records right now, if it is not."""
        return self._writer.last_error if self._writer else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold background capture work submitted inside the block until it ends.

        A tracked cell holds its capture work so that it does not compete with the cell for the GIL.
        """
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                held, self._held = (self._held, []) if self._holds == 0 else ([], self._held)
            for fn, args in held:
                self.background(fn, *args)

    @property
    def holding(self) -> bool:
        """True inside a tracked cell, whose capture work waits until the cell ends."""
        with self._lock:
            return self._holds > 0

    def background(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any] | None:
        """Run capture work off the user's thread; :meth:`flush` waits for it."""
        with self._lock:
            if self._holds:
                self._held.append((fn, args))
                return None
        future = self._executor.submit(fn, *args)
        with self._lock:
            self._tasks.add(future)
        future.add_done_callback(self._task_done)
        return future

    def _task_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._tasks.discard(future)
        error = future.exception()
        if error is not None:
            sys.stderr.write(f"nbmlops: background capture failed: {type(error).__name__}: {error}\n")

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record journaled so far has reached the store (in a hand-off session: the
        journal on disk, for the runner to deliver).

        Raises :class:`~nbmlops.exceptions.FlushTimeoutError` naming how many are still waiting and why.
        """
        with self._lock:
            tasks = list(self._tasks)
        done, not_done = concurrent.futures.wait(tasks, timeout=timeout)
        if not_done:
            raise FlushTimeoutError(self.pending + len(not_done), "capture still running")
        if self._writer is not None:
            self._writer.flush(timeout)
        elif self._journal is not None:
            self._journal.sync()

    # -- run ids for displays ------------------------------------------------------------------

    def on_run_created(self, key: str, listener: RunListener) -> None:
        """Call ``listener(run_id, experiment_id)`` once the run with local ``key`` exists in the store."""
        with self._lock:
            known = self.run_ids.get(key)
            if known is None:
                self._listeners[key] = listener
        if known is not None:
            listener(*known)

    def _run_created(self, key: str, run_id: str, experiment_id: str) -> None:
        with self._lock:
            self.run_ids[key] = (run_id, experiment_id)
            listener = self._listeners.pop(key, None)
        if listener is not None:
            listener(run_id, experiment_id)

    # -- lifecycle ----------------------------------------------------------------------------

    def _recover(self) -> None:
        report = sync_journals(self.journal_dir, "the process that ran it died (killed, out of memory or crashed)")
        for damage in report.damage:
            sys.stderr.write(f"nbmlops: skipped a damaged journal record: {damage}\n")
        if report.runs_failed:
            sys.stderr.write(
                f"nbmlops: marked {len(report.runs_failed)} run(s) of a dead process as FAILED (kernel_died).\n"
            )

    def close(self, timeout: float) -> None:
        """End open runs, deliver what can be delivered within ``timeout``, release the journal."""
        for run in reversed(list(self.runs)):
            run.end("KILLED", reason="the process exited while the run was open")
        try:
            self.flush(timeout)
            delivered = True
        except FlushTimeoutError as exc:
            delivered = False
            sys.stderr.write(f"nbmlops: {exc}\n")
        with self._lock:
            if self._writer is not None:
                self._writer.stop()
            if self._journal is not None:
                self._journal.sync()
                self._journal.close(remove=delivered and not self.handoff)


_session: Session | None = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """The tracking session of this process, created on first use."""
    global _session
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            _start_session()
        assert _session is not None
        return _session


_session_pid = 0


def _start_session() -> None:
    global _session, _session_pid
    settings = resolve_settings()
    _session = Session(
        settings.journal_dir,
        handoff=os.environ.get(HANDOFF_ENV) == "1",
        handoff_tag=os.environ.get(HANDOFF_TAG_ENV) or None,
    )
    _session_pid = os.getpid()
    atexit.register(_close_at_exit, _session, settings.flush_timeout)


def _close_at_exit(session: Session, timeout: float) -> None:
    if _session is session and _session_pid == os.getpid():
        session.close(timeout)


def close_session(timeout: float = 10.0) -> None:
    """Close this process's session now (end open runs, deliver, release the journal).

    The next tracking call starts a new session, with the project root of the working directory then.
    """
    global _session
    with _session_lock:
        session, _session = _session, None
    if session is not None and _session_pid == os.getpid():
        session.close(timeout)
