"""The Prometheus metrics of a model server (``GET /metrics``), in ``prometheus_client``'s text format.

One process (``workers=1``) keeps its metrics in a registry of its own, so that several servers in one Python
process (notebooks, tests) never share counters. With several uvicorn workers, each worker writes its values to
files in ``PROMETHEUS_MULTIPROC_DIR`` (``<serving folder>/prometheus``, set by :mod:`nbmlops.serving.server`
before the workers start) and ``/metrics`` adds up every worker's files: a request counted by one worker shows
whichever worker answers the scrape. The model version gauge is per live worker (label ``pid``).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CONTENT_TYPE", "ServingMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: latency buckets (seconds): from half a millisecond to ten seconds
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """The counters, histogram and gauges one serving process updates."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(_MULTIPROC_ENV))
        # multiprocess mode: the values live in files, collected at scrape time; no registry holds the metrics
        self._registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        common: dict[str, Any] = {"registry": self._registry}
        self.requests = Counter("nbmlops_requests", "Scoring requests (/invocations) answered, by model version "
                                "and HTTP status", ["version", "status"], **common)
        self.latency = Histogram("nbmlops_request_latency_seconds", "Time from a scoring request's arrival to its "
                                 "answer, by model version", ["version"], buckets=_BUCKETS, **common)
        self.errors = Counter("nbmlops_request_errors", "Scoring requests answered with a status other than 200, "
                              "by model version", ["version"], **common)
        self.model_version = Gauge("nbmlops_model_version", "The model version this process serves now",
                                   multiprocess_mode="liveall", **common)
        self.swaps = Counter("nbmlops_swaps", "Times a new version of the model was swapped in", **common)
        self.swap_refusals = Counter("nbmlops_swap_refusals", "Versions the alias moved to that were refused "
                                     "(failed to load, or their signature does not fit the serving one)", **common)
        self.unlogged = Counter("nbmlops_traffic_unlogged", "Requests the traffic log could not record (its folder "
                                "is over its bound, or the disk refused the write)", **common)
        self.shadow_requests = Counter("nbmlops_shadow_requests", "Requests scored by the shadow model, by its "
                                       "version", ["version"], **common)
        self.shadow_dropped = Counter("nbmlops_shadow_dropped", "Requests not scored by the shadow model because "
                                      "its queue was full", **common)

    def observe(self, version: str, status: int, seconds: float) -> None:
        """Count one scoring request of ``version`` answered with ``status`` after ``seconds``."""
        self.requests.labels(version, str(status)).inc()
        self.latency.labels(version).observe(seconds)
        if status != 200:
            self.errors.labels(version).inc()

    def render(self) -> bytes:
        """Every metric in Prometheus' text format (all workers' in multiprocess mode)."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is not None:
            return generate_latest(self._registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)

    def process_ended(self) -> None:
        """Drop this process's live gauge (multiprocess mode), so that ``nbmlops_model_version`` shows live
        workers only."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
