"""Every error nbmlops raises on purpose descends from :class:`NbmlopsError`.

The whole tree is defined here; the module that raises a class imports it from here (and may name it in its own
``__all__``). Exit code (1 failed, 2 usage, 3 refused) and HTTP status, then what it means::

    NbmlopsError                                    1 500
    ├── ConfigError                                 2 500  a setting has a value nbmlops cannot use
    ├── FlushTimeoutError                           1 500  flush() returned with records still waiting
    ├── TrackingError                               1 500  the tracking API used in a way that cannot be recorded
    ├── RecordTooLarge                              2 400  a record over the journal's limit for one record
    ├── StoreUnavailableError                       1 503  the tracking store could not be reached (an outage)
    ├── StoreAuthError                              1 502  the tracking server answered 401/403 (never an outage)
    ├── RecordRejected                              1 500  the store refused a request for good
    │   └── PermissionRefused                       3 403  an authenticating server refused the user this
    ├── RunNotFoundError                            2 404  no run with this id
    ├── SearchError                                 2 400  a filter or ordering the store cannot read
    ├── UnsupportedDataError                        1 500  data nbmlops cannot fingerprint or profile (a TypeError)
    │   └── FingerprintError                        1 500  a value that contains itself or nests too deep
    ├── SnapshotError                               1 500  the snapshot store's errors
    │   ├── SnapshotNotFoundError                   2 404  no snapshot under this fingerprint
    │   ├── CorruptSnapshotError                    1 500  a stored snapshot no longer holds its data
    │   ├── StaleFingerprintError                   1 500  the object changed since it was fingerprinted
    │   └── UnsupportedSnapshotError                2 400  an object that cannot be stored to read back exactly
    ├── DriftError                                  2 400  drift that cannot be measured
    ├── ModelFileError                              2 400  a model directory nbmlops will not read
    ├── ModelInputError                             2 400  data that does not fit a model's input schema
    ├── RegistryError                               1 409  the registry's errors
    │   ├── ModelReferenceError                     2 400  a model name, reference or alias against the rules
    │   ├── ModelNotFoundError                      2 404  no registered model, version or alias matches
    │   ├── UnsupportedModelError                   1 409  not a model nbmlops can register
    │   ├── UnsafeModelError                        2 400  a model nbmlops refuses to load
    │   ├── ModelNotServableError                   2 400  a version that fails on its own input example
    │   ├── ModelSchemaError                        2 400  monitored data that does not fit the model's schema
    │   ├── MonitoringDataError                     2 400  data to monitor that cannot be read
    │   └── PromotionRefused                        3 409  a promotion check failed: the alias did not move
    │       └── AliasChangedError                   3 409  another promotion moved the alias meanwhile
    ├── GateError                                   2 400  a gate that cannot be built
    │   └── GateSyntaxError                         2 400  a gate's text against the grammar
    ├── ParameterError                              2 400  parameters refused before any kernel starts
    │   ├── NotebookReadError                       2 400  the notebook's parameters cannot be read
    │   └── ParameterTypeError                      2 400  values that do not fit the declared types
    ├── ParameterFileError                          2 400  a parameter file or -y string that is not a mapping
    ├── NotebookNotFoundError                       2 404  the notebook to run does not exist
    ├── NotReproducibleError                        2 400  a run that cannot be re-executed
    ├── WorkerError                                 1 500  the runner's worker failed outside the notebook
    ├── SweepError                                  2 400  a sweep that cannot start as asked
    │   └── DaskNotInstalledError                   2 400  dask= given without distributed installed
    ├── SchedulerUnavailableError                   1 500  the Dask scheduler could not be reached
    ├── FilterError                                 2 400  a dashboard filter, sort or page that cannot apply
    ├── PathError                                   2 400  a request path the server refuses to follow
    ├── PathNotFoundError                           2 404  a path under the server's root that names nothing
    ├── RequestError                                2 400  a request the API cannot act on
    │   └── BodyTooLargeError                       2 413  a request body over the server's limit
    ├── NotebookUnreadableError                     2 400  a notebook whose parameters cannot be read (server)
    ├── ParameterTooLargeError                      2 413  a job parameter value over the server's limit
    ├── JobLimitError                               1 429  as many jobs as allowed are running
    └── JobNotFoundError                            2 404  no job with this id

``tests/test_exceptions.py`` walks the tree: every class is defined here, named above, and carries the code and
status shown.

A user's own exception inside a tracked cell is never wrapped: it is re-raised unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "AliasChangedError",
    "BodyTooLargeError",
    "ConfigError",
    "CorruptSnapshotError",
    "DaskNotInstalledError",
    "DriftError",
    "FilterError",
    "FingerprintError",
    "FlushTimeoutError",
    "GateError",
    "GateSyntaxError",
    "JobLimitError",
    "JobNotFoundError",
    "ModelFileError",
    "ModelInputError",
    "ModelNotFoundError",
    "ModelNotServableError",
    "ModelReferenceError",
    "ModelSchemaError",
    "MonitoringDataError",
    "NbmlopsError",
    "NotReproducibleError",
    "NotebookNotFoundError",
    "NotebookReadError",
    "NotebookUnreadableError",
    "ParameterError",
    "ParameterFileError",
    "ParameterTooLargeError",
    "ParameterTypeError",
    "PathError",
    "PathNotFoundError",
    "PermissionRefused",
    "PromotionRefused",
    "RecordRejected",
    "RecordTooLarge",
    "RegistryError",
    "RequestError",
    "RunNotFoundError",
    "SchedulerUnavailableError",
    "SearchError",
    "SnapshotError",
    "SnapshotNotFoundError",
    "StaleFingerprintError",
    "StoreAuthError",
    "StoreUnavailableError",
    "SweepError",
    "TrackingError",
    "UnsafeModelError",
    "UnsupportedDataError",
    "UnsupportedModelError",
    "UnsupportedSnapshotError",
    "WorkerError",
]


#: the exit codes of the command line (README, "Command line")
EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3


class NbmlopsError(Exception):
    """Root of every error raised by nbmlops.

    Each class carries what it means to a caller: ``exit_code`` for the command line and ``http_status`` for the
    server extension. By default an error that is also a ``ValueError`` (bad input) is a usage error (exit 2,
    HTTP 400), one that is also a ``LookupError`` or ``FileNotFoundError`` (something named does not exist) a
    usage error answered with 404, anything else a failed operation (exit 1, HTTP 500); a class may say otherwise.
    """

    exit_code: ClassVar[int] = EXIT_FAILED
    http_status: ClassVar[int] = 500

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "exit_code" not in own and issubclass(cls, (ValueError, LookupError, FileNotFoundError)):
            cls.exit_code = EXIT_USAGE
        if "http_status" not in own:
            if issubclass(cls, (LookupError, FileNotFoundError)):
                cls.http_status = 404
            elif issubclass(cls, ValueError):
                cls.http_status = 400


class ConfigError(NbmlopsError, ValueError):
    """A setting has a value nbmlops cannot use.

    Attributes:
        key: the setting's name (for example ``tracking_uri``).
        source: where the value came from (an environment variable, a file, an argument).
    """

    http_status = 500  # the server is set up wrong, not the request

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"{key}{where}: {message}")


class UnsupportedDataError(NbmlopsError, TypeError):
    """An object that nbmlops cannot fingerprint or profile.

    Attributes:
        type_name: the qualified name of the object's type.
    """

    def __init__(self, type_name: str, message: str | None = None) -> None:
        self.type_name = type_name
        super().__init__(message or f"cannot fingerprint an object of type {type_name}")


class FingerprintError(UnsupportedDataError):
    """A value inside the data (a cell of an object column, say) cannot be digested: it contains itself
    (a list appended to itself, a dict holding itself) or is nested deeper than Python's recursion limit.

    Attributes:
        type_name: the qualified name of the data's type.
    """


class StoreUnavailableError(NbmlopsError):
    """The tracking store could not be reached or refused a write.

    Attributes:
        uri: the tracking URI, with any credentials removed.
        reason: what went wrong, in one line.
    """

    http_status = 503

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"tracking store {uri} is unavailable: {reason}")


class StoreAuthError(NbmlopsError):
    """The tracking server answered 401 or 403: the credentials are missing, wrong or not allowed.

    Not an outage: nothing is retried until the credentials change, and nothing waits for them.

    Attributes:
        uri: the tracking URI, with any credentials removed.
        status: the HTTP status (401 or 403).
        reason: what the server said, in one line.
    """

    http_status = 502  # the store behind the server refused it

    def __init__(self, uri: str, status: int, reason: str) -> None:
        self.uri = uri
        self.status = status
        self.reason = reason
        refused = "refused the credentials" if status == 401 else "denied access with the credentials"
        super().__init__(
            f"tracking server {uri} {refused} (HTTP {status}: {reason}). Put them in the URI "
            "(http://user:password@host) or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(or MLFLOW_TRACKING_TOKEN)"
        )


class TrackingError(NbmlopsError):
    """The tracking API was used in a way that cannot be recorded (no active run, a changed param)."""


class FlushTimeoutError(NbmlopsError):
    """``flush()`` returned before every journaled record reached the store.

    Attributes:
        pending: how many records are still waiting in the journal.
        reason: why they are waiting (the last delivery error, or "still delivering").
    """

    def __init__(self, pending: int, reason: str) -> None:
        self.pending = pending
        self.reason = reason
        super().__init__(
            f"{pending} record(s) still waiting for the tracking store: {reason}. "
            "They are safe in the local journal; `nbmlops sync` delivers them later."
        )


class RecordRejected(NbmlopsError):
    """The store answered, and refused a request for good (a bad value, a deleted run, a name that exists).

    Attributes:
        error_code: MLflow's code for the refusal (``INVALID_PARAMETER_VALUE``, ``RESOURCE_DOES_NOT_EXIST``,
            ``RESOURCE_ALREADY_EXISTS``, ...), or None when nbmlops refused it itself.
    """

    def __init__(self, message: str, error_code: str | None = None) -> None:
        self.error_code = error_code
        super().__init__(message)


class RegistryError(NbmlopsError):
    """Root of the registry's errors."""

    http_status = 409


