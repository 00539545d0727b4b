"""The ``%%track`` summaries of an executed notebook, shown again once the runner has delivered their runs.

In a notebook executed by ``nbmlops run`` the kernel only journals: each summary says so ("journaled; nbmlops
run delivers it ..."). When the runner has delivered the records, :func:`finish_summaries` rewrites those
outputs of the executed notebook with what the tracking store now holds: the run's status, its link, and the
previous run of the same cell to compare with; or, when the store did not take them, that ``nbmlops sync``
will. A summary is found by the run payload in its output (:data:`~nbmlops.tracking.scraps.MIME_TYPE`), which
carries the summary itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nbmlops.config import Settings
from nbmlops.tracking.scraps import MIME_TYPE
from nbmlops.tracking.summary import Summary, run_url

__all__ = ["finish_summaries", "parameter_scrubber"]

NOT_DELIVERED = "not confirmed when the notebook ended; `nbmlops sync` delivers what is left when the store answers"


def finish_summaries(path: Path, settings: Settings, run_id: str | None, scrub: Callable[[str], str] = str) -> int:
    """Rewrite the summaries of the executed notebook at ``path`` whose runs the runner delivered to the store of
    ``settings`` (children of the notebook's run ``run_id``; None: its records did not reach the store). Links
    point to ``settings.ui_url``. ``scrub`` cleans the new text
    as the runner cleaned the rest of the notebook. Returns how many summaries were rewritten; a problem
    costs the rewrite (one line on stderr), never the run."""
    import nbformat

    try:
        notebook = nbformat.read(path, as_version=4)
        shown = list(_summaries(notebook))
        if not shown:
            return 0
        runs = _cell_runs(settings.tracking_uri, run_id) if run_id is not None else {}
        rewritten = 0
        for output, summary in shown:
            row = runs.get(summary.run_key or "")
            if row is None and run_id is not None:
                continue  # not among the notebook's runs (yet): what it says stays true
            _finish(summary, row, settings)
            bundle = summary.mimebundle()
            output["data"].update({"text/plain": scrub(bundle["text/plain"]), "text/html": scrub(bundle["text/html"])})
            output["data"][MIME_TYPE]["status"] = summary.status
            output["data"][MIME_TYPE].pop("summary", None)  # shown for good: nothing is left to finish
            rewritten += 1
        if rewritten:
            nbformat.write(notebook, path)
        return rewritten
    except Exception as exc:  # the executed notebook stands as it is
        sys.stderr.write(f"nbmlops: the summaries in {path.name} were not updated: {type(exc).__name__}: {exc}\n")
        return 0


def parameter_scrubber(parameters: Mapping[str, Any]) -> Callable[[str], str]:
    """What cleans text of the values of the run's secret-named parameters (for a process other than the one
    that ran the notebook)."""
    from nbmlops.redact import Redactor

    redactor = Redactor()
    redactor.learn_namespace(parameters)
    return redactor.scrub


def _summaries(notebook: Any) -> Iterator[tuple[Any, Summary]]:
    """Each output that shows a summary a headless kernel handed over, with that summary."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(MIME_TYPE)
            if not isinstance(payload, dict) or payload.get("kind") != "run" or not isinstance(payload.get("summary"), dict):
                continue
            try:
                yield output, Summary.from_dict(payload["summary"])
            except ValueError:
                continue  # damaged or of another version: left as it is


def _cell_runs(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The notebook run's child runs in the store, by local run key."""
    from nbmlops.backend.store import RUN_KEY_TAG
    from nbmlops.tracking.query import child_runs

    return {row.tags[RUN_KEY_TAG]: row for row in child_runs(tracking_uri, run_id) if RUN_KEY_TAG in row.tags}


def _finish(summary: Summary, row: Any, settings: Settings) -> None:
    """Give ``summary`` the final state of its run ``row`` (None: not delivered)."""
    summary.handed_off = False
    summary.pending = 0
    if row is None:
        summary.store_error = NOT_DELIVERED
        return
    summary.store_error = None
    summary.status = row.status
    summary.url = run_url(settings.ui_url, row.experiment_id, row.run_id)
    if summary.previous is None and row.cell:
        try:
            found = _previous(settings, row)
        except Exception:  # the comparison is a bonus, the link is the point
            found = None
        if found is not None:
            summary.previous, summary.previous_params = found


def _previous(settings: Settings, row: Any) -> tuple[dict[str, float], dict[str, str]] | None:
    from nbmlops.backend.store import open_store

    return open_store(settings.tracking_uri, settings.artifact_root).previous_values(row.experiment_id, row.cell, row.run_id)
