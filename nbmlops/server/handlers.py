"""The REST API under ``/nbmlops/api/``: thin handlers over the core, JSON in and out.

Every method is ``@tornado.web.authenticated`` and ``@authorized`` (resource ``nbmlops``: GET reads,
POST writes); POSTs are XSRF-checked by jupyter_server unless token-authenticated. GETs change nothing.
Store and registry calls run in the extension's own thread pool, never on the event loop.

Request bodies are read as they stream in and may hold at most ``MAX_BODY_BYTES`` (1 MiB; the server's
``tornado_settings`` key ``nbmlops_max_body_bytes`` changes it): a larger declared ``Content-Length`` is
answered with 413 before any of the body is read, and an undeclared (chunked) body as soon as it grows past
the limit; either way the connection is then closed, so the rest is never read.

Errors are ``{"error": reason}`` (at most ``MAX_ERROR_CHARS`` characters, token shapes redacted): 400 for
bad input (paths, parameters and their types, gates, aliases, bodies), 404 for what does not exist, 409 for
a refused promotion or a lock held elsewhere, 413 for a body or a parameter value above its size limit, 429
when too many jobs run, 503 when the tracking store cannot be reached; 500 only for faults of the server
itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.client import responses
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import (
    BodyTooLargeError,
    GateSyntaxError,
    NbmlopsError,
    RequestError,
    StoreAuthError,
    StoreUnavailableError,
)
from nbmlops.redact import redact_text, redact_uri
from nbmlops.server import payloads
from nbmlops.server.artifacts import CSP as ARTIFACT_CSP
from nbmlops.server.artifacts import served_as
from nbmlops.server.jobs import Job, JobManager, notebook_parameters
from nbmlops.server.paths import artifact_path, resolve_notebook
from nbmlops.server.store_guard import StoreGuard, bounded

__all__ = ["MAX_BODY_BYTES", "BodyTooLargeError", "RequestError", "routes"]

T = TypeVar("T")

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
MAX_ARTIFACTS = 500
ARTIFACT_DEADLINE_S = 120.0  # a download that keeps moving may take this long; a dead store fails within seconds
ARTIFACT_CHUNK = 256 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 2000
PROMOTE_DEADLINE_S = 30.0  # a promotion reads the version, its run, the alias holders' runs, then writes
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_JOB_ID = _RUN_ID


def _status_for(exc: BaseException) -> int:
    """The HTTP status an exception from the core stands for (its class says; 500 for anything unexpected)."""
    return exc.http_status if isinstance(exc, NbmlopsError) else 500


@web.stream_request_body
class NbmlopsHandler(APIHandler):
    """Base of every nbmlops handler: a bounded body, paths, settings, the thread pool and JSON errors."""

    auth_resource = "nbmlops"

    def initialize(self) -> None:
        """An empty body, until it streams in; None once it grew past the limit."""
        self._body: bytearray | None = bytearray()

    @property
    def max_body_bytes(self) -> int:
        """The most a request body may hold: the ``nbmlops_max_body_bytes`` server setting, else 1 MiB."""
        return int(self.settings.get("nbmlops_max_body_bytes", MAX_BODY_BYTES))

    async def prepare(self) -> None:  # type: ignore[override]  # APIHandler's own override drops the keyword
        """Authenticate (jupyter_server), then refuse a declared body above the limit before reading it."""
        await super().prepare()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLargeError(self.max_body_bytes)

    def data_received(self, chunk: bytes) -> None:
        """Keep the body's bytes up to the limit; past it, answer 413 (the connection then closes)."""
        if self._body is None:
            return
        if len(self._body) + len(chunk) > self.max_body_bytes:
            error = BodyTooLargeError(self.max_body_bytes)
            self.log_exception(type(error), error, None)
            self.send_error(413, exc_info=(type(error), error, None))
            return
        self._body += chunk

    def on_finish(self) -> None:
        """Once answered, any body still arriving is dropped (tornado closes the connection)."""
        self._body = None

    @property
    def root(self) -> Path:
        """The server's root directory: every path a request names is relative to it."""
        return Path(self.settings["server_root_dir"])

    @property
    def jobs(self) -> JobManager:
        return self.settings["nbmlops_jobs"]

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the extension's thread pool, awaited without blocking the server."""
        executor: ThreadPoolExecutor = self.settings["nbmlops_executor"]
        return await asyncio.wrap_future(executor.submit(functools.partial(fn, *args, **kwargs)))

    @property
    def store_guard(self) -> StoreGuard:
        """This server's record of the stores it reads (which answered, which failed lately)."""
        guard = self.settings.get("nbmlops_store_guard")
        if guard is None:
            guard = self.settings.setdefault("nbmlops_store_guard", StoreGuard())
        return guard

    async def store_call(self, settings: Settings, fn: Callable[..., T], *args: Any, recheck: bool = False,
                         deadline: float | None = None, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, a call to the tracking store of ``settings``, in the thread pool: its answer
        within a few seconds (``deadline``: longer, for a download), else :class:`StoreUnavailableError` (503)
        saying in one line why (see :mod:`nbmlops.server.store_guard`). Every handler that reads or writes a
        store calls it this way."""
        return await self.store_guard.call(
            settings.tracking_uri, lambda: self.in_thread(bounded(fn, *args, **kwargs)), recheck=recheck,
            deadline=deadline,
        )

    def notebook(self, required: bool = True) -> tuple[str, Path] | None:
        """The ``notebook`` query argument, resolved under the root (``None`` when absent and optional)."""
        path = self.get_query_argument("notebook", None)
        if path is None and not required:
            return None
        return self.resolve(path)

    def resolve(self, path: Any) -> tuple[str, Path]:
        if path is not None and not isinstance(path, str):
            raise RequestError("notebook must be a string: a path relative to the server's root")
        allow_hidden = bool(getattr(self.contents_manager, "allow_hidden", False))
        return resolve_notebook(self.root, path, allow_hidden=allow_hidden)

    def store_settings(self, notebook: Path | None = None) -> Settings:
        """nbmlops' settings for the folder of ``notebook`` (what its kernel would use), else the root's."""
        return resolve_settings(notebook.parent if notebook is not None else self.root)

    def body(self, allowed: set[str]) -> dict[str, Any]:
        """The JSON object in the request's body; unknown keys are refused."""
        try:
            data = json.loads(bytes(self._body or b"{}"))
        except ValueError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RequestError("the body must be a JSON object")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {sorted(allowed)}")
        return data

    def reply(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payloads.json_safe(payload), allow_nan=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"error": reason}``, with the status the core's exception stands for."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError):
            message = exc.log_message or exc.reason or responses.get(status_code, "error")
        elif isinstance(exc, NbmlopsError) and _status_for(exc) != 500:
            status_code = _status_for(exc)
            self.set_status(status_code)
            message = str(exc)
        elif exc is not None:
            message = f"internal error: {type(exc).__name__}: {exc}"
        else:
            message = responses.get(status_code, "error")
        message = redact_text(str(message))
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS] + "…"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Expected errors (bad input, missing things) are one warning line, not a traceback."""
        if isinstance(value, NbmlopsError) and _status_for(value) != 500:
            self.log.warning("nbmlops: %s %s: %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)


class StatusHandler(NbmlopsHandler):
    """``GET /nbmlops/api/status``: where runs are stored, whether the store answers (asked now, within a few
    seconds; ``error`` says why not in one line), the MLflow UI."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from nbmlops.tracking.notebook_runs import count_experiments

        settings = self.store_settings()
        count: int | None = None
        error: str | None = None
        try:
            count = await self.store_call(settings, count_experiments, settings.tracking_uri, recheck=True)
        except StoreUnavailableError as exc:
            error = str(exc)
        except StoreAuthError as exc:
            error = str(exc)
        self.reply({
            "tracking_uri": redact_uri(settings.tracking_uri),
            "reachable": error is None,
            "error": redact_uri(error) if error else None,
            "ui_url": redact_uri(settings.ui_url),
            "experiment_count": count,
        })


