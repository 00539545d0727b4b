"""Execute a notebook headlessly with papermill (the only module that imports it), its cells tracked."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nbmlops.config import resolve_settings
from nbmlops.tracking.delivery import SyncReport, register_uri, sync_journals

__all__ = ["NotebookRun", "run_notebook"]


@dataclass(frozen=True)
class NotebookRun:
    """The outcome of one headless execution."""

    notebook: Path
    output: Path
    status: str
    error: str | None
    duration_s: float
    sync: SyncReport


def run_notebook(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    kernel_name: str | None = None,
    progress_bar: bool = True,
) -> NotebookRun:
    """Execute ``notebook`` with papermill; its ``%%track`` cells record runs named after it.

    The kernel learns its notebook's path through ``NBMLOPS_NOTEBOOK``. Records a kernel could not
    deliver before it was shut down are replayed from the journal before this returns.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = Path(notebook).resolve()
    settings = resolve_settings(Path(cwd) if cwd else None)
    if output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = settings.state_dir / "outputs" / f"{source.stem}-{stamp}.ipynb"
    target = Path(output).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("NBMLOPS_NOTEBOOK")
    os.environ["NBMLOPS_NOTEBOOK"] = str(source)
    started = time.monotonic()
    status, error = "FINISHED", None
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=dict(parameters or {}),
            cwd=str(cwd) if cwd else None,
            kernel_name=kernel_name,
            progress_bar=progress_bar,
        )
    except PapermillExecutionError as exc:
        status, error = "FAILED", f"cell {exc.cell_index}: {exc.ename}: {exc.evalue}"
    finally:
        if previous is None:
            os.environ.pop("NBMLOPS_NOTEBOOK", None)
        else:
            os.environ["NBMLOPS_NOTEBOOK"] = previous
    register_uri(settings.tracking_uri)
    report = sync_journals(settings.journal_dir)
    return NotebookRun(source, target, status, error, time.monotonic() - started, report)
