"""Every error nbmlops raises on purpose descends from :class:`NbmlopsError`.

The tree::

    NbmlopsError
    ├── ConfigError            a setting has a bad value (names the setting and where it came from)
    ├── UnsupportedDataError   fingerprint/profile got an object it cannot digest (also a TypeError)
    │   └── FingerprintError   a value inside the data contains itself or is nested too deeply to digest
    ├── StoreUnavailableError  the tracking store could not be reached or written (an outage: retried)
    ├── StoreAuthError         the tracking server refused nbmlops' credentials (HTTP 401/403: never retried
    │                          as an outage; names the URI and MLFLOW_TRACKING_* variables to set)
    ├── TrackingError          misuse of the tracking API (no active run, a param changed within a run)
    └── FlushTimeoutError      flush() gave up with records still waiting (says how many and why)

The rooms below add their own branches to this tree (``registry.RegistryError`` and its refusals,
``runner.ParameterError``, ``data.SnapshotError``, the server's request errors, ...). Every class carries its
``exit_code`` (the command line exits with it: 1 failed, 2 usage, 3 refused) and ``http_status`` (the server
answers with it); ``tests/test_exceptions.py`` walks the whole tree.

A user's own exception inside a tracked cell is never wrapped: it is re-raised unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "FingerprintError",
    "FlushTimeoutError",
    "NbmlopsError",
    "StoreAuthError",
    "StoreUnavailableError",
    "TrackingError",
    "UnsupportedDataError",
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
