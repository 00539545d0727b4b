"""A registered model's live traffic, measured: what ``monitor --traffic``, ``models compare --traffic`` and a
promotion's ``--beat ALIAS:online_*`` read.

The traffic is what ``nbmlops serve`` logged and delivered to the store (experiment ``serve/NAME``; any server that
writes the documented traffic datasets will do), read through :func:`nbmlops.serving.traffic.read_traffic`, which
the package hands this room as :data:`nbmlops.openers.traffic_reader` (serving sits above the registry).

What one version did (:class:`VersionTraffic`) comes from the rows it answered (``model_version``) and the rows it
scored as a shadow (``shadow.model_version``): requests, errors and latency per request (a request of several rows
counts once), and, where feedback joined a label to a row, its online metrics. Whether those are a classifier's or
a regressor's is read from the labels and predictions: text, booleans, or predictions that are all whole numbers
make a classifier (``online_accuracy``); other numbers a regressor (``online_mae``, ``online_rmse``). Two versions
that scored the same rows (one served, the other shadowed) are compared row by row: ``agreement`` is the share of
equal predictions (numbers within ``numpy.isclose``'s default tolerance), ``mean_abs_diff`` their mean absolute
difference when they are a regressor's. Only the logged (sampled) requests are rows, so latency and error rate are
those of the sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nbmlops.config import Settings
from nbmlops.exceptions import MonitoringDataError, RegistryError
from nbmlops.registry.models import ModelReference, ModelVersionInfo, get_version, registry_client

__all__ = [
    "DEFAULT_SINCE",
    "ONLINE_METRICS",
    "LiveTraffic",
    "TrafficComparison",
    "VersionTraffic",
    "compare_on_traffic",
    "live_traffic",
    "read_traffic",
    "version_traffic",
    "window",
]

#: the window the command line reads by default
DEFAULT_SINCE = "24h"
#: the online metrics a version can have (a classifier's, then a regressor's)
ONLINE_METRICS = ("online_accuracy", "online_mae", "online_rmse")
_PREDICTION, _SHADOW_PREDICTION = "prediction", "shadow.prediction"
_QUANTILES = (("p50", 50), ("p95", 95), ("p99", 99))


def window(since: str | datetime | timedelta | None) -> str:
    """The window in words: ``since 24h``, ``since 2024-05-01T08:00:00+00:00``, ``in all logged traffic``."""
    if since is None:
        return "in all logged traffic"
    return f"since {since.isoformat(timespec='seconds') if isinstance(since, datetime) else since}"


def read_traffic(name: str, since: str | datetime | timedelta | None, settings: Settings) -> Any:
    """The traffic of every server of model ``name`` since ``since`` (a ``nbmlops.serving.traffic.Traffic``;
    ``since`` as :func:`nbmlops.serving.traffic.parse_since` reads it: a duration back from now such as ``30m``,
    ``24h``, ``7d``, an ISO time, a ``datetime`` or ``timedelta``, or None for all of it).

    Raises:
        MonitoringDataError: ``since`` cannot be read.
    """
    from nbmlops import openers

    if openers.traffic_reader is None:
        raise RegistryError("no traffic reader: import nbmlops (it sets nbmlops.openers.traffic_reader)")
    return openers.traffic_reader(name, since=since, settings=settings)


# -- one version's predictions ---------------------------------------------------------------------------


def _numbers(column: Any) -> Any:
    """``column`` as floats when every value is a number (bools are not), else None."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(float)
    converted = pd.to_numeric(column, errors="coerce")
    if converted.isna().any() or column.map(lambda v: isinstance(v, bool)).any():
        return None
    return converted.astype(float)


def _task(predictions: Any, labels: Any) -> str:
    """``classification`` or ``regression``, read from the values (see the module's docstring)."""
    import numpy as np

    p, y = _numbers(predictions), _numbers(labels)
    if p is None or y is None:
        return "classification"
    values = p.to_numpy()
    return "classification" if bool(np.all(values == np.round(values))) else "regression"


def _equal(a: Any, b: Any) -> Any:
    """Row by row, whether two prediction columns agree (numbers within ``numpy.isclose``'s tolerance)."""
    import numpy as np

    x, y = _numbers(a), _numbers(b)
    if x is not None and y is not None:
        return np.isclose(x.to_numpy(), y.to_numpy())
    return (a.astype(str).to_numpy() == b.astype(str).to_numpy())


