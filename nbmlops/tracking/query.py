"""Reading recorded runs back from a tracking store: a run, its child runs, metric histories, artifacts.

MLflow is called through the backend (:mod:`nbmlops.backend.store`), so importing this module stays cheap.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from nbmlops.backend import runs
from nbmlops.backend.runs import RunRow, row_of
from nbmlops.backend.store import PARENT_KEY_TAG, RUN_KEY_TAG, Store, open_store
from nbmlops.exceptions import RecordRejected, RunNotFoundError
from nbmlops.redact import redact_uri

__all__ = [
    "RunNotFoundError",
    "artifact_text",
    "child_runs",
    "download_artifact",
    "kernel_history",
    "load_run",
    "metric_history",
]

def load_run(tracking_uri: str, run_id: str) -> RunRow:
    """The run ``run_id``; a :class:`RunNotFoundError` when the store has no such run."""
    store = _store(tracking_uri)
    try:
        run = runs.get_run(store, run_id)
    except RecordRejected as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RunNotFoundError(run_id, redact_uri(tracking_uri)) from None
        raise
    return row_of(run, runs.experiment_name(store, run.info.experiment_id))


def child_runs(tracking_uri: str, run_id: str) -> list[RunRow]:
    """The runs whose parent is ``run_id``, in any experiment, oldest first.

    A child is found by ``mlflow.parentRunId`` or, when it reached the store before its parent
    and was never linked, by the parent's run key (``nbmlops.parent_key``).
    """
    store = _store(tracking_uri)
    parent = runs.get_run(store, run_id)
    filters = [f"tags.`mlflow.parentRunId` = '{run_id}'"]
    key = parent.data.tags.get(RUN_KEY_TAG)
    if key:
        filters.append(f"tags.`{PARENT_KEY_TAG}` = '{key}'")
    experiments = dict(runs.experiments(store))
    ids = list(experiments)
    found: dict[str, Any] = {}
    for start in range(0, len(ids), 50):
        for condition in filters:
            for run in runs.search_runs(store, ids[start : start + 50], condition, limit=5000):
                found[run.info.run_id] = run
    children = sorted(found.values(), key=lambda run: run.info.start_time)
    return [row_of(run, experiments[run.info.experiment_id]) for run in children]


def download_artifact(tracking_uri: str, run_id: str, path: str, dst_dir: str | Path) -> Path | None:
    """Download the artifact (file or folder) ``path`` of run ``run_id`` into ``dst_dir``; None when absent."""
    store = _store(tracking_uri)
    path = path.strip("/")
    listed = runs.list_artifacts(store, run_id, posixpath.dirname(path) or None)
    if path not in {found for found, _ in listed}:
        holder = _holder(store, run_id, path)  # a folder an earlier run of the session stored (STORED_IN_TAG)
        return download_artifact(tracking_uri, holder, path, dst_dir) if holder else None
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    return Path(runs.download_artifact(store, run_id, path, str(dst_dir)))


def _holder(store: Store, run_id: str, path: str) -> str | None:
    """The run that holds ``path`` for run ``run_id``: the one its ``nbmlops.stored_in.<folder>`` tag names."""
    from nbmlops.tracking.run import STORED_IN_TAG

    folder = path.split("/", 1)[0]
    if "/" not in path:
        return None
    run = runs.get_run(store, run_id)
    key = run.data.tags.get(STORED_IN_TAG + folder)
    if not key or key == run.data.tags.get(RUN_KEY_TAG):
        return None
    return _run_for_key(store, run.info.experiment_id, key)


def artifact_text(tracking_uri: str, run_id: str, path: str) -> str | None:
    """The text of the artifact file ``path`` of run ``run_id``; None when the run has no such file."""
    with tempfile.TemporaryDirectory(prefix="nbmlops-") as tmp:
        found = download_artifact(tracking_uri, run_id, path, tmp)
        return found.read_text(errors="replace") if found is not None and found.is_file() else None


def kernel_history(tracking_uri: str, run_id: str) -> list[dict[str, Any]] | None:
    """The kernel history that led to a ``%%track`` run, its own cell last: ``{"n", "source", "raised"?}`` per
    cell. Empty when the run stored none; None when part of it is missing (a run it refers to is gone).

    Each run stores only the cells after those the previous tracked cell of its kernel stored, and which run
    holds them (``code/history.json``, format 2), so the history is put together by following those runs back.
    A run of format 1 holds the whole history itself.
    """
    store = _store(tracking_uri)
    parts: list[list[dict[str, Any]]] = []
    current: str | None = run_id
    upto: int | None = None
    experiment_id = runs.get_run(store, run_id).info.experiment_id
    while current is not None:
        text = artifact_text(tracking_uri, current, "code/history.json")
        if text is None:
            return [] if not parts else None
        stored = json.loads(text)
        cells, before = (stored, None) if isinstance(stored, list) else (stored["cells"], stored.get("before"))
        parts.append([cell for cell in cells if upto is None or cell["n"] <= upto])
        if not before:
            break
        upto = int(before["upto"])
        current = _run_for_key(store, experiment_id, str(before["run_key"]))
        if current is None:
            return None
    return [cell for part in reversed(parts) for cell in part]


def _run_for_key(store: Store, experiment_id: str, key: str) -> str | None:
    """The run recorded under local key ``key``: in ``experiment_id`` first, then in any experiment."""
    if not key.isalnum():
        return None
    condition = f"tags.`{RUN_KEY_TAG}` = '{key}'"
    found = runs.search_runs(store, [experiment_id], condition, limit=1)
    if not found:
        ids = [experiment for experiment, _ in runs.experiments(store)]
        for start in range(0, len(ids), 50):
            found = runs.search_runs(store, ids[start : start + 50], condition, limit=1)
            if found:
                break
    return found[0].info.run_id if found else None


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every value run ``run_id`` logged for metric ``key``, as ``(step, value)`` pairs in step order
    (values of one step in the order they were logged); empty when it logged none."""
    history = runs.metric_history(_store(tracking_uri), run_id, key)
    return [(step, value) for step, value, _ in sorted(history, key=lambda m: (m[0], m[2]))]


def _store(tracking_uri: str) -> Store:
    """The store (sqlite stores opened safely against concurrent writers)."""
    return open_store(tracking_uri, None)