class ModelReferenceError(RegistryError, ValueError):
    """A model reference, name or alias that does not follow the rules."""


class ModelFileError(NbmlopsError, ValueError):
    """A model directory nbmlops will not read (a symbolic link in it, an unreadable MLmodel file).

    Attributes:
        reason: why, in one line.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ModelInputError(NbmlopsError, ValueError):
    """Data that does not fit a model's input schema (MLflow's check refused it)."""


class DriftError(NbmlopsError, ValueError):
    """Drift cannot be measured: no current rows, incompatible dtypes, a profile without
    distributions, a bad option.

    Attributes:
        column: the column concerned, if any.
    """

    def __init__(self, message: str, column: str | None = None) -> None:
        self.column = column
        super().__init__(f"column {column!r}: {message}" if column is not None else message)


class SnapshotError(NbmlopsError):
    """Root of the snapshot store's errors."""


class SnapshotNotFoundError(SnapshotError, LookupError):
    """No snapshot is stored under this fingerprint.

    Attributes:
        fingerprint: the fingerprint asked for.
    """

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__(f"no data snapshot with fingerprint {fingerprint!r}")


class CorruptSnapshotError(SnapshotError):
    """A stored snapshot no longer holds the data its fingerprint names.

    Attributes:
        fingerprint: the snapshot's fingerprint.
        path: the damaged file.
        reason: what the check found, in one line.
    """

    def __init__(self, fingerprint: str, path: Path, reason: str) -> None:
        self.fingerprint = fingerprint
        self.path = path
        self.reason = reason
        super().__init__(f"data snapshot {fingerprint} at {path} is corrupt: {reason}")


