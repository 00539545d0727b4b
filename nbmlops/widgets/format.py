"""How the dashboard shows values: times, durations, numbers, statuses, curves and escaped HTML pieces.

Every user string (run names, params, tags, metric names) goes through :func:`esc` before it reaches
HTML, plotly hover text or a chart label.

Colours come from JupyterLab's theme variables (``--jp-layout-color2``, ``--jp-ui-font-color1``, ...), each with
a light fallback, so the same HTML reads in the light and the dark theme and outside JupyterLab (an exported
notebook, VS Code, Notebook 7). Where a colour marks a row (a difference, a selection, an added line), it is a
translucent tint over whatever the background is, and the text keeps the theme's own colour.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbmlops.tracking.search import RunRow

__all__ = [
    "STYLE", "cell_label", "curve_svg", "duration", "esc", "is_user_param", "number", "run_heading", "short_time",
    "status_badge", "table", "timestamp",
]

_TINT = {  # (fallback rgba, theme colour mixed into transparency)
    "differs": ("rgba(212,167,44,.22)", "var(--jp-warn-color1, #d4a72c) 24%"),
    "selected": ("rgba(33,150,243,.16)", "var(--jp-brand-color1, #2196f3) 18%"),
    "add": ("rgba(46,160,67,.2)", "var(--jp-success-color1, #2ea043) 22%"),
    "del": ("rgba(248,81,73,.2)", "var(--jp-error-color1, #f85149) 22%"),
}


def _tint(name: str) -> str:
    fallback, mixed = _TINT[name]
    return f"background:{fallback};background:color-mix(in srgb,{mixed},transparent)"


#: the dashboard's CSS, scoped to its own classes (and its plotly charts, ``.nbmlops-chart``)
STYLE = f"""<style>
.nbmlops-view{{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:var(--jp-ui-font-size1,13px);
  line-height:1.4}}
