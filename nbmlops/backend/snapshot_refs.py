"""The MLflow side of ``nbmlops data gc``: which data snapshots a tracking store's runs and registered model
versions need, and the snapshots shared through its artifact store.

A run needs the snapshots its tags ``nbmlops.snapshot.<fingerprint>`` name and those of the datasets logged
as its inputs (``reproduce`` restores a run's data from these alone). A registered model version needs its
training run's and that run's parent's (the notebook run whose parameters named files), and the
fingerprints its own lineage tags record (training, evaluation and features data), so that deleting
the run does not orphan the version. Runs and experiments in MLflow's trash count: they can be restored.
"""

from __future__ import annotations

import contextlib
import functools
import json
import posixpath
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbmlops.backend.models import EVALUATION_TAG, FEATURES_TAG, TRAINING_TAG
from nbmlops.backend.store import Store
from nbmlops.exceptions import NbmlopsError, StoreUnavailableError

__all__ = ["BY_RUNS", "BY_VERSIONS", "MlflowSnapshotFiles", "snapshot_references"]

BY_RUNS = "needed by runs"
BY_VERSIONS = "needed by registered model versions"
_SNAPSHOT_TAG = "nbmlops.snapshot."  # as tracking.run.SNAPSHOT_TAG: the tag a run gets per logged dataset
_DATA_RUN_KIND = "data-store"  # the nbmlops.kind tag of the run holding shared snapshots (backend.snapshot_remote)
_FINGERPRINT_LENGTH = 32


def snapshot_references(store: Store) -> dict[str, str]:
    """Every fingerprint a run or a registered model version of ``store`` needs: fingerprint -> why
    (:data:`BY_VERSIONS` where a version needs it, else :data:`BY_RUNS`)."""
    from mlflow.entities import ViewType

    client = store.client
    experiments = store._pages(
        lambda token: client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
    )
    ids = [e.experiment_id for e in experiments]
    by_run: dict[str, set[str]] = {}
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        runs = store._pages(
            functools.partial(_runs_page, client, chunk, ViewType.ALL)
        )
        for run in runs:
            found = _run_fingerprints(run)
            if found:
                by_run[run.info.run_id] = found
    needed = dict.fromkeys(set().union(*by_run.values()), BY_RUNS)
    for version in store._pages(lambda token: client.search_model_versions(max_results=1000, page_token=token)):
        tags = dict(version.tags or {})
        found = set(_lineage_fingerprints(tags))
        for run_id in (version.run_id, tags.get("nbmlops.parent_run_id")):
            found |= by_run.get(run_id or "", set())
        needed.update(dict.fromkeys(found, BY_VERSIONS))
    return needed


def _runs_page(client: Any, experiment_ids: list[str], view: Any, token: str | None) -> Any:
    return client.search_runs(experiment_ids, run_view_type=view, max_results=5000, page_token=token)


def _run_fingerprints(run: Any) -> set[str]:
    found = {key[len(_SNAPSHOT_TAG):] for key in run.data.tags if key.startswith(_SNAPSHOT_TAG)}
    inputs = getattr(run, "inputs", None)
    for item in getattr(inputs, "dataset_inputs", None) or []:
        found.add(item.dataset.digest)
    return {fp for fp in found if _is_fingerprint(fp)}


def _lineage_fingerprints(tags: dict[str, str]) -> Iterable[str]:
    for key in (TRAINING_TAG, EVALUATION_TAG):  # JSON maps: variable -> fingerprint
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            yield from (str(fp) for fp in json.loads(tags.get(key) or "{}").values())
    if tags.get(FEATURES_TAG):
        yield tags[FEATURES_TAG]


def _is_fingerprint(text: str) -> bool:
    return len(text) == _FINGERPRINT_LENGTH and all(c in "0123456789abcdef" for c in text)


class MlflowSnapshotFiles:
    """The snapshots shared through the artifact store of ``store`` (run ``snapshots`` of the experiment
    ``experiment``, see :mod:`nbmlops.backend.snapshot_remote`), listed and deleted for gc."""

    def __init__(self, store: Store, experiment: str) -> None:
        self.store = store
        self.experiment = experiment
        self._where: dict[str, list[tuple[Any, list[str]]]] = {}  # fingerprint -> (run, its file paths)

    def __str__(self) -> str:
        return f"the MLflow artifact store of {self.store.display_uri} (experiment {self.experiment})"

    def sizes(self) -> dict[str, int]:
        """Every complete snapshot (its sidecar is there): fingerprint -> bytes of its files."""
        with self._errors("list"):
            return self._sizes()

    def _sizes(self) -> dict[str, int]:
        client = self.store.client
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return {}
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`nbmlops.kind` = '{_DATA_RUN_KIND}'", max_results=100
        )
        sizes: dict[str, int] = {}
        self._where = {}
        for run in runs:
            files: dict[str, list[tuple[str, int]]] = {}
            for folder in client.list_artifacts(run.info.run_id):
                if not folder.is_dir:
                    continue
                for info in client.list_artifacts(run.info.run_id, folder.path):
                    name = posixpath.basename(info.path)
                    fingerprint = name.split(".", 1)[0]
                    if _is_fingerprint(fingerprint) and not info.is_dir:
                        files.setdefault(fingerprint, []).append((info.path, info.file_size or 0))
            for fingerprint, found in files.items():
                if not any(path.endswith(".json") for path, _ in found):
                    continue  # an upload in progress: its sidecar goes last
                sizes[fingerprint] = sizes.get(fingerprint, 0) + sum(size for _, size in found)
                self._where.setdefault(fingerprint, []).append((run, [path for path, _ in found]))
        return sizes

    def created(self, fingerprint: str) -> datetime | None:
        """When the snapshot was stored, from its sidecar; None when that cannot be read."""
        for run, paths in self._where.get(fingerprint, []):
            sidecar = next(p for p in paths if p.endswith(".json"))
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    local = self.store.client.download_artifacts(run.info.run_id, sidecar, tmp)
                    created = datetime.fromisoformat(json.loads(Path(local).read_text())["created"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
            return created if created.tzinfo else created.replace(tzinfo=timezone.utc)
        return None

    def delete(self, fingerprint: str) -> None:
        """Delete the snapshot's files from every data run holding it, the sidecar first."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with self._errors(f"delete {fingerprint} from"):
            for run, paths in self._where.get(fingerprint, []):
                try:
                    repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=self.store.uri)
                except TypeError:  # MLflow releases whose registry takes the artifact URI only
                    repository = get_artifact_repository(run.info.artifact_uri)
                for path in sorted(paths, key=lambda p: not p.endswith(".json")):
                    repository.delete_artifacts(path)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Whatever MLflow or the network raises, as one :class:`StoreUnavailableError` naming the action."""
        try:
            yield
        except NbmlopsError:
            raise
        except Exception as exc:  # MlflowException, HTTP and file errors alike
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise StoreUnavailableError(
                self.store.display_uri, f"cannot {action} the data snapshots shared there: {reason}"
            ) from None