class RunsHandler(NbmlopsHandler):
    """``GET /nbmlops/api/runs?notebook=PATH&limit=N``: a notebook's runs (every run without one), newest first."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from nbmlops.tracking.notebook_runs import runs_for_notebook

        limit = self.limit()
        found = self.notebook(required=False)
        if found is None:
            relative, paths = None, None
        else:
            relative, path = found
            paths = [str(path), str(self.root.absolute() / relative)]  # the kernel may see the root unresolved
        settings = self.store_settings(found[1] if found else None)
        rows = await self.store_call(settings, runs_for_notebook, settings.tracking_uri, paths, limit)
        self.reply({"runs": [payloads.run_row(row) for row in rows], "notebook": relative})

    def limit(self) -> int:
        text = self.get_query_argument("limit", str(DEFAULT_LIMIT))
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise RequestError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
        return int(text)


class RunHandler(NbmlopsHandler):
    """``GET /nbmlops/api/runs/<run_id>[?notebook=PATH]``: one run in detail (the notebook picks its store)."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        from nbmlops.tracking.notebook_runs import run_detail

        if not _RUN_ID.match(run_id):
            raise RequestError(f"run id {run_id!r}: expected 32 lowercase hexadecimal characters")
        found = self.notebook(required=False)
        settings = self.store_settings(found[1] if found else None)
        detail = await self.store_call(settings, run_detail, settings.tracking_uri, run_id, MAX_ARTIFACTS)
        self.reply(payloads.run_detail(detail, settings.ui_url))


