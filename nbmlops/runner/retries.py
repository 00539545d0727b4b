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

import sys
from collections.abc import Mapping
from typing import NamedTuple

from nbmlops.backend.store import RecordRejected, open_store
from nbmlops.config import Settings
from nbmlops.exceptions import NbmlopsError

__all__ = ["Retry", "supersede_retries", "task_name"]


class Retry(NamedTuple):
    """A combination that ran more than once: which attempt its live run is, that run's id, and how many
    earlier attempts it supersedes."""

    attempt: int
    run_id: str
    superseded: int


def task_name(sweep_key: str, index: int) -> str:
    """The task of combination ``index`` of the sweep run ``sweep_key``: what every attempt of it shares."""
    return f"{sweep_key}/{index}"


def supersede_retries(
    settings: Settings, experiment: str, sweep_key: str, named: Mapping[int, tuple[str | None, str | None]]
) -> dict[int, Retry]:
    """Keep, for each combination run more than once, the run its result names; mark the others superseded.

    ``named`` maps each combination's index to the ``(run id, run key)`` its result names (either may be
    None). Returns the combinations that ran more than once. A store that cannot be read or written now
    costs the marks, not the sweep: one warning, and the store still settles the attempts whose end it
    delivers later.
    """
    store = open_store(settings.tracking_uri, settings.artifact_root)
    retried: dict[int, Retry] = {}
    try:
        tasks = store.task_attempts(store.experiment_id(experiment), f"{sweep_key}/%")
        for index, (run_id, run_key) in named.items():
            attempts = tasks.get(task_name(sweep_key, index), [])
            live = next((a for a in attempts if a.run_id == run_id or a.run_key == run_key), None)
            if len(attempts) > 1 and live is not None:
                retried[index] = Retry(attempts.index(live) + 1, live.run_id, store.supersede(attempts, live))
    except (NbmlopsError, RecordRejected) as exc:
        sys.stderr.write(f"nbmlops: could not mark the attempts of combinations Dask ran again: {exc}\n")
    return retried
