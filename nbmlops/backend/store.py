"""One MLflow tracking store: its connection, the budget and classification of every call, and the runs nbmlops
finds again by key. Records are applied through :mod:`nbmlops.backend.records`.

Replays are exactly-once: a run is created with its local key as a tag and looked up by it when a
delivery is resumed; params and tags are re-sent with the same values (MLflow accepts that);
metrics carry their original timestamps so MLflow's own de-duplication drops repeats.

Creating a run is never retried blindly: MLflow's HTTP client does not retry nbmlops' calls (see
:func:`_http_limits`), and a
``create_run`` whose outcome is unknown (its reply was lost, it timed out) is followed by a look-up of
the run key before any new attempt. Should two runs carry one key all the same (a request the server
applied late), the one delivered to is kept and the others are marked KILLED and deleted.

Every call has a budget, ``call_timeout`` (:mod:`nbmlops.config`): a tracking server that does not answer
a call, retries included, within it is an outage, reported as :class:`StoreUnavailableError`; after one,
further calls fail at once for one budget, so that a sync of many journals ends within about one budget.
A 401 or 403 is :class:`StoreAuthError`, never retried; but a 403 of a server that knows the user (MLflow's
basic-auth app) is that user's missing permission, :class:`PermissionRefused` (:mod:`nbmlops.backend.identity`).
Credentials come from the URI (``http://user:password@host``) or MLflow's
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``.

A new sqlite store is made as :mod:`nbmlops.backend.sqlite_schema` says. What MLflow raises never leaves the
backend: it becomes :class:`RecordRejected` (with MLflow's error code; :class:`PermissionRefused` is one),
:class:`StoreAuthError` or :class:`StoreUnavailableError`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.backend import sqlite_commit, sqlite_schema
from nbmlops.backend.identity import naming, permission_refused, server_credentials, tls_context
from nbmlops.backend.records import deliver as deliver_records
from nbmlops.backend.tags import (
    ATTEMPT_TAG,
    DUPLICATE_TAG,
    PARENT_KEY_TAG,
    RUN_KEY_TAG,
    SUPERSEDED_TAG,
    SUPERSEDES_TAG,
    TASK_TAG,
)
from nbmlops.exceptions import ConfigError, PermissionRefused, RecordRejected, StoreAuthError, StoreUnavailableError
from nbmlops.redact import redact_uri

__all__ = [
    "ATTEMPT_TAG", "DUPLICATE_TAG", "PARENT_KEY_TAG", "RUN_KEY_TAG", "SUPERSEDED_TAG", "SUPERSEDES_TAG", "TASK_TAG",
    "Attempt", "RecordRejected", "Store", "call_budget", "open_store",
]

_TRANSIENT = re.compile(
    r"database is locked|database table is locked|unable to open database|connection|timed? ?out|"
    r"temporarily|max retries|503|502|504|429|refused|reset by peer",
    re.IGNORECASE,
)
_REJECTED = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "NOT_FOUND",
             "BAD_REQUEST")
_AUTH = {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401, "PERMISSION_DENIED": 403}
_stores: dict[tuple[str, str | None], Store] = {}
_stores_lock = threading.Lock()
_limits = threading.local()


class _Transient(Exception):
    """One attempt failed in a way that may pass (no answer, a lock, 5xx, 429)."""


@dataclass(frozen=True)
class Attempt:
    """One run of a task (see :data:`TASK_TAG`): its MLflow id, local run key, start time (ms), status, and
    the attempt tags it carries."""

    run_id: str
    run_key: str
    start_time: int
    status: str
    tags: dict[str, str]


def open_store(uri: str, artifact_root: str | None) -> Store:
    """The shared :class:`Store` for ``uri`` in this process."""
    with _stores_lock:
        key = (uri, artifact_root)
        if key not in _stores:
            _stores[key] = Store(uri, artifact_root)
        return _stores[key]


@contextlib.contextmanager
def call_budget(seconds: float) -> Iterator[None]:
    """Within the block, this thread's store calls have a budget of ``seconds`` instead of the ``call_timeout``
    setting: each request waits at most that long, retries included (the Jupyter server's API answers within a
    few seconds whatever the store does)."""
    outer, _limits.budget = getattr(_limits, "budget", None), seconds
    try:
        yield
    finally:
        _limits.budget = outer


class Store:
    """One MLflow tracking store, opened lazily (importing mlflow costs about a second)."""

    def __init__(self, uri: str, artifact_root: str | None) -> None:
        self.uri = uri
        self.display_uri = redact_uri(uri)
        self.artifact_root = artifact_root
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._down: tuple[float, str] | None = None  # (monotonic time until which calls fail at once, why)
        self._uncertain: dict[str, str] = {}  # run key -> experiment id, for runs whose creation was uncertain
        self._sqlite_path: Path | None = None  # a local sqlite store's database file, once connected

    # -- connection ---------------------------------------------------------------------------

    @property
    def call_timeout(self) -> float:
        """The budget of one call, in seconds (the ``call_timeout`` setting, read at each call; once per
        :meth:`deliver`)."""
        pinned = getattr(_limits, "budget", None)
        if pinned is not None:
            return float(pinned)
        from nbmlops.config import DEFAULT_CALL_TIMEOUT, resolve_settings

        try:
            return resolve_settings().call_timeout
        except ConfigError:
            return DEFAULT_CALL_TIMEOUT

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` for this store, created (and the sqlite schema made) on first use.

        Its calls made outside :meth:`_call` are bounded too: one HTTP request, no MLflow retries, each
        waiting at most :attr:`call_timeout` for the server.
        """
        with self._lock:
            if self._client is None:
                try:
                    self._client = _BoundedClient(self._connect(), self)
                except (RecordRejected, sqlite3.DatabaseError) as exc:  # no MLflow store can be at this URI
                    raise ConfigError("tracking_uri", f"{self.display_uri} is not a tracking store nbmlops can use: "
                                      f"{_one_line(self._clean(str(exc)))}") from None
            return self._client

    def check(self) -> str | None:
        """Ask the store for one thing now, within the budget: None when it answers, else why not (a phrase
        such as ``not answering: ...``, or the :class:`StoreAuthError` message).

        Never waits much longer than :attr:`call_timeout`, even while another thread is stuck opening the
        store.
        """
        budget = self.call_timeout
        outcome: list[str | None] = []

        def ask() -> None:
            try:
                if self.uri.startswith(("http://", "https://")):
                    self._probe_http(retry=False)  # what is there right now, in the words of a new connection
                self._call(lambda: self.client.search_experiments(max_results=1))
                outcome.append(None)
            except StoreUnavailableError as exc:
                outcome.append(f"not answering: {exc.reason}")
            except (StoreAuthError, RecordRejected) as exc:
                outcome.append(str(exc))
            except Exception as exc:
                outcome.append(f"{type(exc).__name__}: {self._clean(str(exc))}")

        with self._state_lock:
            self._down = None  # ask now, not what the last outage said
        thread = threading.Thread(target=ask, name="nbmlops-store-check", daemon=True)
        thread.start()
        thread.join(budget + 1.0)
        if thread.is_alive():
            return f"not answering: no answer within {budget:g} s"
        return outcome[0]

    def _connect(self) -> Any:
        if self.uri.startswith(("http://", "https://")):
            self._probe_http()
            # MLflow prints a "View run ..." line at every run end on a server store: noise in a user's cell
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if self.uri.startswith("sqlite:///"):
            return self._connect_sqlite()
        from mlflow import MlflowClient

        return self._call(lambda: MlflowClient(tracking_uri=self.uri))

    def _probe_http(self, retry: bool = True) -> None:
        """Fail fast when a tracking server is down, instead of importing mlflow first (a second or more).

        Sends the credentials MLflow would send (from the URI, else ``MLFLOW_TRACKING_USERNAME`` and
        ``MLFLOW_TRACKING_PASSWORD``, else ``MLFLOW_TRACKING_TOKEN``); a refused connection is retried
        within the budget (not with ``retry=False``), a 401 or 403 is :class:`StoreAuthError`.
        """
        credentials = server_credentials(self.uri)
        url, headers = credentials.base_url + "/health", credentials.headers
        context = tls_context() if url.startswith("https://") else None

        def probe() -> None:
            request = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=_limits.timeout, context=context):
                    pass
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise StoreAuthError(self.display_uri, exc.code, _one_line(str(exc.reason or ""))) from None
                # it answered: something is listening
            except (OSError, ValueError) as exc:
                reason = self._clean(str(getattr(exc, "reason", exc)))
                if _TRANSIENT.search(reason):
                    raise _Transient(reason) from None
                raise StoreUnavailableError(self.display_uri, reason) from None  # a bad URL, a certificate

        self._call(probe, retry=retry)

    def _connect_sqlite(self) -> Any:
        """Open a sqlite store safely when several processes do so at once (:mod:`nbmlops.backend.sqlite_schema`),
        with a long busy timeout, so that concurrent writers wait for each other instead of failing with
        ``database is locked``."""
        path = Path(self.uri[len("sqlite:///") :].split("?", 1)[0])
        with sqlite_schema.ready(path, self.display_uri, self.artifact_root):
            sqlite_commit.group_commit(path)
            from mlflow import MlflowClient

            engine_uri = self.uri if "?" in self.uri else f"{self.uri}?timeout={sqlite_schema.SQLITE_WAIT_S:g}"
            client = self._call(lambda: MlflowClient(tracking_uri=engine_uri))
            self._call(lambda: client.search_experiments(max_results=1))
        self._sqlite_path = Path(os.path.abspath(path))  # the same file after a chdir
        return client

    def _call(self, fn: Callable[[], Any], retry: bool = True) -> Any:
        """Run one store call within the budget; classify what goes wrong.

        Failures that may pass (no answer, a lock, 5xx, 429) are retried until :attr:`call_timeout` is
        spent (not with ``retry=False``: one attempt), then raise :class:`StoreUnavailableError`; when
        the store did not answer for the whole budget, the calls of the next budget fail at once. A
        401/403 raises :class:`StoreAuthError` at once, a record the store refuses :class:`RecordRejected`.
        """
        budget = self.call_timeout
        start = time.monotonic()
        deadline = start + budget
        self._refuse_while_down()
        delay = 0.05
        while True:
            try:
                with _http_limits(max(deadline - time.monotonic(), 0.5)):
                    result = self._attempt(fn)
            except _Transient as exc:
                if retry and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise self._failed(exc.args[0], budget, start, retried=retry) from None
            with self._state_lock:
                self._down = None
            return result

    def _attempt(self, fn: Callable[[], Any]) -> Any:
        from mlflow.exceptions import MlflowException

        outer, _limits.classifying = getattr(_limits, "classifying", False), True
        try:
            return fn()
        except MlflowException as exc:
            if exc.error_code == "PERMISSION_DENIED":  # a refusal of this user, if the server knows the user
                refused = permission_refused(self.uri, self.display_uri, str(exc), self._ask_timeout())
                if refused is not None:
                    raise refused from None
            if exc.error_code in _AUTH:
                said = re.search(r"Response body: '(.*)'", str(exc), re.DOTALL)  # MLflow quotes a non-JSON answer
                reason = self._clean(said.group(1) if said else exc.message)
                raise StoreAuthError(self.display_uri, _AUTH[exc.error_code], reason) from None
            if exc.error_code in _REJECTED:
                raise RecordRejected(self._clean(str(exc)), exc.error_code) from None
            reason = self._clean(str(exc))
        except (StoreUnavailableError, StoreAuthError, RecordRejected, _Transient):
            raise
        except Exception as exc:  # network errors, sqlalchemy errors, OSError from artifact copies
            request = getattr(exc, "request", None)
            if getattr(getattr(exc, "response", None), "status_code", None) == 403:  # an artifact request refused
                refused = permission_refused(self.uri, self.display_uri, str(exc), self._ask_timeout(),
                                             getattr(request, "method", None))
                if refused is not None:
                    raise refused from None
            reason = self._clean(f"{type(exc).__name__}: {exc}")
        finally:
            _limits.classifying = outer
        if _TRANSIENT.search(reason):
            raise _Transient(reason)
        raise StoreUnavailableError(self.display_uri, reason)

    def _ask_timeout(self) -> float:
        """How long one more request of the call in progress may wait."""
        return float(getattr(_limits, "timeout", None) or self.call_timeout)

    def _clean(self, text: str) -> str:
        """One line of an error, without the credentials of the URI (MLflow's messages quote the URL)."""
        text = redact_uri(text)
        password = urllib.parse.urlsplit(self.uri).password if "@" in self.uri else None
        return _one_line(text.replace(password, "***") if password else text)

    def _failed(self, reason: str, budget: float, start: float, retried: bool) -> StoreUnavailableError:
        """The error for a call that failed; if it was retried until its budget ran out, or waited that long,
        the calls of the next budget fail at once (a lost reply, retried by no one, trips nothing)."""
        spent = time.monotonic() - start >= budget * 0.9
        if spent:
            reason = f"no answer within {budget:g} s ({reason})"
        if retried or spent:
            with self._state_lock:
                self._down = (time.monotonic() + budget, reason)
        return StoreUnavailableError(self.display_uri, reason)

    def _refuse_while_down(self) -> None:
        """Fail at once while the last outage is fresh: a sync of many journals waits out one budget, not one
        per journal."""
        with self._state_lock:
            down = self._down
        if down is not None and time.monotonic() < down[0]:
            raise StoreUnavailableError(self.display_uri, down[1])


    # -- runs ---------------------------------------------------------------------------------

    def deliver(self, records: Iterable[dict[str, Any]], runs: dict[str, str], careful: bool) -> None:
        """Apply journaled records in order (see :func:`nbmlops.backend.records.deliver`). ``runs`` maps run
        keys to MLflow run ids and is updated in place; with ``careful`` a run is first looked up by its key.

        On a local sqlite store its commits are not each fsync'd (:mod:`nbmlops.backend.sqlite_commit`):
        call :meth:`settle` before the journal lets go of the records."""
        budget = self.call_timeout
        outer, _limits.budget = getattr(_limits, "budget", None), budget
        try:
            with sqlite_commit.delivering():
                deliver_records(self, records, runs, careful)
        finally:
            _limits.budget = outer

    def settle(self) -> None:
        """Make what :meth:`deliver` wrote durable: one fsync of a local sqlite store's WAL; nothing for a
        tracking server (its answer is its word).

        Raises:
            StoreUnavailableError: the disk refused the fsync.
        """
        if self._sqlite_path is None:
            return
        try:
            sqlite_commit.settle(self._sqlite_path)
        except OSError as exc:
            raise StoreUnavailableError(self.display_uri, f"could not make its writes durable: {exc}") from None

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (with an artifact location under ours) if needed."""
        if name in self._experiments:
            return self._experiments[name]
        with naming("experiment", name):
            experiment_id = self._experiment_id(name)
        self._experiments[name] = experiment_id
        return experiment_id

    def _experiment_id(self, name: str) -> str:
        client = self.client
        experiment = self._call(lambda: client.get_experiment_by_name(name))
        if experiment is None:
            location = None
            if self.artifact_root:
                slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80] or "experiment"
                location = Path(self.artifact_root, slug).resolve().as_uri()
            try:
                self._call(lambda: client.create_experiment(name, artifact_location=location))
            except PermissionRefused:
                raise
            except RecordRejected:
                pass  # another process created it first
            except StoreUnavailableError as exc:
                if "already exists" not in exc.reason.lower():
                    raise
            experiment = self._call(lambda: client.get_experiment_by_name(name))
            if experiment is None:
                raise RecordRejected(f"experiment {name!r} could not be created")
        if experiment.lifecycle_stage == "deleted":
            self._call(lambda: client.restore_experiment(experiment.experiment_id))
        return str(experiment.experiment_id)

    def creation_uncertain(self, key: str) -> bool:
        """True when an attempt to create run ``key`` got no answer (the server may have applied it)."""
        return key in self._uncertain

    def settle_uncertain(self, key: str, run_id: str) -> None:
        """At a run's end: if its creation was uncertain, drop the twins a late create made (see
        :meth:`run_id_for_key`)."""
        if key in self._uncertain:
            self._drop_duplicates(self._uncertain[key], key, run_id)
            self._uncertain.pop(key, None)

    def create_run_once(self, experiment_id: str, key: str, create: Callable[[], Any]) -> str:
        """Create the run with key ``key`` once: an attempt whose outcome is unknown (no reply) is followed by
        a look-up of the key, and only a run not found is created again, within the budget."""
        deadline = time.monotonic() + self.call_timeout
        delay = 0.1
        while True:
            try:
                run_id = self._call(create, retry=False).info.run_id
            except StoreUnavailableError:
                self._uncertain[key] = experiment_id
                found = self.run_id_for_key(experiment_id, key)
                if found:
                    return found
                if time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if key in self._uncertain:
                self._drop_duplicates(experiment_id, key, run_id)
            return run_id

    def run_id_for_key(self, experiment_id: str, key: str) -> str | None:
        """The MLflow id of the run recorded under local ``key`` in an experiment, if it exists yet.

        Should several runs carry the key, the one with the most data is kept (the one delivered to; the
        lowest id among equals) and the others are marked KILLED, tagged ``nbmlops.duplicate_of`` and deleted.
        """
        runs = self._runs_with_key(experiment_id, key)
        if not runs:
            return None
        keep = min(runs, key=lambda r: (-_data_count(r), r.info.run_id)).info.run_id
        if len(runs) > 1:
            self._drop_duplicates(experiment_id, key, keep, runs)
        return keep

    def _runs_with_key(self, experiment_id: str, key: str) -> list[Any]:
        if not re.fullmatch(r"[0-9a-f]{32}", key):
            return []
        return list(
            self._call(
                lambda: self.client.search_runs(
                    [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=100
                )
            )
        )

    def _drop_duplicates(self, experiment_id: str, key: str, keep: str, runs: list[Any] | None = None) -> None:
        """Mark every active run with ``key`` but ``keep`` KILLED, tag it as a duplicate of ``keep``, delete it."""
        client = self.client
        for run in self._runs_with_key(experiment_id, key) if runs is None else runs:
            twin = run.info.run_id
            if twin == keep:
                continue
            self._call(lambda: client.set_tag(twin, DUPLICATE_TAG, keep))  # noqa: B023 - called at once
            if run.info.status == "RUNNING":
                self._call(lambda: client.set_terminated(twin, "KILLED"))  # noqa: B023
            self._call(lambda: client.delete_run(twin))  # noqa: B023

    def adopt_children(self, experiment_id: str, parent_key: str, parent_id: str) -> int:
        """Link runs that name ``parent_key`` as parent but were delivered before it existed."""
        client = self.client
        orphans = self._call(
            lambda: client.search_runs(
                [experiment_id], filter_string=f"tags.`{PARENT_KEY_TAG}` = '{parent_key}'", max_results=10000
            )
        )
        adopted = 0
        for run in orphans:
            if "mlflow.parentRunId" not in run.data.tags:
                self._call(functools.partial(client.set_tag, run.info.run_id, "mlflow.parentRunId", parent_id))
                adopted += 1
        return adopted

    def task_attempts(self, experiment_id: str, like: str) -> dict[str, list[Attempt]]:
        """The runs of each task (:data:`TASK_TAG`) whose name matches the SQL ``LIKE`` pattern ``like``
        (``<sweep key>/%``: every combination of a sweep; a task's name: that task), oldest attempt first."""
        if not re.fullmatch(r"[0-9A-Za-z/.%-]*", like):
            return {}
        client = self.client
        runs = self._call(
            lambda: client.search_runs(
                [experiment_id], filter_string=f"tags.`{TASK_TAG}` LIKE '{like}'", max_results=50000
            )
        )
        tasks: dict[str, list[Attempt]] = {}
        for run in runs:
            tags = run.data.tags
            kept = {k: tags[k] for k in (ATTEMPT_TAG, SUPERSEDED_TAG, SUPERSEDES_TAG) if k in tags}
            tasks.setdefault(tags[TASK_TAG], []).append(
                Attempt(run.info.run_id, tags.get(RUN_KEY_TAG, ""), run.info.start_time or 0, run.info.status, kept)
            )
        for attempts in tasks.values():
            attempts.sort(key=lambda attempt: (attempt.start_time, attempt.run_id))
        return tasks

    def supersede(self, attempts: list[Attempt], live: Attempt) -> int:
        """Make ``live`` the one live run of a task's ``attempts`` (oldest first): every other attempt ends
        KILLED, tagged with its number (:data:`ATTEMPT_TAG`) and :data:`SUPERSEDED_TAG` = ``live``'s id;
        ``live`` gets its number and :data:`SUPERSEDES_TAG`. Writes only what changed; returns how many
        attempts ``live`` supersedes."""
        client = self.client
        others = [attempt.run_id for attempt in attempts if attempt.run_id != live.run_id]
        for number, attempt in enumerate(attempts, 1):
            if attempt.run_id == live.run_id:
                tags = {ATTEMPT_TAG: str(number), SUPERSEDES_TAG: ",".join(others)}
            else:
                tags = {ATTEMPT_TAG: str(number), SUPERSEDED_TAG: live.run_id}
            for name, value in tags.items():
                if attempt.tags.get(name) != value:
                    self._call(functools.partial(client.set_tag, attempt.run_id, name, value))
            if attempt.run_id != live.run_id and attempt.status != "KILLED":
                self._call(functools.partial(client.set_terminated, attempt.run_id, "KILLED"))
        return len(others)

    def superseded(self, run_id: str) -> bool:
        """True when the run is an attempt of a task that another attempt replaces (it is then marked so).

        The live attempt is the one already named live (it supersedes others, nothing supersedes it), else
        the latest started: a task runs again only once the worker of its earlier attempt is gone.
        """
        client = self.client
        run = self._call(lambda: client.get_run(run_id))
        task = run.data.tags.get(TASK_TAG)
        if not task:
            return False
        attempts = self.task_attempts(run.info.experiment_id, task).get(task, [])
        if len(attempts) < 2:
            return False
        named = [a for a in attempts if SUPERSEDES_TAG in a.tags and SUPERSEDED_TAG not in a.tags]
        live = named[-1] if named else attempts[-1]
        self.supersede(attempts, live)
        return live.run_id != run_id

    def running_runs(self) -> list[tuple[str, int, dict[str, str]]]:
        """``(run_id, start time in ms, tags)`` of every RUNNING run that nbmlops made (it has a run key), on
        any host."""
        client = self.client
        ids = [e.experiment_id for e in self._pages(lambda token: client.search_experiments(page_token=token))]

        def running(chunk: list[str]) -> list[Any]:
            return self._pages(
                lambda token: client.search_runs(
                    chunk, filter_string="attributes.status = 'RUNNING'", max_results=5000, page_token=token
                )
            )

        runs = [run for start in range(0, len(ids), 50) for run in running(ids[start : start + 50])]
        return [(r.info.run_id, r.info.start_time or 0, r.data.tags) for r in runs if RUN_KEY_TAG in r.data.tags]

    def fail_run(
        self, run_id: str, failure: str, reason: str, still: Callable[[int, dict[str, str]], bool] | None = None
    ) -> bool:
        """Mark a RUNNING run FAILED, tagged ``nbmlops.failure`` = ``failure`` and ``nbmlops.failure_reason``.

        The run is read again first: one that ended meanwhile, or for which ``still(start time in ms, tags)``
        no longer holds (a beat came), is left alone. Returns True when the run was failed.
        """
        client = self.client
        run = self._call(lambda: client.get_run(run_id))
        if run.info.status != "RUNNING":
            return False
        if still is not None and not still(run.info.start_time or 0, dict(run.data.tags)):
            return False
        self._call(lambda: client.set_tag(run_id, "nbmlops.failure", failure))
        self._call(lambda: client.set_tag(run_id, "nbmlops.failure_reason", reason))
        self._call(lambda: client.set_terminated(run_id, "FAILED"))
        return True

    def experiment_run_counts(self) -> list[tuple[str, str, int]]:
        """``(experiment id, name, number of runs)`` for every active experiment."""
        client = self.client
        rows = []
        for experiment in self._call(lambda: client.search_experiments()):
            runs = self._call(functools.partial(client.search_runs, [experiment.experiment_id], max_results=50000))
            rows.append((experiment.experiment_id, experiment.name, len(runs)))
        return rows

    def previous_values(
        self, experiment_id: str, cell_key: str, run_id: str
    ) -> tuple[dict[str, float], dict[str, str]] | None:
        """Metrics and params of the latest FINISHED run of the same cell before ``run_id`` (None when there
        is none)."""
        if "'" in cell_key or "\\" in cell_key:
            return None
        client = self.client
        runs = self._call(
            lambda: client.search_runs(
                [experiment_id],
                filter_string=f"tags.`nbmlops.cell_key` = '{cell_key}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=2,
            )
        )
        earlier = [run for run in runs if run.info.run_id != run_id]
        return (dict(earlier[0].data.metrics), dict(earlier[0].data.params)) if earlier else None

    def _pages(self, fetch: Callable[[str | None], Any]) -> list[Any]:
        """Every item of a paged MLflow search: ``fetch(page_token)`` page after page."""
        items: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(functools.partial(fetch, token))
            items += page
            token = page.token
            if not token:
                return items


def _data_count(run: Any) -> int:
    """How much a run holds: its metrics, params and tags."""
    return len(run.data.metrics) + len(run.data.params) + len(run.data.tags)


class _BoundedClient:
    """An ``MlflowClient`` whose every call is bounded like :meth:`Store._call`'s attempts: MLflow's HTTP
    client makes one request (no retries of its own) and waits at most the budget for the server. What MLflow
    raises leaves as nbmlops' errors, classified as :meth:`Store._attempt` does (:class:`RecordRejected` with
    MLflow's code, :class:`StoreAuthError`, :class:`StoreUnavailableError`)."""

    def __init__(self, client: Any, store: Store) -> None:
        self._mlflow = client
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in ("_mlflow", "_store") or name.startswith("__"):
            raise AttributeError(name)  # not made yet (a copy being unpickled), or Python's own protocol
        value = getattr(self._mlflow, name)
        if not callable(value):
            return value
        store = self._store

        def bounded(*args: Any, **kwargs: Any) -> Any:
            with _http_limits(store.call_timeout):
                if getattr(_limits, "classifying", False):
                    return value(*args, **kwargs)  # inside Store._call, which classifies (and retries)
                try:
                    return store._attempt(lambda: value(*args, **kwargs))
                except _Transient as exc:
                    raise StoreUnavailableError(store.display_uri, exc.args[0]) from None

        bounded.__name__ = bounded.__qualname__ = name
        bounded.__doc__ = getattr(value, "__doc__", None)
        return bounded


@contextlib.contextmanager
def _http_limits(timeout: float) -> Iterator[None]:
    """Within the block, this thread's requests wait ``timeout`` s at most (an outer block's limit stays):
    the health probe's, and MLflow's, which make one attempt each (no retries of MLflow's own: a create whose
    reply was lost is looked up by its key, never sent blindly again).

    MLflow reads its documented variables ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (whole seconds) and
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` at each request. They are set while nbmlops has a call in flight, and
    only where the environment does not set them: a user's own values are kept (and then bound nbmlops'
    requests too), and the user's own MLflow calls keep MLflow's defaults outside nbmlops' calls.
    """
    if getattr(_limits, "timeout", None) is not None:
        yield
        return
    _limits.timeout = timeout
    _open_window(timeout)
    try:
        yield
    finally:
        _limits.timeout = None
        _close_window()


_window = threading.Lock()
_in_flight = 0
_set_by_us: dict[str, str] = {}  # the MLflow variables set for the calls in flight, and to what


def _open_window(timeout: float) -> None:
    global _in_flight
    with _window:
        _in_flight += 1
        if _in_flight > 1:
            return
        limits = (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout)))))
        for name, value in limits:
            if name not in os.environ:
                os.environ[name] = _set_by_us[name] = value


def _close_window() -> None:
    global _in_flight
    with _window:
        _in_flight -= 1
        if _in_flight:
            return
        for name, value in _set_by_us.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        _set_by_us.clear()


def _one_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:500]


