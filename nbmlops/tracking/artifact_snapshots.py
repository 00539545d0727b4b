"""The project's data snapshot store as the settings say: its folder and, with ``data_store = "mlflow"`` (the
default when the tracking URI is an ``http(s)://`` server), the MLflow artifact store as its remote
(:mod:`nbmlops.backend.snapshot_remote`)."""

from __future__ import annotations

import threading

from nbmlops.backend.snapshot_remote import DATA_EXPERIMENT, MlflowSnapshotRemote
from nbmlops.config import Settings
from nbmlops.data.snapshots import SnapshotStore

__all__ = ["DATA_EXPERIMENT", "open_snapshot_store"]

_remotes: dict[tuple[str, str | None], MlflowSnapshotRemote] = {}
_remotes_lock = threading.Lock()


def open_snapshot_store(settings: Settings, *, remote: bool = True) -> SnapshotStore:
    """The project's snapshot store as ``settings`` say: its folder and, when ``data_store`` is
    ``mlflow`` and ``remote`` is true, the MLflow artifact store as its remote."""
    if not remote or settings.data_store != "mlflow":
        return SnapshotStore(settings.data_dir)
    key = (settings.tracking_uri, settings.artifact_root)
    with _remotes_lock:
        if key not in _remotes:
            _remotes[key] = MlflowSnapshotRemote(settings.tracking_uri, settings.artifact_root)
        return SnapshotStore(settings.data_dir, remote=_remotes[key])

