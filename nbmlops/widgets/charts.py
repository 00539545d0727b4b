"""What the charts plot, as plain data: a metric over runs, a metric over steps, a sweep's parallel coordinates.

Labels and hover texts are escaped here (plotly renders them as a subset of HTML), so the figure builders
in :mod:`nbmlops.widgets.figures` only copy them.

Each metric value is counted once: a headless notebook run carries the metrics of its cell runs (rolled up), so
a notebook run is left out of a chart where one of its own child runs brings the same metric; the cell run, which
computed it, is the point. A chart with nothing to draw says why in :attr:`Chart.empty`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nbmlops.tracking import search
from nbmlops.tracking.search import RunRow
from nbmlops.widgets.format import STYLE, esc, number, timestamp
from nbmlops.widgets.runs import RunsView

__all__ = ["Chart", "ChartsView", "Dimension", "Parallel", "Series", "once_each"]

SWEEP_FILTER = "tags.`nbmlops.kind` = 'sweep'"


@dataclass(frozen=True)
class Series:
    """One line or set of points; ``label`` and ``text`` (hover, one per point) are escaped HTML."""

    label: str
    x: tuple[float | str, ...]
    y: tuple[float, ...]
    text: tuple[str, ...]


@dataclass(frozen=True)
class Chart:
    """A metric plotted over runs (x: start times) or over steps (one series per run). Titles are escaped."""

    title: str
    x_title: str
    y_title: str
    series: tuple[Series, ...]
    mode: str = "markers"
    empty: str = ""  # the sentence shown instead of empty axes when there is no point to draw

    def to_html(self) -> str:
        """The plotted values as a static table (class ``nbmlops-chart-table``), or the sentence saying why there
        are none (class ``nbmlops-empty``)."""
        if not self.series:
            return f"{STYLE}<div class='nbmlops-view'><div class='nbmlops-empty'>{self.empty}</div></div>"
        rows = "".join(
            f"<tr><td>{s.label}</td><td>{esc(x)}</td><td>{esc(number(y))}</td></tr>"
            for s in self.series
            for x, y in zip(s.x, s.y)
        )
        return (
            f"{STYLE}<div class='nbmlops-view'><b>{self.title}</b><table class='nbmlops-chart-table'><thead><tr>"
            f"<th>series</th><th>{self.x_title}</th><th>{self.y_title}</th></tr></thead><tbody>{rows}</tbody>"
            "</table></div>"
        )


@dataclass(frozen=True)
class Dimension:
    """One axis of a parallel-coordinates plot; a categorical axis has ``ticktext`` for its ``tickvals``."""

    label: str
    values: tuple[float, ...]
    tickvals: tuple[float, ...] = ()
    ticktext: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parallel:
    """The runs of a sweep: params and metrics as axes, coloured by ``colour`` (the objective)."""

    title: str
    dimensions: tuple[Dimension, ...]
    colour: Dimension | None
    runs: tuple[RunRow, ...]

    def to_html(self) -> str:
        """The sweep's runs as a static table (class ``nbmlops-parallel-table``)."""
        head = "".join(f"<th>{d.label}</th>" for d in self.dimensions)
        rows = []
        for index, _ in enumerate(self.runs):
            cells = []
            for d in self.dimensions:
                value = d.values[index]
                if d.ticktext and not math.isnan(value):
                    cells.append(d.ticktext[d.tickvals.index(value)])
                else:
                    cells.append(esc(number(value)))
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return (
            f"{STYLE}<div class='nbmlops-view'><b>{self.title}</b><table class='nbmlops-parallel-table'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )


class ChartsView:
    """Charts of the runs a :class:`~nbmlops.widgets.runs.RunsView` shows (same experiments and filter)."""

    def __init__(self, runs: RunsView, limit: int = 2000) -> None:
        self.runs = runs
        self.limit = limit

    def metrics(self) -> list[str]:
        """Metric names of the runs on the table, those most runs have first."""
        return self.runs.metric_keys()

    def over_runs(self, metric: str) -> Chart:
        """``metric`` of each run (under the filter, the latest ``limit``) against its start time; a notebook run
        whose child run carries the same metric is left out (the child is the point)."""
        points = search.metric_points(self.runs.tracking_uri, self.runs.experiment_ids, self.runs.filter_string,
                                      metric, self.limit)
        kept = set(once_each(self.runs.tracking_uri, [p.run_id for p in points]))
        points = [p for p in points if p.run_id in kept]
        series = Series(
            esc(metric),
            tuple(timestamp(p.start_time) for p in points),
            tuple(p.value for p in points),
            tuple(f"{esc(p.name or p.run_id[:8])}<br>{esc(metric)} = {esc(number(p.value))}<br>{esc(p.status.lower())}"
                  for p in points),
        )
        empty = "" if points else (f"No run {'under this filter ' if self.runs.filter_string else ''}"
                                   f"has logged {metric} yet.")
        return Chart(f"{esc(metric)} over runs", "start", esc(metric), (series,) if points else (), "markers",
                     esc(empty))

    def over_steps(self, metric: str, run_ids: Sequence[str]) -> Chart:
        """The series of values of ``metric`` logged by each run, against the step (a notebook run whose child
        is among ``run_ids`` is left out: it repeats the child's values)."""
        rows = {r.run_id: r for r in [*self.runs.selected.values(), *self.runs.all_rows()]}
        series = []
        for run_id in once_each(self.runs.tracking_uri, run_ids):
            history = search.metric_history(self.runs.tracking_uri, run_id, metric)
            if not history:
                continue
            row = rows.get(run_id)
            name = row.name if row is not None else run_id[:8]
            series.append(Series(
                esc(name),
                tuple(step for step, _ in history),
                tuple(value for _, value in history),
                tuple(f"{esc(name)}<br>step {step}: {esc(number(value))}" for step, value in history),
            ))
        empty = "" if series else f"None of these runs logged {metric}: select runs that did, in the Runs tab."
        return Chart(f"{esc(metric)} over steps", "step", esc(metric), tuple(series), "lines+markers", esc(empty))

    def sweeps(self) -> list[RunRow]:
        """The sweep runs of these experiments (newest first), then the runs on the table with two or more runs
        nested right under them (``nbmlops.track`` blocks in a loop of a ``%%track`` cell are a sweep too)."""
        page = search.search_page(self.runs.tracking_uri, self.runs.experiment_ids, SWEEP_FILTER,
                                  ["attributes.start_time DESC"], 0, 200)
        found = {row.run_id: row for row in page.rows}
        for shown in self.runs.shown():
            if shown.children >= 2 and shown.row.run_id not in found and shown.row.tags.get("nbmlops.kind") != "notebook":
                found[shown.row.run_id] = shown.row
        return list(found.values())

    def parallel(self, sweep_run_id: str) -> Parallel:
        """The runs of a sweep as parallel coordinates: the params that vary, then every metric."""
        found = search.get_rows(self.runs.tracking_uri, [sweep_run_id])
        if not found:
            raise LookupError(f"no sweep run {sweep_run_id!r}")
        sweep = found[0]
        page = search.search_page(self.runs.tracking_uri, self.runs.experiment_ids,
                                  f"tags.`mlflow.parentRunId` = '{sweep.run_id}'", ["attributes.start_time ASC"],
                                  0, self.limit)
        children = page.rows
        params = sorted({k for r in children for k in r.params if len({c.params.get(k) for c in children}) > 1})
        metrics = sorted({k for r in children for k in r.metrics})
        dimensions = [_param_dimension(p, [r.params.get(p) for r in children]) for p in params]
        dimensions += [Dimension(esc(m), tuple(r.metrics.get(m, math.nan) for r in children)) for m in metrics]
        objective = sweep.tags.get("nbmlops.sweep.objective")
        colour = next((d for d in dimensions if d.label == esc(objective or "")), None) if objective else None
        if colour is None and metrics:
            colour = dimensions[len(params)]
        return Parallel(f"sweep {esc(sweep.name)}: {len(children)} runs", tuple(dimensions), colour, children)


def once_each(tracking_uri: str, run_ids: Sequence[str]) -> list[str]:
    """``run_ids`` without the notebook runs whose child runs are among them (in order): a notebook run's
    metrics are its cell runs' metrics, rolled up, so each value is counted once, at the run that computed it."""
    lineage = search.run_lineage(tracking_uri, list(run_ids))
    parents = {parent for parent, _ in lineage.values() if parent}
    return [run_id for run_id in run_ids
            if not (run_id in parents and lineage.get(run_id, (None, ""))[1] == "notebook")]


def _param_dimension(name: str, values: Sequence[str | None]) -> Dimension:
    """Numbers stay numbers; anything else becomes a categorical axis."""
    try:
        numbers = tuple(math.nan if v is None else float(v) for v in values)
        return Dimension(esc(name), numbers)
    except ValueError:
        categories = sorted({v for v in values if v is not None})
        index = {v: float(i) for i, v in enumerate(categories)}
        return Dimension(
            esc(name),
            tuple(math.nan if v is None else index[v] for v in values),
            tuple(index[v] for v in categories),
            tuple(esc(v) for v in categories),
        )
