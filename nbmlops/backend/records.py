"""Journaled records applied to a tracking store, through a table of handlers by record kind (:data:`HANDLERS`).

A delivery walks the records in order. Params, metrics and tags of one run gather into as few ``log_batch``
calls as MLflow's per-call limits allow, and consecutive artifacts of one run into one upload; any other
record sends what has gathered first, so the store sees the records in journal order. A record for a run
whose start is missing, or of a kind no handler takes, is refused (:class:`RecordRejected`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from nbmlops.backend.errors import RecordRejected
from nbmlops.backend.models import deliver_model
from nbmlops.backend.tags import PARENT_KEY_TAG, RUN_KEY_TAG

if TYPE_CHECKING:
    from nbmlops.backend.store import Store

__all__ = ["HANDLERS", "deliver"]

_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}


class _Delivery:
    """One delivery in progress: the store, the run ids found so far, and what has gathered for one call."""

    def __init__(self, store: Store, runs: dict[str, str], careful: bool) -> None:
        self.store = store
        self.runs = runs
        self.careful = careful
        self.batch_run: str | None = None
        self.batch: dict[str, list[Any]] = {"metrics": [], "params": [], "tags": []}
        self.artifacts: list[dict[str, Any]] = []

    def send_batch(self) -> None:
        """Send the params, metrics and tags gathered for one run."""
        if self.batch_run is not None and any(self.batch.values()):
            client, run_id = self.store.client, self.runs[self.batch_run]
            metrics, params, tags = self.batch["metrics"], self.batch["params"], self.batch["tags"]
            while metrics or params or tags:  # as few calls as MLflow's per-call limits allow
                p, params = params[: _BATCH_LIMITS["params"]], params[_BATCH_LIMITS["params"] :]
                t, tags = tags[: _BATCH_LIMITS["tags"]], tags[_BATCH_LIMITS["tags"] :]
                room = _BATCH_LIMITS["metrics"] - len(p) - len(t)
                m, metrics = metrics[:room], metrics[room:]
                self.store._call(functools.partial(client.log_batch, run_id, metrics=m, params=p, tags=t))
        self.batch = {"metrics": [], "params": [], "tags": []}

    def send_artifacts(self) -> None:
        """Upload the artifacts gathered for one run with a single copy into its artifact location."""
        if not self.artifacts:
            return
        run_id = self.runs[self.artifacts[0]["run"]]
        with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
            for record in self.artifacts:
                path = PurePosixPath(record["path"])
                if path.is_absolute() or ".." in path.parts:
                    raise RecordRejected(f"artifact path {record['path']!r} leaves the run's artifact folder")
                local = Path(tmp, *path.parts)
                local.parent.mkdir(parents=True, exist_ok=True)
                if "file" in record:
                    _copy_checked(Path(record["file"]), local, record.get("sha256"))
                else:
                    local.write_bytes(record["text"].encode() if "text" in record else base64.b64decode(record["b64"]))
            client = self.store.client
            self.store._call(lambda: client.log_artifacts(run_id, tmp))
        self.artifacts.clear()

    def gather(self, record: dict[str, Any], kind: str, items: list[Any]) -> None:
        """Add ``items`` to the batch of ``record``'s run (sending another run's batch first)."""
        if self.batch_run != record["run"]:
            self.send_batch()
            self.batch_run = record["run"]
        self.batch[kind] += items


def _start(delivery: _Delivery, record: dict[str, Any]) -> None:
    delivery.send_batch()
    key = record["run"]
    if key not in delivery.runs:
        delivery.runs[key] = _start_run(delivery.store, record, delivery.runs, delivery.careful)
    delivery.batch_run = key


def _start_run(store: Store, record: dict[str, Any], runs: dict[str, str], careful: bool) -> str:
    """The run a start record makes: found by its key when a delivery is resumed, else created once."""
    client = store.client
    experiment_id = store.experiment_id(record["experiment"])
    key = record["run"]
    if careful or store.creation_uncertain(key):
        found = store.run_id_for_key(experiment_id, key)
        if found:
            return found
    tags = dict(record.get("tags", {}))
    tags[RUN_KEY_TAG] = key
    parent = record.get("parent")
    if parent:
        tags[PARENT_KEY_TAG] = parent
        parent_id = runs.get(parent) or store.run_id_for_key(experiment_id, parent)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
    return store.create_run_once(
        experiment_id,
        key,
        lambda: client.create_run(experiment_id, start_time=record["ts"], tags=tags, run_name=record.get("name")),
    )


def _params(delivery: _Delivery, record: dict[str, Any]) -> None:
    from mlflow.entities import Param

    delivery.gather(record, "params", [Param(k, v) for k, v in record["params"].items()])


def _tags(delivery: _Delivery, record: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    delivery.gather(record, "tags", [RunTag(k, v) for k, v in record["tags"].items()])


def _metrics(delivery: _Delivery, record: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    delivery.gather(record, "metrics", [Metric(k, v, ts, step) for k, v, step, ts in record["metrics"]])


def _artifact(delivery: _Delivery, record: dict[str, Any]) -> None:
    delivery.send_batch()
    delivery.artifacts.append(record)


def _dataset(delivery: _Delivery, record: dict[str, Any]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    delivery.send_batch()
    dataset = Dataset(
        name=record["name"],
        digest=record["digest"],
        source_type=record.get("source_type", "code"),
        source=record.get("source") or "{}",
        schema=record.get("schema"),
        profile=json.dumps(record["profile"]) if record.get("profile") is not None else None,
    )
    tags = [InputTag("mlflow.data.context", record.get("context", "input"))]
    client, run_id = delivery.store.client, delivery.runs[record["run"]]
    delivery.store._call(lambda: client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)]))


def _model(delivery: _Delivery, record: dict[str, Any]) -> None:
    delivery.send_batch()
    store = delivery.store
    store._call(functools.partial(deliver_model, store.client, delivery.runs[record["run"]], record))


def _end(delivery: _Delivery, record: dict[str, Any]) -> None:
    delivery.send_batch()
    store, key = delivery.store, record["run"]
    run_id = delivery.runs[key]
    store.settle_uncertain(key, run_id)  # a create the server applied late may have made a twin meanwhile
    if delivery.careful and store.superseded(run_id):
        return  # a late replay of an attempt that a later one replaced: it stays KILLED
    client = store.client
    store._call(functools.partial(client.set_terminated, run_id, record["status"], record["ts"]))


Handler = Callable[[_Delivery, dict[str, Any]], None]

#: the handler of each record kind
HANDLERS: dict[str, Handler] = {
    "start": _start,
    "params": _params,
    "metrics": _metrics,
    "tags": _tags,
    "artifact": _artifact,
    "dataset": _dataset,
    "model": _model,
    "end": _end,
}


def deliver(store: Store, records: Iterable[dict[str, Any]], runs: dict[str, str], careful: bool) -> None:
    """Apply ``records`` in order. ``runs`` maps run keys to MLflow run ids and is updated in place.

    With ``careful`` (a resumed or retried delivery) a run is first looked up by its key, so it is never
    created twice.
    """
    _ = store.client  # first: a dead server is noticed before mlflow is imported
    delivery = _Delivery(store, runs, careful)
    for record in records:
        kind, key = record["t"], record["run"]
        if delivery.artifacts and (kind != "artifact" or delivery.artifacts[0]["run"] != key):
            delivery.send_artifacts()
        if kind != "start" and key not in runs:
            raise RecordRejected(f"record {kind!r} for run {key} whose start record is missing")
        handler = HANDLERS.get(kind)
        if handler is None:
            delivery.send_batch()
            raise RecordRejected(f"unknown record type {kind!r}")
        handler(delivery, record)
    delivery.send_artifacts()
    delivery.send_batch()


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
