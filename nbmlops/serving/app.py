"""The ASGI app of one serving process: MLflow's scoring app for the version serving now, plus nbmlops' routes.

Every request reads :attr:`Follower.current <nbmlops.serving.follower.Follower.current>` once, at its start, and
is answered by that version's MLflow app (``/invocations``, ``/ping``, ``/health``, ``/version`` and anything else
MLflow answers, with MLflow's bodies, status codes and timeout). Added here:

- headers ``nbmlops-model-version`` (the version that answered) and ``nbmlops-request-id`` (the client's
  ``x-request-id`` when it sends a usable one, else a new uuid4 hex) on every response;
- for ``POST /invocations``: the Prometheus metrics (:mod:`nbmlops.serving.metrics`), a ``request`` record in the
  traffic log written before the answer's last bytes are sent (its body and answer for the sampled fraction
  ``log_rate``, MLflow's error message for any non-200), then the body handed to the shadow scorer;
- ``GET /model`` (what is served), ``GET /metrics`` (Prometheus text), ``POST /feedback`` (observed labels).

:func:`create_app` builds the app in a uvicorn worker process (``--workers N``) from the :class:`ServeConfig` the
main process put in the environment.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.backend.scoring import error_message
from nbmlops.serving.follower import Follower, Served, load_version
from nbmlops.serving.metrics import CONTENT_TYPE, ServingMetrics
from nbmlops.serving.shadow import ShadowScorer

__all__ = ["CONFIG_ENV", "MAX_FEEDBACK_BYTES", "ServeConfig", "ServingApp", "create_app"]

#: the environment variable through which the main process hands a worker its :class:`ServeConfig` (JSON)
CONFIG_ENV = "NBMLOPS_SERVE_CONFIG"
#: the largest ``/feedback`` body read
MAX_FEEDBACK_BYTES = 16 * 1024 * 1024
_PARQUET = "application/vnd.apache.parquet"
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class ServeConfig:
    """What a serving process needs to serve: the model, how to follow it, where to log."""

    name: str
    alias: str
    version: int
    run_id: str
    folder: str
    root: str
    tracking_uri: str
    artifact_root: str | None = None
    shadow: str | None = None
    shadow_version: int | None = None
    trusted: bool = False
    poll: float = 2.0
    log_rate: float = 1.0
    log_max_bytes: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


class ServingApp:
    """The ASGI app of one serving process.

    Args:
        config: what to serve.
        follower: follows the served alias (its ``current`` answers).
        shadow: follows the shadow alias, when shadowing.
        traffic: this process's traffic log (``append(record) -> bool``), or None to log nothing.
        metrics: this process's metrics.
    """

    def __init__(self, config: ServeConfig, follower: Follower, *, shadow: Follower | None, traffic: Any,
                 metrics: ServingMetrics) -> None:
        self.config = config
        self.follower = follower
        self.shadow = shadow
        self.traffic = traffic
        self.metrics = metrics
        self.scorer = None if shadow is None else ShadowScorer(lambda: shadow.current, self.record, metrics)
        self.log_rate = config.log_rate
        self._opened = False
        follower.on_swap = self._swapped
        follower.on_refused = self._refused
        metrics.model_version.set(follower.current.version)

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Start following the aliases and shadow scoring; log the start."""
        if self._opened:
            return
        self._opened = True
        self.record({"kind": "start", "ts": time.time(), "version": self.follower.current.version,
                     "pid": os.getpid()})
        self.follower.start()
        if self.shadow is not None:
            self.shadow.start()
        if self.scorer is not None:
            self.scorer.start()

    def close(self) -> None:
        """Stop following, shadow what is queued, close the traffic log."""
        if not self._opened:
            return
        self._opened = False
        self.follower.stop()
        if self.shadow is not None:
            self.shadow.stop()
        if self.scorer is not None:
            self.scorer.stop()
        if self.traffic is not None:
            self.traffic.close()
        self.metrics.process_ended()

    def record(self, record: dict[str, Any]) -> bool:
        """Append ``record`` to the traffic log; a record left out is counted (``nbmlops_traffic_unlogged``)."""
        if self.traffic is None:
            return False
        if self.traffic.append(record):
            return True
        self.metrics.unlogged.inc()
        return False

    def _swapped(self, old: Served, new: Served) -> None:
        self.metrics.swaps.inc()
        self.metrics.model_version.set(new.version)
        self.record({"kind": "swap", "ts": time.time(), "from": old.version, "to": new.version})

    def _refused(self, version: int, reason: str) -> None:
        self.metrics.swap_refusals.inc()
        self.record({"kind": "refused", "ts": time.time(), "version": version, "reason": reason})

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        served = self.follower.current  # once per request: a swap meanwhile does not change its version
        if kind != "http":
            await served.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        extra = [(b"nbmlops-model-version", str(served.version).encode()),
                 (b"nbmlops-request-id", request_id.encode())]
        path, method = scope["path"], scope["method"]
        if path == "/invocations" and method == "POST":
            await self._invocations(served, request_id, extra, scope, receive, send)
        elif path == "/model":
            await _answer(send, extra, *(self._model(served) if method == "GET" else _not_allowed()))
        elif path == "/metrics":
            await _answer(send, extra, *(await self._metrics() if method == "GET" else _not_allowed()))
        elif path == "/feedback":
            await _answer(send, extra, *(await self._feedback(receive) if method == "POST" else _not_allowed()))
        else:
            await served.app(scope, receive, _with_headers(send, extra))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.open()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _invocations(self, served: Served, request_id: str, extra: list[tuple[bytes, bytes]],
                           scope: dict[str, Any], receive: Any, send: Any) -> None:
        ts = time.time()
        start = time.perf_counter()
        sampled = self.log_rate >= 1.0 or random.random() < self.log_rate
        keep_body = sampled or self.scorer is not None
        body: list[bytes] = []
        answer: list[bytes] = []
        status = 500
        length = -1  # the answer's Content-Length: its last bytes may come before the message that ends it
        done = False

        async def receive_body() -> Any:
            message = await receive()
            if keep_body and message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def send_answer(message: dict[str, Any]) -> None:
            nonlocal status, length, done
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                length = next((int(v) for k, v in headers if k.lower() == b"content-length"), -1)
                message["headers"] = [*headers, *extra]
            elif message["type"] == "http.response.body" and not done:
                answer.append(message.get("body", b""))
                if not message.get("more_body", False) or 0 <= length <= sum(map(len, answer)):
                    done = True
                    self._answered(served, request_id, scope, ts, start, status, sampled, body, answer)
            await send(message)

        try:
            await served.app(scope, receive_body, send_answer)
        finally:
            if not done:  # the app failed before answering, or the client left: the request still counts
                self._answered(served, request_id, scope, ts, start, status, sampled, body, answer)
        if self.scorer is not None and done:
            self.scorer.submit(request_id, b"".join(body), _header(scope, b"content-type"), sampled)

    def _answered(self, served: Served, request_id: str, scope: dict[str, Any], ts: float, start: float,
                  status: int, sampled: bool, body: list[bytes], answer: list[bytes]) -> None:
        """Count the request and write its record, before the last bytes of its answer are sent."""
        seconds = time.perf_counter() - start
        self.metrics.observe(str(served.version), status, seconds)
        content_type = _header(scope, b"content-type")
        response = b"".join(answer)
        text = packed = None
        if sampled:
            text, packed = _body_fields(b"".join(body), content_type)
        self.record({"kind": "request", "id": request_id, "ts": ts, "version": served.version, "status": status,
                     "latency_ms": seconds * 1000, "content_type": content_type, "body": text, "body_b64": packed,
                     "response": response.decode("utf-8", "replace") if sampled else None,
                     "error": error_message(status, response)})

    def _model(self, served: Served) -> tuple[int, Any]:
        shadow = None if self.shadow is None else {"alias": self.shadow.alias, "version": self.shadow.current.version}
        return 200, {"name": self.config.name, "alias": self.config.alias, "version": served.version,
                     "run_id": self.config.run_id, "since": served.since, "shadow": shadow}

    async def _metrics(self) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(self.metrics.render)

    async def _feedback(self, receive: Any) -> tuple[int, Any]:
        raw = await _read_body(receive, MAX_FEEDBACK_BYTES)
        if raw is None:
            return _bad(f"the body is larger than {MAX_FEEDBACK_BYTES:,} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return _bad(f"the body is not JSON: {exc}")
        try:
            items = _feedback_items(data)
        except ValueError as exc:
            return _bad(str(exc))
        ts = time.time()
        accepted = sum(self.record({"kind": "feedback", "id": rid, "ts": ts, "labels": labels}) for rid, labels in items)
        return 200, {"accepted": accepted}


# -- building the app ----------------------------------------------------------------------------------


def build_app(config: ServeConfig, served: Served, shadow: Served | None, *, client: Any, settings: Any) -> ServingApp:
    """The app of a serving process whose versions are loaded already."""
    from nbmlops.serving.traffic_log import TrafficLog

    follower = Follower(config.name, config.alias, served, client=client, settings=settings, trusted=config.trusted,
                        poll=config.poll)
    shadowing = None
    if shadow is not None and config.shadow is not None:
        shadowing = Follower(config.name, config.shadow, shadow, client=client, settings=settings,
                             trusted=config.trusted, poll=config.poll, check_signature=False)
    bound = {} if config.log_max_bytes is None else {"max_bytes": config.log_max_bytes}
    traffic = TrafficLog(Path(config.folder), **bound)
    return ServingApp(config, follower, shadow=shadowing, traffic=traffic, metrics=ServingMetrics())


def create_app() -> ServingApp:
    """The app of a uvicorn worker process: the :class:`ServeConfig` in ``NBMLOPS_SERVE_CONFIG``, its versions
    loaded here (the main process checked them already)."""
    from nbmlops.config import resolve_settings
    from nbmlops.registry.models import ModelReference, get_version, registry_client

    config = ServeConfig.from_json(os.environ[CONFIG_ENV])
    settings = resolve_settings(Path(config.root), tracking_uri=config.tracking_uri,
                                artifact_root=config.artifact_root)
    client = registry_client(settings)

    def load(version: int) -> Served:
        found = get_version(ModelReference(config.name, version=version), client=client)
        return load_version(found, client=client, settings=settings, trusted=config.trusted)

    served = load(config.version)
    shadow = load(config.shadow_version) if config.shadow_version is not None else None
    return build_app(config, served, shadow, client=client, settings=settings)


# -- small ASGI helpers -------------------------------------------------------------------------------


def _request_id(scope: dict[str, Any]) -> str:
    """The client's ``x-request-id`` when it is 1-128 visible ASCII characters, else a new uuid4 hex."""
    given = _header(scope, b"x-request-id")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return uuid.uuid4().hex


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def _with_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    async def send_with_headers(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with_headers


async def _answer(send: Any, extra: list[tuple[bytes, bytes]], status: int, content: Any) -> None:
    if isinstance(content, bytes):
        body, headers = content, [(b"content-type", CONTENT_TYPE.encode())]
    else:
        body, headers = json.dumps(content).encode(), _JSON
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _not_allowed() -> tuple[int, Any]:
    return 405, {"detail": "Method Not Allowed"}


def _bad(message: str) -> tuple[int, Any]:
    return 400, {"error_code": "BAD_REQUEST", "message": message}


def _body_fields(body: bytes, content_type: str) -> tuple[str | None, str | None]:
    """A logged body: text in the first, or base64 in the second (Parquet, or bytes that are not UTF-8)."""
    if content_type.split(";")[0].strip() != _PARQUET:
        try:
            return body.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    return None, base64.b64encode(body).decode("ascii")


_SCALARS = (str, int, float, bool, type(None))


def _feedback_items(data: Any) -> list[tuple[str, list[Any]]]:
    """``[(request id, labels)]`` from a ``/feedback`` body; a ValueError says what is wrong with it."""
    if isinstance(data, dict) and "request_ids" in data:
        ids, labels = data.get("request_ids"), data.get("labels")
        if not isinstance(ids, list) or not isinstance(labels, list) or len(ids) != len(labels) or not ids:
            raise ValueError('"request_ids" and "labels" must be non-empty lists of the same length')
        return [(_id(rid), _labels([label])) for rid, label in zip(ids, labels)]
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ValueError("no feedback in the body")
    found = []
    for item in items:
        if not isinstance(item, dict) or "request_id" not in item or "labels" not in item:
            raise ValueError('expected {"request_id": ID, "labels": [...]}, a list of those, or '
                             '{"request_ids": [...], "labels": [...]}')
        found.append((_id(item["request_id"]), _labels(item["labels"])))
    return found


def _id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise ValueError(f"a request id must be a string of 1 to 128 characters, got {json.dumps(value)[:80]}")
    return value


def _labels(value: Any) -> list[Any]:
    if not isinstance(value, list) or not value or not all(isinstance(v, _SCALARS) for v in value):
        raise ValueError(f'"labels" must be a non-empty list of numbers, strings, booleans or nulls (one per input '
                         f"row), got {json.dumps(value)[:80]}")
    return value