class UnsupportedSnapshotError(SnapshotError, ValueError):
    """An object cannot be stored (or written in a format) so that it reads back exactly.

    Attributes:
        fingerprint: the object's fingerprint.
        reason: why, in one line.
    """

    def __init__(self, fingerprint: str, reason: str) -> None:
        self.fingerprint = fingerprint
        self.reason = reason
        super().__init__(f"cannot snapshot data {fingerprint}: {reason}")


class StaleFingerprintError(SnapshotError):
    """The object no longer has the fingerprint the caller took (it changed since); nothing was stored.

    Attributes:
        fingerprint: the fingerprint the caller gave.
        actual: the object's fingerprint now (None when it cannot be taken, say a file is gone).
    """

    def __init__(self, fingerprint: str, actual: str | None) -> None:
        self.fingerprint = fingerprint
        self.actual = actual
        now = f"it is now {actual}" if actual else "it is gone or unreadable"
        super().__init__(f"data {fingerprint} changed since it was fingerprinted ({now}); not snapshotted")


class RecordTooLarge(NbmlopsError, ValueError):
    """A record's frame would pass the journal's limit (:data:`nbmlops.journal.MAX_RECORD`); nothing of the append was written.

    Attributes:
        index: the record's position in the appended list.
        size: its payload's size in bytes.
    """

    def __init__(self, index: int, record: dict[str, Any], size: int, limit: int) -> None:
        self.index = index
        self.size = size
        super().__init__(
            f"a {record.get('t')} record of run {record.get('run')} is {size:,} bytes, over the journal's limit "
            f"of {limit:,} bytes for one record; it was not recorded"
        )


class ModelNotFoundError(RegistryError, LookupError):
    """No registered model, version or alias matches the reference.

    Attributes:
        reference: what was asked for, as written.
    """

    def __init__(self, reference: str, detail: str = "") -> None:
        self.reference = reference
        super().__init__(f"no model {reference} in the registry" + (f": {detail}" if detail else ""))


