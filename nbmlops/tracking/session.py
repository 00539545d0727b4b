"""The per-process tracking session: the journal, the background writer and the run stack."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.backend.addresses import StoreAddresses
from nbmlops.config import resolve_settings
from nbmlops.exceptions import FlushTimeoutError
from nbmlops.journal import Journal, RecordTooLarge, inline
from nbmlops.redact import Redactor
from nbmlops.tracking.delivery import Writer, sync_journals
from nbmlops.tracking.reap import reap_when_tracking

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

    #: seconds between tries to write the journal again after it failed (a full disk, a file in the way)
    JOURNAL_RETRY_S = 1.0

    def __init__(self, journal_dir: Path, handoff: bool = False, handoff_tag: str | None = None) -> None:
        self.journal_dir = journal_dir
        self.handoff = handoff
        self.handoff_tag = handoff_tag if handoff else None
        self.redactor = Redactor()
        self.redactor.learn_environment()
        #: the stores this session's runs record to: their records name them redacted (see Run.start)
        self.addresses = StoreAddresses()
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
        self._trouble: str | None = None  # why the journal cannot be written now
        self._retry_at = 0.0
        self._told: set[int] = set()  # the causes (errno) already told
        self._trouble_lock = threading.Lock()
        self._starts_not_journaled: dict[str, dict[str, Any]] = {}
        self._shared: dict[tuple[str, str], tuple[str, str]] = {}  # (store, folder) -> (digest, run key)
        self._deliver_here = False
        if not handoff:
            self.background(self._recover)

    # -- records ------------------------------------------------------------------------------

    def emit(self, records: list[dict[str, Any]]) -> None:
        """Journal ``records``, then hand them to the background writer (which fsyncs before delivering).

        In a hand-off session (see :data:`HANDOFF_ENV`) they stay in the journal for the runner. An
        artifact's large payload goes to a file beside the journal (see :mod:`nbmlops.journal`); a record
        too large for the journal is refused with one warning.

        Never raises for the journal's sake: when it cannot be written (a full disk, a file where its folder
        should be), one warning per cause names the path and why, the records wait in memory (within the
        writer's bounds) and the writer delivers them straight to the store; every
        :attr:`JOURNAL_RETRY_S` the journal is tried again, and once it takes records, those kept in memory
        go in first.
        """
        if not records:
            return
        with self._lock:
            journal = self._journal_to_try()
            ends = None
            if journal is not None:
                records, ends = self._journal_records(journal, records)
            if ends is None:
                records = [inline(record) for record in records]
                self._starts_not_journaled.update((r["run"], r) for r in records if r["t"] == "start")
            writer = self._writer_for(in_journal=ends is not None)
            if writer is not None and records:
                at = ends or [self._journal.size if self._journal else 0] * len(records)
                writer.submit(list(zip(at, records)), in_journal=ends is not None)

    def _journal_to_try(self) -> Journal | None:
        """The journal, made if need be; None while it failed less than :attr:`JOURNAL_RETRY_S` ago."""
        if self._trouble is not None and time.monotonic() < self._retry_at:
            return None
        if self._journal is None:
            try:
                self._journal = Journal(self.journal_dir, self.handoff_tag)
            except OSError as exc:
                self._journal_failed(self.journal_dir, exc)
                return None
            if self._writer is not None:
                self._writer.attach(self._journal.path)
        return self._journal

    def _journal_records(
        self, journal: Journal, records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[int] | None]:
        """Write ``records`` (after those kept in memory, if the journal failed before); returns them as
        journaled and their end offsets, or None for the offsets when the disk refused them."""
        try:
            records = [journal.prepare(record) for record in records]
        except OSError as exc:
            self._journal_failed(journal.payloads, exc)
            return records, None
        backlog = self._backlog() if self._trouble is not None else []
        if not backlog and not records:
            return records, []
        while True:
            try:
                ends = journal.append(backlog + records)
                break
            except RecordTooLarge as exc:  # never one kept in memory: they are smaller than the writer's bound
                records.pop(exc.index - len(backlog))
                sys.stderr.write(f"nbmlops: {exc}\n")
            except OSError as exc:
                self._journal_failed(journal.path, exc)
                return records, None
        if self._trouble is not None:
            self._journal_resumed(journal, backlog, ends[: len(backlog)])
        return records, ends[len(backlog) :]

    def _backlog(self) -> list[dict[str, Any]]:
        """What goes into the journal first when it can be written again: the records kept in memory, after
        the start records of their runs that went straight to the store (marked ``again``: delivered carefully)."""
        kept = self._writer.kept_in_memory() if self._writer else []
        waiting = {id(record) for record in kept}
        again = [{**start, "again": True} for start in self._starts_not_journaled.values() if id(start) not in waiting]
        return again + kept

    def _journal_resumed(self, journal: Journal, backlog: list[dict[str, Any]], ends: list[int]) -> None:
        kept = [(record, end) for record, end in zip(backlog, ends) if not record.get("again")]
        if self._writer is not None:
            self._writer.journaled([r for r, _ in kept], [e for _, e in kept], handed_over=self.handoff)
        self._starts_not_journaled.clear()
        with self._trouble_lock:
            self._trouble = None
            self._told.clear()
        sys.stderr.write(
            f"nbmlops: the journal can be written again ({journal.path}); records go to it from now on "
            f"({len(kept)} kept in memory went in first).\n"
        )

    def _journal_failed(self, path: Path, exc: OSError) -> None:
        """Note that the journal cannot be written, and say so once per cause (also from the writer's thread)."""
        cause = exc.strerror or str(exc)
        if exc.errno == errno.EEXIST:
            cause += " (a file stands where the journal folder should be)"
        elif exc.errno == errno.ENOTDIR:
            cause += " (a file stands where a folder of its path should be)"
        with self._trouble_lock:
            self._trouble = cause
            self._retry_at = time.monotonic() + self.JOURNAL_RETRY_S
            if (exc.errno or 0) in self._told:
                return
            self._told.add(exc.errno or 0)
        sys.stderr.write(
            f"nbmlops: cannot write the journal: {exc.filename or path}: {cause}. Tracking goes on: records are "
            f"kept in memory (at most {Writer.MEMORY_RECORDS:,} records, {Writer.MEMORY_BYTES // 2**20} MiB) and "
            "delivered straight to the tracking store while it is reachable; journaling resumes once the disk "
            "can be written.\n"
        )

    def _writer_for(self, in_journal: bool) -> Writer | None:
        """The writer that delivers records: none for journaled records of a hand-off session (the runner
        delivers them), else this process's, made on first use."""
        if self.handoff and in_journal:
            return None
        if self._writer is None:
            path = self._journal.path if self._journal is not None else None
            self._writer = Writer(
                path, on_run=self._run_created, sync=self._sync_journal, addresses=self.addresses,
                capturing=lambda: bool(self._tasks),  # read without the lock: the writer asks holding its own
                in_child=not self._deliver_here,
            )
        return self._writer

    def _sync_journal(self) -> None:
        """Make the journal durable (the writer does before it sends); a disk that fails is noted."""
        journal = self._journal
        if journal is None:
            return
        try:
            journal.sync()
        except OSError as exc:
            self._journal_failed(journal.path, exc)

    def deliver_here(self) -> None:
        """Deliver this session's records from this process rather than through its delivery child
        (:mod:`nbmlops.backend.delivery_process`): for a runner, which delivers its kernels' journals here with
        a warm MLflow client anyway."""
        with self._lock:
            self._deliver_here = True
            if self._writer is not None:
                self._writer.deliverer.in_child = False

    @property
    def delivers_here(self) -> bool:
        """True when this session's records are delivered from this process (see :meth:`deliver_here`)."""
        return self._deliver_here

    @property
    def pending(self) -> int:
        """Records journaled but not yet in the store."""
        return self._writer.pending if self._writer else 0

    @property
    def capturing(self) -> int:
        """Capture tasks (code, data, environment of runs) still under way: their records are not journaled yet."""
        with self._lock:
            return len(self._tasks)

    @property
    def store_error(self) -> str | None:
        """Why the store is not taking records right now, if it is not."""
        return self._writer.last_error if self._writer else None

    @property
    def writer(self) -> Writer | None:
        """The background writer delivering this session's records (None before the first run, or in a hand-off
        session)."""
        return self._writer

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
            writer = self._writer
        if writer is not None:
            writer.poke()
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
        _, not_done = concurrent.futures.wait(tasks, timeout=timeout)
        if not_done:
            raise FlushTimeoutError(self.pending, f"{len(not_done)} capture task(s) still running")
        if self._writer is not None:
            self._writer.flush(timeout)
        if self.handoff:
            self._sync_journal()

    def stored_in(self, store: str, folder: str, digest: str, run_key: str) -> str | None:
        """The key of the run of this session that stores artifact folder ``folder`` with content ``digest`` in
        ``store``, or None (then the run ``run_key`` is to store it, and later runs with that content name it)."""
        with self._lock:
            held = self._shared.get((store, folder))
            if held is not None and held[0] == digest:
                return held[1]
            self._shared[(store, folder)] = (digest, run_key)
            return None

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
        reap_when_tracking()

    def close(self, timeout: float) -> None:
        """End open runs, deliver what can be delivered within ``timeout``, release the journal.

        Records kept in memory only (the journal could not be written) are journaled if the disk takes them
        now; those it does not and the store did not take either are counted on stderr as lost.
        """
        for run in reversed(list(self.runs)):
            run.end("KILLED", reason="the process exited while the run was open")
        with self._lock:
            self._retry_at = 0.0
            journal = self._journal_to_try() if self._trouble is not None else None
            if journal is not None:
                self._journal_records(journal, [])
        try:
            self.flush(timeout)
            delivered = True
        except FlushTimeoutError as exc:
            delivered = False
            sys.stderr.write(f"nbmlops: {exc}\n")
        with self._lock:
            if self._writer is not None:
                self._writer.stop()
                self._tell_losses(self._writer)
            if self._journal is not None:
                with contextlib.suppress(OSError):  # a disk that failed was told; what it holds stays for sync
                    self._journal.sync()
                with contextlib.suppress(OSError):
                    self._journal.close(remove=delivered and not self.handoff)

    def _tell_losses(self, writer: Writer) -> None:
        if writer.in_memory:
            sys.stderr.write(
                f"nbmlops: {writer.in_memory} record(s) kept only in memory are lost: the journal could not be "
                f"written ({self._trouble}) and the tracking store did not take them.\n"
            )
        if writer.dropped:
            kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(writer.dropped.items()))
            sys.stderr.write(
                f"nbmlops: {sum(writer.dropped.values())} record(s) were dropped ({kinds}) because neither the "
                "journal nor the tracking store could take them.\n"
            )


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
        try:
            session.close(timeout)
        except Exception as exc:  # the interpreter is exiting: one line, never a traceback
            sys.stderr.write(f"nbmlops: closing the tracking session failed: {type(exc).__name__}: {exc}\n")


def close_session(timeout: float = 10.0) -> None:
    """Close this process's session now (end open runs, deliver, release the journal).

    The next tracking call starts a new session, with the project root of the working directory then.
    """
    global _session
    with _session_lock:
        session, _session = _session, None
    if session is not None and _session_pid == os.getpid():
        session.close(timeout)