.nbmlops-view .nbmlops-scroll{{overflow-x:auto;max-width:100%}}
.nbmlops-view table{{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}}
.nbmlops-view th,.nbmlops-view td{{padding:3px 8px;text-align:left;vertical-align:top;
  border-bottom:1px solid var(--jp-border-color2,#d0d7de);white-space:nowrap;max-width:28em;overflow:hidden;
  text-overflow:ellipsis}}
.nbmlops-view th{{background:var(--jp-layout-color2,#f6f8fa);color:var(--jp-ui-font-color1,#1f2328);
  font-weight:600;position:sticky;top:0}}
.nbmlops-view th.nbmlops-metric-col,.nbmlops-view td.nbmlops-metric-col{{text-align:right}}
.nbmlops-view th .nbmlops-sub{{display:block;font-weight:normal;color:var(--jp-ui-font-color2,#57606a)}}
.nbmlops-view tbody tr:hover td{{background:var(--jp-layout-color2,#f6f8fa);color:var(--jp-ui-font-color1,#1f2328)}}
.nbmlops-view tr.nbmlops-selected td{{{_tint("selected")}}}
.nbmlops-view tr.nbmlops-differs td{{{_tint("differs")}}}
.nbmlops-view tr.nbmlops-differs td:first-child{{box-shadow:inset 3px 0 var(--jp-warn-color1,#d4a72c)}}
.nbmlops-view table.nbmlops-only-differences tr.nbmlops-differs td{{background:none;box-shadow:none}}
.nbmlops-view tr.nbmlops-collapsed{{display:none}}
.nbmlops-view td.nbmlops-section{{font-weight:600;background:var(--jp-layout-color2,#f6f8fa);
  color:var(--jp-ui-font-color1,#1f2328)}}
.nbmlops-view .nbmlops-key{{color:var(--jp-ui-font-color2,#57606a)}}
.nbmlops-view .nbmlops-toggle{{cursor:pointer;border:none;background:none;color:inherit;font:inherit;padding:0 4px 0 0}}
.nbmlops-view .nbmlops-count-badge{{color:var(--jp-ui-font-color2,#57606a);font-size:11px;margin-left:4px}}
.nbmlops-view .nbmlops-detail-link{{cursor:pointer;color:var(--jp-content-link-color,#0969da);text-decoration:none}}
.nbmlops-view .nbmlops-detail-link:hover{{text-decoration:underline}}
.nbmlops-view a{{color:var(--jp-content-link-color,#0969da)}}
.nbmlops-view input[type=checkbox]{{margin:0;cursor:pointer;accent-color:var(--jp-brand-color1,#2196f3)}}
.nbmlops-view pre{{font-family:var(--jp-code-font-family,monospace);font-size:12px;margin:4px 0;padding:4px;
  background:var(--jp-layout-color1,#fff);color:var(--jp-content-font-color1,#1f2328);
  border:1px solid var(--jp-border-color2,#d0d7de)}}
.nbmlops-view .nbmlops-add{{{_tint("add")}}}
.nbmlops-view .nbmlops-del{{{_tint("del")}}}
.nbmlops-view .nbmlops-hunk{{color:var(--jp-info-color0,#8250df)}}
.nbmlops-view .nbmlops-muted{{color:var(--jp-ui-font-color2,#57606a)}}
.nbmlops-view .nbmlops-empty{{color:var(--jp-ui-font-color2,#57606a);padding:16px 4px}}
.nbmlops-view .nbmlops-error{{color:var(--jp-error-color1,#cf222e);white-space:pre-wrap}}
.nbmlops-view .nbmlops-run-status{{font-weight:600}}
.nbmlops-view .nbmlops-run-status-finished{{color:var(--jp-success-color0,#1a7f37)}}
.nbmlops-view .nbmlops-run-status-failed{{color:var(--jp-error-color0,#cf222e)}}
.nbmlops-view .nbmlops-run-status-running,.nbmlops-view .nbmlops-run-status-scheduled{{color:var(--jp-brand-color0,#0969da)}}
.nbmlops-view .nbmlops-run-status-killed{{color:var(--jp-warn-color0,#9a6700)}}
.nbmlops-view .nbmlops-loading{{color:var(--jp-ui-font-color2,#57606a);padding:16px 4px}}
.nbmlops-view .nbmlops-loading::before{{content:"";display:inline-block;width:10px;height:10px;margin-right:8px;
  border:2px solid var(--jp-border-color1,#bdbdbd);border-top-color:var(--jp-brand-color1,#2196f3);
  border-radius:50%;animation:nbmlops-spin 1s linear infinite;vertical-align:-1px}}
@keyframes nbmlops-spin{{to{{transform:rotate(360deg)}}}}
.nbmlops-view .nbmlops-detail-curves{{display:flex;flex-wrap:wrap;gap:12px;margin:6px 0}}
.nbmlops-view .nbmlops-detail-curve-box{{border:1px solid var(--jp-border-color2,#d0d7de);padding:4px 6px}}
.nbmlops-view svg.nbmlops-detail-curve{{display:block;color:var(--jp-brand-color1,#2196f3)}}
.nbmlops-view svg.nbmlops-detail-curve .nbmlops-axis{{stroke:var(--jp-border-color1,#bdbdbd)}}
.nbmlops-view .nbmlops-detail h4{{margin:8px 0 4px;font-size:13px}}
.nbmlops-chart .main-svg text{{fill:var(--jp-ui-font-color1,#444)!important;text-shadow:none!important}}
.nbmlops-chart .main-svg .hoverlayer text{{fill:#fff!important}}
.nbmlops-chart .main-svg .gridlayer path,.nbmlops-chart .main-svg .zerolinelayer path{{
  stroke:var(--jp-border-color2,#e5e5e5)!important}}
.nbmlops-chart .main-svg .parcoords .axis .domain,.nbmlops-chart .main-svg .parcoords .axis .tick line{{
  stroke:var(--jp-ui-font-color2,#777)!important}}
</style>"""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def number(value: float | None) -> str:
    """A metric value, six significant digits; empty when missing."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{value:.6g}"


def timestamp(ms: int | None) -> str:
    """Epoch milliseconds as local ``YYYY-MM-DD HH:MM:SS``; empty when unknown."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def short_time(ms: int | None) -> str:
    """Epoch milliseconds as local ``MM-DD HH:MM:SS`` (what tells two runs of a day apart); empty when unknown."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4m 05s``, ``2h 03m``; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def status_badge(status: str) -> str:
    """A run status in its theme colour (``nbmlops-run-status-finished``, ...)."""
    return f"<span class='nbmlops-run-status nbmlops-run-status-{esc(status.lower())}'>{esc(status)}</span>"


def run_heading(name: str, run_id: str, start_time: int | None) -> str:
    """A column heading naming one run: its name, then its start time and short id (escaped HTML)."""
    sub = " · ".join(part for part in (short_time(start_time), run_id[:8]) if part)
    return f"{esc(name or run_id[:8])}<span class='nbmlops-sub'>{esc(sub)}</span>"


def curve_svg(points: Sequence[tuple[int, float]], width: int = 220, height: int = 56) -> str:
    """A metric series as a small SVG line (``svg.nbmlops-detail-curve``) drawn in the theme's brand colour; NaN points
    are left out. Empty when fewer than two finite points."""
    finite = [(step, value) for step, value in points if not math.isnan(value) and not math.isinf(value)]
    if len(finite) < 2:
        return ""
    steps = [s for s, _ in finite]
    values = [v for _, v in finite]
    x0, x1, y0, y1 = min(steps), max(steps), min(values), max(values)
    pad = 3

    def x(step: float) -> float:
        return pad + (step - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def y(value: float) -> float:
        return height - pad - (value - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in finite)
    last_x, last_y = x(steps[-1]), y(values[-1])
    return (f"<svg class='nbmlops-detail-curve' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"role='img' aria-label='{len(finite)} points from step {x0} to {x1}'>"
            f"<line class='nbmlops-axis' x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}'/>"
            f"<polyline fill='none' stroke='currentColor' stroke-width='1.5' points='{line}'/>"
            f"<circle cx='{last_x:.1f}' cy='{last_y:.1f}' r='2.5' fill='currentColor'/></svg>")


def is_user_param(key: str) -> bool:
    """A param the user set (a plain name the cell assigned, or passed to ``nbmlops.track``), not an estimator's
    (``model.C``, ``clf.logisticregression__class_weight``) or a search's (``grid.best_params.C``)."""
    return "." not in key and "__" not in key


def cell_label(row: RunRow) -> str:
    """What a person recognises of where a run came from: ``[5] quickstart.ipynb`` for a cell run (its execution
    label and notebook), ``quickstart.ipynb (headless)`` for a notebook run, ``sweep`` for a sweep; else empty."""
    tags = row.tags
    kind = tags.get("nbmlops.kind", "")
    notebook = os.path.basename(tags.get("nbmlops.notebook", "") or tags.get("mlflow.source.name", ""))
    if kind == "cell":
        count = tags.get("nbmlops.execution_count", "")
        label = " ".join(part for part in (f"[{count}]" if count else "", notebook) if part)
        return label or row.cell[:8]
    if kind == "notebook":
        return f"{notebook} (headless)" if notebook else "headless notebook"
    if kind == "sweep":
        return "sweep"
    return ""


def table(header: Sequence[str], rows: Iterable[Sequence[str]], css_class: str) -> str:
    """An HTML table; ``header`` is escaped here, the cells of ``rows`` must be escaped HTML already."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
