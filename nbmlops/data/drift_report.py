"""How a drift report reads: MLflow metrics, an aligned text table, and a self-contained HTML
page with matplotlib charts (the PSI of every feature and the distributions of the most drifted).

matplotlib is imported only when a page is rendered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nbmlops.shorten import clip

if TYPE_CHECKING:
    from nbmlops.data.drift import DriftReport, FeatureDrift

__all__ = ["by_psi", "report_html", "report_metrics", "report_table"]

MAX_PLOTS = 30  # distribution charts on a page
_MAX_BARS = 40
_HEADER = ("feature", "kind", "psi", "ks", "ks p-value", "ref rows", "cur rows", "note")
_NUMERIC = {2, 3, 4, 5, 6}  # right-aligned columns of _HEADER
_METRIC_UNSAFE = re.compile(r"[^\w\-. ]")
_METRIC_PREFIX = len("ks_pvalue.")
_MAX_METRIC_KEY = 250  # MLflow's limit


def by_psi(features: Iterable[FeatureDrift]) -> list[FeatureDrift]:
    """Most drifted first: by PSI, an empty side that drifted before everything."""

    def key(f: FeatureDrift) -> float:
        if f.psi is None:
            return math.inf if f.drifted else -1.0
        return f.psi

    return sorted(features, key=key, reverse=True)


# --- metrics ---


def report_metrics(report: DriftReport) -> dict[str, float]:
    """The metrics :meth:`DriftReport.to_metrics` documents."""
    metrics: dict[str, float] = {}
    taken = {"max", "prediction"}
    for f in report.features:
        _add_metrics(metrics, _metric_name(f.name, taken), f)
    psis = [f.psi for f in report.features if f.psi is not None]
    if psis:
        metrics["psi.max"] = max(psis)
    metrics["drifted_features"] = float(len(report.drifted_features))
    if report.prediction is not None:
        _add_metrics(metrics, "prediction", report.prediction)
    return metrics


def _metric_name(name: str, taken: set[str]) -> str:
    """``name`` made safe as part of an MLflow metric key, distinct from the ``taken`` ones
    (which it joins). Slashes and colons are replaced too: MLflow reads slashes as paths and
    refuses colons on Windows."""
    base = _METRIC_UNSAFE.sub("_", name) or "_"
    base = base[: _MAX_METRIC_KEY - _METRIC_PREFIX - 8]
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _add_metrics(metrics: dict[str, float], key: str, f: FeatureDrift) -> None:
    for prefix, value in (("psi", f.psi), ("ks", f.ks_statistic), ("ks_pvalue", f.ks_pvalue)):
        if value is not None:
            metrics[f"{prefix}.{key}"] = float(value)


# --- text ---


def report_table(report: DriftReport) -> str:
    """The table :meth:`DriftReport.format_table` documents, with the summary lines below it."""
    rows = [("", *_HEADER)] + [("*" if f.drifted else "", *_cells(f, clip(label, 40))) for f, label in _rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i - 1 in _NUMERIC else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines + _summary_lines(report))


def _rows(report: DriftReport) -> list[tuple[FeatureDrift, str]]:
    """The table's features and their labels: the prediction, then the most drifted first."""
    first = [(report.prediction, "[prediction]")] if report.prediction else []
    return first + [(f, f.name) for f in by_psi(report.features)]


def _cells(f: FeatureDrift, label: str) -> tuple[str, ...]:
    """A feature's row in the table, as text; "~" marks an approximate statistic."""
    approx = "~" if f.approximate else ""
    return (
        label,
        f.kind,
        "-" if f.psi is None else f"{approx}{f.psi:.4f}",
        "-" if f.ks_statistic is None else f"{approx}{f.ks_statistic:.4f}",
        "-" if f.ks_pvalue is None else f"{approx}{f.ks_pvalue:.3g}",
        str(f.reference_rows),
        str(f.current_rows),
        f.note,
    )


def _summary_lines(report: DriftReport) -> list[str]:
    lines = [
        (
            f"{len(report.drifted_features)} of {len(report.features)} features drifted "
            f"(PSI > {report.threshold:g}); reference: {report.reference_source}, "
            f"{report.reference_rows} rows; current: {report.current_rows} rows"
        )
    ]
    if report.prediction is not None:
        state = "drifted" if report.prediction.drifted else "did not drift"
        lines.append(f"prediction {state}")
    if report.missing_columns:
        lines.append("missing in current data: " + ", ".join(report.missing_columns))
    if report.extra_columns:
        lines.append("not in the reference: " + ", ".join(report.extra_columns))
    lines += [f"skipped {name}: {why}" for name, why in report.skipped]
    return lines


