"""The compact summary shown after a tracked cell, as plain text and escaped HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from nbmlops.tracking.scraps import MIME_TYPE, run_payload

__all__ = ["Summary", "run_url", "sparkline", "status_html"]

_STATUS_COLOURS = {"FINISHED": "#1a7f37", "FAILED": "#cf222e", "KILLED": "#9a6700", "RUNNING": "#0969da"}
_MAX_ITEMS = 12


@dataclass
class Summary:
    """What one tracked run recorded, and how its metrics moved since the previous run of the same cell."""

    name: str
    experiment: str
    status: str
    duration_s: float
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    previous: dict[str, float] | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    nondeterministic: list[str] = field(default_factory=list)
    url: str | None = None
    run_key: str | None = None
    pending: int = 0
    store_error: str | None = None
    handed_off: bool = False
    registered: str | None = None  # the registered model name a new version is being created for

    def delta(self, key: str) -> float | None:
        """The change of metric ``key`` against the previous run of this cell (None when unknown)."""
        if not self.previous or key not in self.previous:
            return None
        before, now = self.previous[key], self.metrics[key]
        if math.isnan(before) or math.isnan(now):
            return None
        return now - before

    def _link_line(self) -> str:
        if self.url:
            return self.url
        if self.store_error:
            return f"store unreachable, {self.pending} record(s) waiting in the journal ({self.store_error})"
        if self.handed_off:
            return "journaled; nbmlops run delivers it to the tracking store when the notebook ends"
        return "syncing to the tracking store..."

    def _metric_text(self, key: str, value: float) -> str:
        """``acc=0.93 (+0.01)``, or for a series ``scores: 0.81 .. 0.93 (4 steps) ▁▃▅█``."""
        values = self.series.get(key)
        if values and len(values) > 1:
            return f"{_fmt(values[0])} .. {_fmt(values[-1])} ({len(values)} steps) {sparkline(values)}"
        change = self.delta(key)
        return _fmt(value) + (f" ({change:+.4g})" if change else "")

    def _nondeterminism_note(self) -> str | None:
        if not self.nondeterministic:
            return None
        first, more = self.nondeterministic[0], len(self.nondeterministic) - 1
        return f"nondeterministic: {first}" + (f" (+{more} more)" if more else "") + "; results may change on rerun"

    def to_text(self) -> str:
        """The plain-text form (what nbconvert and terminals show)."""
        lines = [f"nbmlops run {self.name!r} [{self.status}] {self.duration_s:.2f}s  experiment: {self.experiment}"]
        if self.metrics:
            shown, more = _cut(self.metrics)
            lines.append("  metrics: " + ", ".join(f"{k}={self._metric_text(k, v)}" for k, v in shown) + more)
        if self.params:
            shown_params, more = _cut(self.params)
            lines.append("  params:  " + ", ".join(f"{k}={v}" for k, v in shown_params) + more)
        for title, data in (("data", self.datasets), ("output", self.outputs)):
            if data:
                shown_data, more = _cut(data)
                lines.append(f"  {title + ':':<8} " + ", ".join(f"{k}@{v[:12]}" for k, v in shown_data) + more)
        note = self._nondeterminism_note()
        if note:
            lines.append(f"  note:    {note}")
        if self.registered:
            lines.append(f"  model:   registering a new version of {self.registered}")
        lines.append("  run:     " + self._link_line())
        return "\n".join(lines)

    def to_html(self) -> str:
        """The HTML form; every user string is escaped."""
        esc = html.escape
        rows = []
        shown_metrics, more_metrics = _cut(self.metrics)
        for key, value in shown_metrics:
            values = self.series.get(key)
            change = None if values and len(values) > 1 else self.delta(key)
            text = self._metric_text(key, value) if values and len(values) > 1 else _fmt(value)
            rows.append(
                f"<tr><td>metric</td><td>{esc(key)}</td><td>{esc(text)}</td><td>{esc(f'{change:+.4g}' if change else '')}</td></tr>"
            )
        if more_metrics:
            rows.append(f"<tr><td></td><td colspan=3>{esc(more_metrics.strip())} metrics</td></tr>")
        shown_params, more_params = _cut(self.params)
        for key, value in shown_params:
            rows.append(f"<tr><td>param</td><td>{esc(key)}</td><td>{esc(value)}</td><td></td></tr>")
        if more_params:
            rows.append(f"<tr><td></td><td colspan=3>{esc(more_params.strip())} params</td></tr>")
        for title, data in (("data", self.datasets), ("output", self.outputs)):
            for key, digest in data.items():
                rows.append(f"<tr><td>{title}</td><td>{esc(key)}</td><td><code>{esc(digest[:16])}</code></td><td></td></tr>")
        if self.registered:
            rows.append(f"<tr><td>model</td><td>{esc(self.registered)}</td><td>new version</td><td></td></tr>")
        link = (
            f'<a href="{esc(self.url, quote=True)}" target="_blank" rel="noopener">open in MLflow</a>'
            if self.url
            else esc(self._link_line())
        )
        note = self._nondeterminism_note()
        note_html = f"<div style='color:#9a6700'>&#9888; {esc(note)}</div>" if note else ""
        cell = "style='padding:1px 14px 1px 0;text-align:left;border:none'"  # inline: the same look everywhere
        table = (
            "<table style='font-size:12px;border-collapse:collapse;margin-top:4px'>"
            "<tr><th></th><th>name</th><th>value</th><th>change</th></tr>" + "".join(rows) + "</table>"
            if rows
            else ""
        ).replace("<td>", f"<td {cell}>").replace("<th>", f"<th {cell}>")
        return (
            "<div class='nbmlops-summary' style='font-family:sans-serif;font-size:13px'>"
            f"<b>{esc(self.name)}</b> {status_html(self.status)} "
            f"{self.duration_s:.2f}s &middot; {esc(self.experiment)} &middot; {link}{note_html}{table}</div>"
        )

    def mimebundle(self) -> dict[str, Any]:
        """Both forms keyed by MIME type, plus the payload a headless runner reads back."""
        bundle: dict[str, Any] = {"text/plain": self.to_text(), "text/html": self.to_html()}
        if self.run_key:
            bundle[MIME_TYPE] = run_payload(self.run_key, self.name, self.status, self.params, self.metrics)
        return bundle


def status_html(status: str) -> str:
    """A run status in its colour, as the summary and the dashboard show it."""
    colour = _STATUS_COLOURS.get(status, "#57606a")
    return f"<span style='color:{colour};font-weight:bold'>{html.escape(status)}</span>"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI address of a run (never with the credentials a tracking URI may carry)."""
    from nbmlops.redact import strip_userinfo

    return f"{strip_userinfo(ui_url).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _cut(items: dict[str, Any]) -> tuple[list[tuple[str, Any]], str]:
    """The first items a summary shows, and ``" +N more"`` for the rest ("" when none are cut)."""
    pairs = list(items.items())
    if len(pairs) <= _MAX_ITEMS:
        return pairs, ""
    return pairs[:_MAX_ITEMS], f" +{len(pairs) - _MAX_ITEMS} more"


_BARS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def sparkline(values: list[float], width: int = 24) -> str:
    """A series as block characters, evenly thinned to at most ``width`` of them."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(finite), max(finite)
    span = high - low
    return "".join(
        " " if math.isnan(v) else _BARS[0 if span == 0 else min(7, int((v - low) / span * 7.999))] for v in values
    )
