"""One run in full, as the dashboard shows it when its name is clicked: what it is, its metrics (a series as a
curve), its params (the user's first), its datasets and, for a failed run, the error."""

from __future__ import annotations

from nbmlops.tracking import search
from nbmlops.tracking.search import RunRow
from nbmlops.tracking.summary import run_url
from nbmlops.widgets.format import (
    STYLE,
    cell_label,
    curve_svg,
    duration,
    esc,
    is_user_param,
    number,
    status_badge,
    timestamp,
)

__all__ = ["run_details"]


def run_details(tracking_uri: str, row: RunRow, ui_url: str = "") -> str:
    """The details of run ``row`` as escaped HTML (class ``nbmlops-detail``): each metric logged at more than
    one step is drawn as a curve (``svg.nbmlops-detail-curve``) beside its last value. Reads the run's metric
    histories (one query on a database store)."""
    histories = search.metric_histories(tracking_uri, row.run_id, sorted(row.metrics)) if row.metrics else {}
    facts = [status_badge(row.status), esc(timestamp(row.start_time)), esc(duration(row.duration_s())),
             esc(cell_label(row)), f"<span class='nbmlops-muted'>{esc(row.run_id)}</span>"]
    if ui_url:
        facts.append(f"<a href='{esc(run_url(ui_url, row.experiment_id, row.run_id))}' target='_blank' "
                     "rel='noopener'>open in MLflow</a>")
    parts = [f"<h4>{esc(row.name or row.run_id[:8])}</h4><div>{' &middot; '.join(f for f in facts if f)}</div>"]
    error = row.tags.get("nbmlops.error.type") or row.tags.get("nbmlops.failure.ename")
    if error:
        message = row.tags.get("nbmlops.error.message") or row.tags.get("nbmlops.failure_reason", "")
        parts.append(f"<pre class='nbmlops-error'>{esc(error)}: {esc(message)}</pre>")
    series = {key: points for key, points in histories.items() if len(points) > 1}
    if series:
        boxes = "".join(
            f"<div class='nbmlops-detail-curve-box'><div><b>{esc(key)}</b> <span class='nbmlops-muted'>{len(points)} "
            f"steps, last {esc(number(points[-1][1]))}</span></div>{curve_svg(points)}</div>"
            for key, points in sorted(series.items()))
        parts.append(f"<div class='nbmlops-detail-curves'>{boxes}</div>")
    if row.metrics:
        rows = "".join(f"<tr><td>{esc(key)}</td><td class='nbmlops-metric-col'>{esc(number(value))}</td>"
                       f"<td class='nbmlops-muted'>{f'{len(series[key])} steps' if key in series else ''}</td></tr>"
                       for key, value in sorted(row.metrics.items()))
        parts.append(f"<table class='nbmlops-detail-metrics'><thead><tr><th>metric</th><th>value</th><th></th></tr>"
                     f"</thead><tbody>{rows}</tbody></table>")
    if row.params:
        ordered = sorted(row.params.items(), key=lambda item: (not is_user_param(item[0]), item[0]))
        rows = "".join(f"<tr><td>{esc(key)}</td><td>{esc(value)}</td></tr>" for key, value in ordered)
        parts.append(f"<table class='nbmlops-detail-params'><thead><tr><th>param</th><th>value</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    if row.datasets:
        rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(context or 'input')}</td><td>{esc(digest)}</td></tr>"
                       for name, digest, context in row.datasets)
        parts.append(f"<table class='nbmlops-detail-data'><thead><tr><th>dataset</th><th>as</th><th>fingerprint"
                     f"</th></tr></thead><tbody>{rows}</tbody></table>")
    return f"{STYLE}<div class='nbmlops-view nbmlops-detail'>{''.join(parts)}</div>"
