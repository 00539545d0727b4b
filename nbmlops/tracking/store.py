"""Delivery of journal records to an MLflow tracking store: the only module of ``tracking`` that imports mlflow.

Replays are exactly-once: a run is created with its local key as a tag and looked up by it when a
delivery is resumed; params and tags are re-sent with the same values (MLflow accepts that);
metrics carry their original timestamps so MLflow's own de-duplication drops repeats.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from nbmlops.exceptions import StoreUnavailableError
from nbmlops.redact import redact_uri

__all__ = ["RecordRejected", "Store", "open_store"]

RUN_KEY_TAG = "nbmlops.run_key"
PARENT_KEY_TAG = "nbmlops.parent_key"
_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}
_TRANSIENT = re.compile(
    r"database is locked|database table is locked|unable to open database|connection|timed? ?out|"
    r"temporarily|max retries|503|502|504|refused|reset by peer",
    re.IGNORECASE,
)
_stores: dict[tuple[str, str | None], "Store"] = {}
_stores_lock = threading.Lock()


class RecordRejected(Exception):
    """The store answered, and refused a record for good (bad value, deleted run)."""


def open_store(uri: str, artifact_root: str | None) -> "Store":
    """The shared :class:`Store` for ``uri`` in this process."""
    with _stores_lock:
        key = (uri, artifact_root)
        if key not in _stores:
            _stores[key] = Store(uri, artifact_root)
        return _stores[key]


class Store:
    """One MLflow tracking store, opened lazily (importing mlflow costs about a second)."""

    def __init__(self, uri: str, artifact_root: str | None) -> None:
        self.uri = uri
        self.display_uri = redact_uri(uri)
        self.artifact_root = artifact_root
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` for this store, created (and the sqlite schema made) on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        if self.uri.startswith(("http://", "https://")):
            self._probe_http()
            # MLflow prints a "View run ..." line at every run end on a server store: noise in a user's cell
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if self.uri.startswith("sqlite:///"):
            return self._connect_sqlite()
        from mlflow import MlflowClient

        return self._call(lambda: MlflowClient(tracking_uri=self.uri))

    def _probe_http(self) -> None:
        """Fail fast when a tracking server is down, instead of waiting out MLflow's long retries."""
        try:
            with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=3):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: something is listening
        except (OSError, ValueError) as exc:
            raise StoreUnavailableError(self.display_uri, str(getattr(exc, "reason", exc))) from None

    def _connect_sqlite(self) -> Any:
        """Open a sqlite store safely when several processes do so at once.

        The schema migration runs under an exclusive file lock; the database uses WAL and a long busy
        timeout, so concurrent writers wait for each other instead of failing with ``database is locked``.
        """
        path = Path(self.uri[len("sqlite:///") :].split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            connection = sqlite3.connect(path, timeout=60)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
            finally:
                connection.close()
            from mlflow import MlflowClient

            engine_uri = self.uri if "?" in self.uri else f"{self.uri}?timeout=60"
            # schema creation and migration chatter (also from the registry's own store, made on first use)
            for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
                logging.getLogger(name).setLevel(logging.WARNING)
            client = self._call(lambda: MlflowClient(tracking_uri=engine_uri))
            self._call(lambda: client.search_experiments(max_results=1))
        return client

    def _call(self, fn: Callable[[], Any], attempts: int = 8) -> Any:
        """Run one store call; retry transient failures, classify the rest."""
        from mlflow.exceptions import MlflowException

        delay = 0.05
        for attempt in range(attempts):
            try:
                return fn()
            except MlflowException as exc:
                if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST"):
                    raise RecordRejected(str(exc)) from exc
                reason = str(exc)
            except StoreUnavailableError:
                raise
            except Exception as exc:  # network errors, sqlalchemy errors, OSError from artifact copies
                reason = f"{type(exc).__name__}: {exc}"
            if not _TRANSIENT.search(reason) or attempt == attempts - 1:
                raise StoreUnavailableError(self.display_uri, reason.splitlines()[0][:500])
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- delivery -----------------------------------------------------------------------------

    def deliver(self, records: Iterable[dict[str, Any]], runs: dict[str, str], careful: bool) -> None:
        """Apply ``records`` in order. ``runs`` maps run keys to MLflow run ids and is updated in place.

        With ``careful`` (a resumed or retried delivery) a run is first looked up by its key, so it is
        never created twice.
        """
        client = self.client  # first: a dead server is noticed before mlflow is imported
        from mlflow.entities import Metric, Param, RunTag

        batch: dict[str, list[Any]] = {"metrics": [], "params": [], "tags": []}
        batch_run: str | None = None

        def send_batch() -> None:
            nonlocal batch
            if batch_run is not None and any(batch.values()):
                run_id = runs[batch_run]
                metrics, params, tags = batch["metrics"], batch["params"], batch["tags"]
                while metrics or params or tags:  # as few calls as MLflow's per-call limits allow
                    p, params = params[: _BATCH_LIMITS["params"]], params[_BATCH_LIMITS["params"] :]
                    t, tags = tags[: _BATCH_LIMITS["tags"]], tags[_BATCH_LIMITS["tags"] :]
                    room = _BATCH_LIMITS["metrics"] - len(p) - len(t)
                    m, metrics = metrics[:room], metrics[room:]
                    self._call(lambda: client.log_batch(run_id, metrics=m, params=p, tags=t))
            batch = {"metrics": [], "params": [], "tags": []}

        artifacts: list[dict[str, Any]] = []

        def send_artifacts() -> None:
            if artifacts:
                self._log_artifacts(runs[artifacts[0]["run"]], artifacts)
                artifacts.clear()

        for record in records:
            kind, key = record["t"], record["run"]
            if artifacts and (kind != "artifact" or artifacts[0]["run"] != key):
                send_artifacts()
            if kind == "start":
                send_batch()
                if key not in runs:
                    runs[key] = self._start_run(record, runs, careful)
                batch_run = key
                continue
            if key not in runs:
                raise RecordRejected(f"record {kind!r} for run {key} whose start record is missing")
            if kind in ("params", "metrics", "tags"):
                if batch_run != key:
                    send_batch()
                    batch_run = key
                if kind == "params":
                    batch["params"] += [Param(k, v) for k, v in record["params"].items()]
                elif kind == "tags":
                    batch["tags"] += [RunTag(k, v) for k, v in record["tags"].items()]
                else:
                    batch["metrics"] += [Metric(k, v, ts, step) for k, v, step, ts in record["metrics"]]
                continue
            send_batch()
            run_id = runs[key]
            if kind == "artifact":
                artifacts.append(record)
            elif kind == "dataset":
                self._log_dataset(run_id, record)
            elif kind == "model":
                from nbmlops.registry.register import deliver_model  # the registry's side of a registration

                self._call(lambda: deliver_model(self.client, run_id, record))
            elif kind == "end":
                self._call(lambda: client.set_terminated(run_id, record["status"], record["ts"]))
            else:
                raise RecordRejected(f"unknown record type {kind!r}")
        send_artifacts()
        send_batch()

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (with an artifact location under ours) if needed."""
        if name in self._experiments:
            return self._experiments[name]
        client = self.client
        experiment = self._call(lambda: client.get_experiment_by_name(name))
        if experiment is None:
            location = None
            if self.artifact_root:
                slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80] or "experiment"
                location = Path(self.artifact_root, slug).resolve().as_uri()
            try:
                self._call(lambda: client.create_experiment(name, artifact_location=location))
            except RecordRejected:
                pass  # another process created it first
            except StoreUnavailableError as exc:
                if "already exists" not in exc.reason.lower():
                    raise
            experiment = self._call(lambda: client.get_experiment_by_name(name))
            if experiment is None:
                raise RecordRejected(f"experiment {name!r} could not be created")
        if experiment.lifecycle_stage == "deleted":
            self._call(lambda: client.restore_experiment(experiment.experiment_id))
        self._experiments[name] = experiment.experiment_id
        return experiment.experiment_id

    def _start_run(self, record: dict[str, Any], runs: dict[str, str], careful: bool) -> str:
        client = self.client
        experiment_id = self.experiment_id(record["experiment"])
        key = record["run"]
        if careful:
            found = self.run_id_for_key(experiment_id, key)
            if found:
                return found
        tags = dict(record.get("tags", {}))
        tags[RUN_KEY_TAG] = key
        parent = record.get("parent")
        if parent:
            tags[PARENT_KEY_TAG] = parent
            parent_id = runs.get(parent) or self.run_id_for_key(experiment_id, parent)
            if parent_id:
                tags["mlflow.parentRunId"] = parent_id
        run = self._call(
            lambda: client.create_run(experiment_id, start_time=record["ts"], tags=tags, run_name=record.get("name"))
        )
        return run.info.run_id

    def run_id_for_key(self, experiment_id: str, key: str) -> str | None:
        """The MLflow id of the run recorded under local ``key`` in an experiment, if it exists yet."""
        if not re.fullmatch(r"[0-9a-f]{32}", key):
            return None
        found = self._call(
            lambda: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1
            )
        )
        return found[0].info.run_id if found else None

    def adopt_children(self, experiment_id: str, parent_key: str, parent_id: str) -> int:
        """Link runs that name ``parent_key`` as parent but were delivered before it existed."""
        client = self.client
        orphans = self._call(
            lambda: client.search_runs(
                [experiment_id], filter_string=f"tags.`{PARENT_KEY_TAG}` = '{parent_key}'", max_results=10000
            )
        )
        adopted = 0
        for run in orphans:
            if "mlflow.parentRunId" not in run.data.tags:
                self._call(lambda: client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id))
                adopted += 1
        return adopted

    def _log_artifacts(self, run_id: str, records: list[dict[str, Any]]) -> None:
        """Store several artifacts of one run with a single copy into its artifact location."""
        with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
            for record in records:
                path = PurePosixPath(record["path"])
                if path.is_absolute() or ".." in path.parts:
                    raise RecordRejected(f"artifact path {record['path']!r} leaves the run's artifact folder")
                local = Path(tmp, *path.parts)
                local.parent.mkdir(parents=True, exist_ok=True)
                if "file" in record:
                    _copy_checked(Path(record["file"]), local, record.get("sha256"))
                else:
                    local.write_bytes(record["text"].encode() if "text" in record else base64.b64decode(record["b64"]))
            self._call(lambda: self.client.log_artifacts(run_id, tmp))

    def _log_dataset(self, run_id: str, record: dict[str, Any]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=record["name"],
            digest=record["digest"],
            source_type=record.get("source_type", "code"),
            source=record.get("source") or "{}",
            schema=record.get("schema"),
            profile=json.dumps(record["profile"]) if record.get("profile") is not None else None,
        )
        tags = [InputTag("mlflow.data.context", record.get("context", "input"))]
        self._call(lambda: self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)]))


    def running_runs(self, host: str) -> list[tuple[str, dict[str, str]]]:
        """``(run_id, tags)`` of every RUNNING run that a process on ``host`` started."""
        client = self.client
        experiments = self._call(lambda: client.search_experiments())
        ids = [e.experiment_id for e in experiments]
        found: list[tuple[str, dict[str, str]]] = []
        for start in range(0, len(ids), 50):
            runs = self._call(
                lambda: client.search_runs(
                    ids[start : start + 50],
                    filter_string=f"attributes.status = 'RUNNING' and tags.`nbmlops.host` = '{host}'",
                    max_results=5000,
                )
            )
            found += [(run.info.run_id, dict(run.data.tags)) for run in runs]
        return found

    def fail_run(self, run_id: str, reason: str) -> None:
        """Mark a run whose process is gone as FAILED, saying why."""
        client = self.client
        self._call(lambda: client.set_tag(run_id, "nbmlops.failure", "kernel_died"))
        self._call(lambda: client.set_tag(run_id, "nbmlops.failure_reason", reason))
        self._call(lambda: client.set_terminated(run_id, "FAILED"))

    def experiment_run_counts(self) -> list[tuple[str, str, int]]:
        """``(experiment id, name, number of runs)`` for every active experiment."""
        client = self.client
        rows = []
        for experiment in self._call(lambda: client.search_experiments()):
            runs = self._call(lambda: client.search_runs([experiment.experiment_id], max_results=50000))
            rows.append((experiment.experiment_id, experiment.name, len(runs)))
        return rows

    def previous_metrics(self, experiment_id: str, cell_key: str, run_id: str) -> dict[str, float] | None:
        """Metrics of the latest FINISHED run of the same cell before ``run_id`` (None when there is none)."""
        if "'" in cell_key or "\\" in cell_key:
            return None
        client = self.client
        runs = self._call(
            lambda: client.search_runs(
                [experiment_id],
                filter_string=f"tags.`nbmlops.cell_key` = '{cell_key}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=2,
            )
        )
        earlier = [run for run in runs if run.info.run_id != run_id]
        return dict(earlier[0].data.metrics) if earlier else None


def _copy_checked(source: Path, target: Path, sha256: str | None) -> None:
    """Copy a payload kept beside the journal, in chunks, checking it against the SHA-256 it was written with."""
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except FileNotFoundError:
        raise RecordRejected(f"the payload file {source} kept beside the journal is gone") from None
    if sha256 is not None and digest.hexdigest() != sha256:
        raise RecordRejected(f"the payload file {source} does not match its checksum (it was damaged)")
