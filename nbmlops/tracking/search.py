"""Searching a tracking store a page at a time, for views that must stay fast at tens of thousands of runs.

Filters and orders are MLflow's own (``filter_string``, ``order_by``), and only the runs of one page are
ever read. On a database store (sqlite, PostgreSQL) whose filter and order read as plain comparisons (see
:mod:`~nbmlops.tracking.filter_grammar`), one read-only SQL query of ours (:mod:`~nbmlops.tracking.search_sql`)
gives a page's run ids in MLflow's order together with the total, and one ``search_runs`` by id reads those
runs; counts, metric points and the list of tracked cells are single queries too: at 10,000 runs tens of
milliseconds, where sorting through ``search_runs`` takes seconds. Everything else (a tracking server, a
dataset filter) goes through MLflow's public ``search_runs`` at the page's offset, and a count probes offsets
with one-run pages. Only MLflow's public client API is called.

MLflow is called through the backend (:mod:`nbmlops.backend`), so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nbmlops.backend import runs
from nbmlops.backend.runs import RunRow, row_of
from nbmlops.backend.store import Store, open_store
from nbmlops.backend.tags import CELL_KEY_TAG
from nbmlops.exceptions import RecordRejected, SearchError
from nbmlops.tracking.filter_grammar import Clause, OrderKey, parse_filter, parse_order_by
from nbmlops.tracking.search_sql import Database, database_for

__all__ = [
    "CELL_KEY_TAG", "TOP_LEVEL_FILTER", "Cell", "MetricPoint", "RunPage", "RunRow", "SearchError", "cells",
    "count_runs", "experiment_ids", "experiments", "get_rows", "metric_histories", "metric_history", "metric_points",
    "nested_rows", "quote_value", "read_artifact_text", "row_of", "run_lineage", "search_page",
]

_PROBE_LIMIT = 1 << 40


@dataclass(frozen=True)
class RunPage:
    """``rows`` found at ``offset``; ``has_more`` when runs follow them; ``total``, how many runs the search
    finds, when the store told it along with the page (else None)."""

    rows: tuple[RunRow, ...]
    offset: int
    has_more: bool
    total: int | None = None


@dataclass(frozen=True)
class MetricPoint:
    """A run's latest value of one metric, with what a chart's point shows of the run."""

    run_id: str
    name: str
    status: str
    start_time: int
    value: float


@dataclass(frozen=True)
class Cell:
    """A tracked cell: its key, the name of its latest run, and how many runs it has."""

    key: str
    name: str
    runs: int


def quote_value(value: str) -> str:
    """``value`` as a string literal of MLflow's filter grammar (which has no escapes inside quotes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SearchError(f"{value!r}: a value holding both ' and \" cannot be searched for")


def experiments(tracking_uri: str) -> list[tuple[str, str]]:
    """``(id, name)`` of every active experiment, by name."""
    return sorted(runs.experiments(_store(tracking_uri)), key=lambda item: item[1])


def experiment_ids(tracking_uri: str, names: Sequence[str]) -> list[str]:
    """The ids of the experiments called ``names`` that exist (the others are left out)."""
    store = _store(tracking_uri)
    found = (runs.active_experiment_id(store, name) for name in names)
    return [experiment_id for experiment_id in found if experiment_id is not None]


def search_page(
    tracking_uri: str,
    experiment_ids: Sequence[str],
    filter_string: str = "",
    order_by: Sequence[str] = (),
    offset: int = 0,
    limit: int = 50,
) -> RunPage:
    """The ``limit`` runs at ``offset`` of the search, in order; only those runs are read.

    On a database store the page's run ids and the total come from one SQL query (see
    :meth:`~nbmlops.tracking.search_sql.Database.page`) and the runs from one search by id; elsewhere from
    MLflow's ``search_runs`` at the page's offset.
    """
    if not experiment_ids:
        return RunPage((), offset, False)
    translated = _translated(tracking_uri, filter_string, order_by)
    if translated is not None:
        database, clauses, order = translated
        ids, total = database.page(experiment_ids, clauses, order, offset, limit + 1)
        found = database.rows(ids[:limit])
        rows = tuple(_row_from_sql(found[run_id]) for run_id in ids[:limit] if run_id in found)
        return RunPage(rows, offset, len(ids) > limit, total)
    found = _search(_store(tracking_uri), experiment_ids, filter_string, list(order_by), limit,
                    _offset_token(offset))
    return RunPage(tuple(row_of(run) for run in found), offset, bool(found.token))


def get_rows(tracking_uri: str, run_ids: Sequence[str]) -> list[RunRow]:
    """The runs ``run_ids`` (those that still exist, in any experiment), in that order."""
    database = database_for(tracking_uri)
    if database is not None:
        found = database.rows(run_ids)
        return [_row_from_sql(found[run_id]) for run_id in run_ids if run_id in found]
    store = _store(tracking_uri)
    ids = [experiment_id for experiment_id, _ in runs.experiments(store)]
    rows: list[RunRow] = []
    for start in range(0, len(ids), 50):
        rows += _rows_by_id(store, ids[start : start + 50], run_ids)
    by_id = {row.run_id: row for row in rows}
    return [by_id[run_id] for run_id in run_ids if run_id in by_id]


