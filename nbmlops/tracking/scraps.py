"""Values that travel out of a headless notebook inside its outputs, under a vendor MIME type.

Every tracked cell's summary carries a ``run`` payload (its params, metrics and status), and
``nbmlops.log_metric`` outside any run, in a notebook executed by ``nbmlops run``, publishes a
``metrics`` payload. The runner reads them back from the executed notebook to roll metrics up to
the notebook's run, without asking the tracking store. Payloads are versioned and checked on
write and on read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["MIME_TYPE", "metric_number", "metrics_payload", "publish_metrics", "read_payloads", "run_payload"]

MIME_TYPE = "application/vnd.nbmlops.run+json"
VERSION = 1
_steps: dict[str, int] = {}


def run_payload(
    run_key: str, name: str, status: str, params: Mapping[str, str], metrics: Mapping[str, float]
) -> dict[str, Any]:
    """The payload describing one finished tracked run."""
    return _checked(
        {
            "version": VERSION,
            "kind": "run",
            "run_key": run_key,
            "name": name,
            "status": status,
            "params": dict(params),
            "metrics": {k: _json_number(v) for k, v in metrics.items()},
        }
    )


def metrics_payload(metrics: Mapping[str, float], step: int | None) -> dict[str, Any]:
    """The payload of notebook-level metric values (steps 0, 1, ... per key unless given)."""
    rows = []
    for key, value in metrics.items():
        at = _steps.get(key, -1) + 1 if step is None else int(step)
        _steps[key] = max(at, _steps.get(key, -1))
        rows.append([str(key), _json_number(float(value)), at])
    return _checked({"version": VERSION, "kind": "metrics", "metrics": rows})


def publish_metrics(metrics: Mapping[str, float], step: int | None) -> None:
    """Display notebook-level metrics as an output the runner will read (no run is active)."""
    from IPython.display import display

    payload = metrics_payload(metrics, step)
    text = ", ".join(f"{k}={v}" for k, v, _ in payload["metrics"])
    display({MIME_TYPE: payload, "text/plain": f"nbmlops metrics: {text}"}, raw=True)


def read_payloads(notebook: Any) -> Iterator[dict[str, Any]]:
    """Every valid payload in an executed notebook (an nbformat node), in execution order."""
    for cell in notebook.get("cells", []):
        for output in _outputs(cell):
            payload = output.get("data", {}).get(MIME_TYPE)
            if payload is None:
                continue
            try:
                yield _checked(dict(payload))
            except ValueError:
                continue  # a payload of another version or damaged: not ours to guess


def _outputs(cell: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    return cell.get("outputs", []) if cell.get("cell_type") == "code" else []


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinity: they travel as strings."""
    return value if math.isfinite(value) else str(value)


def metric_number(value: float | str) -> float:
    """A metric value read back from a payload."""
    return float(value)


def _checked(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("version") != VERSION:
        raise ValueError(f"unsupported nbmlops payload version {payload.get('version')!r}")
    kind = payload.get("kind")
    if kind == "run":
        if not isinstance(payload.get("metrics"), dict) or not isinstance(payload.get("params"), dict):
            raise ValueError("run payload without metrics or params")
        for value in payload["metrics"].values():
            metric_number(value)
    elif kind == "metrics":
        rows = payload.get("metrics")
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 3 for r in rows):
            raise ValueError("metrics payload rows must be [key, value, step]")
        for _, value, step in rows:
            metric_number(value)
            int(step)
    else:
        raise ValueError(f"unknown nbmlops payload kind {kind!r}")
    return payload
