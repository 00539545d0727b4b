"""Logged live traffic read back from the store: every serving run of a model, as DataFrames.

:func:`read_traffic` reads the Parquet traffic datasets the recorder (:mod:`nbmlops.serving.recorder`) wrote
to the serving runs of experiment ``serve/NAME`` (schema: see :mod:`nbmlops.backend.traffic`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import MonitoringDataError

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.config import Settings

__all__ = ["Traffic", "parse_since", "read_traffic"]

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
INPUT_PREFIX = "input."


@dataclass
class Traffic:
    """The logged traffic of a model.

    Attributes:
        requests: one row per input row of each logged request (columns: see :mod:`nbmlops.backend.traffic`).
        feedback: ``request_id``, ``row``, ``label``, ``timestamp``: the labels posted to ``/feedback``.
        runs: the serving runs read.
    """

    requests: pd.DataFrame
    feedback: pd.DataFrame
    runs: list[str] = field(default_factory=list)

    def inputs(self) -> pd.DataFrame:
        """The model inputs of the successful rows, under the model's column names (``input.`` removed)."""
        ok = self.requests
        if "error" in ok.columns and "status" in ok.columns:
            ok = ok[ok["error"].isna() & (ok["status"] == 200)]
        columns = [c for c in ok.columns if c.startswith(INPUT_PREFIX)]
        return ok[columns].rename(columns={c: c[len(INPUT_PREFIX) :] for c in columns}).reset_index(drop=True)

    def with_labels(self) -> pd.DataFrame:
        """The requests left-joined to the feedback on ``request_id`` and ``row`` (``label`` null when none came;
        the latest label of a row when several came)."""
        labels = self.feedback
        if len(labels):
            labels = labels.sort_values("timestamp").drop_duplicates(["request_id", "row"], keep="last")
        labels = labels[["request_id", "row", "label"]]
        return self.requests.merge(labels, on=["request_id", "row"], how="left")


def parse_since(since: Any, now: datetime | None = None) -> datetime | None:
    """``since`` as an aware UTC datetime: a datetime (naive counts as UTC), a ``timedelta`` or a duration
    such as ``"30m"``, ``"24h"``, ``"7d"`` (that long before ``now``), an ISO time, or None.

    Raises:
        MonitoringDataError: for anything else.
    """
    if since is None:
        return None
    now = now or datetime.now(timezone.utc)
    if isinstance(since, datetime):
        return since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    if isinstance(since, timedelta):
        return now - since
    if isinstance(since, str):
        match = _DURATION.fullmatch(since)
        if match:
            return now - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
        try:
            return parse_since(datetime.fromisoformat(since.strip()), now)
        except ValueError:
            pass
    raise MonitoringDataError(
        f"since must be a duration such as 30m, 24h or 7d, an ISO time or a datetime, not {since!r}"
    )


def read_traffic(name: str, *, alias: str | None = None, since: Any = None, settings: Settings | None = None) -> Traffic:
    """The logged traffic of model ``name``: the serving runs of experiment ``serve/NAME`` (those that served
    ``alias`` when given), rows whose timestamp is at or after ``since`` (see :func:`parse_since`).

    Raises:
        MonitoringDataError: ``since`` cannot be read.
        StoreUnavailableError: the store does not answer.
    """
    from nbmlops.backend.store import open_store
    from nbmlops.backend.traffic import read_frames
    from nbmlops.config import resolve_settings

    start = parse_since(since)
    settings = settings or resolve_settings()
    store = open_store(settings.tracking_uri, settings.artifact_root)
    requests, feedback, runs = read_frames(store, name, alias, start)
    if start is not None:
        requests = requests[requests["timestamp"] >= start].reset_index(drop=True)
        feedback = feedback[feedback["timestamp"] >= start].reset_index(drop=True)
    return Traffic(requests, feedback, runs)
