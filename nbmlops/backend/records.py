"""Journaled records applied to a tracking store, through a table of handlers by record kind (:data:`HANDLERS`).

A delivery takes the records run by run (runs in the order they first appear), each run's in as few calls as
MLflow allows (:func:`in_run_order`): ``create_run`` with the tags of its start and of every tags record the
delivery holds for it, one ``log_batch`` for its params, metrics and any other tags (more only past MLflow's
per-call limits), one upload of its artifacts (straight to the artifact location ``create_run`` named, with no
look-up of the run; a plain write into a local one, ``file:``), its datasets and models in their order, and its end last. A record for a run
whose start is missing, or of a kind no handler takes, is refused (:class:`RecordRejected`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import tempfile
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from nbmlops.backend.identity import naming
from nbmlops.backend.models import deliver_model
from nbmlops.backend.tags import PARENT_KEY_TAG, RUN_KEY_TAG
from nbmlops.exceptions import RecordRejected

if TYPE_CHECKING:
    from nbmlops.backend.store import Store

__all__ = ["HANDLERS", "deliver", "in_run_order"]

_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}


#: where each kind of record goes within its run's records (others, datasets and models: 3, in their order)
_PLACE = {"start": 0, "params": 1, "metrics": 1, "tags": 1, "artifact": 2, "end": 4}
#: at most this many tags go into ``create_run`` (MLflow's limit for the tags of one ``log_batch``)
_CREATE_TAGS = 100
#: artifact location of the runs this process created lately: (store, run id) -> artifact URI
_artifact_uris: OrderedDict[tuple[str, str], str] = OrderedDict()
_ARTIFACT_URIS_KEPT = 1024


def in_run_order(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` run by run, each run's start first (carrying, as ``later_tags``, the tags of the tags records
    that follow it, for ``create_run``), then its params, metrics and other tags, its artifacts, its datasets and
    models, its end. Nothing a run records depends on the order of these kinds: tags keep their own order (the
    last value of a key wins), params cannot change, metrics carry their steps and times, artifacts their order."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_run.setdefault(record["run"], []).append(record)
    ordered: list[dict[str, Any]] = []
    for run_records in by_run.values():
        run_records = sorted(run_records, key=lambda record: _PLACE.get(record["t"], 3))
        if run_records[0]["t"] == "start":
            tags = [record for record in run_records if record["t"] == "tags"]
            merged: dict[str, str] = {}
            for record in tags:
                merged.update(record["tags"])
            if tags and len(merged) + len(run_records[0].get("tags", {})) <= _CREATE_TAGS:
                run_records = [{**run_records[0], "later_tags": merged}] + [
                    record for record in run_records[1:] if record["t"] != "tags"
                ]
        ordered += run_records
    return ordered


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
            metrics, params, tags = self.batch["metrics"], _last_of_each(self.batch["params"]), _last_of_each(
                self.batch["tags"]
            )
            while metrics or params or tags:  # as few calls as MLflow's per-call limits allow
                p, params = params[: _BATCH_LIMITS["params"]], params[_BATCH_LIMITS["params"] :]
                t, tags = tags[: _BATCH_LIMITS["tags"]], tags[_BATCH_LIMITS["tags"] :]
                room = _BATCH_LIMITS["metrics"] - len(p) - len(t)
                m, metrics = metrics[:room], metrics[room:]
                self.store._call(functools.partial(client.log_batch, run_id, metrics=m, params=p, tags=t))
        self.batch = {"metrics": [], "params": [], "tags": []}

    def send_artifacts(self) -> None:
        """Upload the artifacts gathered for one run with a single copy into its artifact location (written
        straight into it when it is a local folder, ``file:``, whose location ``create_run`` named)."""
        if not self.artifacts:
            return
        run_id = self.runs[self.artifacts[0]["run"]]
        location = _artifact_uris.get((self.store.uri, run_id))
        if location is not None and location.startswith("file:"):
            folder = Path(urllib.request.url2pathname(urllib.parse.urlsplit(location).path))
            self.store._call(functools.partial(_write_artifacts, folder, list(self.artifacts)))
            self.artifacts.clear()
            return
        with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
            _write_artifacts(Path(tmp), self.artifacts)
            client = self.store.client
            location = _artifact_uris.get((self.store.uri, run_id))
            if location is None:
                self.store._call(lambda: client.log_artifacts(run_id, tmp))
            else:
                from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

                repository = get_artifact_repository(location, tracking_uri=self.store.uri)
                self.store._call(lambda: repository.log_artifacts(tmp))
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
    later = record.get("later_tags") or {}
    created = False
    if key not in delivery.runs:
        delivery.runs[key], created = _start_run(delivery.store, record, delivery.runs, delivery.careful)
    delivery.batch_run = key
    if later and not created:  # the run was there already: its later tags go the usual way
        _tags(delivery, {"run": key, "tags": later})


def _start_run(store: Store, record: dict[str, Any], runs: dict[str, str], careful: bool) -> tuple[str, bool]:
    """The run a start record makes: found by its key when a delivery is resumed, else created once (with the
    record's ``later_tags`` too). Returns its id and whether it was created here."""
    client = store.client
    experiment_id = store.experiment_id(record["experiment"])
    key = record["run"]
    if careful or store.creation_uncertain(key):
        found = store.run_id_for_key(experiment_id, key)
        if found:
            return found, False
    tags = {**record.get("tags", {}), **record.get("later_tags", {})}
    tags[RUN_KEY_TAG] = key
    parent = record.get("parent")
    if parent:
        tags[PARENT_KEY_TAG] = parent
        parent_id = runs.get(parent) or store.run_id_for_key(experiment_id, parent)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id

    def create() -> Any:
        run = client.create_run(experiment_id, start_time=record["ts"], tags=tags, run_name=record.get("name"))
        _artifact_uris[(store.uri, run.info.run_id)] = run.info.artifact_uri
        while len(_artifact_uris) > _ARTIFACT_URIS_KEPT:
            _artifact_uris.popitem(last=False)
        return run

    # a run found after a create whose reply was lost was made by that create: with these tags
    with naming("experiment", record["experiment"]):
        return store.create_run_once(experiment_id, key, create), True


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
    with naming("registered model", record["name"]):
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
    """Apply ``records`` run by run (see :func:`in_run_order`). ``runs`` maps run keys to MLflow run ids and is
    updated in place.

    With ``careful`` (a resumed or retried delivery) a run is first looked up by its key, so it is never
    created twice.
    """
    _ = store.client  # first: a dead server is noticed before mlflow is imported
    delivery = _Delivery(store, runs, careful)
    for record in in_run_order(records):
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


def _write_artifacts(folder: Path, records: list[dict[str, Any]]) -> None:
    """Write the artifact records' payloads under ``folder`` at their paths."""
    made: set[Path] = set()
    for record in records:
        path = PurePosixPath(record["path"])
        if path.is_absolute() or ".." in path.parts:
            raise RecordRejected(f"artifact path {record['path']!r} leaves the run's artifact folder")
        local = folder.joinpath(*path.parts)
        if local.parent not in made:
            local.parent.mkdir(parents=True, exist_ok=True)
            made.add(local.parent)
        if "file" in record:
            _copy_checked(Path(record["file"]), local, record.get("sha256"))
        else:
            local.write_bytes(record["text"].encode() if "text" in record else base64.b64decode(record["b64"]))


def _last_of_each(items: list[Any]) -> list[Any]:
    """Params or tags with one entry per key: the last value given (MLflow refuses a key twice in one call)."""
    return list({item.key: item for item in items}.values())


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