def count_runs(tracking_uri: str, experiment_ids: Sequence[str], filter_string: str = "") -> int:
    """How many runs the search finds, without reading them."""
    if not experiment_ids:
        return 0
    translated = _translated(tracking_uri, filter_string)
    if translated is not None:
        database, clauses, _ = translated
        return database.count(experiment_ids, clauses)
    return _probed_count(_store(tracking_uri), experiment_ids, filter_string)


def cells(tracking_uri: str, experiment_ids: Sequence[str], limit: int = 5000) -> list[Cell]:
    """The tracked cells of the experiments, the most recently run first.

    Counted with one SQL query on database stores; elsewhere from the latest ``limit`` cell runs.
    """
    if not experiment_ids:
        return []
    database = database_for(tracking_uri)
    if database is not None:
        found = database.cells(experiment_ids, CELL_KEY_TAG)
    else:
        found_runs = _search(_store(tracking_uri), experiment_ids, f"tags.`{CELL_KEY_TAG}` LIKE '%'",
                             ["attributes.start_time DESC"], limit, None)
        counted: dict[str, list[Any]] = {}
        for run in found_runs:  # newest first: the first run seen of a cell is its latest
            key = run.data.tags[CELL_KEY_TAG]
            counted.setdefault(key, [key, run.info.run_name or "", run.info.start_time or 0, 0])[3] += 1
        found = [tuple(item) for item in counted.values()]
    latest: dict[str, tuple[int, str, int]] = {}
    for key, name, start, count in found:  # two runs of a cell may share its latest start: keep one
        if key not in latest or (start, name) > latest[key][:2]:
            latest[key] = (start, name, count)
    ordered = sorted(latest, key=lambda key: (latest[key][0], key), reverse=True)
    return [Cell(key, latest[key][1], latest[key][2]) for key in ordered]


def metric_points(tracking_uri: str, experiment_ids: Sequence[str], filter_string: str, metric: str,
                  limit: int = 2000) -> list[MetricPoint]:
    """The latest value of ``metric`` of the newest ``limit`` runs the search finds that have it (NaN left
    out), oldest first. One SQL query on database stores (no run is read); elsewhere pages of runs."""
    if not experiment_ids:
        return []
    translated = _translated(tracking_uri, filter_string)
    if translated is not None:
        database, clauses, _ = translated
        points = [MetricPoint(*row) for row in database.metric_points(experiment_ids, clauses, metric, limit)]
    else:
        found_runs = _search(_store(tracking_uri), experiment_ids, filter_string, ["attributes.start_time DESC"],
                             limit, None)
        points = [
            MetricPoint(run.info.run_id, run.info.run_name or "", run.info.status, run.info.start_time or 0,
                        run.data.metrics[metric])
            for run in found_runs
            if metric in run.data.metrics and not math.isnan(run.data.metrics[metric])
        ]
    return points[::-1]


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every value of metric ``key`` logged by the run, by step."""
    history = runs.metric_history(_store(tracking_uri), run_id, key)
    return sorted(((step, value) for step, value, _ in history), key=lambda item: (item[0], math.isnan(item[1])))


def read_artifact_text(tracking_uri: str, run_id: str, path: str) -> str | None:
    """The text of the run's artifact file ``path``; None when the run has no such file."""
    import tempfile
    from pathlib import Path

    from nbmlops.tracking.query import download_artifact

    with tempfile.TemporaryDirectory(prefix="nbmlops-artifact-") as folder:
        found = download_artifact(tracking_uri, run_id, path, folder)
        if found is None or not Path(found).is_file():
            return None
        return Path(found).read_text(errors="replace")


#: the runs that are nobody's child (the filter of a table that shows nested runs under their parents)
TOP_LEVEL_FILTER = "tags.`mlflow.parentRunId` IS NULL"
PARENT_TAG = "mlflow.parentRunId"


