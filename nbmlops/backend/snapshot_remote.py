"""Data snapshots shared through the MLflow artifact store, for teams on one tracking server: the remote of a
:class:`~nbmlops.data.snapshots.SnapshotStore`.

With ``data_store = "mlflow"`` (the default when the tracking URI is an ``http(s)://`` server),
snapshots are kept in the local store (``.nbmlops/data``) and uploaded as artifacts of one run,
``snapshots`` in the experiment ``nbmlops-data`` (tag ``nbmlops.kind=data-store``), under the same
layout: ``<fp[:2]>/<fp>.parquet`` (or ``.bin`` for a file) and its sidecar ``<fp>.json``, which is
uploaded last, so a snapshot counts as shared only once it is complete. A store on another machine
that lacks a snapshot downloads it from there, verifies its fingerprint and keeps it.

The run is found by its tag, so any server configuration works (artifacts proxied by the server
or written straight to S3, GCS, ...). Should two clients create it at once, uploads go to the
oldest and downloads look in each.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nbmlops.backend.downloads import quiet_downloads
from nbmlops.backend.store import open_store
from nbmlops.data.snapshots import SnapshotError
from nbmlops.redact import redact_uri

__all__ = ["DATA_EXPERIMENT", "MlflowSnapshotRemote"]

DATA_EXPERIMENT = "nbmlops-data"
DATA_RUN_NAME = "snapshots"
_KIND = "data-store"


class MlflowSnapshotRemote:
    """Snapshots as artifacts of the ``nbmlops-data`` run of a tracking store (mlflow imported on use)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._run_id: str | None = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"the MLflow artifact store of {redact_uri(self.tracking_uri)} (experiment {DATA_EXPERIMENT})"

    def upload(self, fingerprint: str, files: Sequence[Path]) -> bool:
        """Upload ``files`` (data file first, sidecar last) unless the sidecar is there already."""
        with _errors("upload", fingerprint):
            client = self._client()
            run_id = self._upload_run()
            folder = fingerprint[:2]
            if f"{fingerprint}.json" in self._names(client, run_id, folder):
                return False
            for path in sorted(files, key=lambda p: p.suffix == ".json"):
                client.log_artifact(run_id, str(path), folder)
            return True

    def download(self, fingerprint: str, folder: Path) -> list[Path]:
        """Download a complete snapshot's files into ``folder``; [] when no data run holds one."""
        with _errors("download", fingerprint):
            client = self._client()
            prefix = fingerprint[:2]
            for run_id in self._run_ids(client):
                names = self._names(client, run_id, prefix)
                if f"{fingerprint}.json" not in names:
                    continue
                wanted = sorted(n for n in names if n.startswith(f"{fingerprint}."))
                with quiet_downloads():
                    return [
                        Path(client.download_artifacts(run_id, f"{prefix}/{name}", str(folder))) for name in wanted
                    ]
            return []

    # -- the data run --------------------------------------------------------------------------

    def _client(self) -> Any:
        return open_store(self.tracking_uri, self.artifact_root).client

    def _names(self, client: Any, run_id: str, folder: str) -> set[str]:
        return {posixpath.basename(info.path) for info in client.list_artifacts(run_id, folder)}

    def _run_ids(self, client: Any) -> list[str]:
        """The data runs, oldest first (one, unless two clients created theirs at the same moment)."""
        experiment = client.get_experiment_by_name(DATA_EXPERIMENT)
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`nbmlops.kind` = '{_KIND}'",
            order_by=["attributes.start_time ASC"],
            max_results=100,
        )
        return [run.info.run_id for run in runs]

    def _upload_run(self) -> str:
        """The data run to upload to, created with its experiment on first use."""
        with self._lock:
            if self._run_id is None:
                client = self._client()
                ids = self._run_ids(client)
                if not ids:
                    experiment_id = open_store(self.tracking_uri, self.artifact_root).experiment_id(DATA_EXPERIMENT)
                    run = client.create_run(experiment_id, run_name=DATA_RUN_NAME, tags={"nbmlops.kind": _KIND})
                    client.set_terminated(run.info.run_id, "FINISHED")
                    ids = self._run_ids(client) or [run.info.run_id]
                self._run_id = ids[0]
            return self._run_id


@contextlib.contextmanager
def _errors(action: str, fingerprint: str) -> Iterator[None]:
    """Turn whatever the store raises into a :class:`SnapshotError` naming the operation."""
    try:
        yield
    except SnapshotError:
        raise
    except Exception as exc:  # MlflowException, StoreUnavailableError, network and file errors alike
        message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        raise SnapshotError(f"cannot {action} data snapshot {fingerprint}: {message}") from exc
