"""What is served where: the model servers of a tracking store, read from their serving runs.

Each ``nbmlops serve NAME@ALIAS`` records a serving run in experiment ``serve/NAME`` (see the serving design):
its tags say the model, alias, address, the version serving now, the last swap, the shadow alias and a heartbeat;
its metrics summarise the traffic (requests, errors, error rate, latency percentiles). A deployment is
``NAME@ALIAS`` at one address; of the runs of one deployment the one serving now is shown, else the newest.

Its state:

- ``serving``: the run is RUNNING and its heartbeat is at most ``stale_after`` seconds old;
- ``dead``: the run is RUNNING but its heartbeat is older (the server was killed or lost its store), or the run
  was ended KILLED or FAILED;
- ``stopped``: the run is FINISHED (a graceful stop).

The drift state of a model is that of its latest check of live traffic (``nbmlops monitor NAME@ALIAS --traffic``:
a monitoring run in experiment ``monitor/NAME`` tagged ``nbmlops.traffic.since``): ``ok``, ``drifted``, or
``never checked`` when there is none (a check of a data file does not count: it says nothing of the traffic).
Deployments are listed serving first, then dead, then stopped, the newest first within each.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from nbmlops.config import Settings, resolve_settings
from nbmlops.tracking.search import RunRow, search_page

__all__ = [
    "DEAD", "DRIFTED", "NEVER_CHECKED", "OK", "SERVING", "STALE_AFTER_S", "STOPPED", "Deployment", "DriftCheck",
    "Swap", "list_deployments",
]

SERVING, DEAD, STOPPED = "serving", "dead", "stopped"
OK, DRIFTED, NEVER_CHECKED = "ok", "drifted", "never checked"
#: a RUNNING server whose heartbeat is older than this many seconds is dead (its recorder beats at each delivery,
#: every 5 s by default: this is two dozen beats missed)
STALE_AFTER_S = 120.0
#: at most this many stopped or dead serving runs are read (the newest); every RUNNING one is
RECENT_RUNS = 200
_RUNNING_PAGES = 10  # pages of RECENT_RUNS RUNNING serving runs read at most

SERVE_PREFIX, MONITOR_PREFIX = "serve/", "monitor/"
_SERVE_RUNS = "tags.`nbmlops.kind` = 'serve'"
#: the monitoring runs of ``nbmlops monitor NAME@ALIAS --traffic`` (a check of a data file has no traffic tags)
_MONITOR_RUNS = ("tags.`nbmlops.kind` = 'monitor' and tags.`nbmlops.drifted` LIKE '%' "
                 "and tags.`nbmlops.traffic.since` LIKE '%'")
_NEWEST = ["attributes.start_time DESC"]
_TAG = "nbmlops.serve."
_SWAP = re.compile(r"v?(\d+)\s*->\s*v?(\d+)")
_ORDER = {SERVING: 0, DEAD: 1, STOPPED: 2}


@dataclass(frozen=True)
class Swap:
    """The last swap of a server: from version ``previous`` to ``version`` at ``at_ms`` (epoch ms; None when
    unknown); ``text`` is ``v1 -> v2`` (or the tag's text when it does not read so)."""

    text: str
    at_ms: int | None
    previous: int | None = None
    version: int | None = None


@dataclass(frozen=True)
class DriftCheck:
    """A model's drift state: ``state`` is ``ok``, ``drifted`` or ``never checked``; ``checked_ms`` when its
    latest monitoring run started, ``run_id`` that run and ``version`` the model version it checked."""

    state: str
    checked_ms: int | None = None
    run_id: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Deployment:
    """One model server as its serving run records it (times are epoch milliseconds; a figure the run has not
    recorded yet is None)."""

    model: str
    alias: str
    url: str
    version: int | None
    state: str
    status: str
    run_id: str
    experiment_id: str
    started_ms: int
    ended_ms: int | None
    heartbeat_ms: int | None
    since_ms: int | None
    requests: float | None
    errors: float | None
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    shadow: str | None
    last_swap: Swap | None
    drift: DriftCheck
    host: str = ""
    pid: int | None = None

    @property
    def reference(self) -> str:
        """``NAME@ALIAS``."""
        return f"{self.model}@{self.alias}"

    def as_json(self) -> dict[str, Any]:
        """The deployment as the REST API returns it (plain JSON types; numbers may be NaN: see ``json_safe``)."""
        swap = self.last_swap
        return {
            "model": self.model, "alias": self.alias, "url": self.url, "version": self.version,
            "state": self.state, "status": self.status, "run_id": self.run_id, "experiment_id": self.experiment_id,
            "started": self.started_ms, "ended": self.ended_ms, "heartbeat": self.heartbeat_ms,
            "since": self.since_ms, "requests": self.requests, "errors": self.errors, "error_rate": self.error_rate,
            "latency_p50_ms": self.latency_p50_ms, "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms, "shadow": self.shadow,
            "last_swap": None if swap is None else {"text": swap.text, "at": swap.at_ms, "from": swap.previous,
                                                    "to": swap.version},
            "drift": {"state": self.drift.state, "checked": self.drift.checked_ms, "run_id": self.drift.run_id,
                      "version": self.drift.version},
            "host": self.host, "pid": self.pid,
        }


def list_deployments(settings: Settings | None = None, *, stale_after: float = STALE_AFTER_S,
                     now: float | None = None) -> list[Deployment]:
    """Every deployment of the tracking store of ``settings`` (see the module's docstring), serving first.

    Args:
        stale_after: seconds after its last heartbeat that a RUNNING server counts as dead.
        now: the time to judge heartbeats by (epoch seconds; default: now).
    """
    from nbmlops.backend.deployments import experiments_under
    from nbmlops.backend.store import open_store

    settings = settings or resolve_settings()
    uri = settings.tracking_uri
    store = open_store(uri, None)
    served = {experiment_id: name[len(SERVE_PREFIX):] for experiment_id, name in experiments_under(store, SERVE_PREFIX)}
    if not served:
        return []
    rows = _serving_runs(uri, list(served))
    now_ms = int((time.time() if now is None else now) * 1000)
    found = _one_per_deployment(_deployment(row, served.get(row.experiment_id, ""), now_ms, stale_after * 1000)
                                for row in rows)
    monitors = dict((name[len(MONITOR_PREFIX):], experiment_id)
                    for experiment_id, name in experiments_under(store, MONITOR_PREFIX))
    drift = {model: _drift(uri, monitors.get(model)) for model in {d.model for d in found}}
    shown = [replace(d, drift=drift[d.model]) for d in found]
    return sorted(shown, key=lambda d: (_ORDER.get(d.state, len(_ORDER)), -d.started_ms, d.reference, d.url))


def _serving_runs(uri: str, experiment_ids: list[str]) -> list[RunRow]:
    """Every RUNNING serving run (up to a bound) and the newest :data:`RECENT_RUNS` serving runs."""
    rows: dict[str, RunRow] = {}
    offset = 0
    for _ in range(_RUNNING_PAGES):
        page = search_page(uri, experiment_ids, f"{_SERVE_RUNS} and attributes.status = 'RUNNING'", _NEWEST,
                           offset, RECENT_RUNS)
        rows.update((row.run_id, row) for row in page.rows)
        if not page.has_more:
            break
        offset += RECENT_RUNS
    recent = search_page(uri, experiment_ids, _SERVE_RUNS, _NEWEST, 0, RECENT_RUNS)
    rows.update((row.run_id, row) for row in recent.rows if row.run_id not in rows)
    return list(rows.values())


def _deployment(row: RunRow, model: str, now_ms: int, stale_ms: float) -> Deployment:
    """The deployment a serving run records (``model``: the name its experiment gives, when it has no tag)."""
    tags, metrics = row.tags, row.metrics
    heartbeat = _millis(tags.get(f"{_TAG}heartbeat"))
    return Deployment(
        model=tags.get(f"{_TAG}model", "") or model,
        alias=tags.get(f"{_TAG}alias", ""),
        url=tags.get(f"{_TAG}url", ""),
        version=_integer(tags.get(f"{_TAG}version")),
        state=_state(row.status, heartbeat or row.start_time, now_ms, stale_ms),
        status=row.status,
        run_id=row.run_id,
        experiment_id=row.experiment_id,
        started_ms=row.start_time,
        ended_ms=row.end_time,
        heartbeat_ms=heartbeat,
        since_ms=_millis(tags.get(f"{_TAG}since")),
        requests=metrics.get("requests"),
        errors=metrics.get("errors"),
        error_rate=metrics.get("error_rate"),
        latency_p50_ms=metrics.get("latency_p50_ms"),
        latency_p95_ms=metrics.get("latency_p95_ms"),
        latency_p99_ms=metrics.get("latency_p99_ms"),
        shadow=tags.get(f"{_TAG}shadow") or None,
        last_swap=_swap(tags.get(f"{_TAG}last_swap")),
        drift=DriftCheck(NEVER_CHECKED),
        host=tags.get(f"{_TAG}host", ""),
        pid=_integer(tags.get(f"{_TAG}pid")),
    )


def _state(status: str, last_sign_ms: int, now_ms: int, stale_ms: float) -> str:
    if status == "RUNNING":
        return SERVING if now_ms - last_sign_ms <= stale_ms else DEAD
    if status in ("KILLED", "FAILED"):
        return DEAD
    return STOPPED


def _one_per_deployment(found: Iterable[Deployment]) -> list[Deployment]:
    """Of the runs of one ``NAME@ALIAS`` at one address, the one serving, else the newest."""
    chosen: dict[tuple[str, str, str], Deployment] = {}
    for deployment in found:
        key = (deployment.model, deployment.alias, deployment.url)
        other = chosen.get(key)
        if other is None or _rank(deployment) < _rank(other):
            chosen[key] = deployment
    return list(chosen.values())


def _rank(deployment: Deployment) -> tuple[int, int, str]:
    return (deployment.state != SERVING, -deployment.started_ms, deployment.run_id)


def _drift(uri: str, experiment_id: str | None) -> DriftCheck:
    """The drift state recorded by the newest check of live traffic in a model's ``monitor/NAME`` experiment."""
    if experiment_id is None:
        return DriftCheck(NEVER_CHECKED)
    page = search_page(uri, [experiment_id], _MONITOR_RUNS, _NEWEST, 0, 1)
    if not page.rows:
        return DriftCheck(NEVER_CHECKED)
    row = page.rows[0]
    drifted = row.tags.get("nbmlops.drifted", "").strip().lower() == "true"
    return DriftCheck(DRIFTED if drifted else OK, row.start_time or None, row.run_id,
                      _integer(row.tags.get("nbmlops.model_version")))




def _swap(text: str | None) -> Swap | None:
    """``"<iso> v1 -> v2"`` as a :class:`Swap`; None when there was no swap."""
    if not text or not text.strip():
        return None
    when, _, rest = text.strip().partition(" ")
    at = _millis(when)
    shown = rest.strip() if at is not None else text.strip()
    found = _SWAP.search(shown)
    if found is None:
        return Swap(shown, at)
    previous, version = int(found.group(1)), int(found.group(2))
    return Swap(f"v{previous} -> v{version}", at, previous, version)


def _millis(text: str | None) -> int | None:
    """An ISO 8601 time (UTC when it names no zone) or epoch seconds, as epoch milliseconds; None if unreadable."""
    if not text:
        return None
    text = text.strip()
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def _integer(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None

