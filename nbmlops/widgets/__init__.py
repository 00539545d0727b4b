"""In-notebook dashboards over the tracking store and the registry.

The views are plain Python that tests drive directly: :class:`~nbmlops.widgets.runs.RunsView` (filter,
sort, page, columns, nested groups, select), :mod:`~nbmlops.widgets.compare`, :mod:`~nbmlops.widgets.details`,
:class:`~nbmlops.widgets.charts.ChartsView`, :class:`~nbmlops.widgets.models.ModelsView` (two-step promotion) and
:class:`~nbmlops.widgets.live.Live`. :class:`~nbmlops.widgets.app.Dashboard` wires them to ipywidgets (the runs
table is a small anywidget, :mod:`~nbmlops.widgets.runs_table`) and to plotly's JSON (:mod:`~nbmlops.widgets.figures`,
which imports no plotly); the only package importing ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbmlops.widgets.app import Dashboard

__all__ = ["dashboard"]


def dashboard(
    experiment: str | None = None, *, page_size: int = 50, live: bool = True, interval: float = 2.0
) -> Dashboard:
    """The dashboard widget of ``experiment`` (default: the one this notebook's ``%%track`` cells use)."""
    from nbmlops.widgets.app import Dashboard

    return Dashboard(experiment, page_size=page_size, live=live, interval=interval)
