"""The compact summary shown after a tracked cell, as plain text and as escaped, self-styled HTML.

The HTML needs no script and no stylesheet: every element carries its style, written with JupyterLab's CSS
variables and a fallback for pages without them (exported HTML, VS Code), so it looks the same in JupyterLab,
Notebook 7, VS Code and an exported notebook, in light and dark themes. Lists longer than
:data:`MAX_ITEMS` show the rest in a ``<details>`` element ("+N more"), which opens without a script.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from nbmlops.tracking.scraps import MIME_TYPE, run_payload
from nbmlops.tracking.series import thin
from nbmlops.tracking.values import lower_is_better

__all__ = ["MAX_ITEMS", "Summary", "run_url", "sparkline", "sparkline_svg", "status_html"]

#: rows a section shows before "+N more" (changed params are always shown)
MAX_ITEMS = 12
#: points a curve is drawn with (and kept in a headless run's payload)
CURVE_POINTS = 96
_T = TypeVar("_T")

_STATUS_COLOURS = {
    "FINISHED": "var(--jp-success-color1, #1a7f37)",
    "FAILED": "var(--jp-error-color1, #cf222e)",
    "KILLED": "var(--jp-warn-color0, #9a6700)",
    "RUNNING": "var(--jp-brand-color1, #0969da)",
}
_BETTER = "var(--jp-success-color1, #1a7f37)"
_WORSE = "var(--jp-error-color1, #cf222e)"
_CHANGED = "var(--jp-warn-color0, #9a6700)"
_LINK = "var(--jp-content-link-color, #0969da)"
_CURVE = "var(--jp-brand-color1, #0969da)"
_BORDER = "var(--jp-border-color2, rgba(128, 128, 128, 0.35))"
_STRIPE = "var(--jp-rendermime-table-row-background, rgba(128, 128, 128, 0.09))"
_TEXT = "var(--jp-ui-font-color1, inherit)"
_FONT = "var(--jp-ui-font-family, system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif)"
_MONO = "var(--jp-code-font-family, ui-monospace, SFMono-Regular, Menlo, Consolas, monospace)"
#: cells: tight rows whatever the page's table style (JupyterLab centres tables and pads cells 0.5em)
_TD = "padding:1px 8px;line-height:16px;border:none;text-align:left;vertical-align:middle;white-space:nowrap"
_SHOWN_VALUE = 60  # characters of a param value shown (the whole value in its title)

@dataclass
class Summary:
    """What one tracked run recorded, and how it moved since the previous run of the same cell."""

    name: str
    experiment: str
    status: str
    duration_s: float
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: metrics logged more than once: their values in order (thinned to a curve's points) and how many were logged
    series: dict[str, list[float]] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    #: the metrics and params of the previous finished run of the same cell (None: unknown)
    previous: dict[str, float] | None = None
    previous_params: dict[str, str] | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    nondeterministic: list[str] = field(default_factory=list)
    url: str | None = None
    run_key: str | None = None
    pending: int = 0
    store_error: str | None = None
    handed_off: bool = False
    registered: str | None = None  # the registered model name a new version is being created for

    # -- what changed --------------------------------------------------------------------------

    def delta(self, key: str) -> float | None:
        """The change of metric ``key`` against the previous run of this cell (None when unknown or equal)."""
        if not self.previous or key not in self.previous or key not in self.metrics:
            return None
        before, now = self.previous[key], self.metrics[key]
        if not (math.isfinite(before) and math.isfinite(now)) or now == before:
            return None
        return now - before

    def changed_params(self) -> dict[str, str | None]:
        """Params that differ from the previous run of this cell: name -> the previous value (None for a param
        that run did not have). Empty when there is no previous run to compare with."""
        if self.previous_params is None:
            return {}
        before = self.previous_params
        return {k: before.get(k) for k, v in self.params.items() if before.get(k) != v}

    def removed_params(self) -> dict[str, str]:
        """Params the previous run of this cell had and this one has not."""
        if self.previous_params is None:
            return {}
        return {k: v for k, v in self.previous_params.items() if k not in self.params}

    def ordered_params(self) -> list[tuple[str, str]]:
        """The cell's own params first (assignments, ``--params``), then those read from estimators
        (``model.C``, ``grid.best_params.C``: dotted names), each group in the order it was recorded."""
        own = [(k, v) for k, v in self.params.items() if "." not in k]
        return own + [(k, v) for k, v in self.params.items() if "." in k]

    # -- text ----------------------------------------------------------------------------------

    def _link_line(self) -> str:
        if self.url:
            return self.url
        if self.store_error and self.pending:
            return f"store unreachable, {self.pending} record(s) waiting in the journal ({self.store_error})"
        if self.store_error:
            return f"not in the tracking store: {self.store_error}"
        if self.handed_off:
            return "journaled; nbmlops run delivers it to the tracking store when the notebook ends"
        return "syncing to the tracking store..."

    def _series_text(self, key: str) -> str:
        values = self.series[key]
        lowest = _lowest(values)
        low = f", min {_fmt(lowest)}" if lowest is not None else ""
        return f"{_fmt(values[0])} .. {_fmt(values[-1])} ({self.steps.get(key, len(values))} steps{low}) {sparkline(values)}"

    def _metric_text(self, key: str, value: float) -> str:
        """``acc=0.93 (+0.01)``, or for a series ``loss: 0.81 .. 0.12 (30 steps, min 0.11) ▇▅▃▂▁``."""
        change = self.delta(key)
        text = self._series_text(key) if self.is_series(key) else _fmt(value)
        return text + (f" ({_fmt_delta(change)})" if change is not None else "")

    def is_series(self, key: str) -> bool:
        """Whether metric ``key`` was logged as several values (a curve)."""
        return len(self.series.get(key, ())) > 1

    def _nondeterminism_note(self) -> str | None:
        if not self.nondeterministic:
            return None
        first, more = self.nondeterministic[0], len(self.nondeterministic) - 1
        return f"nondeterministic: {first}" + (f" (+{more} more)" if more else "") + "; results may change on rerun"

    def to_text(self) -> str:
        """The plain-text form (what nbconvert's text exports and terminals show)."""
        lines = [f"nbmlops run {self.name!r} [{self.status}] {self.duration_s:.2f}s  experiment: {self.experiment}"]
        if self.metrics:
            shown, more = _cut(list(self.metrics.items()))
            lines.append("  metrics: " + ", ".join(f"{k}={self._metric_text(k, v)}" for k, v in shown) + more)
        changed = self.changed_params()
        if self.params:
            flagged = [k for k, before in changed.items() if before is not None]
            shown_params, more = _cut(self.ordered_params(), keep=flagged)
            lines.append("  params:  " + ", ".join(_param_text(k, v, changed) for k, v in shown_params) + more)
        removed = self.removed_params()
        if removed:
            lines.append("  removed: " + ", ".join(f"{k} (was {v})" for k, v in removed.items()))
        for title, data in (("data", self.datasets), ("output", self.outputs)):
            if data:
                shown_data, more = _cut(list(data.items()))
                lines.append(f"  {title + ':':<8} " + ", ".join(f"{k}@{v[:12]}" for k, v in shown_data) + more)
        note = self._nondeterminism_note()
        if note:
            lines.append(f"  note:    {note}")
        if self.registered:
            lines.append(f"  model:   registering a new version of {self.registered}")
        lines.append("  run:     " + self._link_line())
        return "\n".join(lines)

    # -- HTML ----------------------------------------------------------------------------------

    def to_html(self) -> str:
        """The HTML form: a header line, then metrics, params and data as one striped table; every user
        string is escaped."""
        esc = html.escape
        if self.url:
            link = (f"<a href='{esc(self.url, quote=True)}' target='_blank' rel='noopener' "
                    f"style='color:{_LINK};text-decoration:none'>open in MLflow &#8599;</a>")
        else:
            colour = _WORSE if self.store_error else "inherit"
            link = f"<span class='nbmlops-summary-sync' style='color:{colour};opacity:.8'>{esc(self._link_line())}</span>"
        header = (
            f"<div style='display:flex;flex-wrap:wrap;align-items:baseline;gap:0 10px;line-height:18px'>"
            f"<b class='nbmlops-summary-name' style='font-size:13px'>{esc(self.name)}</b>{status_html(self.status)}"
            f"<span style='opacity:.75'>{_duration(self.duration_s)}</span>"
            f"<span style='opacity:.75' title='experiment'>{esc(self.experiment)}</span>{link}</div>"
        )
        note = self._nondeterminism_note()
        notes = f"<div style='color:{_CHANGED};line-height:18px'>&#9888; {esc(note)}</div>" if note else ""
        if self.registered:
            notes += f"<div style='line-height:18px'>model: registering a new version of <b>{esc(self.registered)}</b></div>"
        sections = [
            self._section("metrics", [self._metric_row(k, v) for k, v in self.metrics.items()], "metrics"),
            self._params_section(),
            self._section("data", [_data_row(k, fp, "input") for k, fp in self.datasets.items()]
                          + [_data_row(k, fp, "output") for k, fp in self.outputs.items()], "data"),
        ]
        body = "".join(sections)
        table = (
            f"<table style='border-collapse:collapse;border:1px solid {_BORDER};margin:3px 0 0 0;width:auto;"
            f"table-layout:auto;font-size:12px;color:{_TEXT}'>{body}</table>"
            if body else ""
        )
        return (
            f"<div class='nbmlops-summary' style='font-family:{_FONT};font-size:12px;line-height:16px;"
            f"color:{_TEXT};margin:2px 0;max-width:100%;overflow-x:auto'>{header}{notes}{table}</div>"
        )

    def _section(self, title: str, rows: list[tuple[str, bool]], kind: str) -> str:
        """A titled ``<tbody>`` of ``rows`` (HTML, always shown?): the first :data:`MAX_ITEMS` and those always
        shown, then the rest in a ``<details>`` ("+N more")."""
        if not rows:
            return ""
        shown = [row for i, (row, keep) in enumerate(rows) if i < MAX_ITEMS or keep]
        rest = [row for i, (row, keep) in enumerate(rows) if i >= MAX_ITEMS and not keep]
        head = (f"<tr><th colspan='4' style='{_TD};padding-top:3px;font-size:11px;font-weight:600;"
                f"letter-spacing:.04em;text-transform:uppercase;opacity:.7;border-top:1px solid {_BORDER}'>"
                f"{title} <span style='font-weight:400'>{len(rows)}</span></th></tr>")
        out = [head] + [_striped(row, i) for i, row in enumerate(shown)]
        if rest:
            inner = "".join(_striped(row, i) for i, row in enumerate(rest))
            out.append(
                f"<tr><td colspan='4' style='{_TD};padding:1px 8px 2px'><details class='nbmlops-summary-more'>"
                f"<summary style='cursor:pointer;color:{_LINK}'>+{len(rest)} more {title}</summary>"
                f"<table style='border-collapse:collapse;margin:0;width:auto;table-layout:auto;font-size:12px;"
                f"color:{_TEXT}'>{inner}</table></details></td></tr>"
            )
        return f"<tbody class='nbmlops-summary-{kind}'>" + "".join(out) + "</tbody>"

    def _metric_row(self, key: str, value: float) -> tuple[str, bool]:
        esc = html.escape
        change = self.delta(key)
        delta = ""
        if change is not None:
            better = (change < 0) == lower_is_better(key)
            arrow = "&#9650;" if change > 0 else "&#9660;"
            delta = (f"<span class='nbmlops-delta nbmlops-delta-{'better' if better else 'worse'}' "
                     f"style='color:{_BETTER if better else _WORSE};font-weight:600'>{arrow}&#8201;"
                     f"{esc(_fmt_delta(change))}</span>")
        curve = ""
        if self.is_series(key):
            values = self.series[key]
            lowest = _lowest(values)
            low = f" &middot; min {esc(_fmt(lowest))}" if lowest is not None else ""
            curve = (f"{sparkline_svg(values)} <span style='opacity:.75'>{esc(_fmt(values[0]))} &#8594; "
                     f"{esc(_fmt(values[-1]))}{low} &middot; {self.steps.get(key, len(values))} steps</span>")
        row = (f"<td style='{_TD};font-family:{_MONO}'>{esc(key)}</td>"
               f"<td style='{_TD};font-family:{_MONO};text-align:right;font-variant-numeric:tabular-nums'>"
               f"{esc(_fmt(value))}</td><td style='{_TD}'>{delta}</td><td style='{_TD}'>{curve}</td>")
        return row, False

    def _params_section(self) -> str:
        changed = self.changed_params()
        rows = [_param_row(k, v, k in changed, changed.get(k)) for k, v in self.ordered_params()]
        rows += [_param_row(k, "", True, v, removed=True) for k, v in self.removed_params().items()]
        return self._section("params", rows, "params")

    # -- MIME bundle and payload ----------------------------------------------------------------

    def mimebundle(self) -> dict[str, Any]:
        """Both forms keyed by MIME type, plus the payload a headless runner reads back (which, for a headless
        run, also holds this summary, for the runner to show it again once the run is in the store)."""
        bundle: dict[str, Any] = {"text/plain": self.to_text(), "text/html": self.to_html()}
        if self.run_key:
            payload = run_payload(self.run_key, self.name, self.status, self.params, self.metrics)
            if self.handed_off:
                payload["summary"] = self.to_dict()
            bundle[MIME_TYPE] = payload
        return bundle

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-able data: mappings as ``[key, value]`` lists (their order is what the summary
        shows; notebook files sort object keys), non-finite numbers as strings, curves thinned to their points."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("params", "previous_params", "datasets", "outputs", "steps"):
            data[name] = None if data[name] is None else [[k, v] for k, v in data[name].items()]
        for name in ("metrics", "previous"):
            data[name] = None if data[name] is None else [[k, _json_number(v)] for k, v in data[name].items()]
        data["series"] = [[k, [_json_number(v) for v in thin(vs, CURVE_POINTS, float)]] for k, vs in self.series.items()]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """The summary :meth:`to_dict` gave; a ValueError for data of another shape."""

        def optional(name: str) -> str | None:
            return None if data.get(name) is None else str(data[name])

        try:
            previous, previous_params = data.get("previous"), data.get("previous_params")
            return cls(
                name=str(data["name"]),
                experiment=str(data["experiment"]),
                status=str(data["status"]),
                duration_s=float(data["duration_s"]),
                params=_pairs(data.get("params"), str),
                metrics=_pairs(data.get("metrics"), float),
                series={str(k): [float(v) for v in vs] for k, vs in _pairs(data.get("series"), list).items()},
                steps=_pairs(data.get("steps"), int),
                previous=None if previous is None else _pairs(previous, float),
                previous_params=None if previous_params is None else _pairs(previous_params, str),
                datasets=_pairs(data.get("datasets"), str),
                outputs=_pairs(data.get("outputs"), str),
                nondeterministic=[str(v) for v in data.get("nondeterministic") or []],
                url=optional("url"),
                run_key=optional("run_key"),
                pending=int(data.get("pending") or 0),
                store_error=optional("store_error"),
                handed_off=bool(data.get("handed_off")),
                registered=optional("registered"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not an nbmlops summary: {type(exc).__name__}: {exc}") from None


def status_html(status: str) -> str:
    """A run status in its colour (readable on light and dark themes), as the summary and the dashboard show it."""
    colour = _STATUS_COLOURS.get(status, "inherit")
    return (f"<span class='nbmlops-run-status' style='color:{colour};font-weight:600'>&#9679;&#8201;"
            f"{html.escape(status)}</span>")


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI address of a run (never with the credentials a tracking URI may carry)."""
    from nbmlops.redact import strip_userinfo

    return f"{strip_userinfo(ui_url).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def sparkline_svg(values: list[float], width: int = CURVE_POINTS, height: int = 14) -> str:
    """A series as a small inline SVG curve (its lowest point marked), coloured by the theme; gaps where a
    value is not finite."""
    points = thin(values, width, float)
    finite = [v for v in points if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    step = (width - 2) / max(1, len(points) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        y = 1 + (height - 2) * (1 - (v - low) / span) if high != low else height / 2
        return 1 + i * step, y

    path, pen_down = [], False
    for i, v in enumerate(points):
        if not math.isfinite(v):
            pen_down = False
            continue
        x, y = xy(i, v)
        path.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
        pen_down = True
    where = min(range(len(points)), key=lambda i: points[i] if math.isfinite(points[i]) else math.inf)
    mx, my = xy(where, points[where])
    return (
        f"<svg class='nbmlops-curve' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"style='vertical-align:middle;overflow:visible' role='img' aria-label='curve of {len(values)} values'>"
        f"<path d='{' '.join(path)}' style='fill:none;stroke:{_CURVE};stroke-width:1.3;stroke-linejoin:round'/>"
        f"<circle cx='{mx:.1f}' cy='{my:.1f}' r='1.8' style='fill:{_CURVE}'/></svg>"
    )


_BARS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def sparkline(values: list[float], width: int = 24) -> str:
    """A series as block characters, evenly thinned to at most ``width`` of them."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(finite), max(finite)
    span = high - low
    return "".join(
        " " if not math.isfinite(v) else _BARS[0 if span == 0 else min(7, int((v - low) / span * 7.999))]
        for v in values
    )


# -- helpers ---------------------------------------------------------------------------------------


def _lowest(values: list[float]) -> float | None:
    """The lowest value of a series when it is neither its first nor its last (then the ends say it)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    low = min(finite)
    return None if low in (values[0], values[-1]) else low


def _duration(seconds: float) -> str:
    """``340 ms``, ``2.41 s``, ``3 min 5 s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _fmt_delta(change: float) -> str:
    return f"{change:+.4g}"


def _cut(pairs: list[tuple[str, Any]], keep: Iterable[str] = ()) -> tuple[list[tuple[str, Any]], str]:
    """The first items a summary shows (and those in ``keep``), and ``" +N more"`` for the rest."""
    kept = set(keep)
    shown = [(k, v) for i, (k, v) in enumerate(pairs) if i < MAX_ITEMS or k in kept]
    rest = len(pairs) - len(shown)
    return shown, f" +{rest} more" if rest else ""


def _param_text(key: str, value: str, changed: Mapping[str, str | None]) -> str:
    if key not in changed:
        return f"{key}={value}"
    before = changed[key]
    return f"{key}={value} (new)" if before is None else f"{key}={value} (was {before})"


def _shown(value: str) -> str:
    """A param value as the table shows it: cut to :data:`_SHOWN_VALUE` characters, escaped."""
    cut = value if len(value) <= _SHOWN_VALUE else value[: _SHOWN_VALUE - 1] + "\u2026"
    return html.escape(cut)


def _param_row(key: str, value: str, changed: bool, before: str | None, removed: bool = False) -> tuple[str, bool]:
    esc = html.escape
    flag, value_html = "", f"<span title='{esc(value, quote=True)}'>{_shown(value)}</span>"
    if removed:
        value_html = f"<span style='text-decoration:line-through;opacity:.65'>{_shown(before or '')}</span>"
        flag = "<span class='nbmlops-param-removed' style='opacity:.75;font-style:italic'>removed</span>"
    elif changed and before is None:
        flag = "<span class='nbmlops-param-new' style='opacity:.75;font-style:italic'>new</span>"
    elif changed:
        value_html = (f"<span style='text-decoration:line-through;opacity:.65' title='{esc(before or '', quote=True)}'>"
                      f"{_shown(before or '')}</span> &#8594; <b title='{esc(value, quote=True)}'>{_shown(value)}</b>")
        flag = (f"<span class='nbmlops-changed' style='font-weight:600'><span style='color:{_CHANGED}'>&#9670;</span>"
                "&#8201;changed</span>")
    row = (f"<td style='{_TD};font-family:{_MONO}'>{esc(key)}</td>"
           f"<td style='{_TD};font-family:{_MONO}'>{value_html}</td><td style='{_TD}'>{flag}</td><td style='{_TD}'></td>")
    return row, changed and before is not None and not removed


def _data_row(name: str, fingerprint: str, role: str) -> tuple[str, bool]:
    esc = html.escape
    row = (f"<td style='{_TD};font-family:{_MONO}'>{esc(name)}</td>"
           f"<td style='{_TD};font-family:{_MONO}' title='{esc(fingerprint, quote=True)}'>{esc(fingerprint[:12])}</td>"
           f"<td style='{_TD};opacity:.75'>{role}</td><td style='{_TD}'></td>")
    return row, False


def _striped(cells: str, index: int) -> str:
    background = _STRIPE if index % 2 else "transparent"
    return f"<tr style='background:{background}'>{cells}</tr>"


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _pairs(items: Any, kind: Callable[[Any], _T]) -> dict[str, _T]:
    """``[[key, value], ...]`` (or a mapping) as a dict of ``kind`` values, in order."""
    pairs = items.items() if isinstance(items, Mapping) else (items or [])
    return {str(key): kind(value) for key, value in pairs}