class ModelSchemaError(RegistryError, ValueError):
    """The monitored data does not fit the model's input schema (missing columns, unusable types)."""


class MonitoringDataError(RegistryError, ValueError):
    """The data to monitor cannot be read, or the model's training data was not recorded."""


class PromotionRefused(RegistryError):
    """A check failed: the alias was not moved. ``promotion`` holds every check and its values."""

    exit_code = EXIT_REFUSED

    def __init__(self, promotion: Any) -> None:  # a registry.promote.Promotion
        self.promotion = promotion
        super().__init__(promotion.reason)


class AliasChangedError(PromotionRefused):
    """Another promotion moved the alias while this one was checking: nothing was changed."""


class UnsafeModelError(RegistryError, ValueError):
    """nbmlops refuses to load a model: its artifact changed since it was logged, its MLmodel file points
    outside its directory, or it needs pickle or types nbmlops does not trust (exit 2).

    Attributes:
        model: the version, as ``NAME/VERSION``.
        reason: why, in one line.
    """

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"refusing to load {model}: {reason}")


class ModelNotServableError(RegistryError, ValueError):
    """A version that loads but fails to answer its own input example through MLflow's scoring path, so it is not
    served (exit 2)."""


class NotebookNotFoundError(NbmlopsError, FileNotFoundError):
    """The notebook to run does not exist."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no such notebook: {path}")


class ParameterFileError(NbmlopsError, ValueError):
    """A parameter file or ``-y`` string that is not a YAML mapping."""


class WorkerError(NbmlopsError, RuntimeError):
    """The worker that ran the notebook failed outside the notebook (a kernel that cannot start, say)."""


class GateError(NbmlopsError, ValueError):
    """A gate or condition that cannot be built (unknown operator, non-finite threshold, no conditions)."""


class GateSyntaxError(GateError):
    """A gate's text does not follow the grammar.

    Attributes:
        text: the gate as written.
        position: the 0-based index of the offending character (``len(text)`` at the end).
        expected: what the parser wanted there.
    """

    def __init__(self, text: str, position: int, expected: str) -> None:
        self.text, self.position, self.expected = text, position, expected
        shown = re.sub(r"\s", " ", text)  # one character per character, so the caret lines up
        caret = " " * position + "^"
        super().__init__(f'gate "{text}": expected {expected} at position {position}\n    {shown}\n    {caret}')


class ParameterError(NbmlopsError, ValueError):
    """Parameters refused before any kernel starts: names the notebook does not declare, or that are not
    identifiers (this class); values of the wrong type (:class:`ParameterTypeError`); a notebook whose
    parameters cannot be read (:class:`NotebookReadError`).

    Attributes:
        notebook: the notebook's name.
        bad: the refused names.
        declared: the names the notebook declares.
    """

    def __init__(self, notebook: str, bad: list[str], declared: list[str], message: str | None = None) -> None:
        self.notebook = notebook
        self.bad = bad
        self.declared = declared
        known = ", ".join(declared) if declared else "none (no cell tagged 'parameters')"
        super().__init__(message or f"{notebook} does not declare parameter(s) {', '.join(map(repr, bad))}; "
                         f"it declares: {known}")

    def __reduce__(self) -> tuple[Any, ...]:  # travels whole between processes (a forked run's worker)
        return type(self), (self.notebook, self.bad, self.declared, str(self))


class ParameterTypeError(ParameterError):
    """Values whose type does not fit the parameter the notebook declares.

    Attributes:
        problems: ``{name: "expected a number (float), got a string"}``, one item per refused value.
    """

    def __init__(self, problems: Mapping[str, str], notebook: str = "", declared: list[str] | None = None) -> None:
        self.problems = dict(problems)
        message = "; ".join(f"parameter {name}: {problem}" for name, problem in self.problems.items())
        super().__init__(notebook, list(self.problems), list(declared or []), message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.problems, self.notebook, self.declared)


class NotebookReadError(ParameterError):
    """The notebook's parameters cannot be read: the file is not a notebook (not JSON, not nbformat)."""

    def __init__(self, notebook: str, reason: str) -> None:
        self.reason = reason
        super().__init__(notebook, [], [], f"{notebook} is not a notebook nbmlops can read: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.notebook, self.reason)


class NotReproducibleError(NbmlopsError, ValueError):
    """The run cannot be re-executed: not a notebook or cell run, or what it needs was not recorded."""


class SweepError(NbmlopsError, ValueError):
    """A sweep that cannot start as asked (malformed grid, clashing options, a store Dask cannot reach)."""


class DaskNotInstalledError(SweepError):
    """``dask=`` was given but ``distributed`` is not installed."""

    def __init__(self) -> None:
        super().__init__('running a sweep on Dask needs Dask: pip install "dask[distributed]"')


class SchedulerUnavailableError(NbmlopsError):
    """The Dask scheduler given as ``dask=`` could not be reached."""


class RequestError(NbmlopsError, ValueError):
    """A request the API cannot act on: a bad query argument or body."""


class BodyTooLargeError(RequestError):
    """A request body above the server's limit (413)."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the request body is larger than {limit:,} bytes, the most this API reads")


class JobLimitError(NbmlopsError):
    """As many jobs as allowed are running already."""

    http_status = 429

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{limit} job(s) are running already; wait for one to end or cancel one")


class JobNotFoundError(NbmlopsError, LookupError):
    """No job with this id in this server."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} in this server")


