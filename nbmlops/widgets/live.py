"""Following runs in progress: what a poll asks the store, and the timer that polls while something runs.

A poll reads only the RUNNING runs and counts: the runs the table pages over (new or deleted runs change it)
and, for each sweep in progress, its finished children against the sweep's size. The current page is read
again only when something changed (a run started, ended or appeared) or a run on it is still running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from nbmlops.tracking import search
from nbmlops.tracking.search import RunRow
from nbmlops.widgets.runs import RunsView

__all__ = ["Activity", "Live", "SweepProgress", "Ticker"]

RUNNING_FILTER = "attributes.status = 'RUNNING'"
_MAX_RUNNING = 500


@dataclass(frozen=True)
class SweepProgress:
    """A sweep in progress: ``finished`` of its ``size`` runs have ended."""

    run_id: str
    name: str
    finished: int
    size: int


@dataclass(frozen=True)
class Activity:
    """What one poll found: the runs in progress, the sweeps among them, whether the page was read again."""

    running: tuple[RunRow, ...]
    sweeps: tuple[SweepProgress, ...]
    changed: bool

    @property
    def active(self) -> bool:
        return bool(self.running)

    def progress(self) -> tuple[int, int]:
        """``(finished, size)`` summed over the sweeps in progress."""
        return sum(s.finished for s in self.sweeps), sum(s.size for s in self.sweeps)

    def describe(self) -> str:
        """``2 running; sweep grid: 3/8 finished`` or ``nothing running``."""
        if not self.running:
            return "nothing running"
        parts = [f"{len(self.running)} running"]
        parts += [f"{s.name}: {s.finished}/{s.size} finished" for s in self.sweeps]
        return "; ".join(parts)


class Live:
    """Polls the store for the runs of a :class:`~nbmlops.widgets.runs.RunsView` that are in progress."""

    def __init__(self, runs: RunsView) -> None:
        self.runs = runs
        self._running: frozenset[str] | None = None

    def poll(self) -> Activity:
        """Ask what is running and whether the filtered count moved; read the page again if it must."""
        view = self.runs
        running = search.search_page(view.tracking_uri, view.experiment_ids, RUNNING_FILTER,
                                     ["attributes.start_time DESC"], 0, _MAX_RUNNING).rows
        view.stats["runs_read"] += len(running)
        ids = frozenset(r.run_id for r in running)
        total = view.count(view.page_filter)
        on_page = {r.run_id for r in view.all_rows()}
        changed = total != view.total or (self._running is not None and ids != self._running) or bool(ids & on_page)
        self._running = ids
        if changed:
            if total != view.total:
                view.forget_cells()
            view.load()
        sweeps = []
        for run in running:
            if run.tags.get("nbmlops.kind") != "sweep":
                continue
            finished = view.count(f"tags.`mlflow.parentRunId` = '{run.run_id}' and attributes.status != 'RUNNING'")
            size_tag = run.tags.get("nbmlops.sweep.size", "")
            size = int(size_tag) if size_tag.isdigit() else 0
            sweeps.append(SweepProgress(run.run_id, run.name, finished, max(size, finished)))
        return Activity(running, tuple(sweeps), changed)


class Ticker:
    """Calls ``tick`` every ``interval`` seconds on a daemon thread for as long as it returns True.

    :meth:`start` does nothing when it is already ticking; :meth:`stop` ends it and waits for the thread.
    """

    def __init__(self, tick: Callable[[], bool], interval: float, name: str = "nbmlops-live") -> None:
        self.tick = tick
        self.interval = interval
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.tick():
                break
