"""plotly figures of :mod:`nbmlops.widgets.charts` data, as plotly's JSON (``application/vnd.plotly.v1+json``).

No plotly import and no ``FigureWidget``: a figure is a small dict shown in an ``ipywidgets.Output`` as plotly's
MIME type, which JupyterLab and Notebook 7 (plotly's own mime renderer, shipped with the plotly package), VS Code
and Colab draw with the plotly.js they already load. A ``FigureWidget`` sends its own 5 MB copy of plotly.js
through the kernel's websocket for every figure and takes a second to build in the kernel: that, twice, was the
empty Charts tab. The same output carries the chart as a static HTML table (``text/html``) for frontends without
a plotly renderer and for exported notebooks. The frontend still loads plotly.js the first time it draws a
figure; :func:`warmup_output` (an empty figure in a hidden output, sent with the dashboard's controls) has it do
that while the person is still looking at the runs.

Theme: the kernel cannot see the frontend's theme, so the figure itself is neutral: transparent paper and plot,
mid-grey text and translucent grid lines, which read on a light and on a dark background alike. In JupyterLab
the dashboard's stylesheet (:data:`~nbmlops.widgets.format.STYLE`, class ``nbmlops-chart``) then gives the text
and the grid the theme's own colours (``--jp-ui-font-color1``, ``--jp-border-color2``), and follows a theme
switch without redrawing. Texts arrive escaped from :mod:`~nbmlops.widgets.charts`; hover shows them through
``%{text}``.
"""

from __future__ import annotations

import math
from typing import Any

from nbmlops.widgets.charts import Chart, Parallel

__all__ = ["MIME_TYPE", "chart_figure", "output_of", "parallel_figure", "warmup_output"]

MIME_TYPE = "application/vnd.plotly.v1+json"
_TEXT = "#8a8a8a"  # mid-grey: readable on white and on JupyterLab's dark backgrounds
_GRID = "rgba(128,128,128,0.25)"
_AXIS = {"gridcolor": _GRID, "zerolinecolor": _GRID, "linecolor": _GRID, "automargin": True}
_LAYOUT: dict[str, Any] = {
    "height": 360,
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"color": _TEXT, "size": 12},
    "hoverlabel": {"bgcolor": "#333333", "bordercolor": "#333333", "font": {"color": "#ffffff"}},
    "legend": {"bgcolor": "rgba(0,0,0,0)"},
    "modebar": {"bgcolor": "rgba(0,0,0,0)", "color": _TEXT, "activecolor": "#2196f3"},
}
_CONFIG = {"displaylogo": False, "responsive": True}


def chart_figure(chart: Chart) -> dict[str, Any]:
    """The plotly figure (JSON) of a metric over runs or over steps."""
    traces = [
        {"type": "scatter", "x": list(s.x), "y": [_finite(v) for v in s.y], "text": list(s.text), "name": s.label, "mode": chart.mode,
         "hovertemplate": "%{text}<extra></extra>"}
        for s in chart.series
    ]
    layout = {
        **_LAYOUT,
        "title": {"text": chart.title},
        "xaxis": {**_AXIS, "title": {"text": chart.x_title}},
        "yaxis": {**_AXIS, "title": {"text": chart.y_title}},
        "showlegend": len(traces) > 1,
    }
    return {"data": traces, "layout": layout, "config": _CONFIG}


def parallel_figure(parallel: Parallel) -> dict[str, Any]:
    """The plotly figure (JSON) of a sweep's runs as parallel coordinates."""
    dimensions = []
    for d in parallel.dimensions:
        dimension: dict[str, Any] = {"label": d.label, "values": [_finite(v) for v in d.values]}
        if d.ticktext:
            dimension.update(tickvals=list(d.tickvals), ticktext=list(d.ticktext))
        dimensions.append(dimension)
    line: dict[str, Any] = {}
    if parallel.colour is not None:
        line = {"color": [_finite(v) for v in parallel.colour.values], "colorscale": "Viridis", "showscale": True,
                "colorbar": {"title": {"text": parallel.colour.label}, "outlinewidth": 0}}
    font = {"color": _TEXT}
    data = [{"type": "parcoords", "dimensions": dimensions, "line": line, "labelfont": font, "tickfont": font,
             "rangefont": font}] if dimensions else []
    layout = {**_LAYOUT, "height": 420, "margin": {"l": 60, "r": 60, "t": 80, "b": 30},
              "title": {"text": parallel.title}}
    return {"data": data, "layout": layout, "config": _CONFIG}


def output_of(figure: dict[str, Any], fallback_html: str) -> dict[str, Any]:
    """One ``display_data`` output (for ``Output.outputs``) holding ``figure`` and its static HTML."""
    return {"output_type": "display_data", "metadata": {},
            "data": {MIME_TYPE: figure, "text/html": fallback_html, "text/plain": "<plotly figure>"}}


def warmup_output() -> dict[str, Any]:
    """An empty figure's output: shown (hidden) before any chart, it has the frontend load plotly.js early."""
    figure = {"data": [], "layout": {"width": 8, "height": 8, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}},
              "config": {"staticPlot": True}}
    return {"output_type": "display_data", "metadata": {}, "data": {MIME_TYPE: figure, "text/plain": ""}}


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: such a value is null (plotly leaves it out)."""
    return value if math.isfinite(value) else None
