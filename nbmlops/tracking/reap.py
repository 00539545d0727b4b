"""Runs left RUNNING by a process that died (SIGKILL, out of memory, power loss) are marked FAILED."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nbmlops.config import Settings
from nbmlops.tracking.delivery import SyncReport, register_uri, sync_journals
from nbmlops.tracking.run import process_start_time
from nbmlops.tracking.store import open_store

__all__ = ["ReapReport", "reap"]


@dataclass
class ReapReport:
    """What :func:`reap` did: the journal replay, and the runs found RUNNING in the store for no one."""

    sync: SyncReport
    failed: list[str] = field(default_factory=list)


def reap(settings: Settings) -> ReapReport:
    """Replay orphaned journals, then fail the store's RUNNING runs of this host whose process is gone."""
    reason = "the process that ran it died (killed, out of memory or crashed)"
    report = ReapReport(sync=sync_journals(settings.journal_dir, reason))
    register_uri(settings.tracking_uri)
    store = open_store(settings.tracking_uri, settings.artifact_root)
    for run_id, tags in store.running_runs(socket.gethostname()):
        if not _process_alive(tags.get("nbmlops.pid", ""), tags.get("nbmlops.process_start", "")):
            pid = tags.get("nbmlops.pid", "?")
            store.fail_run(run_id, f"{reason}: process {pid} is gone")
            report.failed.append(run_id)
    return report


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
