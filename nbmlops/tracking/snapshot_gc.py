"""``nbmlops data gc`` as a Python call: the project's snapshot store, collected against what the tracking store's
runs and registered model versions need and what runs whose records still wait in a journal need.

:func:`collect_snapshots` wires :func:`nbmlops.data.gc.gc` (the policy) to the references of
:mod:`nbmlops.backend.snapshot_refs` (the MLflow side) and of the local journals (:func:`journal_references`:
a run recorded during an outage keeps its snapshots until its records are delivered), and, with
``data_store = "mlflow"``, to the snapshots shared through the MLflow artifact store.
"""

from __future__ import annotations

from pathlib import Path

from nbmlops.config import Settings, resolve_settings
from nbmlops.data.gc import DEFAULT_KEEP_DAYS, GcReport, gc
from nbmlops.journal import Cursor, list_journals, read_records
from nbmlops.tracking.run import SNAPSHOT_TAG

__all__ = ["WAITING", "collect_snapshots", "journal_references"]

WAITING = "needed by runs whose records wait in a journal"


def collect_snapshots(
    settings: Settings | None = None, *, keep_days: float = DEFAULT_KEEP_DAYS, dry_run: bool = False
) -> GcReport:
    """Delete the project's data snapshots that nothing needs (see :mod:`nbmlops.data.gc`); what it freed and kept.

    Raises:
        StoreUnavailableError: the tracking store (or the artifact store sharing snapshots) could not be
            asked; when the tracking store could not be, nothing was deleted.
        ValueError: ``keep_days`` is negative.
    """
    from nbmlops.backend.snapshot_refs import MlflowSnapshotFiles, snapshot_references
    from nbmlops.backend.store import open_store
    from nbmlops.tracking.artifact_snapshots import DATA_EXPERIMENT, open_snapshot_store

    settings = settings or resolve_settings()
    store = open_snapshot_store(settings)
    tracking = open_store(settings.tracking_uri, settings.artifact_root)
    remote = MlflowSnapshotFiles(tracking, DATA_EXPERIMENT) if store.remote is not None else None

    def needed() -> dict[str, str]:  # the journals first: a record leaves one only once it is in the store
        return {**journal_references(settings.journal_dir), **snapshot_references(tracking)}

    return gc(store, needed, keep_days=keep_days, dry_run=dry_run, remote=remote)


def journal_references(journal_dir: Path) -> dict[str, str]:
    """Every fingerprint a record not yet delivered from a journal in ``journal_dir`` names (a snapshot tag
    or a dataset): fingerprint -> :data:`WAITING`. Damaged parts of a journal are skipped."""
    found: dict[str, str] = {}
    for path in list_journals(journal_dir):
        try:
            records = list(read_records(path, Cursor.load(path).offset))
        except OSError:  # delivered and removed meanwhile
            continue
        for _, record in records:
            if not isinstance(record, dict):
                continue
            if record.get("t") == "tags":
                found.update(dict.fromkeys((k[len(SNAPSHOT_TAG):] for k in record.get("tags", {})
                                            if k.startswith(SNAPSHOT_TAG)), WAITING))
            elif record.get("t") == "dataset" and isinstance(record.get("digest"), str):
                found[record["digest"]] = WAITING
    return found
