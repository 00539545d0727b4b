"""plotly ``FigureWidget`` views of :mod:`nbmlops.widgets.charts` data; the only module importing plotly.

Texts arrive escaped from :mod:`~nbmlops.widgets.charts`; hover shows them through ``%{text}``.
"""

from __future__ import annotations

from typing import Any

from nbmlops.widgets.charts import Chart, Parallel

__all__ = ["chart_figure", "parallel_figure", "show_chart", "show_parallel"]

_LAYOUT = {"height": 360, "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "template": "plotly_white"}


def chart_figure() -> Any:
    """An empty figure for :func:`show_chart`."""
    import plotly.graph_objects as go

    return go.FigureWidget(layout=_LAYOUT)


def parallel_figure() -> Any:
    """An empty figure for :func:`show_parallel`."""
    import plotly.graph_objects as go

    return go.FigureWidget(layout={**_LAYOUT, "height": 420, "margin": {"l": 60, "r": 60, "t": 80, "b": 30}})


def show_chart(figure: Any, chart: Chart) -> None:
    """Replace what ``figure`` shows with ``chart``, in one update."""
    import plotly.graph_objects as go

    traces = [
        go.Scatter(x=list(s.x), y=list(s.y), text=list(s.text), name=s.label, mode=chart.mode,
                   hovertemplate="%{text}<extra></extra>")
        for s in chart.series
    ]
    with figure.batch_update():
        figure.data = ()
        figure.add_traces(traces)
        figure.layout.title = chart.title
        figure.layout.xaxis.title = chart.x_title
        figure.layout.yaxis.title = chart.y_title
        figure.layout.showlegend = len(traces) > 1


def show_parallel(figure: Any, parallel: Parallel) -> None:
    """Replace what ``figure`` shows with the parallel coordinates of a sweep."""
    import plotly.graph_objects as go

    dimensions = []
    for d in parallel.dimensions:
        dimension: dict[str, Any] = {"label": d.label, "values": list(d.values)}
        if d.ticktext:
            dimension.update(tickvals=list(d.tickvals), ticktext=list(d.ticktext))
        dimensions.append(dimension)
    line: dict[str, Any] = {}
    if parallel.colour is not None:
        line = {"color": list(parallel.colour.values), "colorscale": "Viridis", "showscale": True,
                "colorbar": {"title": {"text": parallel.colour.label}}}
    with figure.batch_update():
        figure.data = ()
        if dimensions:
            figure.add_trace(go.Parcoords(dimensions=dimensions, line=line))
        figure.layout.title = parallel.title