def nested_rows(tracking_uri: str, experiment_ids: Sequence[str], parent_ids: Sequence[str], since: int = 0,
                limit: int = 2000) -> list[RunRow]:
    """The runs below ``parent_ids`` in these experiments: their children, the children's children, and so on
    (at most ``limit``), parents before children.

    One query per level on database stores. Elsewhere one search of the nested runs started at or after
    ``since`` (epoch ms: a child starts after its parent), newest first, of which those below ``parent_ids``
    are kept.
    """
    if not experiment_ids or not parent_ids:
        return []
    database = database_for(tracking_uri)
    if database is not None:
        found: list[str] = []
        seen = set(parent_ids)
        level = list(parent_ids)
        while level and len(found) < limit:
            level = [run_id for run_id, _ in database.children(experiment_ids, level) if run_id not in seen]
            seen.update(level)
            found += level
        rows = database.rows(found[:limit])
        return [_row_from_sql(rows[run_id]) for run_id in found[:limit] if run_id in rows]
    filter_string = f"tags.`{PARENT_TAG}` IS NOT NULL" + (f" and attributes.start_time >= {int(since)}" if since else "")
    nested = [row_of(run) for run in _search(_store(tracking_uri), experiment_ids, filter_string,
                                             ["attributes.start_time DESC"], limit, None)]
    below: dict[str, list[RunRow]] = {}
    for row in nested:
        below.setdefault(row.parent_run_id or "", []).append(row)
    ordered: list[RunRow] = []
    level = list(parent_ids)
    while level:
        children = [child for parent in level for child in below.pop(parent, [])]
        ordered += children
        level = [child.run_id for child in children]
    return ordered


def run_lineage(tracking_uri: str, run_ids: Sequence[str]) -> dict[str, tuple[str | None, str]]:
    """``(parent run id or None, nbmlops.kind or "")`` of each run ``run_ids`` that exists, by run id."""
    database = database_for(tracking_uri)
    if database is not None:
        tags = database.tags_of(run_ids, [PARENT_TAG, "nbmlops.kind"])
        return {run_id: (tags.get(run_id, {}).get(PARENT_TAG), tags.get(run_id, {}).get("nbmlops.kind", ""))
                for run_id in run_ids}
    return {row.run_id: (row.parent_run_id, row.tags.get("nbmlops.kind", "")) for row in get_rows(tracking_uri, run_ids)}


def metric_histories(tracking_uri: str, run_id: str, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``(step, value)`` of every value of each metric ``keys`` the run logged, by step (one query on database
    stores, one per metric elsewhere)."""
    database = database_for(tracking_uri)
    if database is not None:
        found = database.histories(run_id)
        return {key: found[key] for key in keys if key in found}
    return {key: metric_history(tracking_uri, run_id, key) for key in keys}


def _rows_by_id(store: Store, experiment_ids: Sequence[str], run_ids: Sequence[str]) -> list[RunRow]:
    """The runs ``run_ids`` of these experiments, in the order of ``run_ids``; one search per 100 ids."""
    by_id: dict[str, RunRow] = {}
    for start in range(0, len(run_ids), 100):
        batch = run_ids[start : start + 100]
        wanted = ", ".join(f"'{run_id}'" for run_id in batch if run_id.isalnum())
        if wanted:
            found = _search(store, experiment_ids, f"attributes.run_id IN ({wanted})", [], len(batch), None)
            by_id.update((run.info.run_id, row_of(run)) for run in found)
    return [by_id[run_id] for run_id in run_ids if run_id in by_id]


def _store(tracking_uri: str) -> Store:
    return open_store(tracking_uri, None)


def _search(store: Store, experiment_ids: Sequence[str], filter_string: str, order_by: list[str], limit: int,
            token: str | None) -> Any:
    try:
        return runs.search_runs(store, experiment_ids, filter_string, order_by, limit, token)
    except RecordRejected as exc:
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise SearchError(_first_line(exc)) from None
        raise


def _row_from_sql(found: dict[str, Any]) -> RunRow:
    run_id, experiment_id, name, status, start, end = found["info"]
    return RunRow(run_id, experiment_id, name, status, start, end, found["params"], found["metrics"], found["tags"],
                  tuple(found["datasets"]))


def _translated(tracking_uri: str, filter_string: str,
                order_by: Sequence[str] = ()) -> tuple[Database, list[Clause], list[OrderKey]] | None:
    """The store's database and the search in our own terms, when both are there; else None (ask MLflow)."""
    database = database_for(tracking_uri)
    if database is None:
        return None
    clauses = parse_filter(filter_string)
    order = [parse_order_by(clause) for clause in order_by]
    if clauses is None or None in order:
        return None
    return database, clauses, [key for key in order if key is not None]


def _offset_token(offset: int) -> str | None:
    """The page token of MLflow's searches that starts at ``offset`` (its stores all read this form)."""
    if not offset:
        return None
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def _probed_count(store: Store, experiment_ids: Sequence[str], filter_string: str) -> int:
    """The count from one-run pages: double the offset until nothing is there, then bisect."""
    def exists(offset: int) -> bool:
        return bool(_search(store, experiment_ids, filter_string, [], 1, _offset_token(offset)))

    if not exists(0):
        return 0
    low, high = 0, 1  # a run exists at low; high is to be probed
    while exists(high):
        low, high = high, high * 2
        if high > _PROBE_LIMIT:
            raise SearchError("too many runs to count")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if exists(middle) else (low, middle)
    return low + 1


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "message", exc)).splitlines()[0][:500]