class ArtifactHandler(NbmlopsHandler):
    """``GET /nbmlops/api/runs/<run_id>/artifact?path=P[&notebook=PATH][&download=1]``: one artifact file of the
    run, streamed (404 when the run holds no file at P; P is checked by :func:`artifact_path`). Images and text
    are shown inline, anything else (SVG, HTML as a file type of its own, binaries) is an attachment; every answer
    is nosniff with a sandboxing Content-Security-Policy (:mod:`nbmlops.server.artifacts`)."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        from nbmlops.tracking.notebook_runs import fetch_artifact

        if not _RUN_ID.match(run_id):
            raise RequestError(f"run id {run_id!r}: expected 32 lowercase hexadecimal characters")
        path = artifact_path(self.get_query_argument("path", None))
        found = self.notebook(required=False)
        settings = self.store_settings(found[1] if found else None)
        shown = served_as(path, download=self.get_query_argument("download", "") not in ("", "0"))
        folder = tempfile.mkdtemp(prefix="nbmlops-artifact-")
        try:
            local = await self.store_call(settings, fetch_artifact, settings.tracking_uri, run_id, path, folder,
                                          deadline=ARTIFACT_DEADLINE_S)
            self.set_header("Content-Type", shown.content_type)
            self.set_header("Content-Disposition", shown.disposition)
            self.set_header("Content-Security-Policy", ARTIFACT_CSP)
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Cache-Control", "private, no-cache")
            self.set_header("Content-Length", str(local.stat().st_size))
            with open(local, "rb") as source:
                while chunk := source.read(ARTIFACT_CHUNK):
                    self.write(chunk)
                    await self.flush()
            await self.finish(set_content_type=shown.content_type)
        finally:
            await self.in_thread(shutil.rmtree, folder, True)


class ParametersHandler(NbmlopsHandler):
    """``GET /nbmlops/api/notebook/parameters?notebook=PATH``: the parameters a notebook declares."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        relative, path = self.resolve(self.get_query_argument("notebook", None))
        declared = await self.in_thread(notebook_parameters, path)
        self.reply({
            "notebook": relative,
            "parameters": [
                {"name": name, "type": info["type"] if info["type"] not in ("", "None") else None,
                 "default": info["default"], "help": info["help"]}
                for name, info in declared.items()
            ],
        })