def _online(predictions: Any, labels: Any) -> tuple[str, dict[str, float]]:
    """The task and its online metrics over rows with a label."""
    import numpy as np

    task = _task(predictions, labels)
    if task == "classification":
        return task, {"online_accuracy": float(np.mean(_equal(predictions, labels)))}
    diff = _numbers(predictions).to_numpy() - _numbers(labels).to_numpy()
    return task, {"online_mae": float(np.mean(np.abs(diff))), "online_rmse": float(np.sqrt(np.mean(diff ** 2)))}


def _latency(timing: Any) -> dict[str, float]:
    """p50/p95/p99 of the requests' ``latency_ms`` (one value per request)."""
    import numpy as np

    values = timing["latency_ms"].dropna().to_numpy(dtype=float)
    if not len(values):
        return {}
    return {f"latency_{label}_ms": float(np.percentile(values, q)) for label, q in _QUANTILES}


def _version_rows(frame: Any, column: str, version: int) -> Any:
    import pandas as pd

    if column not in frame or not len(frame):
        return frame.iloc[0:0]
    return frame[pd.to_numeric(frame[column], errors="coerce").astype("float64") == version]


def _ok(frame: Any) -> Any:
    import pandas as pd

    return pd.to_numeric(frame["status"], errors="coerce").astype("float64") == 200


def _predictions(requests: Any, version: int) -> tuple[Any, str, Any, Any]:
    """The rows ``version`` scored with a single prediction each: ``request_id, row, prediction, latency_ms,
    label`` (``requests`` as ``Traffic.with_labels()`` gives them); where they came from; the rows it answered
    (errors included); and ``request_id, latency_ms`` of every request it answered or shadowed."""
    import pandas as pd

    columns = ["request_id", "row", _PREDICTION, "latency_ms", "label"]
    served = _version_rows(requests, "model_version", version)
    shadowed = _version_rows(requests, "shadow.model_version", version)
    parts, timings, sources = [], [], []
    if len(served):
        sources.append("served")
        timings.append(served[["request_id", "latency_ms"]].drop_duplicates("request_id"))
        if _PREDICTION in served:
            parts.append(served[_ok(served)][columns])
    if len(shadowed) and _SHADOW_PREDICTION in shadowed:
        sources.append("shadow")
        scored = shadowed[shadowed[_SHADOW_PREDICTION].notna()]
        scored = scored[["request_id", "row", _SHADOW_PREDICTION, "shadow.latency_ms", "label"]].set_axis(columns,
                                                                                                        axis=1)
        parts.append(scored)
        timings.append(scored[["request_id", "latency_ms"]].drop_duplicates("request_id"))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    timing = pd.concat(timings, ignore_index=True) if timings else pd.DataFrame(columns=["request_id", "latency_ms"])
    return rows, "+".join(sources) or "none", served, timing


