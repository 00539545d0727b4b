"""Shadow scoring: each request also scored by a second version (``--shadow challenger``), off the response path.

The request's answer is sent first; then its body is put on a bounded queue that a few threads empty, scoring it
the way MLflow's ``/invocations`` does (:func:`nbmlops.backend.scoring.score`) with the version the shadow alias
points to, and appending a ``shadow`` record to the traffic log. When the queue is full (the shadow model is
slower than the traffic), the request is not shadowed: it is counted (``nbmlops_shadow_dropped_total``), and the
answers to clients are never held up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from nbmlops.backend.scoring import score

__all__ = ["QUEUE_SIZE", "THREADS", "ShadowScorer"]

#: requests waiting to be shadowed, at most
QUEUE_SIZE = 256
#: threads scoring with the shadow model
THREADS = 2


class ShadowScorer:
    """Scores queued requests with ``current()`` (the shadow :class:`~nbmlops.serving.follower.Served`) and
    hands each result, as a traffic record, to ``record``.

    Args:
        current: returns the shadow version serving now.
        record: appends a record to the traffic log.
        metrics: the process's :class:`~nbmlops.serving.metrics.ServingMetrics`.
    """

    def __init__(self, current: Callable[[], Any], record: Callable[[dict[str, Any]], Any], metrics: Any, *,
                 threads: int = THREADS, queue_size: int = QUEUE_SIZE) -> None:
        self.current = current
        self.record = record
        self.metrics = metrics
        self._queue: queue.Queue[tuple[str, bytes, str, bool] | None] = queue.Queue(queue_size)
        self._threads = [threading.Thread(target=self._work, name=f"nbmlops-shadow-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> None:
        """Start the scoring threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, request_id: str, body: bytes, content_type: str, keep_response: bool) -> bool:
        """Queue one request for shadow scoring; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((request_id, body, content_type, keep_response))
        except queue.Full:
            self.metrics.shadow_dropped.inc()
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued (within ``timeout``), then end the threads."""
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request_id, body, content_type, keep_response = item
            served = self.current()
            ts = time.time()
            start = time.perf_counter()
            try:
                status, response = score(served.model, served.schema, body, content_type)
            except Exception as exc:  # what MLflow's app would answer with a 500
                status, response = 500, f"{type(exc).__name__}: {exc}"
            latency_ms = (time.perf_counter() - start) * 1000
            self.metrics.shadow_requests.labels(str(served.version)).inc()
            self.record({"kind": "shadow", "id": request_id, "ts": ts, "version": served.version, "status": status,
                         "latency_ms": latency_ms, "response": response if keep_response or status != 200 else None})
