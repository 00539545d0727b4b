"""Every call the REST API makes to a tracking store answers within a few seconds: the store's data, or a
:class:`~nbmlops.exceptions.StoreUnavailableError` (HTTP 503) whose reason is one line saying what happened.

- Each request to the store waits at most :data:`REQUEST_S` seconds (MLflow's documented
  ``MLFLOW_HTTP_REQUEST_TIMEOUT``, one attempt, through :func:`nbmlops.backend.store.call_budget`), and the
  whole call at most :data:`ANSWER_S` (:data:`OPENING_S` until this server has had one answer from that
  store: importing MLflow and making a new sqlite schema take longer). A call past its deadline keeps its
  thread until its request times out; the event loop never waits on it.
- A store that failed is not asked again for :data:`RECHECK_S` seconds: calls meanwhile answer at once with
  the same reason, so a dead store never fills the thread pool with waiting calls.
- The reason tells a refused connection from a store that did not answer, from a store that answered with an
  error status (:func:`outage`), and names the store without its credentials.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nbmlops.exceptions import StoreUnavailableError
from nbmlops.redact import redact_uri

__all__ = ["ANSWER_S", "OPENING_S", "RECHECK_S", "REQUEST_S", "Outage", "StoreGuard", "outage"]

T = TypeVar("T")

#: seconds one request to the store may wait for its answer (whole seconds: MLflow reads an integer)
REQUEST_S = 4
#: seconds a whole API call may wait for the store
ANSWER_S = 6.0
#: ... while this server has not yet had an answer from that store (MLflow's import, a new sqlite schema)
OPENING_S = 30.0
#: seconds during which a store that failed is not asked again
RECHECK_S = 3.0

_HTTP_STATUS = re.compile(r"too many (\d{3}) error responses|error code (\d{3})|\bHTTP (?:Error )?(\d{3})|"
                          r"\b(5\d\d) Server Error", re.IGNORECASE)
_REFUSED = re.compile(r"connection refused|refused the connection|errno 111\b|\[winerror 10061\]", re.IGNORECASE)
_NO_ANSWER = re.compile(r"timed? ?out|no answer within|timeout", re.IGNORECASE)
_NO_HOST = re.compile(r"name or service not known|nodename nor servname|getaddrinfo failed|"
                      r"temporary failure in name resolution|no address associated", re.IGNORECASE)
_RESET = re.compile(r"connection reset|remote ?disconnected|connection aborted|broken pipe|"
                    r"remote end closed", re.IGNORECASE)


@dataclass(frozen=True)
class Outage:
    """Why a store could not be read: ``kind`` is ``refused``, ``no-answer``, ``error-status``, ``no-host``,
    ``disconnected`` or ``other``; ``reason`` is one line (no credentials); ``store`` the URI shown."""

    kind: str
    reason: str
    store: str


def outage(store: str, reason: str, waited_s: float = REQUEST_S) -> Outage:
    """The :class:`Outage` a backend's failure reason stands for (MLflow's and urllib's texts)."""
    text = reason or ""
    if _REFUSED.search(text):
        return Outage("refused", "it refused the connection (nothing is listening there)", store)
    status = _HTTP_STATUS.search(text)
    if status:
        code = next(group for group in status.groups() if group)
        return Outage("error-status", f"it answered HTTP {code}", store)
    if _NO_ANSWER.search(text):
        return Outage("no-answer", f"no answer within {waited_s:g} s", store)
    if _NO_HOST.search(text):
        return Outage("no-host", "its host name does not resolve", store)
    if _RESET.search(text):
        return Outage("disconnected", "it closed the connection without an answer", store)
    line = (text.strip().splitlines() or [""])[0][:300]
    return Outage("other", line or "unknown error", store)


class StoreGuard:
    """The state of the stores this server reads: which answered, which failed lately and why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self._failed: dict[str, tuple[float, Outage]] = {}

    def recent_failure(self, uri: str) -> Outage | None:
        """The outage of ``uri`` seen less than :data:`RECHECK_S` seconds ago, else None."""
        with self._lock:
            found = self._failed.get(uri)
        if found is None or time.monotonic() - found[0] >= RECHECK_S:
            return None
        return found[1]

    async def call(self, uri: str, run: Callable[[], Awaitable[T]], *, recheck: bool = False,
                   deadline: float | None = None) -> T:
        """``await run()`` (a call to store ``uri`` in a thread, bounded by :func:`bounded`) within the deadline
        (:data:`ANSWER_S`, or ``deadline`` for a call that moves much data while the store answers, such as a
        download).

        Raises :class:`StoreUnavailableError` with the :func:`outage` reason when the store fails, did not answer
        in time, or failed less than :data:`RECHECK_S` seconds ago (unless ``recheck``: ask it now all the same).
        """
        shown = redact_uri(uri)
        if not recheck:
            recent = self.recent_failure(uri)
            if recent is not None:
                raise StoreUnavailableError(shown, recent.reason)
        with self._lock:
            deadline = max(deadline or ANSWER_S, ANSWER_S if uri in self._answered else OPENING_S)
        try:
            result = await asyncio.wait_for(self._asked(shown, run), deadline)
        except asyncio.TimeoutError:
            raise self._failure(uri, Outage("no-answer", f"no answer within {deadline:g} s", shown)) from None
        except StoreUnavailableError as exc:
            raise self._failure(uri, outage(shown, exc.reason)) from None
        with self._lock:
            self._answered.add(uri)
            self._failed.pop(uri, None)
        return result

    @staticmethod
    async def _asked(shown: str, run: Callable[[], Awaitable[T]]) -> T:
        """``await run()``; asked once more when the store closed a connection without an answer (a server that
        just died does so on a kept-alive connection: a new one then says what is really there)."""
        try:
            return await run()
        except StoreUnavailableError as exc:
            if outage(shown, exc.reason).kind != "disconnected":
                raise
        return await run()

    def _failure(self, uri: str, found: Outage) -> StoreUnavailableError:
        with self._lock:
            self._failed[uri] = (time.monotonic(), found)
        return StoreUnavailableError(found.store, found.reason)


def bounded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[], T]:
    """``fn(*args, **kwargs)`` with every store request it makes bounded by :data:`REQUEST_S` (run it in a
    thread)."""
    from nbmlops.backend.store import call_budget

    def call() -> T:
        with call_budget(REQUEST_S):
            return fn(*args, **kwargs)

    return call