@dataclass(frozen=True)
class VersionTraffic:
    """What one version did on live traffic.

    Attributes:
        source: ``served`` (it answered requests), ``shadow`` (it scored them as a shadow), ``served+shadow``, or
            ``none``.
        requests, errors: the logged requests it answered, and those that failed (none when only shadowed).
        rows: the rows it predicted (served or shadowed).
        latency: ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms`` over its requests (served or shadowed).
        labelled: rows with a label from feedback; ``task`` and ``online`` (``online_accuracy``, or ``online_mae``
            and ``online_rmse``) are computed on them (``task`` is None without any).
    """

    version: int
    source: str
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency: dict[str, float] = field(default_factory=dict)
    labelled: int = 0
    task: str | None = None
    online: dict[str, float] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        """Failed requests over the requests it answered (None when it answered none)."""
        return self.errors / self.requests if self.requests else None

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Its figures as metrics (``requests``, ``errors``, ``error_rate``, ``rows``, ``latency_p95_ms``,
        ``labelled_rows``, ``online_accuracy``, ...), each name after ``prefix``."""
        found: dict[str, float] = {"rows": float(self.rows), "labelled_rows": float(self.labelled)}
        if self.requests:
            found |= {"requests": float(self.requests), "errors": float(self.errors),
                      "error_rate": float(self.error_rate or 0.0)}
        found |= self.latency | self.online
        return {prefix + key: value for key, value in found.items()}


def _version_summary(requests: Any, version: int) -> tuple[VersionTraffic, Any]:
    rows, source, served, timing = _predictions(requests, version)
    answered = served.drop_duplicates("request_id") if len(served) else served
    failed = int((~_ok(answered)).sum()) if len(answered) else 0
    labelled = rows[rows["label"].notna()]
    task, online = (_online(labelled[_PREDICTION], labelled["label"]) if len(labelled) else (None, {}))
    summary = VersionTraffic(
        version=version, source=source, requests=len(answered), errors=failed, rows=len(rows),
        latency=_latency(timing),
        labelled=len(labelled), task=task, online=online,
    )
    return summary, rows


def _agreement(first: Any, second: Any) -> tuple[int, float | None, float | None]:
    """Rows both scored, the share where they agree, and their mean absolute difference (a regressor's only)."""
    import numpy as np

    both = first[["request_id", "row", _PREDICTION]].merge(
        second[["request_id", "row", _PREDICTION]], on=["request_id", "row"], suffixes=("_a", "_b"))
    if not len(both):
        return 0, None, None
    a, b = both[f"{_PREDICTION}_a"], both[f"{_PREDICTION}_b"]
    mean_abs = None
    if _task(a, b) == "regression":
        mean_abs = float(np.mean(np.abs(_numbers(a).to_numpy() - _numbers(b).to_numpy())))
    return len(both), float(np.mean(_equal(a, b))), mean_abs


def version_traffic(name: str, versions: Sequence[int], *, since: str | datetime | timedelta | None = DEFAULT_SINCE,
                    settings: Settings) -> dict[int, VersionTraffic]:
    """What each of ``versions`` of model ``name`` did on the traffic since ``since`` (one read of the store)."""
    traffic = read_traffic(name, since, settings)
    requests = traffic.with_labels()
    return {v: _version_summary(requests, v)[0] for v in dict.fromkeys(versions)}


# -- monitor --traffic ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveTraffic:
    """The traffic of one version, as ``monitor --traffic`` measures it.

    Attributes:
        inputs: the input rows of its successful requests (``input.<column>`` renamed ``<column>``).
        predictions: its logged predictions of those rows (None when it has several outputs).
        summary: requests, errors, latency and online metrics (:class:`VersionTraffic`).
        shadow: the version that shadowed it most recently in the window, and on how many rows, agreeing how often.
        runs: the serving runs the traffic came from; ``other_versions``: rows of other versions left out.
    """

    name: str
    version: int
    since: str | datetime | timedelta | None
    inputs: Any
    predictions: Any
    summary: VersionTraffic
    runs: tuple[str, ...] = ()
    shadow: VersionTraffic | None = None
    shadow_rows: int = 0
    shadow_agreement: float | None = None
    shadow_mean_abs_diff: float | None = None
    other_versions: dict[int, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """Which traffic, in a few words (``live traffic (since 24h: 120 request(s), 130 row(s), 2 serving
        run(s))``)."""
        return (f"live traffic ({window(self.since)}: {self.summary.requests} request(s), {len(self.inputs)} row(s), "
                f"{len(self.runs)} serving run(s))")

    def metrics(self) -> dict[str, float]:
        """Requests, errors, error rate, latency, online metrics and, when shadowed, ``shadow_agreement``,
        ``shadow_mean_abs_diff``, ``shadow_rows`` and the shadow's own (``shadow_latency_p95_ms``, ...)."""
        found = self.summary.metrics()
        if self.shadow is not None:
            found |= {k: v for k, v in self.shadow.metrics("shadow_").items() if k != "shadow_rows"}
            found["shadow_rows"] = float(self.shadow_rows)
            if self.shadow_agreement is not None:
                found["shadow_agreement"] = self.shadow_agreement
            if self.shadow_mean_abs_diff is not None:
                found["shadow_mean_abs_diff"] = self.shadow_mean_abs_diff
        return found

    def tags(self) -> dict[str, str]:
        """Run tags: where the traffic came from."""
        tags = {"nbmlops.traffic.runs": ",".join(self.runs)[:5000],
                "nbmlops.traffic.since": window(self.since)}
        if self.shadow is not None:
            tags["nbmlops.traffic.shadow_version"] = str(self.shadow.version)
        return tags

    def lines(self) -> list[str]:
        """The figures for the terminal."""
        s = self.summary
        lines = [f"live traffic of version {self.version}: {s.requests} request(s), "
                 f"{s.errors} failed" + (f" (error rate {s.error_rate:.4g})" if s.requests else "")
                 + f", {s.rows} row(s) predicted"]
        if s.latency:
            lines.append("  latency ms: " + ", ".join(f"{k[8:11]} {v:.4g}" for k, v in s.latency.items()))
        lines.append(f"  feedback: {s.labelled} labelled row(s)" + (
            ": " + ", ".join(f"{k} {v:.4g}" for k, v in s.online.items()) if s.online else ""))
        if self.shadow is not None:
            agree = "" if self.shadow_agreement is None else f", agreement {self.shadow_agreement:.4g}"
            lines.append(f"  shadow version {self.shadow.version}: {self.shadow_rows} row(s) scored by both{agree}"
                         + "".join(f", {k} {v:.4g}" for k, v in (self.shadow.online | self.shadow.latency).items()))
        lines += [f"note: {note}" for note in self.notes]
        return lines

    def html(self) -> str:
        """A section for the monitoring report: the live figures in a table."""
        import html

        rows = "".join(f'<tr><td>{html.escape(k)}</td><td class="num">{v:.6g}</td></tr>'
                       for k, v in self.metrics().items())
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<section><h2>Live traffic</h2><p>{html.escape(self.describe())} of version {self.version}"
                + (f", shadowed by version {self.shadow.version}" if self.shadow is not None else "") + "</p>"
                f"<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>"
                + (f"<ul>{notes}</ul>" if notes else "") + "</section>")


def live_traffic(version: ModelVersionInfo, since: str | datetime | timedelta | None,
                 settings: Settings) -> LiveTraffic:
    """The traffic ``version`` answered since ``since`` (else, when it only shadowed another, the rows it scored
    as the shadow).

    Raises:
        MonitoringDataError: no logged request of this version in the window (the message says what there is).
    """
    traffic = read_traffic(version.name, since, settings)
    requests = traffic.with_labels()
    summary, rows = _version_summary(requests, version.version)
    if summary.source == "none":
        raise MonitoringDataError(_no_traffic(version, since, requests))
    notes: list[str] = []
    if summary.source.startswith("served"):
        mine = _version_rows(requests, "model_version", version.version)
        mine = mine[_ok(mine)]
        predictions = mine[_PREDICTION] if _PREDICTION in mine else None
    else:
        mine = _version_rows(requests, "shadow.model_version", version.version)
        mine = mine[mine[_SHADOW_PREDICTION].notna()] if _SHADOW_PREDICTION in mine else mine.iloc[0:0]
        predictions = mine[_SHADOW_PREDICTION] if len(mine) else None
        notes.append(f"version {version.version} only scored traffic as a shadow: its shadow predictions are "
                     "monitored")
    if predictions is None and len(mine):
        notes.append("the model has several outputs: no prediction drift, online metrics or agreement")
    inputs = mine[[c for c in mine.columns if c.startswith("input.")]]
    inputs = inputs.set_axis([c[len("input."):] for c in inputs.columns], axis=1).reset_index(drop=True)
    if not len(inputs):
        raise MonitoringDataError(_no_traffic(version, since, requests, failed=summary.errors))
    others = _other_versions(requests, version.version)
    if others:
        notes.append("left out rows of other versions: " + ", ".join(f"version {v}: {n}" for v, n in others.items()))
    shadow, paired, agreement, mean_abs = _shadow_of(requests, version.version, rows)
    return LiveTraffic(
        name=version.name, version=version.version, since=since, inputs=inputs,
        predictions=None if predictions is None else predictions.reset_index(drop=True), summary=summary,
        runs=tuple(traffic.runs), shadow=shadow, shadow_rows=paired, shadow_agreement=agreement,
        shadow_mean_abs_diff=mean_abs, other_versions=others, notes=tuple(notes),
    )


def _no_traffic(version: ModelVersionInfo, since: str | datetime | timedelta | None, requests: Any,
                failed: int = 0) -> str:
    when = window(since)
    if failed:
        return f"no successful request of {version} {when}: all {failed} logged request(s) failed"
    others = _other_versions(requests, version.version)
    seen = (": the logged traffic is of " + ", ".join(f"version {v} ({n} rows)" for v, n in others.items())
            if others else f" (serve it: nbmlops serve {version.name}@ALIAS)")
    return f"no logged traffic of {version} {when}{seen}"


def _other_versions(requests: Any, version: int) -> dict[int, int]:
    import pandas as pd

    if "model_version" not in requests or not len(requests):
        return {}
    counts = pd.to_numeric(requests["model_version"], errors="coerce").dropna().astype(int).value_counts()
    return {int(v): int(n) for v, n in sorted(counts.items()) if v != version}


def _shadow_of(requests: Any, version: int,
               rows: Any) -> tuple[VersionTraffic | None, int, float | None, float | None]:
    """The version that shadowed ``version`` most recently, and how the two agree on the rows both scored."""
    import pandas as pd

    if "shadow.model_version" not in requests:
        return None, 0, None, None
    mine = _version_rows(requests, "model_version", version)
    shadowed = mine[pd.to_numeric(mine["shadow.model_version"], errors="coerce").astype("float64").notna()]
    if not len(shadowed):
        return None, 0, None, None
    latest = shadowed.sort_values("timestamp", kind="stable") if "timestamp" in shadowed else shadowed
    other = int(pd.to_numeric(latest["shadow.model_version"]).astype("float64").iloc[-1])
    summary, other_rows = _version_summary(requests, other)
    paired, agreement, mean_abs = _agreement(rows, other_rows)
    return summary, paired, agreement, mean_abs


# -- models compare --traffic -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficComparison:
    """Two versions of a model on the same live traffic: each one's figures, and how they agree on the rows
    both scored (``paired_rows``)."""

    name: str
    labels: tuple[str, str]
    first: VersionTraffic
    second: VersionTraffic
    since: str | datetime | timedelta | None
    runs: tuple[str, ...]
    paired_rows: int
    agreement: float | None
    mean_abs_diff: float | None

    def metrics(self) -> dict[str, float]:
        """Both versions' figures (``a.online_accuracy``, ``b.latency_p95_ms``, ...) and ``agreement``,
        ``paired_rows``, ``mean_abs_diff``."""
        found = self.first.metrics("a.") | self.second.metrics("b.") | {"paired_rows": float(self.paired_rows)}
        if self.agreement is not None:
            found["agreement"] = self.agreement
        if self.mean_abs_diff is not None:
            found["mean_abs_diff"] = self.mean_abs_diff
        return found

    def format(self) -> str:
        """A side-by-side table for the terminal."""
        heads = [f"{label} (version {v.version})" for label, v in zip(self.labels, (self.first, self.second))]
        names = ["source", "requests", "errors", "error_rate", "rows", "labelled_rows", *ONLINE_METRICS,
                 "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
        cells = [(v.source, *(_cell(v.metrics().get(n)) for n in names[1:])) for v in (self.first, self.second)]
        keep = [i for i, n in enumerate(names) if i == 0 or any(c[i] != "-" for c in cells)]
        width = max(len(names[i]) for i in keep)
        columns = [max(len(heads[j]), *(len(cells[j][i]) for i in keep)) for j in range(2)]
        lines = [f"{self.name} on live traffic ({window(self.since)}, {len(self.runs)} serving run(s))",
                 " " * width + "  " + "  ".join(h.rjust(w) for h, w in zip(heads, columns))]
        lines += [names[i].ljust(width) + "  " + "  ".join(cells[j][i].rjust(columns[j]) for j in range(2))
                  for i in keep]
        if self.paired_rows:
            agreement = f"agreement {self.agreement:.4g} on {self.paired_rows} row(s) scored by both"
            lines.append(agreement + (f" (mean absolute difference {self.mean_abs_diff:.4g})"
                                      if self.mean_abs_diff is not None and self.agreement != 1.0 else ""))
        else:
            lines.append("agreement: no row was scored by both (serve one with --shadow the other)")
        if not (self.first.labelled and self.second.labelled):
            lines.append("online metrics need feedback (POST /feedback) on rows each version scored")
        return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _resolve(name: str, which: str, client: Any) -> ModelVersionInfo:
    reference = (ModelReference(name, version=int(which)) if which.isdigit()
                 else ModelReference(name, alias=which.lstrip("@")))
    return get_version(reference, client=client)


def compare_on_traffic(name: str, first: str, second: str, *,
                       since: str | datetime | timedelta | None = DEFAULT_SINCE,
                       settings: Settings) -> TrafficComparison:
    """Compare two versions of model ``name`` (each an alias such as ``champion`` or a version number) on the live
    traffic since ``since``: agreement on the rows both scored, online metric and latency of each.

    Raises:
        ModelNotFoundError: no such alias or version. MonitoringDataError: neither version has logged traffic in
        the window, or ``since`` cannot be read.
    """
    client = registry_client(settings)
    a, b = _resolve(name, first, client), _resolve(name, second, client)
    traffic = read_traffic(name, since, settings)
    requests = traffic.with_labels()
    summary_a, rows_a = _version_summary(requests, a.version)
    summary_b, rows_b = _version_summary(requests, b.version)
    if summary_a.source == "none" and summary_b.source == "none":
        raise MonitoringDataError(f"no logged traffic of {name} version {a.version} or {b.version} {window(since)}")
    paired, agreement, mean_abs = _agreement(rows_a, rows_b)
    return TrafficComparison(name, (first, second), summary_a, summary_b, since, tuple(traffic.runs), paired,
                             agreement, mean_abs)