class NotebookUnreadableError(NbmlopsError, ValueError):
    """A notebook whose parameters cannot be read (not JSON, no kernel name, ...)."""


class ParameterTooLargeError(NbmlopsError, ValueError):
    """A parameter value above the server's limit (:data:`nbmlops.server.jobs.MAX_VALUE_BYTES`) (the API answers 413)."""

    http_status = 413

    def __init__(self, name: str, size: int, limit: int) -> None:
        self.name = name
        self.size = size
        super().__init__(f"parameter {name}: its value is {size:,} bytes of JSON; at most {limit:,}")


class PathError(NbmlopsError, ValueError):
    """A path a request names that the server refuses to follow.

    Attributes:
        path: the path as the request gave it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"path {path!r}: {reason}")


class PathNotFoundError(NbmlopsError, LookupError):
    """A well-formed path under the server's root that names nothing."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"no such file: {path!r}")


class RunNotFoundError(NbmlopsError, ValueError):
    """No run with this id in the tracking store."""

    http_status = 404

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        """``tracking_uri`` is shown as given: pass its redacted form."""
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the tracking store {tracking_uri}")


class SearchError(NbmlopsError, ValueError):
    """The store refused a search: a filter or an ordering it cannot read. The message is MLflow's."""


class UnsupportedModelError(RegistryError, TypeError):
    """The object is not a model nbmlops can register (today: scikit-learn estimators and pipelines)."""


class FilterError(NbmlopsError, ValueError):
    """A filter, sort column or page that cannot be applied; the message says why."""


class PermissionRefused(RecordRejected):
    """An authenticating tracking server (``mlflow server --app-name basic-auth``) knows the user and refused them
    this: their MLflow permission on the experiment or registered model is not enough (HTTP 403). Not an outage
    and not a credentials problem: retrying cannot help until someone grants the permission.

    Attributes:
        uri: the tracking URI, with any credentials removed.
        user: the MLflow user the server authenticated.
        action: what was refused, as a verb phrase (``set an alias of``, ``create runs in``).
        permission: the least MLflow permission that allows it (``READ``, ``EDIT``, ``MANAGE``, or a phrase
            such as ``EDIT (upload) or READ (download)``), or None when not known.
        kind: the kind of resource (``registered model``, ``experiment``), or None when not known.
        resource: the resource's name, or None when not known.
        unnamed: how the message speaks of the resource while its name is not known (default ``this <kind>``).
    """

    exit_code = EXIT_REFUSED
    http_status = 403

    def __init__(self, uri: str, user: str, action: str, permission: str | None, kind: str | None = None,
                 resource: str | None = None, unnamed: str | None = None) -> None:
        self.uri, self.user, self.action, self.permission = uri, user, action, permission
        self.kind, self.resource, self.unnamed = kind, resource, unnamed
        if permission is None:
            message = (f"MLflow user {user!r} may not {action} on {uri} (the server answered 403); ask an MLflow "
                       "admin which permission that needs and to grant it")
        else:
            target = f"{kind} {resource!r}" if kind and resource else unnamed or (f"this {kind}" if kind else "this")
            message = (f"MLflow user {user!r} may not {action} {target} on {uri}: that needs {permission} "
                       "permission on it (the server answered 403); ask its owner or an MLflow admin to grant it")
        super().__init__(message, "PERMISSION_DENIED")

    def about(self, kind: str, resource: str) -> PermissionRefused:
        """The same refusal naming ``resource`` when it concerns a ``kind`` and names none yet, else itself."""
        if self.resource is not None or self.kind != kind:
            return self
        return PermissionRefused(self.uri, self.user, self.action, self.permission, kind, resource, self.unnamed)
