"""What the REST API returns: nbmlops' records as JSON-ready dicts.

Times are epoch milliseconds (decisions keep their ISO 8601 text); NaN and infinite numbers become
``null``, since JSON has no spelling for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nbmlops.exceptions import GateSyntaxError
from nbmlops.redact import redact_text
from nbmlops.registry.models import FEATURES_TAG, ModelVersionInfo, RegisteredModelInfo
from nbmlops.registry.promote import Promotion
from nbmlops.tracking.notebook_runs import ListedRun, RunDetail
from nbmlops.tracking.search import RunRow

__all__ = [
    "gate_syntax_error", "json_safe", "model", "model_versions", "promotion", "run_detail", "run_error", "run_link",
    "run_row",
]

_DETAIL_TAG_PREFIXES = ("nbmlops.", "mlflow.source.")
#: where nbmlops stores a failed run's traceback (:meth:`nbmlops.tracking.run.Run.end`)
TRACEBACK_ARTIFACT = "error/traceback.txt"


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
        "series": {key: [[step, value] for step, value in points] for key, points in detail.series.items()},
        "series_truncated": detail.series_truncated,
        "error": run_error(row, detail.artifacts),
        "ui_url": run_url(ui_url, row.experiment_id, row.run_id),
    }


def run_error(row: RunRow, artifacts: Sequence[str] = ()) -> dict[str, Any] | None:
    """Why a run failed, as nbmlops recorded it: the exception's type and message (tags ``nbmlops.error.type``
    and ``.message``, the traceback in the artifact ``error/traceback.txt``), or the failure nbmlops found
    (``nbmlops.failure``: ``kernel_died``, ``heartbeat_lost``, with ``nbmlops.failure_reason``). None for a run
    with neither."""
    tags = row.tags
    kind, message = tags.get("nbmlops.error.type"), tags.get("nbmlops.error.message")
    failure, reason = tags.get("nbmlops.failure"), tags.get("nbmlops.failure_reason")
    if not (kind or message or failure or reason):
        return None
    return {
        "type": kind or failure or None,
        "message": message if message is not None else reason,
        "traceback": TRACEBACK_ARTIFACT if TRACEBACK_ARTIFACT in artifacts else None,
    }


def model(info: RegisteredModelInfo) -> dict[str, Any]:
    """A registered model: its latest version and where its aliases point."""
    return {"name": info.name, "latest_version": info.latest_version, "aliases": dict(info.aliases)}


def model_versions(
    name: str, versions: Sequence[ModelVersionInfo], runs: Mapping[str, RunRow] | None = None, ui_url: str = ""
) -> dict[str, Any]:
    """A model's versions, newest first, each with its aliases, promotion decisions (oldest first), lineage
    (from the version's tags) and source run (from ``runs``, by run id: its name, status, times, metrics and
    address in the MLflow UI; None when the store no longer has it)."""
    runs = runs or {}
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
                "lineage": _lineage(v),
                "run": _source_run(runs[v.run_id], ui_url) if v.run_id and v.run_id in runs else None,
            }
            for v in versions
        ],
    }


def _lineage(version: ModelVersionInfo) -> dict[str, Any]:
    """Where a version comes from, as its registration tagged it: notebook, cell, commit, model class, the
    headless run its cell ran in, and the fingerprints of its training features and evaluation data."""
    tags = version.tags
    return {
        "notebook": tags.get("nbmlops.notebook") or None,
        "cell_id": tags.get("nbmlops.cell_id") or None,
        "git_commit": tags.get("nbmlops.git_commit") or None,
        "model_class": tags.get("nbmlops.model_class") or None,
        "parent_run_id": tags.get("nbmlops.parent_run_id") or None,
        "features": tags.get(FEATURES_TAG) or None,
        "training": version.datasets("training"),
        "evaluation": version.datasets("evaluation"),
    }


def _source_run(row: RunRow, ui_url: str) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "name": row.name or None,
        "status": row.status,
        "start_time": row.start_time or None,
        "end_time": row.end_time,
        "metrics": dict(row.metrics),
        "ui_url": run_link(ui_url, row.experiment_id, row.run_id) if ui_url else None,
    }


def run_link(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The address of a run in the MLflow UI at ``ui_url`` (never with credentials)."""
    from nbmlops.tracking.summary import run_url

    return run_url(ui_url, experiment_id, run_id)


def gate_syntax_error(error: GateSyntaxError) -> dict[str, Any]:
    """A gate that does not parse: ``error`` is one line; ``gate_error`` says where, so a page can put a caret
    under the gate's text (in a monospace font: ``position`` counts characters, 0 based)."""
    line = f'gate "{error.text}": expected {error.expected} at position {error.position}'
    shown = redact_text(line)
    return {
        "error": shown,
        # a gate that held a token shape is not echoed (its redacted text would no longer line up)
        "gate_error": {"gate": error.text, "position": error.position, "expected": error.expected}
        if shown == line else None,
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
