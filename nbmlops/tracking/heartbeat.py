"""How a run shows that its process is alive, so that a run of a dead machine does not stay RUNNING.

While a process has runs open, one daemon thread sets the tag ``nbmlops.heartbeat`` (the unix time of
the beat, in seconds) on all of them every ``heartbeat_interval`` seconds, as one journal write per
session: the beats travel like every record (a headless kernel's through its runner; an offline
process's later), wake the background writer once per interval, and stop before a run's end record.
On its own host a run's process is also known by its pid and start time (:func:`process_start_time`).
``nbmlops runs reap`` judges a run from its last sign of life (:func:`last_sign_of_life`).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.config import Settings
    from nbmlops.tracking.run import Run

__all__ = ["HEARTBEAT_TAG", "beat_for", "last_sign_of_life", "process_start_time", "stop_beating", "when_tracking"]

#: the tag a run's process beats: the unix time (seconds) of its last beat
HEARTBEAT_TAG = "nbmlops.heartbeat"


def process_start_time(pid: int | str = "self") -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot), to tell reused pids apart."""
    if pid == "self":
        return _own_start_time(os.getpid())
    return _start_time(pid)


@functools.lru_cache(maxsize=4)
def _own_start_time(pid: int) -> str | None:
    return _start_time(pid)


def _start_time(pid: int | str) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def last_sign_of_life(start_ms: int, tags: Mapping[str, str]) -> float:
    """The unix time of a run's last beat, or of its start when it has not beaten yet."""
    try:
        return float(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return start_ms / 1000


class _Beater:
    """This process's heartbeat: a daemon thread that lives while runs are open (and :attr:`IDLE_S` after)."""

    #: seconds the thread waits for a new run once none is open, before it ends
    IDLE_S = 60.0

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._first: Settings | None = None  # the settings of the first run this process started
        self._waiting: list[Callable[[Settings], None]] = []
        self._warned = False

    def add(self, run: Run) -> None:
        with self._cond:
            self._runs[run.key] = run
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="nbmlops-heartbeat", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()  # a shorter interval takes effect now
            waiting, self._waiting = self._waiting, []
            if self._first is None:
                self._first = run.settings
        for fn in waiting:
            _in_thread(fn, run.settings)

    def remove(self, run: Run) -> None:
        """Stop beating for ``run``; once this returns, no beat of it is written any more."""
        with self._cond:
            if self._runs.pop(run.key, None) is not None and not self._runs:
                self._cond.notify()

    def when_tracking(self, fn: Callable[[Settings], None]) -> None:
        with self._cond:
            first = self._first
            if first is None:
                self._waiting.append(fn)
        if first is not None:
            _in_thread(fn, first)

    def _loop(self) -> None:
        last = time.monotonic()
        with self._cond:
            while True:
                if not self._runs:  # the next tracked cell comes soon: a thread started per run costs more
                    if not self._cond.wait_for(lambda: bool(self._runs), timeout=self.IDLE_S):
                        break
                    last = time.monotonic()
                    continue
                interval = min(run.settings.heartbeat_interval for run in self._runs.values())
                remaining = last + interval - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                last = time.monotonic()
                self._beat(list(self._runs.values()))  # under the lock: an ending run waits for this write
            self._thread = None

    def _beat(self, runs: list[Run]) -> None:
        now = str(int(time.time()))
        sessions: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
        for run in runs:
            records = sessions.setdefault(id(run.session), (run.session, []))[1]
            records.append({"t": "tags", "run": run.key, "tags": {HEARTBEAT_TAG: now}})
        for session, records in sessions.values():
            try:
                session.emit(records)
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    sys.stderr.write(f"nbmlops: could not record a heartbeat: {type(exc).__name__}: {exc}\n")


def _in_thread(fn: Callable[[Settings], None], settings: Settings) -> None:
    threading.Thread(target=fn, args=(settings,), name="nbmlops-when-tracking", daemon=True).start()


_beater = _Beater()


def _forget_after_fork() -> None:
    global _beater
    _beater = _Beater()  # a forked child has none of its parent's runs, nor its thread


os.register_at_fork(after_in_child=_forget_after_fork)


def beat_for(run: Run) -> None:
    """Beat for ``run`` (started, its start record journaled) until :func:`stop_beating`."""
    _beater.add(run)


def stop_beating(run: Run) -> None:
    """No more beats for ``run``: call it before journaling the run's end."""
    _beater.remove(run)


def when_tracking(fn: Callable[[Settings], None]) -> None:
    """Call ``fn(settings of the run)`` in a daemon thread once this process starts its first run (at once
    if it has): work that needs the tracking store is done then, when MLflow is loaded anyway."""
    _beater.when_tracking(fn)
