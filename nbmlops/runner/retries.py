"""One live run per combination of a sweep, however often Dask ran it.

Dask runs a task again when the worker running it dies (up to ``distributed.scheduler.allowed-failures``
times), so a combination may leave several notebook runs: each attempt tags its run with the combination's
task name (:func:`task_name`, the same across attempts). Once the results are in, the run the result names
stays live; each earlier attempt ends KILLED, tagged ``nbmlops.superseded_by`` with that run's id, and the
live run is tagged with its attempt number and the runs it supersedes. An attempt whose records reach the
store only later (its worker's journal synced afterwards) is settled the same way as its end is delivered,
by the store: it never comes back as FINISHED or FAILED.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

from nbmlops.config import Settings
from nbmlops.exceptions import NbmlopsError
from nbmlops.tracking.store import RecordRejected, open_store

if TYPE_CHECKING:
    from nbmlops.runner.sweep import SweepRun

__all__ = ["supersede_retries", "task_name"]


def task_name(sweep_key: str, index: int) -> str:
    """The task of combination ``index`` of the sweep run ``sweep_key``: what every attempt of it shares."""
    return f"{sweep_key}/{index}"


def supersede_retries(
    outcomes: list[SweepRun], settings: Settings, experiment: str, sweep_key: str
) -> tuple[list[SweepRun], int]:
    """Keep, for each combination run more than once, the run its outcome names; mark the others superseded.

    Returns the outcomes (with their ``attempt`` numbers) and how many runs were superseded. A store that
    cannot be read or written now costs the marks, not the sweep: one warning, and the late-delivery rule
    of the store still settles the attempts whose end it delivers later.
    """
    store = open_store(settings.tracking_uri, settings.artifact_root)
    try:
        tasks = store.task_attempts(store.experiment_id(experiment), f"{sweep_key}/")
        superseded = 0
        settled = []
        for outcome in outcomes:
            attempts = tasks.get(task_name(sweep_key, outcome.index), [])
            live = next((a for a in attempts if a.run_id == outcome.run_id or a.run_key == outcome.run_key), None)
            if len(attempts) > 1 and live is not None:
                superseded += store.supersede(attempts, live)
                outcome = dataclasses.replace(outcome, attempt=attempts.index(live) + 1, run_id=live.run_id)
            settled.append(outcome)
    except (NbmlopsError, RecordRejected) as exc:
        sys.stderr.write(f"nbmlops: could not mark the attempts of combinations Dask ran again: {exc}\n")
        return outcomes, 0
    return settled, superseded
