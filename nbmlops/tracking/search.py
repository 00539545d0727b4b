"""Searching a tracking store a page at a time, for views that must stay fast at tens of thousands of runs.

Filters and orders are MLflow's own (``filter_string``, ``order_by``), and only the runs of one page are
ever read. On a store backed by a database (sqlite, PostgreSQL, MySQL) one SQL query, built from the same
filter clauses MLflow's ``search_runs`` builds, gives a page's run ids in MLflow's order together with the
total, and one search by id reads those runs; counts and the list of tracked cells are single queries too.
This reaches into MLflow's SQL store (its models and filter translation), pinned by the ``mlflow<3.18``
requirement; at 10,000 runs it answers in tens of milliseconds where sorting through ``search_runs`` takes
seconds. On other stores (an ``http://`` tracking server) a page is ``search_runs`` at the page's offset and a
count probes offsets with one-run pages.

mlflow is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbmlops.exceptions import NbmlopsError
from nbmlops.tracking.store import open_store

__all__ = [
    "CELL_KEY_TAG", "Cell", "MetricPoint", "RunPage", "RunRow", "SearchError", "cells", "count_runs",
    "experiment_ids", "experiments", "get_rows", "metric_history", "metric_points", "quote_value",
    "read_artifact_text", "search_page",
]

CELL_KEY_TAG = "nbmlops.cell_key"
_PROBE_LIMIT = 1 << 40


class SearchError(NbmlopsError, ValueError):
    """The store refused a search: a filter or an ordering it cannot read. The message is MLflow's."""


@dataclass(frozen=True)
class RunRow:
    """One run as a table shows it. Times are epoch milliseconds; ``end_time`` is None while it runs;
    ``datasets`` holds ``(name, digest, context)`` of its dataset inputs."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    datasets: tuple[tuple[str, str, str], ...] = ()

    @property
    def cell(self) -> str:
        """The tracked cell's key (``nbmlops.cell_key``), empty for runs that are not cell runs."""
        return self.tags.get(CELL_KEY_TAG, "")

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")

    def duration_s(self, now_ms: int | None = None) -> float | None:
        """Seconds from start to end (to ``now_ms`` while it runs); None when unknown."""
        end = self.end_time or (now_ms if self.status == "RUNNING" else None)
        if not self.start_time or not end:
            return None
        return max(0.0, (end - self.start_time) / 1000)


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
    client = _client(tracking_uri)
    found = [(e.experiment_id, e.name) for e in client.search_experiments()]
    return sorted(found, key=lambda item: item[1])


def experiment_ids(tracking_uri: str, names: Sequence[str]) -> list[str]:
    """The ids of the experiments called ``names`` that exist (the others are left out)."""
    client = _client(tracking_uri)
    ids = []
    for name in names:
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "active":
            ids.append(found.experiment_id)
    return ids


def search_page(
    tracking_uri: str,
    experiment_ids: Sequence[str],
    filter_string: str = "",
    order_by: Sequence[str] = (),
    offset: int = 0,
    limit: int = 50,
) -> RunPage:
    """The ``limit`` runs at ``offset`` of the search, in order; only those runs are read.

    On a database store the page's run ids and the total come from one SQL query (see :func:`_sql_page`) and
    the runs from one search by id; elsewhere from MLflow's ``search_runs`` at the page's offset.
    """
    if not experiment_ids:
        return RunPage((), offset, False)
    client = _client(tracking_uri)
    store = _sql_store(client)
    if store is not None:
        ids, total = _sql_page(store, experiment_ids, filter_string, order_by, offset, limit + 1)
        return RunPage(tuple(_rows_by_id(client, experiment_ids, ids[:limit])), offset, len(ids) > limit, total)
    from mlflow.utils.search_utils import SearchUtils

    token = _token(SearchUtils.create_page_token(offset)) if offset else None
    found = _search(client, experiment_ids, filter_string, list(order_by), limit, token)
    return RunPage(tuple(_row(run) for run in found), offset, bool(found.token))


