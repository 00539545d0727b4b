"""How the dashboard shows values: times, durations, numbers, and escaped HTML pieces.

Every user string (run names, params, tags, metric names) goes through :func:`esc` before it reaches
HTML, plotly hover text or a chart label.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from datetime import datetime

__all__ = ["STYLE", "duration", "esc", "number", "table", "timestamp"]

#: the dashboard's CSS, scoped to its own classes; the look of the ``%%track`` summary
STYLE = """<style>
.nbmlops-view{font-family:sans-serif;font-size:13px}
.nbmlops-view table{border-collapse:collapse;font-size:12px}
.nbmlops-view th,.nbmlops-view td{padding:2px 8px;text-align:left;border-bottom:1px solid #d0d7de;
  white-space:nowrap;max-width:24em;overflow:hidden;text-overflow:ellipsis}
.nbmlops-view th{background:#f6f8fa}
.nbmlops-view tr.nbmlops-selected td{background:#ddf4ff}
.nbmlops-view tr.nbmlops-differs td{background:#fff8c5}
.nbmlops-view td.nbmlops-section{font-weight:bold;background:#f6f8fa}
.nbmlops-view pre{font-size:12px;margin:4px 0}
.nbmlops-view .nbmlops-add{background:#dafbe1}
.nbmlops-view .nbmlops-del{background:#ffebe9}
.nbmlops-view .nbmlops-hunk{color:#8250df}
.nbmlops-view .nbmlops-muted{color:#57606a}
.nbmlops-view .nbmlops-error{color:#cf222e;white-space:pre-wrap}
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


def table(header: Sequence[str], rows: Iterable[Sequence[str]], css_class: str) -> str:
    """An HTML table; ``header`` is escaped here, the cells of ``rows`` must be escaped HTML already."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
