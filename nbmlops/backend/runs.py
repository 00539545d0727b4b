"""Reading runs back from a tracking store: MLflow's searches and reads, and :class:`RunRow` (a run as nbmlops
shows it, made from MLflow's ``Run``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbmlops.backend.downloads import quiet_downloads
from nbmlops.backend.tags import CELL_KEY_TAG

if TYPE_CHECKING:
    from nbmlops.backend.store import Store

__all__ = [
    "RunRow", "active_experiment_id", "download_artifact", "experiment_name", "experiments", "get_run",
    "list_artifacts", "metric_history", "row_of", "search_runs",
]


@dataclass(frozen=True)
class RunRow:
    """One run as stored: identity, status, params, latest metric values, tags and dataset inputs. Times are
    epoch milliseconds; ``end_time`` is None while it runs; ``datasets`` holds ``(name, digest, context)`` of its
    dataset inputs; ``experiment`` is the experiment's name where the reader knew it (else empty)."""

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
    experiment: str = ""

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



def row_of(run: Any, experiment: str = "") -> RunRow:
    """The :class:`RunRow` of an MLflow ``Run``."""
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
        datasets=tuple(sorted({
            (
                item.dataset.name,
                item.dataset.digest,
                next((tag.value for tag in item.tags if tag.key == "mlflow.data.context"), ""),
            )
            for item in (run.inputs.dataset_inputs if run.inputs is not None else ())
        })),
        experiment=experiment,
    )


def experiments(store: Store) -> list[tuple[str, str]]:
    """``(id, name)`` of every active experiment of ``store``."""
    return [(e.experiment_id, e.name) for e in store.client.search_experiments()]


def active_experiment_id(store: Store, name: str) -> str | None:
    """The id of the active experiment called ``name``, None when there is none."""
    found = store.client.get_experiment_by_name(name)
    return found.experiment_id if found is not None and found.lifecycle_stage == "active" else None


def experiment_name(store: Store, experiment_id: str) -> str:
    """The name of experiment ``experiment_id``."""
    return str(store.client.get_experiment(experiment_id).name)


def search_runs(store: Store, experiment_ids: Sequence[str], filter_string: str = "", order_by: Sequence[str] = (),
                limit: int = 1000, token: str | None = None) -> Any:
    """One page of MLflow's ``search_runs`` (its ``token`` names the next page, if any): MLflow ``Run`` entities.

    Raises:
        RecordRejected: the store refused the filter or the ordering (``error_code`` INVALID_PARAMETER_VALUE).
    """
    return store.client.search_runs(list(experiment_ids), filter_string=filter_string, order_by=list(order_by) or None,
                                    max_results=limit, page_token=token)


def get_run(store: Store, run_id: str) -> Any:
    """MLflow's ``Run`` of ``run_id`` (:class:`RecordRejected` with RESOURCE_DOES_NOT_EXIST when there is none)."""
    return store.client.get_run(run_id)


def metric_history(store: Store, run_id: str, key: str) -> list[tuple[int, float, int]]:
    """``(step, value, timestamp)`` of every value run ``run_id`` logged for metric ``key``, as stored."""
    return [(m.step, m.value, m.timestamp) for m in store.client.get_metric_history(run_id, key)]


def list_artifacts(store: Store, run_id: str, folder: str | None = None) -> list[tuple[str, bool]]:
    """``(path, is a folder)`` of the artifacts of run ``run_id`` directly under ``folder`` (the root when None)."""
    return [(info.path, bool(info.is_dir)) for info in store.client.list_artifacts(run_id, folder)]


def download_artifact(store: Store, run_id: str, path: str, into: str) -> str:
    """Download run ``run_id``'s artifact ``path`` (a file or a folder) into ``into``; returns its local path."""
    with quiet_downloads():
        return str(store.client.download_artifacts(run_id, path, into))