def get_rows(tracking_uri: str, run_ids: Sequence[str]) -> list[RunRow]:
    """The runs ``run_ids`` (those that still exist, in any experiment), in that order."""
    client = _client(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    rows: list[RunRow] = []
    for start in range(0, len(ids), 50):
        rows += _rows_by_id(client, ids[start : start + 50], run_ids)
    by_id = {row.run_id: row for row in rows}
    return [by_id[run_id] for run_id in run_ids if run_id in by_id]


def count_runs(tracking_uri: str, experiment_ids: Sequence[str], filter_string: str = "") -> int:
    """How many runs the search finds, without reading them."""
    if not experiment_ids:
        return 0
    client = _client(tracking_uri)
    store = _sql_store(client)
    if store is not None:
        return _sql_count(store, experiment_ids, filter_string)
    return _probed_count(client, experiment_ids, filter_string)


def cells(tracking_uri: str, experiment_ids: Sequence[str], limit: int = 5000) -> list[Cell]:
    """The tracked cells of the experiments, the most recently run first.

    Counted with one SQL query on database stores; elsewhere from the latest ``limit`` cell runs.
    """
    if not experiment_ids:
        return []
    client = _client(tracking_uri)
    store = _sql_store(client)
    if store is not None:
        found = _sql_cells(store, experiment_ids)
    else:
        runs = _search(client, experiment_ids, f"tags.`{CELL_KEY_TAG}` LIKE '%'", ["attributes.start_time DESC"],
                       limit, None)
        counted: dict[str, list[Any]] = {}
        for run in runs:  # newest first: the first run seen of a cell is its latest
            key = run.data.tags[CELL_KEY_TAG]
            counted.setdefault(key, [key, run.info.run_name or "", run.info.start_time or 0, 0])[3] += 1
        found = [tuple(item) for item in counted.values()]
    latest: dict[str, tuple[int, str, int]] = {}
    for key, name, start, runs in found:  # two runs of a cell may share its latest start: keep one
        if key not in latest or (start, name) > latest[key][:2]:
            latest[key] = (start, name, runs)
    ordered = sorted(latest, key=lambda key: (latest[key][0], key), reverse=True)
    return [Cell(key, latest[key][1], latest[key][2]) for key in ordered]


def metric_points(tracking_uri: str, experiment_ids: Sequence[str], filter_string: str, metric: str,
                  limit: int = 2000) -> list[MetricPoint]:
    """The latest value of ``metric`` of the newest ``limit`` runs the search finds that have it (NaN left
    out), oldest first. One SQL query on database stores (no run is read); elsewhere pages of runs."""
    if not experiment_ids:
        return []
    client = _client(tracking_uri)
    store = _sql_store(client)
    if store is not None:
        points = _sql_metric_points(store, experiment_ids, filter_string, metric, limit)
    else:
        runs = _search(client, experiment_ids, filter_string, ["attributes.start_time DESC"], limit, None)
        points = [
            MetricPoint(run.info.run_id, run.info.run_name or "", run.info.status, run.info.start_time or 0,
                        run.data.metrics[metric])
            for run in runs
            if metric in run.data.metrics and not math.isnan(run.data.metrics[metric])
        ]
    return points[::-1]


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every value of metric ``key`` logged by the run, by step."""
    client = _client(tracking_uri)
    history = client.get_metric_history(run_id, key)
    return sorted(((m.step, m.value) for m in history), key=lambda item: (item[0], math.isnan(item[1])))


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


def _rows_by_id(client: Any, experiment_ids: Sequence[str], run_ids: Sequence[str]) -> list[RunRow]:
    """The runs ``run_ids`` of these experiments, in the order of ``run_ids``; one search per 100 ids."""
    by_id: dict[str, RunRow] = {}
    for start in range(0, len(run_ids), 100):
        batch = run_ids[start : start + 100]
        wanted = ", ".join(f"'{run_id}'" for run_id in batch if run_id.isalnum())
        if wanted:
            found = _search(client, experiment_ids, f"attributes.run_id IN ({wanted})", [], len(batch), None)
            by_id.update((run.info.run_id, _row(run)) for run in found)
    return [by_id[run_id] for run_id in run_ids if run_id in by_id]


def _client(tracking_uri: str) -> Any:
    return open_store(tracking_uri, None).client


def _token(token: Any) -> str:
    return token.decode() if isinstance(token, bytes) else str(token)


def _search(client: Any, experiment_ids: Sequence[str], filter_string: str, order_by: list[str], limit: int,
            token: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.search_runs(list(experiment_ids), filter_string=filter_string, order_by=order_by or None,
                                  max_results=limit, page_token=token)
    except MlflowException as exc:
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise SearchError(_first_line(exc)) from None
        raise


def _row(run: Any) -> RunRow:
    return RunRow(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        name=run.info.run_name or "",
        status=run.info.status,
        start_time=run.info.start_time or 0,
        end_time=run.info.end_time or None,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        datasets=tuple(
            (
                item.dataset.name,
                item.dataset.digest,
                next((tag.value for tag in item.tags if tag.key == "mlflow.data.context"), ""),
            )
            for item in (run.inputs.dataset_inputs if run.inputs is not None else ())
        ),
    )


def _sql_store(client: Any) -> Any:
    """The client's tracking store when it is MLflow's SQL store (sqlite, PostgreSQL, MySQL), else None."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    return store if isinstance(store, SqlAlchemyStore) else None


def _filtered(store: Any, session: Any, experiment_ids: Sequence[str], filter_string: str,
              *columns: Any) -> tuple[Any, bool]:
    """``SELECT columns FROM runs`` joined and restricted exactly as MLflow's ``search_runs`` does for
    ``filter_string`` (its own filter translation); and whether a run can come out more than once (a dataset
    filter joins every matching input)."""
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking import sqlalchemy_store as sql
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from mlflow.utils.search_utils import SearchUtils
    from sqlalchemy import select

    try:
        parsed = SearchUtils.parse_search_filter(filter_string)
    except MlflowException as exc:
        raise SearchError(_first_line(exc)) from None
    attribute_filters, joined, datasets = sql._get_sqlalchemy_filter_clauses(parsed, session, store._get_dialect())
    ids = store._filter_experiment_ids(session, sql._parse_experiment_ids(list(experiment_ids)))
    stmt = select(*columns).select_from(SqlRun)
    for subquery in joined:  # one row per run: each joins a (key, run)-unique table on its key
        stmt = stmt.join(subquery)
    for subquery in datasets:
        stmt = stmt.join(subquery, SqlRun.run_uuid == subquery.c.destination_id)
    stmt = stmt.where(SqlRun.experiment_id.in_(ids), SqlRun.lifecycle_stage == LifecycleStage.ACTIVE,
                      *attribute_filters)
    return stmt, bool(datasets)


def _sql_count(store: Any, experiment_ids: Sequence[str], filter_string: str) -> int:
    """``SELECT count(DISTINCT run)`` over the runs the filter selects."""
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from sqlalchemy import distinct, func

    with store.ManagedSessionMaker() as session:
        stmt, _ = _filtered(store, session, experiment_ids, filter_string, func.count(distinct(SqlRun.run_uuid)))
        return int(session.execute(stmt).scalar_one())


def _sql_metric_points(store: Any, experiment_ids: Sequence[str], filter_string: str, metric: str,
                       limit: int) -> list[MetricPoint]:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun
    from sqlalchemy import and_

    with store.ManagedSessionMaker() as session:
        stmt, repeats = _filtered(store, session, experiment_ids, filter_string, SqlRun.run_uuid, SqlRun.name,
                                  SqlRun.status, SqlRun.start_time, SqlLatestMetric.value)
        stmt = stmt.join(SqlLatestMetric, and_(SqlLatestMetric.run_uuid == SqlRun.run_uuid,
                                               SqlLatestMetric.key == metric, SqlLatestMetric.is_nan.is_(False)))
        if repeats:
            stmt = stmt.distinct()
        stmt = stmt.order_by(SqlRun.start_time.desc(), SqlRun.run_uuid).limit(limit)
        return [MetricPoint(run_id, name or "", status, start or 0, float(value))
                for run_id, name, status, start, value in session.execute(stmt)]


def _sql_cells(store: Any, experiment_ids: Sequence[str]) -> list[tuple[str, str, int, int]]:
    """``(cell key, name of its latest run, its latest start, its number of runs)`` per cell, in one query."""
    from mlflow.entities import LifecycleStage
    from mlflow.store.tracking import sqlalchemy_store as sql
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
    from sqlalchemy import and_, func, select

    with store.ManagedSessionMaker() as session:
        ids = store._filter_experiment_ids(session, sql._parse_experiment_ids(list(experiment_ids)))
        scope = and_(SqlTag.key == CELL_KEY_TAG, SqlRun.experiment_id.in_(ids),
                     SqlRun.lifecycle_stage == LifecycleStage.ACTIVE)
        per_cell = (
            select(SqlTag.value.label("key"), func.count().label("runs"), func.max(SqlRun.start_time).label("latest"))
            .join(SqlRun, SqlRun.run_uuid == SqlTag.run_uuid).where(scope).group_by(SqlTag.value).subquery()
        )
        stmt = (
            select(per_cell.c.key, SqlRun.name, per_cell.c.latest, per_cell.c.runs)
            .join(SqlTag, SqlTag.value == per_cell.c.key)
            .join(SqlRun, and_(SqlRun.run_uuid == SqlTag.run_uuid, SqlRun.start_time == per_cell.c.latest))
            .where(scope)
        )
        return [(key, name or "", latest or 0, runs) for key, name, latest, runs in session.execute(stmt)]


def _sql_page(store: Any, experiment_ids: Sequence[str], filter_string: str, order_by: Sequence[str],
              offset: int, limit: int) -> tuple[list[str], int | None]:
    """The ids of the runs at ``offset`` of the search, in MLflow's order, and how many runs the search finds
    (None when the page is empty), from one SQL query.

    The filter and ordering rules are MLflow's (missing values last, NaN metrics just before them, then start
    time and run id), but a sort column is outer-joined on ``(key, run)`` directly, which the table's primary
    key answers (MLflow joins a subquery of every value of the key: seconds at 10,000 runs on sqlite), and the
    count rides along as a window function.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.search_utils import SearchUtils
    from sqlalchemy import and_, case, func, select, true
    from sqlalchemy.orm import aliased

    try:
        orders = [SearchUtils.parse_order_by_for_search_runs(clause) for clause in order_by]
    except MlflowException as exc:
        raise SearchError(_first_line(exc)) from None
    joins: list[tuple[Any, Any]] = []
    sort_keys: list[tuple[Any, bool]] = []  # (expression, ascending)
    seen_start = False
    for key_type, key, ascending in orders:
        key = SearchUtils.translate_key_alias(key)
        if SearchUtils.is_string_attribute(key_type, key, "=") or SearchUtils.is_numeric_attribute(key_type, key, "="):
            value = getattr(SqlRun, SqlRun.get_attribute_name(key))
            seen_start = seen_start or value.key == SqlRun.start_time.key
            sort_keys.append((case((value.is_(None), 1), else_=0), True))
        else:
            entity = {"metric": SqlLatestMetric, "tag": SqlTag, "parameter": SqlParam}[key_type]
            other = aliased(entity)
            joins.append((other, and_(other.run_uuid == SqlRun.run_uuid, other.key == key)))
            value = other.value
            missing = (case((other.is_nan == true(), 1), (value.is_(None), 2), else_=0) if entity is SqlLatestMetric
                       else case((value.is_(None), 1), else_=0))
            sort_keys.append((missing, True))
        sort_keys.append((value, ascending))
    if not seen_start:
        sort_keys.append((SqlRun.start_time, False))
    sort_keys.append((SqlRun.run_uuid, True))
    columns = [expression.label(f"sort_{i}") for i, (expression, _) in enumerate(sort_keys)]
    with store.ManagedSessionMaker() as session:
        inner, repeats = _filtered(store, session, experiment_ids, filter_string, SqlRun.run_uuid.label("run_id"),
                                   *columns)
        for other, condition in joins:
            inner = inner.outerjoin(other, condition)
        found = (inner.distinct() if repeats else inner).subquery()
        ordering = [found.c[f"sort_{i}"] if up else found.c[f"sort_{i}"].desc() for i, (_, up) in enumerate(sort_keys)]
        stmt = select(found.c.run_id, func.count().over()).order_by(*ordering).offset(offset).limit(limit)
        rows = session.execute(stmt).all()
    return [run_id for run_id, _ in rows], (int(rows[0][1]) if rows else None)


def _probed_count(client: Any, experiment_ids: Sequence[str], filter_string: str) -> int:
    """The count from one-run pages: double the offset until nothing is there, then bisect."""
    from mlflow.utils.search_utils import SearchUtils

    def exists(offset: int) -> bool:
        token = _token(SearchUtils.create_page_token(offset)) if offset else None
        return bool(_search(client, experiment_ids, filter_string, [], 1, token))

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