class ModelsHandler(NbmlopsHandler):
    """``GET /nbmlops/api/models``: registered models, their latest version and aliases."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from nbmlops.registry import list_models

        settings = self.store_settings()
        models = await self.store_call(settings, list_models, settings)
        self.reply({"models": [payloads.model(m) for m in models]})


class ModelHandler(NbmlopsHandler):
    """``GET /nbmlops/api/models/<name>``: a model's versions, newest first, each with its aliases, promotion
    decisions, lineage and its source run's name, status, metrics and address in the MLflow UI."""

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        settings = self.store_settings()
        versions, runs = await self.store_call(settings, _versions_and_runs, name, settings)
        self.reply(payloads.model_versions(name, versions, runs, settings.ui_url))


class PromoteHandler(NbmlopsHandler):
    """``POST /nbmlops/api/models/<name>/promote``: move an alias to a version if every check passes.

    Body: ``{"version": int, "alias": str, "gates": [str], "beat": [str], "allow_new_evaluation_data": bool}``.
    200 when promoted; 409 ``{"accepted": false, "error": reason, "promotion": ...}`` when refused.
    """

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        from nbmlops.registry import ModelReference, PromotionRefused, promote

        body = self.body({"version", "alias", "gates", "beat", "allow_new_evaluation_data"})
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RequestError(f"version must be a whole number >= 1, got {version!r}")
        alias = body.get("alias")
        if not isinstance(alias, str) or not alias:
            raise RequestError("alias must be a non-empty string")
        gates, beat = _strings(body, "gates"), _strings(body, "beat")
        allow_new = body.get("allow_new_evaluation_data", False)
        if not isinstance(allow_new, bool):
            raise RequestError("allow_new_evaluation_data must be true or false")
        settings = self.store_settings()
        try:
            outcome = await self.store_call(settings, functools.partial(
                promote, ModelReference(name, version=version), alias, gates=gates, beat=beat,
                allow_new_evaluation_data=allow_new, settings=settings,
            ), deadline=PROMOTE_DEADLINE_S)
        except GateSyntaxError as malformed:
            self.reply(payloads.gate_syntax_error(malformed), 400)
            return
        except PromotionRefused as refused:
            self.reply({"accepted": False, "error": str(refused), "promotion": payloads.promotion(refused.promotion)},
                       409)
            return
        self.reply({"accepted": True, "promotion": payloads.promotion(outcome)})


class DeploymentsHandler(NbmlopsHandler):
    """``GET /nbmlops/api/deployments``: every model server of the store (``nbmlops serve``), serving first, each
    with its address, version, state, traffic figures, drift state, last swap and its serving run's address in the
    MLflow UI (see :mod:`nbmlops.serving.deployments`)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from nbmlops.serving.deployments import STALE_AFTER_S, list_deployments

        settings = self.store_settings()
        found = await self.store_call(settings, list_deployments, settings)
        self.reply({
            "deployments": [
                {**d.as_json(), "run_url": payloads.run_link(settings.ui_url, d.experiment_id, d.run_id)}
                for d in found
            ],
            "stale_after_s": STALE_AFTER_S,
        })


class JobsView(NbmlopsHandler):
    """What the job handlers share: a job as the API shows it, with its run's address in the MLflow UI."""

    def shown(self, job: Job, ui_urls: dict[Path, str] | None = None) -> dict[str, Any]:
        """``job.describe`` and ``run_url``: the run in the MLflow UI of the notebook's settings (None until the
        store has the run). ``ui_urls`` caches the UI address per notebook folder over one answer."""
        described = job.describe(self.root)
        described["run_url"] = None
        if described["run_id"] and described["experiment_id"]:
            folder = (self.root / job.notebook).parent
            cache = ui_urls if ui_urls is not None else {}
            if folder not in cache:
                cache[folder] = resolve_settings(folder).ui_url
            described["run_url"] = payloads.run_link(cache[folder], described["experiment_id"], described["run_id"])
        return described


