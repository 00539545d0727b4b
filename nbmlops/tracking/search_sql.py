"""Read-only SQL of our own against MLflow's tracking schema (sqlite and PostgreSQL stores), for what MLflow's
public API cannot do without reading every run: counting a search, one page of run ids in MLflow's order, the
latest value of one metric across runs, and the runs per tracked cell.

Only the long-stable core of MLflow's schema is read (``runs``, ``tags``, ``params``, ``latest_metrics``,
``metrics`` for one run's histories), with
the filter and ordering rules of MLflow's own SQL store: every comparison is case-sensitive (MLflow sets sqlite's
``case_sensitive_like``), a NaN metric satisfies only ``!=``, ``run_name`` is the ``mlflow.runName`` tag, and
missing values sort last (NaN metrics just before them), then by start time (newest first) and run id. The test
suite checks every query against ``search_runs`` on each supported MLflow release.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from nbmlops.tracking.filter_grammar import Clause, OrderKey

__all__ = ["Database", "database_for"]

RUN_NAME_TAG = "mlflow.runName"
_engines: dict[str, Any] = {}
_databases: dict[str, Database] = {}
_engines_lock = threading.Lock()


def database_for(tracking_uri: str) -> Database | None:
    """The :class:`Database` behind ``tracking_uri`` when it is a sqlite or PostgreSQL store, else None (one
    per store and process: it holds only the table definitions)."""
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres"):
        return None
    with _engines_lock:
        if tracking_uri not in _databases:
            _databases[tracking_uri] = Database(tracking_uri)
        return _databases[tracking_uri]


class Database:
    """MLflow's tracking tables in one database, read with SQLAlchemy Core (no ORM models of MLflow's)."""

    def __init__(self, uri: str) -> None:
        import sqlalchemy as sa

        self.uri = uri
        self.runs = sa.table(
            "runs", sa.column("run_uuid", sa.String), sa.column("name", sa.String), sa.column("status", sa.String),
            sa.column("start_time", sa.BigInteger), sa.column("end_time", sa.BigInteger),
            sa.column("experiment_id", sa.Integer), sa.column("lifecycle_stage", sa.String),
            sa.column("user_id", sa.String), sa.column("artifact_uri", sa.String),
        )
        self.tables = {
            kind: sa.table(name, sa.column("key", sa.String), sa.column("value", value_type),
                           sa.column("run_uuid", sa.String), *extra)
            for kind, name, value_type, extra in (
                ("tag", "tags", sa.String, ()),
                ("param", "params", sa.String, ()),
                ("metric", "latest_metrics", sa.Float, (sa.column("is_nan", sa.Boolean),)),
            )
        }
        self.inputs = sa.table("inputs", sa.column("input_uuid", sa.String), sa.column("source_type", sa.String),
                               sa.column("source_id", sa.String), sa.column("destination_type", sa.String),
                               sa.column("destination_id", sa.String))
        self.datasets = sa.table("datasets", sa.column("dataset_uuid", sa.String), sa.column("name", sa.String),
                                 sa.column("digest", sa.String))
        self.input_tags = sa.table("input_tags", sa.column("input_uuid", sa.String), sa.column("name", sa.String),
                                   sa.column("value", sa.String))

    # -- queries --------------------------------------------------------------------------------------

    def count(self, experiment_ids: Sequence[str], clauses: Sequence[Clause]) -> int:
        """How many active runs of the experiments the clauses select."""
        import sqlalchemy as sa

        stmt = sa.select(sa.func.count()).select_from(self.runs).where(*self._where(experiment_ids, clauses))
        with self._connect() as connection:
            return int(connection.execute(stmt).scalar_one())

    def page(self, experiment_ids: Sequence[str], clauses: Sequence[Clause], order: Sequence[OrderKey],
             offset: int, limit: int) -> tuple[list[str], int | None]:
        """The run ids at ``offset`` in MLflow's order and the search's total (None when the page is empty).

        A sort key is outer-joined on ``(key, run)``, which each table's primary key answers. Under a filter the
        total rides along as a window function (the filter is evaluated once); without one it is a count of its
        own, which needs no sort, and the page is a top-``limit`` sort instead of a sort of every run.
        """
        import sqlalchemy as sa

        runs = self.runs.c
        stmt = sa.select(runs.run_uuid).select_from(self.runs)
        sort: list[Any] = []
        seen_start = False
        for index, key in enumerate(order):
            if key.kind == "attribute":
                value = runs.name if key.key == "run_name" else runs.run_uuid if key.key == "run_id" else runs[key.key]
                seen_start = seen_start or key.key == "start_time"
                sort.append(sa.case((value.is_(None), 1), else_=0))
            else:
                other = self.tables[key.kind].alias(f"sort_{index}")
                stmt = stmt.outerjoin(other, sa.and_(other.c.run_uuid == runs.run_uuid, other.c.key == key.key))
                value = other.c.value
                if key.kind == "metric":
                    sort.append(sa.case((other.c.is_nan == sa.true(), 1), (value.is_(None), 2), else_=0))
                else:
                    sort.append(sa.case((value.is_(None), 1), else_=0))
            sort.append(value if key.ascending else value.desc())
        if not seen_start:
            sort.append(runs.start_time.desc())
        sort.append(runs.run_uuid)
        stmt = stmt.where(*self._where(experiment_ids, clauses)).order_by(*sort).offset(offset).limit(limit)
        if not clauses:
            with self._connect() as connection:
                return [run_id for (run_id,) in connection.execute(stmt)], self.count(experiment_ids, clauses)
        with self._connect() as connection:
            rows = connection.execute(stmt.add_columns(sa.func.count().over())).all()
        return [run_id for run_id, _ in rows], (int(rows[0][1]) if rows else None)

    def rows(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What a run table shows of each run ``run_ids`` that exists and is active, by id: ``info`` (id,
        experiment id, name, status, start, end), ``params``, ``metrics`` (latest values; NaN as NaN), ``tags``
        and ``datasets`` ((name, digest, context) of its dataset inputs, sorted)."""
        import sqlalchemy as sa

        if not run_ids:
            return {}
        runs = self.runs.c
        found: dict[str, dict[str, Any]] = {}
        with self._connect() as connection:
            for start in range(0, len(run_ids), 500):
                wanted = list(run_ids[start : start + 500])
                stmt = sa.select(runs.run_uuid, runs.experiment_id, runs.name, runs.status, runs.start_time,
                                 runs.end_time).where(runs.run_uuid.in_(wanted), runs.lifecycle_stage == "active")
                for run_id, experiment_id, name, status, started, ended in connection.execute(stmt):
                    found[run_id] = {"info": (run_id, str(experiment_id), name or "", status, started or 0,
                                              ended or None), "params": {}, "metrics": {}, "tags": {}, "datasets": []}
                ids = [run_id for run_id in wanted if run_id in found]
                for kind, into in (("param", "params"), ("tag", "tags")):
                    table = self.tables[kind].c
                    for run_id, key, value in connection.execute(
                            sa.select(table.run_uuid, table.key, table.value).where(table.run_uuid.in_(ids))):
                        found[run_id][into][key] = value
                metric = self.tables["metric"].c
                for run_id, key, value, is_nan in connection.execute(
                        sa.select(metric.run_uuid, metric.key, metric.value, metric.is_nan)
                        .where(metric.run_uuid.in_(ids))):
                    found[run_id]["metrics"][key] = math.nan if is_nan else float(value)
                for run_id, name, digest, context in connection.execute(self._datasets_of(ids)):
                    found[run_id]["datasets"].append((name, digest, context or ""))
        for row in found.values():
            row["datasets"] = sorted(set(row["datasets"]))
        return found

    def _datasets_of(self, run_ids: list[str]) -> Any:
        import sqlalchemy as sa

        inputs, datasets, tags = self.inputs.c, self.datasets.c, self.input_tags.c
        return (
            sa.select(inputs.destination_id, datasets.name, datasets.digest, tags.value)
            .select_from(self.inputs.join(self.datasets, datasets.dataset_uuid == inputs.source_id).outerjoin(
                self.input_tags, sa.and_(tags.input_uuid == inputs.input_uuid, tags.name == "mlflow.data.context")))
            .where(inputs.destination_type == "RUN", inputs.source_type == "DATASET",
                   inputs.destination_id.in_(run_ids))
        )

    def metric_points(self, experiment_ids: Sequence[str], clauses: Sequence[Clause], metric: str,
                      limit: int) -> list[tuple[str, str, str, int, float]]:
        """``(run id, name, status, start, value)`` of the newest ``limit`` selected runs with a non-NaN
        latest ``metric``, newest first."""
        import sqlalchemy as sa

        runs, latest = self.runs.c, self.tables["metric"].alias("point")
        stmt = (
            sa.select(runs.run_uuid, runs.name, runs.status, runs.start_time, latest.c.value)
            .select_from(self.runs)
            .join(latest, sa.and_(latest.c.run_uuid == runs.run_uuid, latest.c.key == metric,
                                  latest.c.is_nan == sa.false()))
            .where(*self._where(experiment_ids, clauses))
            .order_by(runs.start_time.desc(), runs.run_uuid)
            .limit(limit)
        )
        with self._connect() as connection:
            return [(run_id, name or "", status, start or 0, float(value))
                    for run_id, name, status, start, value in connection.execute(stmt)]

    def cells(self, experiment_ids: Sequence[str], cell_tag: str) -> list[tuple[str, str, int, int]]:
        """``(cell key, name of its latest run, its latest start, its number of runs)`` per cell, from one scan
        (window functions: the newest run of each cell and the count of its runs)."""
        import sqlalchemy as sa

        runs, tags = self.runs.c, self.tables["tag"].c
        newest_first = sa.func.row_number().over(partition_by=tags.value,
                                                 order_by=(runs.start_time.desc(), runs.run_uuid))
        per_run = (
            sa.select(tags.value.label("key"), runs.name, runs.start_time,
                      sa.func.count().over(partition_by=tags.value).label("runs"), newest_first.label("rank"))
            .select_from(self.tables["tag"].join(self.runs, runs.run_uuid == tags.run_uuid))
            .where(tags.key == cell_tag, *self._where(experiment_ids, ()))
            .subquery()
        )
        stmt = sa.select(per_run.c.key, per_run.c.name, per_run.c.start_time, per_run.c.runs).where(per_run.c.rank == 1)
        with self._connect() as connection:
            return [(key, name or "", latest or 0, count) for key, name, latest, count in connection.execute(stmt)]

    def children(self, experiment_ids: Sequence[str], parent_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(run id, parent run id)`` of the active runs of the experiments whose ``mlflow.parentRunId`` is one of
        ``parent_ids`` (one level)."""
        import sqlalchemy as sa

        runs, tags = self.runs.c, self.tables["tag"].c
        found: list[tuple[str, str]] = []
        with self._connect() as connection:
            for start in range(0, len(parent_ids), 500):
                stmt = (sa.select(runs.run_uuid, tags.value)
                        .select_from(self.tables["tag"].join(self.runs, runs.run_uuid == tags.run_uuid))
                        .where(tags.key == "mlflow.parentRunId", tags.value.in_(list(parent_ids[start:start + 500])),
                               *self._where(experiment_ids, ())))
                found += [(run_id, parent) for run_id, parent in connection.execute(stmt)]
        return found

    def tags_of(self, run_ids: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, str]]:
        """The tags ``keys`` of the runs ``run_ids`` (those they have), by run id."""
        import sqlalchemy as sa

        tags = self.tables["tag"].c
        found: dict[str, dict[str, str]] = {}
        with self._connect() as connection:
            for start in range(0, len(run_ids), 500):
                stmt = sa.select(tags.run_uuid, tags.key, tags.value).where(
                    tags.run_uuid.in_(list(run_ids[start:start + 500])), tags.key.in_(list(keys)))
                for run_id, key, value in connection.execute(stmt):
                    found.setdefault(run_id, {})[key] = value
        return found

    def histories(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        """Every value of every metric the run logged, ``(step, value)`` by metric (NaN as NaN), in step order."""
        import sqlalchemy as sa

        metrics = sa.table("metrics", sa.column("key", sa.String), sa.column("value", sa.Float),
                           sa.column("step", sa.BigInteger), sa.column("timestamp", sa.BigInteger),
                           sa.column("is_nan", sa.Boolean), sa.column("run_uuid", sa.String))
        m = metrics.c
        stmt = (sa.select(m.key, m.step, m.value, m.is_nan).where(m.run_uuid == run_id)
                .order_by(m.key, m.step, m.timestamp))
        found: dict[str, list[tuple[int, float]]] = {}
        with self._connect() as connection:
            for key, step, value, is_nan in connection.execute(stmt):
                found.setdefault(key, []).append((int(step or 0), math.nan if is_nan else float(value)))
        return found

    # -- pieces ---------------------------------------------------------------------------------------

    def _where(self, experiment_ids: Sequence[str], clauses: Sequence[Clause]) -> list[Any]:
        runs = self.runs.c
        conditions = [runs.experiment_id.in_(_experiment_numbers(experiment_ids)), runs.lifecycle_stage == "active"]
        return conditions + [self._condition(clause) for clause in clauses]

    def _condition(self, clause: Clause) -> Any:
        import sqlalchemy as sa

        runs = self.runs.c
        if clause.kind == "attribute" and clause.key != "run_name":
            column = runs.run_uuid if clause.key == "run_id" else runs[clause.key]
            return _compare(column, clause.op, clause.value)
        kind, key = ("tag", RUN_NAME_TAG) if clause.kind == "attribute" else (clause.kind, clause.key)
        table = self.tables[kind].alias()
        found = sa.select(table.c.run_uuid).where(table.c.run_uuid == runs.run_uuid, table.c.key == key)
        if clause.op == "IS NULL":
            return ~found.exists()
        if clause.op == "IS NOT NULL":
            return found.exists()
        test = _compare(table.c.value, clause.op, clause.value)
        if kind == "metric":  # NaN is stored as 0 with is_nan: it satisfies only "!="
            test = sa.or_(test, table.c.is_nan == sa.true()) if clause.op == "!=" else sa.and_(
                test, table.c.is_nan == sa.false())
        return found.where(test).exists()

    def _connect(self) -> Any:
        return _engine(self.uri).connect()


def _compare(column: Any, op: str, value: Any) -> Any:
    if op == "LIKE":
        return column.like(value)
    if op == "ILIKE":
        return column.ilike(value)
    if op == "IN":
        return column.in_(value)
    if op == "NOT IN":
        return ~column.in_(value)
    return {"=": column.__eq__, "!=": column.__ne__, "<": column.__lt__, "<=": column.__le__,
            ">": column.__gt__, ">=": column.__ge__}[op](value)


def _experiment_numbers(experiment_ids: Sequence[str]) -> list[int]:
    return [int(e) for e in experiment_ids if str(e).isdigit()]


def _engine(uri: str) -> Any:
    """One engine per store, shared by this process's searches."""
    with _engines_lock:
        if uri not in _engines:
            import sqlalchemy as sa

            if uri.startswith("sqlite:"):
                engine = sa.create_engine(uri, poolclass=sa.pool.NullPool, connect_args={"timeout": 10})

                @sa.event.listens_for(engine, "connect")
                def _case_sensitive(connection: Any, _record: Any) -> None:  # as MLflow's own sqlite engine
                    cursor = connection.cursor()
                    cursor.execute("PRAGMA case_sensitive_like = true")
                    cursor.close()
            else:
                engine = sa.create_engine(uri, pool_pre_ping=True)
            _engines[uri] = engine
        return _engines[uri]
