"""Runs as a notebook's sidebar lists them: the runs of one notebook (or of every notebook), one run in
detail with its artifact tree and metric series, and a quick count of the store's experiments.

A notebook's runs are those whose ``nbmlops.notebook`` tag (what ``%%track`` records) or
``mlflow.source.name`` (what ``nbmlops run`` records) is its absolute path. Runs are read with
:mod:`nbmlops.tracking.search` and :mod:`nbmlops.backend.runs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nbmlops.backend.runs import list_artifacts
from nbmlops.backend.store import Store, open_store
from nbmlops.exceptions import PathNotFoundError, RecordRejected
from nbmlops.redact import redact_uri
from nbmlops.tracking.query import RunNotFoundError, download_artifact
from nbmlops.tracking.search import (
    RunRow,
    SearchError,
    experiments,
    get_rows,
    metric_history,
    quote_value,
    search_page,
)
from nbmlops.tracking.series import thin

__all__ = ["MAX_SERIES", "SERIES_POINTS", "ListedRun", "RunDetail", "count_experiments", "fetch_artifact",
           "run_detail", "runs_for_notebook"]

NOTEBOOK_TAGS = ("nbmlops.notebook", "mlflow.source.name")
_EXPERIMENTS_PER_SEARCH = 50
#: the most metrics whose series a run's detail reads (by name), and the most points kept of each
MAX_SERIES = 24
SERIES_POINTS = 300


@dataclass(frozen=True)
class ListedRun:
    """A run and the name of its experiment."""

    run: RunRow
    experiment: str


@dataclass(frozen=True)
class RunDetail:
    """A run, its experiment's name, its artifact files (recursive, cut at a limit) and the series of its
    metrics logged more than once (``(step, value)`` by step, thinned to :data:`SERIES_POINTS`)."""

    run: RunRow
    experiment: str
    artifacts: tuple[str, ...] = ()
    artifacts_truncated: bool = False
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    series_truncated: bool = False


def runs_for_notebook(tracking_uri: str, path: str | Sequence[str] | None, limit: int = 200) -> list[ListedRun]:
    """The newest ``limit`` runs of the notebook at absolute ``path`` across experiments (several spellings
    of one path may be given, say through a symlinked root and not); the newest runs of all when None."""
    names = dict(experiments(tracking_uri))
    if path is None:
        filters = [""]
    else:
        filters = []
        for spelling in dict.fromkeys([path] if isinstance(path, str) else path):
            try:
                filters += [f"tags.`{tag}` = {quote_value(spelling)}" for tag in NOTEBOOK_TAGS]
            except SearchError:
                continue  # MLflow's filters cannot spell a value holding both quotes: no run can be found by it
    ids = list(names)
    found: dict[str, RunRow] = {}
    for start in range(0, len(ids), _EXPERIMENTS_PER_SEARCH):
        for condition in filters:
            page = search_page(tracking_uri, ids[start : start + _EXPERIMENTS_PER_SEARCH], condition,
                               ["attributes.start_time DESC"], 0, limit)
            found.update((row.run_id, row) for row in page.rows)
    newest = sorted(found.values(), key=lambda row: row.start_time, reverse=True)[:limit]
    return [ListedRun(row, names.get(row.experiment_id, "")) for row in newest]


def run_detail(tracking_uri: str, run_id: str, max_artifacts: int = 500) -> RunDetail:
    """The run ``run_id`` with up to ``max_artifacts`` artifact paths;
    :class:`~nbmlops.tracking.query.RunNotFoundError` when the store has no such run."""
    rows = get_rows(tracking_uri, [run_id])
    if not rows:
        raise RunNotFoundError(run_id, redact_uri(tracking_uri))
    row = rows[0]
    names = dict(experiments(tracking_uri))
    artifacts: list[str] = []
    truncated = _list_artifacts(open_store(tracking_uri, None), run_id, None, artifacts, max_artifacts)
    keys = sorted(row.metrics)
    series = {}
    for key in keys[:MAX_SERIES]:
        points = metric_history(tracking_uri, run_id, key)
        if len(points) > 1:
            series[key] = thin(points, SERIES_POINTS, value=lambda point: point[1])
    return RunDetail(row, names.get(row.experiment_id, ""), tuple(artifacts), truncated, series,
                     len(keys) > MAX_SERIES)


def fetch_artifact(tracking_uri: str, run_id: str, path: str, folder: str) -> Path:
    """Download run ``run_id``'s artifact file ``path`` into ``folder``; its local path.

    Raises:
        RunNotFoundError: the store has no such run.
        PathNotFoundError: the run holds no file at ``path`` (a folder is not a file).
    """
    try:
        found = download_artifact(tracking_uri, run_id, path, folder)
    except RecordRejected as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise RunNotFoundError(run_id, redact_uri(tracking_uri)) from None
        raise
    if found is None or not found.is_file():
        raise PathNotFoundError(path)
    return found


def count_experiments(tracking_uri: str) -> int:
    """How many active experiments the store holds (opens the store: raises when it cannot be reached)."""
    return len(experiments(tracking_uri))


def _list_artifacts(store: Store, run_id: str, folder: str | None, into: list[str], limit: int) -> bool:
    """Append the run's artifact files under ``folder`` to ``into``, depth first; True when cut at ``limit``."""
    for path, is_dir in list_artifacts(store, run_id, folder):
        if len(into) >= limit:
            return True
        if is_dir:
            if _list_artifacts(store, run_id, path, into, limit):
                return True
        else:
            into.append(path)
    return False
