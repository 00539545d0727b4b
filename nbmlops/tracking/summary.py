"""The compact summary shown after a tracked cell, as plain text and escaped HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from nbmlops.tracking.scraps import MIME_TYPE, run_payload

__all__ = ["Summary", "run_url", "status_html"]

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
    previous: dict[str, float] | None = None
    datasets: dict[str, str] = field(default_factory=dict)
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

    def to_text(self) -> str:
        """The plain-text form (what nbconvert and terminals show)."""
        lines = [f"nbmlops run {self.name!r} [{self.status}] {self.duration_s:.2f}s  experiment: {self.experiment}"]
        if self.params:
            lines.append("  params:  " + ", ".join(f"{k}={v}" for k, v in list(self.params.items())[:_MAX_ITEMS]))
        if self.metrics:
            parts = []
            for key, value in list(self.metrics.items())[:_MAX_ITEMS]:
                change = self.delta(key)
                parts.append(f"{key}={_fmt(value)}" + (f" ({change:+.4g})" if change is not None else ""))
            lines.append("  metrics: " + ", ".join(parts))
        if self.datasets:
            lines.append("  data:    " + ", ".join(f"{k}@{v[:12]}" for k, v in self.datasets.items()))
        if self.registered:
            lines.append(f"  model:   registering a new version of {self.registered}")
        lines.append("  run:     " + self._link_line())
        return "\n".join(lines)

    def to_html(self) -> str:
        """The HTML form; every user string is escaped."""
        esc = html.escape
        rows = []
        for key, value in list(self.params.items())[:_MAX_ITEMS]:
            rows.append(f"<tr><td>param</td><td>{esc(key)}</td><td>{esc(value)}</td><td></td></tr>")
        for key, value in list(self.metrics.items())[:_MAX_ITEMS]:
            change = self.delta(key)
            shown = "" if change is None else f"{change:+.4g}"
            rows.append(
                f"<tr><td>metric</td><td>{esc(key)}</td><td>{esc(_fmt(value))}</td><td>{esc(shown)}</td></tr>"
            )
        for key, digest in self.datasets.items():
            rows.append(f"<tr><td>data</td><td>{esc(key)}</td><td><code>{esc(digest[:16])}</code></td><td></td></tr>")
        if self.registered:
            rows.append(f"<tr><td>model</td><td>{esc(self.registered)}</td><td>new version</td><td></td></tr>")
        link = (
            f'<a href="{esc(self.url, quote=True)}" target="_blank" rel="noopener">open in MLflow</a>'
            if self.url
            else esc(self._link_line())
        )
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
            f"{self.duration_s:.2f}s &middot; {esc(self.experiment)} &middot; {link}{table}</div>"
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
    """The MLflow UI address of a run."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _fmt(value: float) -> str:
    return f"{value:.6g}"
