"""The dashboard's Deployments tab as plain state and HTML: what is served where (``nbmlops serve``), which
version, its state, traffic, latency, drift state and last swap (see :mod:`nbmlops.serving.deployments`).

Every user string (model names, aliases, addresses) is escaped; an address is a link only when it is http(s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nbmlops.config import Settings
from nbmlops.serving.deployments import DEAD, DRIFTED, OK, SERVING, Deployment, list_deployments
from nbmlops.widgets.format import STYLE, esc, number, short_time, timestamp

__all__ = ["EMPTY", "START", "DeploymentsView", "deployments_html"]

#: what the tab says when the store holds no serving run (the command in a ``code`` element)
EMPTY = "No model is served yet. Start a server with {command}, and it shows here."
START = "nbmlops serve NAME@champion"
HEADER = ("Model", "Address", "Version", "State", "Requests", "Error rate", "Latency p50 / p95", "Drift",
          "Last swap")
#: the columns of figures, aligned right
_FIGURES = frozenset({"Requests", "Error rate", "Latency p50 / p95"})

#: the tab's own colours (the theme's, each with a light fallback), beside the dashboard's STYLE
_STYLE = """<style>
.nbmlops-view .nbmlops-deploy-state{font-weight:600}
.nbmlops-view .nbmlops-deploy-state-serving{color:var(--jp-success-color0,#1a7f37)}
.nbmlops-view .nbmlops-deploy-state-dead{color:var(--jp-error-color0,#cf222e)}
.nbmlops-view .nbmlops-deploy-state-stopped{color:var(--jp-ui-font-color2,#57606a)}
.nbmlops-view .nbmlops-drift-drifted{color:var(--jp-warn-color0,#9a6700);font-weight:600}
.nbmlops-view .nbmlops-drift-ok{color:var(--jp-success-color0,#1a7f37)}
.nbmlops-view .nbmlops-drift-never{color:var(--jp-ui-font-color2,#57606a)}
.nbmlops-view .nbmlops-deployments-table .nbmlops-sub{display:block;color:var(--jp-ui-font-color2,#57606a);
  font-size:11px}
.nbmlops-view .nbmlops-deployments-table code{font-family:var(--jp-code-font-family,monospace)}
.nbmlops-view table.nbmlops-deployments-table th,.nbmlops-view table.nbmlops-deployments-table td{text-align:left}
.nbmlops-view table.nbmlops-deployments-table th.nbmlops-metric-col,
.nbmlops-view table.nbmlops-deployments-table td.nbmlops-metric-col{text-align:right}
</style>"""


class DeploymentsView:
    """The deployments of the store of ``settings``, read again on each :meth:`html`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shown: list[Deployment] = []

    def deployments(self) -> list[Deployment]:
        """Every deployment, serving first (read from the store now)."""
        self.shown = list_deployments(self.settings)
        return self.shown

    def html(self) -> str:
        """The tab's HTML for the deployments read now."""
        return deployments_html(self.deployments())


def deployments_html(deployments: Sequence[Deployment]) -> str:
    """The deployments as a table (``table.nbmlops-deployments-table``, a ``tr[data-run-id][data-state]`` each),
    or the empty state with the command that starts a server."""
    if not deployments:
        sentence = esc(EMPTY).replace("{command}", f"<code>{esc(START)}</code>")
        return (f"{STYLE}{_STYLE}<div class='nbmlops-view nbmlops-deployments-view'>"
                f"<div class='nbmlops-empty'>{sentence}</div></div>")
    aligned = [" class='nbmlops-metric-col'" if name in _FIGURES else "" for name in HEADER]
    head = "".join(f"<th{align}>{esc(name)}</th>" for name, align in zip(HEADER, aligned))
    rows = "".join(f"<tr data-run-id='{esc(d.run_id)}' data-state='{esc(d.state)}'>"
                   + "".join(f"<td{align}>{cell}</td>" for cell, align in zip(_row(d), aligned)) + "</tr>"
                   for d in deployments)
    body = (f"<table class='nbmlops-deployments-table'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
            "</table>")
    serving = sum(d.state == SERVING for d in deployments)
    summary = f"{serving} of {len(deployments)} deployment{'s' if len(deployments) != 1 else ''} serving"
    return (f"{STYLE}{_STYLE}<div class='nbmlops-view nbmlops-deployments-view'>"
            f"<div class='nbmlops-muted nbmlops-deployments-summary'>{esc(summary)}</div>"
            f"<div class='nbmlops-scroll'>{body}</div></div>")


def _row(d: Deployment) -> list[str]:
    model = f"<b>{esc(d.reference)}</b>"
    if d.shadow:
        model += f"<span class='nbmlops-sub'>shadow @{esc(d.shadow)}</span>"
    return [
        model,
        _address(d.url),
        f"v{d.version}" if d.version is not None else "—",
        _state(d),
        _count(d.requests),
        _percent(d.error_rate),
        _latency(d.latency_p50_ms, d.latency_p95_ms),
        _drift(d),
        _swap(d),
    ]


def _address(url: str) -> str:
    if not url:
        return "—"
    if url.lower().startswith(("http://", "https://")):
        return f"<a href='{esc(url)}' target='_blank' rel='noopener noreferrer'>{esc(url)}</a>"
    return f"<code>{esc(url)}</code>"


def _state(d: Deployment) -> str:
    detail = ""
    if d.state == SERVING and d.since_ms:
        detail = f"since {short_time(d.since_ms)}"
    elif d.state == DEAD:
        detail = "killed" if d.status in ("KILLED", "FAILED") else f"no heartbeat since {short_time(d.heartbeat_ms or d.started_ms)}"
    elif d.ended_ms:
        detail = f"at {short_time(d.ended_ms)}"
    title = f"run {d.status}; last heartbeat {timestamp(d.heartbeat_ms)}" if d.heartbeat_ms else f"run {d.status}"
    return (f"<span class='nbmlops-deploy-state nbmlops-deploy-state-{esc(d.state)}' title='{esc(title)}'>"
            f"{esc(d.state)}</span>" + (f"<span class='nbmlops-sub'>{esc(detail)}</span>" if detail else ""))


def _drift(d: Deployment) -> str:
    check = d.drift
    if check.state not in (OK, DRIFTED):
        return "<span class='nbmlops-drift-never'>never checked</span>"
    version = f"v{check.version} · " if check.version is not None else ""
    return (f"<span class='nbmlops-drift-{esc(check.state)}'>{esc(check.state)}</span>"
            f"<span class='nbmlops-sub'>{esc(version + short_time(check.checked_ms))}</span>")


def _swap(d: Deployment) -> str:
    swap = d.last_swap
    if swap is None:
        return "—"
    when = f"<span class='nbmlops-sub'>{esc(short_time(swap.at_ms))}</span>" if swap.at_ms else ""
    return f"{esc(swap.text)}{when}"


def _count(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.0f}"


def _percent(rate: float | None) -> str:
    if rate is None or math.isnan(rate):
        return "—"
    return f"{rate * 100:.2g} %" if rate * 100 < 10 else f"{rate * 100:.0f} %"


def _latency(p50: float | None, p95: float | None) -> str:
    if p50 is None and p95 is None:
        return "—"
    return f"{number(p50) or '—'} / {number(p95) or '—'} ms"
