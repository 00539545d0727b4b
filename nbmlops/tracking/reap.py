"""Runs left RUNNING by a process that died (SIGKILL, out of memory, power loss), on this machine or another,
are marked FAILED.

On this host a run's process is looked up by pid and start time: a live one's runs are never failed, a dead
one's are (``nbmlops.failure=kernel_died``) at once by ``nbmlops runs reap``, after ``heartbeat_timeout`` by a
new session's reap. A run of another host (or of an unknown one) fails when
its last heartbeat (see :mod:`nbmlops.tracking.heartbeat`), or its start when it has none, is older than
``heartbeat_timeout`` (``nbmlops.failure=heartbeat_lost``). If its process was alive after all (a machine cut
off from the store) and later delivers the run's own end, that end replaces FAILED.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from nbmlops.backend.addresses import StoreAddresses
from nbmlops.backend.store import RecordRejected, open_store
from nbmlops.config import Settings
from nbmlops.exceptions import StoreUnavailableError
from nbmlops.tracking.delivery import SyncReport, sync_journals
from nbmlops.tracking.heartbeat import HEARTBEAT_TAG, last_sign_of_life, process_start_time, when_tracking

__all__ = ["ReapReport", "Reaped", "reap", "reap_runs", "reap_when_tracking"]

DIED = "the process that ran it died (killed, out of memory or crashed)"


@dataclass(frozen=True)
class Reaped:
    """A run :func:`reap_runs` marked FAILED: ``failure`` is ``kernel_died`` or ``heartbeat_lost``."""

    run_id: str
    name: str
    failure: str
    reason: str


@dataclass
class ReapReport:
    """What :func:`reap` did: the journal replay, and the runs found RUNNING in the store for no one."""

    sync: SyncReport
    failed: list[Reaped] = field(default_factory=list)


def reap(settings: Settings) -> ReapReport:
    """Replay orphaned journals, then fail the store's RUNNING runs whose process is gone (:func:`reap_runs`)."""
    addresses = StoreAddresses.from_environment(settings.tracking_uri)
    report = ReapReport(sync=sync_journals(settings.journal_dir, DIED, addresses))
    report.failed = reap_runs(settings)
    return report


def reap_runs(settings: Settings, patient: bool = False) -> list[Reaped]:
    """Fail the tracking store's RUNNING nbmlops runs of a dead process on this host, and those of any other
    host whose last sign of life is older than ``settings.heartbeat_timeout`` seconds.

    ``patient`` (a new session's reap) fails a run of a dead process on this host only once it is that silent
    too: the records of a process that has just ended, its end among them, may still be on their way.
    """
    store = open_store(settings.tracking_uri, settings.artifact_root)
    here, timeout = socket.gethostname(), settings.heartbeat_timeout
    reaped = []
    for run_id, start_ms, tags in store.running_runs():
        host = tags.get("nbmlops.host", "")
        silent = _silent_for(start_ms, tags) > timeout
        still = _still_silent(timeout) if silent else None
        if host == here:
            pid = tags.get("nbmlops.pid", "")
            if _process_alive(pid, tags.get("nbmlops.process_start", "")) or (patient and not silent):
                continue
            failure, reason = "kernel_died", f"{DIED}: process {pid or '?'} is gone"
        elif silent:
            failure, reason = "heartbeat_lost", _silence(host, start_ms, tags, timeout)
        else:
            continue
        try:
            if store.fail_run(run_id, failure, reason, still):
                reaped.append(Reaped(run_id, tags.get("mlflow.runName", ""), failure, reason))
        except RecordRejected:
            continue  # deleted meanwhile
    return reaped


def reap_when_tracking() -> None:
    """Once this process starts its first run, reap the runs of its tracking store in a daemon thread.

    A new session's check for runs of dead machines: it waits for the first run because MLflow is loaded
    then anyway (a kernel that tracks nothing never loads it), and it never holds up a cell. It reports on
    stderr what it failed; an unreachable store is left to the writer's own warning.
    """
    when_tracking(_reap_quietly)


def _reap_quietly(settings: Settings) -> None:
    try:
        reaped = reap_runs(settings, patient=True)
    except StoreUnavailableError:
        return
    except Exception as exc:
        sys.stderr.write(f"nbmlops: could not look for runs of dead processes: {type(exc).__name__}: {exc}\n")
        return
    if reaped:
        kinds = ", ".join(sorted({r.failure for r in reaped}))
        sys.stderr.write(f"nbmlops: marked {len(reaped)} run(s) of dead processes or machines FAILED ({kinds}).\n")


def _silent_for(start_ms: int, tags: dict[str, str]) -> float:
    """Seconds since the run's last beat (or its start)."""
    return time.time() - last_sign_of_life(start_ms, tags)


def _still_silent(timeout: float) -> Callable[[int, dict[str, str]], bool]:
    return lambda start_ms, tags: _silent_for(start_ms, tags) > timeout


def _silence(host: str, start_ms: int, tags: dict[str, str], timeout: float) -> str:
    last = last_sign_of_life(start_ms, tags)
    when = datetime.fromtimestamp(last, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    what = "heartbeat" if HEARTBEAT_TAG in tags else "heartbeat since its start"
    return (
        f"no {what} from host {host or '?'} for {time.time() - last:.0f} s (last at {when}; "
        f"heartbeat_timeout {timeout:g} s): its process or machine is presumed dead"
    )


def _process_alive(pid: str, started: str) -> bool:
    """True when process ``pid`` still runs and is the same process (its start time matches)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not started or process_start_time(pid) in (None, started)