# --- HTML ---


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.75em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.drifted td { background: #fde8e8; }
.badge { font-weight: bold; color: #b91c1c; }
.ok { color: #15803d; }
section { margin: 1.5em 0; }
img { max-width: 100%; }
"""


def report_html(report: DriftReport, title: str) -> str:
    """The page :meth:`DriftReport.to_html` documents; every user string is escaped."""
    import html

    esc = html.escape
    drift = '<span class="badge">drift detected</span>' if report.drifted else '<span class="ok">no drift</span>'
    summary = "".join(f"<li>{esc(line)}</li>" for line in _summary_lines(report))
    head = "".join(f"<th>{esc(h)}</th>" for h in ("", *_HEADER))
    rows = []
    for f, label in _rows(report):
        mark = '<td><span class="badge">drift</span></td>' if f.drifted else "<td></td>"
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i in _NUMERIC else f"<td>{esc(c)}</td>"
            for i, c in enumerate(_cells(f, label))
        )
        tr = '<tr class="drifted">' if f.drifted else "<tr>"
        rows.append(f"{tr}{mark}{cells}</tr>")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{drift}</p><ul>{summary}</ul>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
        '<p>"~" marks statistics estimated from the reference profile.</p>',
    ]
    charted = [(f, label) for f, label in _rows(report) if f.psi is not None]
    if charted:
        parts.append("<h2>PSI by feature</h2>")
        parts.append(_img(_psi_chart(charted, report.threshold), "PSI by feature"))
    plottable = [(f, label) for f, label in _rows(report) if f.histogram is not None]
    if plottable:
        parts.append("<h2>Distributions</h2>")
        if len(plottable) > MAX_PLOTS:
            parts.append(f"<p>The {MAX_PLOTS} most drifted features.</p>")
    for f, label in plottable[:MAX_PLOTS]:
        note = f"<p>{esc(f.note)}</p>" if f.note else ""
        parts.append(f"<section><h3>{esc(label)}</h3>{note}{_img(_distribution_chart(f, label), label)}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(png: bytes, alt: str) -> str:
    import base64
    import html

    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    fig.clear()
    return buffer.getvalue()


def _psi_chart(features: list[tuple[FeatureDrift, str]], threshold: float) -> bytes:
    """Horizontal PSI bars, the most drifted on top (at most 40), and the threshold line."""
    from matplotlib.figure import Figure

    shown = features[:_MAX_BARS]
    fig = Figure(figsize=(7, 0.3 * len(shown) + 1.2))
    ax = fig.subplots()
    positions = list(range(len(shown)))[::-1]
    colors = ["#dc2626" if f.drifted else "#60a5fa" for f, _ in shown]
    ax.barh(positions, [f.psi or 0.0 for f, _ in shown], color=colors)
    ax.set_yticks(positions, [clip(label, 40) for _, label in shown], parse_math=False)
    ax.axvline(threshold, color="#111", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("PSI" if len(features) <= _MAX_BARS else f"PSI (the {_MAX_BARS} highest)")
    ax.legend(loc="lower right")
    return _png(fig)


def _distribution_chart(f: FeatureDrift, name: str) -> bytes:
    import numpy as np
    from matplotlib.figure import Figure

    assert f.histogram is not None
    hist = f.histogram
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    if hist.edges:
        edges = np.asarray(hist.edges)
        widths = np.diff(edges)
        for shares, label, color in ((hist.reference, "reference", "#2563eb"), (hist.current, "current", "#f97316")):
            ax.bar(edges[:-1], shares, width=widths, align="edge", alpha=0.5, label=label, color=color)
        ax.set_ylabel("share of values")
        ax.set_xlabel("the outer bins hold the tails")
    else:
        x = np.arange(len(hist.labels))
        ax.bar(x - 0.2, hist.reference, width=0.4, label="reference", color="#2563eb")
        ax.bar(x + 0.2, hist.current, width=0.4, label="current", color="#f97316")
        labels = [clip(label, 20) for label in hist.labels]
        ax.set_xticks(x, labels, rotation=45, ha="right", parse_math=False)
        ax.set_ylabel("share of values")
    psi_text = "no PSI" if f.psi is None else f"PSI {f.psi:.3f}"
    ax.set_title(f"{clip(name, 60)}: {psi_text}", parse_math=False)
    ax.legend()
    return _png(fig)