class JobsHandler(JobsView):
    """``GET /nbmlops/api/jobs``: every job, newest first; ``POST`` ``{"notebook": PATH, "parameters": {...},
    "gates": [EXPR], "timeout": SECONDS}`` starts one (202) once the path, the parameters' names, types and
    sizes, the gates' grammar and the timeout are checked (400 or 413 else; a gate that does not parse is
    ``{"error": line, "gate_error": {"gate", "position", "expected"}}``).

    Jobs show their parameters shortened and with secrets redacted (see :func:`nbmlops.server.jobs.echoed`)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        ui_urls: dict[Path, str] = {}
        self.reply({"jobs": [self.shown(job, ui_urls) for job in self.jobs.list()]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body({"notebook", "parameters", "gates", "timeout"})
        relative, path = self.resolve(body.get("notebook"))
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise RequestError("parameters must be a JSON object of name: value")
        gates = [gate for gate in _strings(body, "gates") if gate.strip()]
        timeout = body.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise RequestError(f"timeout must be a number of seconds > 0 or null, got {timeout!r}")
        try:
            job = await self.in_thread(self.jobs.start, relative, path, parameters, gates,
                                       float(timeout) if timeout is not None else None)
        except GateSyntaxError as malformed:
            self.reply(payloads.gate_syntax_error(malformed), 400)
            return
        self.set_header("Location", self.request.path.rstrip("/") + f"/{job.job_id}")
        self.reply(self.shown(job), 202)


class JobHandler(JobsView):
    """``GET /nbmlops/api/jobs/<job_id>``: a job's status, progress, run id and link, output, errors, metrics,
    gate outcomes and duration."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.reply(self.shown(self.jobs.get(_job_id(job_id))))


class CancelHandler(JobsView):
    """``POST /nbmlops/api/jobs/<job_id>/cancel``: interrupt the job; answers once it ended or after a few seconds."""

    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        job = self.jobs.cancel(_job_id(job_id))
        for _ in range(50):  # up to 5 s: an interrupted run usually ends well within that
            if not job.running:
                break
            await asyncio.sleep(0.1)
        self.reply(self.shown(job))


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequestError(f"{key} must be a list of strings")
    return value


def _versions_and_runs(name: str, settings: Settings) -> tuple[list[Any], dict[str, Any]]:
    """Model ``name``'s versions and their source runs (run id -> run), read together in the thread pool."""
    from nbmlops.registry import list_versions
    from nbmlops.tracking.search import get_rows

    versions = list_versions(name, settings)
    run_ids = list(dict.fromkeys(v.run_id for v in versions if v.run_id))
    rows = get_rows(settings.tracking_uri, run_ids) if run_ids else []
    return versions, {row.run_id: row for row in rows}


def _job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise RequestError(f"job id {job_id!r}: expected 32 lowercase hexadecimal characters")
    return job_id


def routes() -> list[tuple[str, type[NbmlopsHandler]]]:
    """``(pattern under /nbmlops/api/, handler)`` for every endpoint."""
    return [
        ("status", StatusHandler),
        ("runs", RunsHandler),
        ("runs/([^/]+)", RunHandler),
        ("runs/([^/]+)/artifact", ArtifactHandler),
        ("notebook/parameters", ParametersHandler),
        ("models", ModelsHandler),
        ("models/([^/]+)", ModelHandler),
        ("models/([^/]+)/promote", PromoteHandler),
        ("deployments", DeploymentsHandler),
        ("jobs", JobsHandler),
        ("jobs/([^/]+)", JobHandler),
        ("jobs/([^/]+)/cancel", CancelHandler),
    ]
