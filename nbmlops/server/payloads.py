"""What the REST API returns: nbmlops' records as JSON-ready dicts.

Times are epoch milliseconds (decisions keep their ISO 8601 text); NaN and infinite numbers become
``null``, since JSON has no spelling for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nbmlops.registry.models import ModelVersionInfo, RegisteredModelInfo
from nbmlops.registry.promote import Promotion
from nbmlops.tracking.notebook_runs import ListedRun, RunDetail

__all__ = ["json_safe", "model", "model_versions", "promotion", "run_detail", "run_row"]

_DETAIL_TAG_PREFIXES = ("nbmlops.", "mlflow.source.")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, in nested dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def run_row(listed: ListedRun) -> dict[str, Any]:
    """A run as the run list shows it."""
    row = listed.run
    count = row.tags.get("nbmlops.execution_count", "")
    return {
        "run_id": row.run_id,
        "name": row.name or None,
        "status": row.status,
        "experiment": listed.experiment,
        "start_time": row.start_time,
        "end_time": row.end_time,
        "cell_id": row.tags.get("nbmlops.cell_id"),
        "cell_key": row.tags.get("nbmlops.cell_key"),
        "execution_count": int(count) if count.isdigit() else None,
        "kind": row.tags.get("nbmlops.kind"),
        "params": dict(row.params),
        "metrics": dict(row.metrics),
    }


def run_detail(detail: RunDetail, ui_url: str) -> dict[str, Any]:
    """A run in full: its nbmlops and source tags, datasets, artifact paths and its address in the MLflow UI."""
    from nbmlops.tracking.summary import run_url

    row = detail.run
    return {
        "run_id": row.run_id,
        "name": row.name or None,
        "status": row.status,
        "experiment": detail.experiment,
        "experiment_id": row.experiment_id,
        "start_time": row.start_time,
        "end_time": row.end_time,
        "params": dict(row.params),
        "metrics": dict(row.metrics),
        "tags": {key: value for key, value in sorted(row.tags.items()) if key.startswith(_DETAIL_TAG_PREFIXES)},
        "datasets": [{"name": name, "digest": digest, "context": context} for name, digest, context in row.datasets],
        "artifacts": list(detail.artifacts),
        "artifacts_truncated": detail.artifacts_truncated,
        "ui_url": run_url(ui_url, row.experiment_id, row.run_id),
    }


def model(info: RegisteredModelInfo) -> dict[str, Any]:
    """A registered model: its latest version and where its aliases point."""
    return {"name": info.name, "latest_version": info.latest_version, "aliases": dict(info.aliases)}


def model_versions(name: str, versions: Sequence[ModelVersionInfo]) -> dict[str, Any]:
    """A model's versions, newest first, each with its aliases and promotion decisions (oldest first)."""
    return {
        "name": name,
        "versions": [
            {
                "version": v.version,
                "run_id": v.run_id,
                "created": v.created or None,
                "aliases": list(v.aliases),
                "status": v.status,
                "decisions": [
                    {"at": d.at, "by": d.by, "alias": d.alias, "accepted": d.accepted, "reason": d.reason,
                     "previous": d.previous, "checks": list(d.checks)}
                    for d in v.decisions
                ],
            }
            for v in versions
        ],
    }


def promotion(outcome: Promotion) -> dict[str, Any]:
    """A promotion decision with every check and its values."""
    return {
        "name": outcome.name,
        "version": outcome.version,
        "alias": outcome.alias,
        "accepted": outcome.accepted,
        "previous": outcome.previous,
        "reason": outcome.reason,
        "decided_at": outcome.decided_at,
        "decided_by": outcome.decided_by,
        "checks": [check.as_dict() for check in outcome.checks],
    }
