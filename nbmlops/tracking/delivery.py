"""Moving journaled records into MLflow: the live background writer, a runner's delivery of the journals
handed to it (while they are written), and the replay of old journals."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any

from nbmlops.backend.addresses import StoreAddresses
from nbmlops.backend.delivery_process import StoreLike, delivery_process
from nbmlops.exceptions import FlushTimeoutError, NbmlopsError, RecordRejected, StoreAuthError, StoreUnavailableError
from nbmlops.journal import (
    CLAIM_SUFFIX,
    PAYLOADS_SUFFIX,
    Claim,
    Cursor,
    Damage,
    claimed,
    encode,
    journal_tag,
    list_journals,
    make_durable,
    read_records,
    remove_journal,
    try_lock,
)

__all__ = ["Deliverer", "Handoff", "SyncReport", "Writer", "new_tag", "sync_journals"]

Item = tuple[int, dict[str, Any]]
RunListener = Callable[[str, str, str], None]

class Deliverer:
    """Delivers one journal's records in order and keeps its cursor.

    ``journal_path`` is None for a live writer whose journal could not be made: the cursor then lives in
    memory until :meth:`attach` names the journal. With ``in_child`` the records are applied by this process's
    delivery child (:mod:`nbmlops.backend.delivery_process`), off this process's GIL. ``addresses`` are the stores it may deliver to (by default
    those this process's settings and environment name: see :mod:`nbmlops.backend.addresses`).
    """

    def __init__(
        self,
        journal_path: Path | None,
        on_run: RunListener | None = None,
        addresses: StoreAddresses | None = None,
        in_child: bool = False,
    ) -> None:
        self.journal_path = journal_path
        self.addresses = addresses if addresses is not None else StoreAddresses.from_environment()
        self.cursor = Cursor.load(journal_path) if journal_path is not None else Cursor()
        self.run_stores: dict[str, tuple[str, str | None]] = {}
        self.on_run = on_run
        self.in_child = in_child
        self._touched: dict[int, StoreLike] = {}  # the stores written to by the group being delivered
        self.refused_runs: dict[str, str] = {}  # run key -> why the store refused its start record

    def _open(self, uri: str, artifact_root: str | None, records: list[dict[str, Any]]) -> StoreLike:
        """The store records go to: through this process's delivery child (``in_child``), but for a group
        with a model registration (its staged model may name the user's own classes, known in this process
        only), which is delivered here."""
        if self.in_child and not any(record["t"] == "model" for record in records):
            store: StoreLike = delivery_process().open(self.addresses.real(uri), artifact_root)
        else:
            store = self.addresses.open(uri, artifact_root)
        self._touched.setdefault(id(store), store)
        return store

    def attach(self, journal_path: Path) -> None:
        """Keep the cursor beside ``journal_path``, a journal made after records went without one."""
        self.journal_path = journal_path
        self.cursor.offset = 0

    def note(self, record: dict[str, Any]) -> None:
        """Learn where a run's records go from its start record."""
        if record["t"] == "start":
            self.run_stores[record["run"]] = (record["store"], record.get("artifact_root"))

    def deliver(self, items: list[Item], careful: bool) -> list[str]:
        """Deliver ``items``; advance and save the cursor. Returns why any record was refused for good.

        Raises :class:`StoreUnavailableError` when the store cannot be reached; nothing past the last
        delivered record is marked as delivered then.
        """
        refused: list[str] = []
        for group in _group_by_store(items, self.run_stores):
            uri, artifact_root = self.run_stores.get(group[0][1]["run"], (None, None))
            self._touched.clear()
            try:
                if uri is None:
                    raise RecordRejected(f"run {group[0][1]['run']} has no start record in this journal")
                self._send(uri, artifact_root, group, careful)
            except RecordRejected:
                refused += self._send_one_by_one(uri, artifact_root, group)
            for store in self._touched.values():
                store.settle()  # durable in the store before the cursor moves
            self.cursor.offset = group[-1][0]
            self._save_cursor()
        return refused

    def _save_cursor(self) -> None:
        if self.journal_path is None:
            return
        try:
            self.cursor.save(self.journal_path)
        except OSError:  # a full disk: a replay starts from the last cursor saved, and finds its runs by key
            pass

    def _send(self, uri: str, artifact_root: str | None, group: list[Item], careful: bool) -> None:
        known = set(self.cursor.runs)
        records = [self._located(record) for _, record in group]
        store = self._open(uri, artifact_root, records)
        # a start record journaled again (after records went without a journal) may be delivered already
        careful = careful or any(record.get("again") for record in records)
        store.deliver(records, self.cursor.runs, careful)
        if self.on_run:
            for key in self.cursor.runs.keys() - known:
                start = next(r for _, r in group if r["t"] == "start" and r["run"] == key)
                try:
                    self.on_run(key, self.cursor.runs[key], store.experiment_id(start["experiment"]))
                except Exception as exc:  # a display that cannot update must not hold up delivery
                    sys.stderr.write(f"nbmlops: could not update the run summary: {exc}\n")

    def _send_one_by_one(self, uri: str | None, artifact_root: str | None, group: list[Item]) -> list[str]:
        """Send each record alone; set aside those the store refuses, and the later records of a run whose start
        it refused (such as a run the user may not create in its experiment: said once, for the whole run)."""
        refused = []
        for offset, record in group:
            key = record["run"]
            if key in self.refused_runs:
                _keep_refused(self.journal_path, record, f"the start record of its run was refused: {self.refused_runs[key]}")
                continue
            try:
                if uri is None:
                    raise RecordRejected(f"run {key} has no start record in this journal")
                self._send(uri, artifact_root, [(offset, record)], careful=True)
            except RecordRejected as exc:
                reason = str(exc).splitlines()[0][:500]
                if record["t"] == "start":
                    self.refused_runs[key] = reason
                    reason += "; the run's later records are set aside with it"
                refused.append(f"{record['t']} record of run {key}: {reason}")
                _keep_refused(self.journal_path, record, str(exc))
        return refused

    def _located(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record``, naming the absolute path of a payload it keeps beside the journal."""
        name = record.get("file") if record["t"] == "artifact" else None
        if name is None:
            return record
        parts = PurePosixPath(name).parts
        if self.journal_path is None or len(parts) != 2 or not parts[0].endswith(PAYLOADS_SUFFIX) or ".." in parts:
            raise RecordRejected(f"the payload {name!r} of artifact {record['path']!r} is not beside the journal")
        return {**record, "file": str(self.journal_path.parent.joinpath(*parts))}


def _group_by_store(items: list[Item], run_stores: dict[str, tuple[str, str | None]]) -> Iterable[list[Item]]:
    group: list[Item] = []
    for item in items:
        if group and run_stores.get(item[1]["run"]) != run_stores.get(group[-1][1]["run"]):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _keep_refused(journal_path: Path | None, record: dict[str, Any], reason: str) -> None:
    """Refused records are kept beside the journals (a payload file moved to ``refused/``), never silently
    dropped; a journal that cannot be written keeps nothing (the refusal is on stderr)."""
    if journal_path is None:
        return
    folder = journal_path.parent
    if record["t"] == "artifact" and record.get("file"):
        kept = folder / "refused" / f"{journal_path.stem}-{PurePosixPath(record['file']).name}"
        try:
            kept.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(folder / record["file"], kept)
            record = {**record, "file": str(kept)}
        except OSError:  # gone or damaged on disk (the likely reason it was refused): the record says where it was
            record = {**record, "file": str(folder / record["file"])}
    try:
        with open(folder / "refused.jsonl", "a") as fh:
            fh.write(json.dumps({"journal": journal_path.name, "reason": reason[:2000], "record": record}) + "\n")
    except OSError:
        pass


@dataclass(eq=False)
class _Waiting:
    """A record waiting for the store: where it ends in the journal, and its size if it is kept in memory only."""

    end: int
    record: dict[str, Any]
    weight: int | None = None


class Writer:
    """This process's background writer: drains the live journal into the store as records arrive, through the
    process's delivery child (MLflow's work runs there, on another core than the user's cells), or with
    ``in_child=False`` from this process.

    Records the journal could not take (a full disk; ``in_journal=False`` in :meth:`submit`) wait in memory
    only, within bounds: past :attr:`MEMORY_RECORDS` of them the oldest are dropped, metrics first, and past
    :attr:`MEMORY_BYTES` the largest, down to 90% of the bound; a run's start and end and a model
    registration are never dropped. :attr:`dropped` counts what was, by record kind.
    """

    #: how long the writer lets records gather before delivering them (unless a flush is waiting); then, at
    #: most as long again while capture work is under way (``capturing``), so a run's records go together
    LINGER_S = 0.025
    #: how many records may wait in memory only (the journal could not take them), and how many bytes
    MEMORY_RECORDS = 10_000
    MEMORY_BYTES = 64 * 1024 * 1024
    _NEVER_DROPPED = frozenset({"start", "end", "model"})

    def __init__(
        self,
        journal_path: Path | None,
        on_run: RunListener | None = None,
        sync: Callable[[], None] | None = None,
        addresses: StoreAddresses | None = None,
        capturing: Callable[[], bool] | None = None,
        in_child: bool = True,
    ) -> None:
        self.deliverer = Deliverer(journal_path, on_run, addresses, in_child=in_child)
        self._sync = sync
        self._capturing = capturing
        self._pending: deque[_Waiting] = deque()
        self._sending = 0  # the first records of _pending, being delivered
        self._in_memory = 0  # records kept in memory only, and their bytes
        self._in_memory_bytes = 0
        self.dropped: dict[str, int] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._careful = False
        self._wake = False
        self.last_error: str | None = None
        #: wall-clock times (``time.time()``) of the last delivery that went through, and of the last that failed
        self.delivered_at: float | None = None
        self.failed_at: float | None = None
        self._warned = False
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="nbmlops-writer", daemon=True)
        self._thread.start()

    def submit(self, items: list[Item], in_journal: bool = True) -> None:
        """Queue records that are already in the journal, or (``in_journal=False``) that the journal could
        not take: those are kept in memory only, within the bounds, and must be JSON (see
        :func:`~nbmlops.journal.inline`)."""
        weights = [None if in_journal else len(encode(record)) for _, record in items]
        with self._cond:
            for (end, record), weight in zip(items, weights):
                self.deliverer.note(record)
                self._pending.append(_Waiting(end, record, weight))
                if weight is not None:
                    self._in_memory += 1
                    self._in_memory_bytes += weight
            if not in_journal:
                self._shed()
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """How many records are waiting for the store."""
        with self._cond:
            return len(self._pending)

    @property
    def in_memory(self) -> int:
        """How many of the waiting records are kept in memory only."""
        with self._cond:
            return self._in_memory

    def attach(self, journal_path: Path) -> None:
        """Keep the delivery cursor beside ``journal_path``, a journal made after records went without one."""
        with self._cond:
            self.deliverer.attach(journal_path)

    def poke(self) -> None:
        """Look again whether the capture work it waits for is done."""
        with self._cond:
            self._cond.notify_all()

    def kept_in_memory(self) -> list[dict[str, Any]]:
        """The waiting records kept in memory only, oldest first."""
        with self._cond:
            return [waiting.record for waiting in self._pending if waiting.weight is not None]

    def journaled(self, records: list[dict[str, Any]], ends: list[int], handed_over: bool = False) -> None:
        """``records`` (from :meth:`kept_in_memory`) are in the journal now, ending at ``ends``.

        With ``handed_over``, another process delivers them from there: they leave this writer (but for
        those it is sending right now).
        """
        where = {id(record): end for record, end in zip(records, ends)}
        with self._cond:
            kept: deque[_Waiting] = deque()
            for index, waiting in enumerate(self._pending):
                end = where.get(id(waiting.record))
                if end is not None and waiting.weight is not None:
                    self._in_memory -= 1
                    self._in_memory_bytes -= waiting.weight
                    waiting.weight, waiting.end = None, end
                    if handed_over and index >= self._sending:
                        continue
                kept.append(waiting)
            self._pending = kept
            self._cond.notify_all()

    def _shed(self) -> None:
        """Keep the records held in memory only within bounds (see the class)."""
        if self._in_memory <= self.MEMORY_RECORDS and self._in_memory_bytes <= self.MEMORY_BYTES:
            return
        count, size = self._in_memory, self._in_memory_bytes
        fewer, smaller = int(self.MEMORY_RECORDS * 0.9), int(self.MEMORY_BYTES * 0.9)
        droppable = [
            waiting for waiting in islice(self._pending, self._sending, None)
            if waiting.weight is not None and waiting.record["t"] not in self._NEVER_DROPPED
        ]
        doomed: set[int] = set()
        if size > self.MEMORY_BYTES:
            for waiting in sorted(droppable, key=lambda w: -(w.weight or 0)):
                if size <= smaller:
                    break
                doomed.add(id(waiting))
                count, size = count - 1, size - (waiting.weight or 0)
        if count > self.MEMORY_RECORDS:
            for metrics in (True, False):
                for waiting in droppable:
                    if count <= fewer:
                        break
                    if id(waiting) not in doomed and (waiting.record["t"] == "metrics") == metrics:
                        doomed.add(id(waiting))
                        count, size = count - 1, size - (waiting.weight or 0)
        if not doomed:
            return
        if not self.dropped:
            sys.stderr.write(
                "nbmlops: neither the journal nor the tracking store can take records now, and the memory for them "
                f"is bounded ({self.MEMORY_RECORDS:,} records, {self.MEMORY_BYTES // 2**20} MiB): the oldest records "
                "are dropped, metrics first (the largest, past the size bound); how many is said at exit.\n"
            )
        for waiting in self._pending:
            if id(waiting) in doomed:
                kind = waiting.record["t"]
                self.dropped[kind] = self.dropped.get(kind, 0) + 1
        self._pending = deque(waiting for waiting in self._pending if id(waiting) not in doomed)
        self._in_memory, self._in_memory_bytes = count, size

    def flush(self, timeout: float | None) -> None:
        """Block until everything queued so far is delivered, or raise :class:`FlushTimeoutError`.

        Raises it at once, without waiting, while the tracking server refuses the credentials
        (:class:`StoreAuthError`): waiting would not deliver anything.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            while self._pending or self._busy:
                refused = getattr(self, "_auth_error", None)
                if refused is not None and self.last_error == refused:
                    raise FlushTimeoutError(len(self._pending), refused)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    count = len(self._pending)
                    raise FlushTimeoutError(count, self.last_error or "still delivering")
                self._cond.wait(remaining if remaining is None else min(remaining, 0.5))

    def stop(self) -> None:
        """End the background thread; records still queued stay in the journal for `nbmlops sync` (those
        kept in memory only are lost: :attr:`in_memory` says how many)."""
        with self._cond:
            self._stopped = True
            self._wake = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                self._cond.wait_for(lambda: self._wake, timeout=self.LINGER_S)
                if self._capturing is not None and not self._wake:  # a run's capture records join its others
                    self._cond.wait_for(self._gathered, timeout=self.LINGER_S)
                self._wake = False
                items = [(waiting.end, waiting.record) for waiting in self._pending]
                self._sending = len(items)
                self._busy = True
            try:
                if self._sync is not None:
                    self._sync()  # records are durable on disk before any of them is sent
                refused = self.deliverer.deliver(items, careful=self._careful)
            except StoreUnavailableError as exc:
                self._outage(exc, len(items))
                with self._cond:
                    self._busy = False
                    self._sending = 0
                    self._cond.notify_all()
                    self._wake = False
                    self._cond.wait_for(lambda: self._wake, timeout=backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            except Exception as exc:  # a bug of ours must never take the kernel down: keep the records
                self._outage(exc, len(items))
                with self._cond:
                    self._busy = False
                    self._sending = 0
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._wake, timeout=30.0)
                continue
            for reason in refused:
                sys.stderr.write(f"nbmlops: the tracking store refused a record and it was set aside: {reason}\n")
            backoff = 0.5
            with self._cond:
                for _ in items:
                    waiting = self._pending.popleft()
                    if waiting.weight is not None:
                        self._in_memory -= 1
                        self._in_memory_bytes -= waiting.weight
                self._sending = 0
                self._busy = False
                self._careful = False
                if self.last_error is not None:
                    sys.stderr.write("nbmlops: the tracking store is reachable again; waiting records delivered.\n")
                self.last_error = None
                self.delivered_at = time.time()
                self._warned = False
                self._cond.notify_all()

    def _gathered(self) -> bool:
        """True once a flush waits or no capture work is under way (called holding the condition)."""
        return self._wake or not (self._capturing is not None and self._capturing())

    def _outage(self, exc: Exception, count: int) -> None:
        """Note a failed delivery; warn once (per outage) on stderr.

        A :class:`StoreUnavailableError` comes after the store has not answered for a whole budget
        (``call_timeout``), so shorter blips never warn. A refusal of the credentials is its own message,
        and makes :meth:`flush` return at once until a delivery succeeds.
        """
        self._careful = True
        self.last_error = str(exc)
        self.failed_at = time.time()
        refused_before = getattr(self, "_auth_error", None) is not None
        self._auth_error = self.last_error if isinstance(exc, StoreAuthError) else None
        if isinstance(exc, StoreAuthError):
            if not (self._warned and refused_before):
                sys.stderr.write(f"nbmlops: {exc}\nnbmlops: {self._waiting(count)}.\n")
            self._warned = True
            return
        if self._warned:
            return
        self._warned = True
        sys.stderr.write(
            f"nbmlops: {exc}\nnbmlops: {self._waiting(count)}; they are delivered when the store is back"
            + (", or by `nbmlops sync`.\n" if not self._in_memory else ".\n")
        )

    def _waiting(self, count: int) -> str:
        """How many records wait, and where: the journal, or (the disk refused them) memory only."""
        if self._in_memory:
            return (f"{count} record(s) are waiting, {self._in_memory} of them in memory only (the journal could "
                    "not take them: they are lost if this process ends before the store is back)")
        return f"{count} record(s) are waiting, safe in the local journal"


class Handoff:
    """A runner's delivery of the journals that processes it started (a headless kernel, a worker) write
    under its tag in ``journal_dirs``.

    A thread delivers their records while they are being written: each complete record, in order, with
    the journal's cursor, as the process's own writer would. ``store`` (URI, artifact root) is opened at
    once, so that MLflow is ready when the first records come. :meth:`finish`, once those processes have
    ended, delivers the rest as :func:`sync_journals` does (from the same cursor: every record exactly
    once) and releases the claims. Until then nobody else delivers those journals; if the runner dies,
    its claims go with it and any sync takes them over. Give :attr:`tag` to the processes
    (:data:`~nbmlops.tracking.session.HANDOFF_TAG_ENV`). The journals' stores are found among ``store``'s URI
    and ``addresses`` (by default those this process's settings and environment name).
    """

    #: seconds between looks at the journals when nothing new was found
    POLL_S = 0.05

    def __init__(
        self,
        journal_dirs: Iterable[Path],
        tag: str | None = None,
        store: tuple[str, str | None] | None = None,
        addresses: StoreAddresses | None = None,
        on_run: RunListener | None = None,
    ) -> None:
        self.journal_dirs = sorted(set(journal_dirs))
        self.tag = tag or new_tag()
        self._on_run = on_run  # told (key, run id, experiment id) of each run it delivers the start of
        self._claims = [Claim(directory, self.tag) for directory in self.journal_dirs]
        self._store = store
        if addresses is None:
            addresses = StoreAddresses.from_environment(*([store[0]] if store is not None else []))
        elif store is not None:
            addresses.add(store[0])
        self.addresses = addresses
        self._tails: dict[Path, tuple[Deliverer, int]] = {}  # journal -> its deliverer, the offset read up to
        self._careful = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbmlops-handoff", daemon=True)
        self._thread.start()

    def finish(self, reason: str) -> SyncReport:
        """Stop following the journals, deliver what is left of them, release the claims.

        A journal whose process still lives (a kernel's child that outlived it) is left for ``nbmlops sync``
        and named in the report's ``busy``.
        """
        self._stopped.set()
        self._thread.join()
        report = SyncReport()
        try:
            for path in self._journals():
                _sync_if_free(path, reason, report, self.addresses)
        finally:
            self._release()
        return report

    def abandon(self) -> None:
        """Stop following the journals and release the claims; what is left waits for ``nbmlops sync``."""
        self._stopped.set()
        self._thread.join()
        self._release()

    def _release(self) -> None:
        for claim in self._claims:
            claim.release()

    def _journals(self) -> list[Path]:
        """The journals under this tag, in the order they were started (a run's parent first)."""
        found = [p for d in self.journal_dirs for p in list_journals(d) if journal_tag(p) == self.tag]
        return sorted(found, key=lambda p: p.name)

    def _loop(self) -> None:
        if self._store is not None:
            try:
                # connect (import mlflow, make the schema) before records come
                _ = self.addresses.open(self.addresses.add(self._store[0]), self._store[1]).client
            except Exception:  # an unreachable store: found again, and reported, by the deliveries
                pass
        backoff = self.POLL_S
        while not self._stopped.wait(backoff):
            try:
                found = self._deliver_new()
            except StoreUnavailableError:
                self._careful = True  # a half-delivered group: look runs up by key when it is retried
                backoff = min(max(backoff * 2, 0.5), 5.0)
                continue
            except Exception as exc:  # a bug of ours: stop following; finish() delivers from the cursor
                sys.stderr.write(f"nbmlops: delivering while the notebook runs stopped ({type(exc).__name__}: {exc})\n")
                return
            backoff = 0.0 if found else self.POLL_S

    def _deliver_new(self) -> bool:
        """Deliver the complete records written since the last look; True when there were any."""
        found = False
        for path in self._journals():
            deliverer, read = self._tails.get(path) or (Deliverer(path, self._on_run, addresses=self.addresses), 0)
            items: list[Item] = []
            for end, entry in read_records(path, min(read, deliverer.cursor.offset)):
                if isinstance(entry, Damage):
                    break  # the writer may be mid-record; finish() reports real damage
                if end > read:
                    deliverer.note(entry)
                    read = end
                if end > deliverer.cursor.offset:
                    items.append((end, entry))
            self._tails[path] = (deliverer, read)
            if not items:
                continue
            found = True
            make_durable(path)  # records are on disk before any of them is sent
            for refused in deliverer.deliver(items, careful=self._careful):
                sys.stderr.write(f"nbmlops: the tracking store refused a record and it was set aside: {refused}\n")
            self._careful = False
        return found


def new_tag() -> str:
    """A fresh hand-off tag."""
    return uuid.uuid4().hex


@dataclass
class SyncReport:
    """What :func:`sync_journals` did."""

    delivered: int = 0
    journals: int = 0
    runs_failed: list[str] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # local run key -> MLflow run id, for every run seen

    @property
    def ok(self) -> bool:
        """True when nothing is left undelivered for a reason other than a live owner: no record damaged,
        refused by the store, or left for a store that could not be reached."""
        return not (self.errors or self.damage or self.refused)

    def problems(self) -> list[str]:
        """One line for each record not delivered: a damaged one (journal and byte offset), one the store
        refused (its kind and run), the records left for a store that could not be reached (journal, offset)."""
        return (
            [f"damaged: {damage}" for damage in self.damage]
            + [f"refused by the store: {reason} (kept in refused.jsonl beside the journals)" for reason in self.refused]
            + [f"not delivered: {error}" for error in self.errors]
        )


def sync_journals(
    journal_dir: Path,
    reason: str = "its process ended without finishing the run",
    addresses: StoreAddresses | None = None,
) -> SyncReport:
    """Replay every journal whose process is gone, exactly once, then remove it, to the stores ``addresses``
    know (by default those this process's settings and environment name).

    Runs those journals started but never ended are marked FAILED with ``reason``. Journals still
    locked by a live process are left to that process's writer, and journals a live runner claims
    (see :class:`Handoff`) to that runner.
    """
    report = SyncReport()
    addresses = addresses if addresses is not None else StoreAddresses.from_environment()
    for path in list_journals(journal_dir):
        tag = journal_tag(path)
        if tag is not None and claimed(journal_dir, tag):
            report.busy.append(path.name)
            continue
        if _sync_if_free(path, reason, report, addresses) and tag is not None:  # the claim its runner left when it died
            (journal_dir / f"{tag}{CLAIM_SUFFIX}").unlink(missing_ok=True)
    return report


def _sync_if_free(path: Path, reason: str, report: SyncReport, addresses: StoreAddresses) -> bool:
    """Deliver the journal at ``path`` unless another process holds it (then it is listed as busy)."""
    fd = try_lock(path)
    if fd is None:
        report.busy.append(path.name)
        return False
    try:
        _sync_one(path, fd, reason, report, addresses)
    finally:
        os.close(fd)
    return True


def _sync_one(path: Path, fd: int, reason: str, report: SyncReport, addresses: StoreAddresses) -> None:
    deliverer = Deliverer(path, addresses=addresses)
    start = deliverer.cursor.offset
    items: list[Item] = []
    started: dict[str, dict[str, Any]] = {}
    ended: set[str] = set()
    end = 0
    for end, entry in read_records(path):
        if isinstance(entry, Damage):
            report.damage.append(entry)
            continue
        deliverer.note(entry)
        if entry["t"] == "start":
            started[entry["run"]] = entry
        elif entry["t"] == "end":
            ended.add(entry["run"])
        if end > start:
            items.append((end, entry))
    now = int(time.time() * 1000)
    closing: list[dict[str, Any]] = []
    for key in started.keys() - ended:
        closing.append({"t": "tags", "run": key, "tags": {"nbmlops.failure": "kernel_died", "nbmlops.failure_reason": reason}})
        closing.append({"t": "end", "run": key, "status": "FAILED", "ts": now})
        report.runs_failed.append(key)
    if closing:
        _append_closing(fd, closing)
        for record in closing:
            end += len(encode(record))
            items.append((end, record))
    try:
        report.refused += deliverer.deliver(items, careful=True)
    except (NbmlopsError, OSError) as exc:
        left = [record for offset, record in items if offset > deliverer.cursor.offset]
        runs = {record["run"] for record in left}
        report.errors.append(
            f"{path} from byte {deliverer.cursor.offset}: {len(left)} record(s) of {len(runs)} run(s): {exc}"
        )
        return
    report.runs.update(deliverer.cursor.runs)
    report.delivered += len(items)
    report.journals += 1
    if any(d.path == str(path) for d in report.damage):
        path.rename(path.with_suffix(".damaged"))  # kept for inspection; its valid records are delivered
    remove_journal(path)


def _append_closing(fd: int, closing: list[dict[str, Any]]) -> None:
    """Journal the records that close a dead process's runs; on a full disk they are delivered all the same
    (and made again by the next sync if they are not)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(b"".join(encode(r) for r in closing))
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
