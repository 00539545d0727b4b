"""Runs as nbmlops reads them back from a tracking store (:class:`RunRow`), made from MLflow's ``Run``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbmlops.backend.tags import CELL_KEY_TAG

__all__ = ["RunRow", "row_of"]


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
