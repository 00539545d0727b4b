"""Who a tracking server knows this process as, and what it refuses that user.

The credentials are the ones MLflow sends: those in the URI (``http://user:password@host``), else
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (each, as MLflow reads them, else from
``~/.mlflow/credentials``), else ``MLFLOW_TRACKING_TOKEN``. :func:`claimed_user` is the user name they carry, read
without asking anyone; :func:`authenticated_user` asks an authenticating server (``mlflow server --app-name
basic-auth``: ``GET /api/2.0/mlflow/users/current``) whom it authenticated; :func:`recorded_user` is the name
nbmlops records as the one who did something (a promotion decision).

A 403 of such a server is a permission refusal only when the server knows the user (it answers ``users/current``):
:func:`permission_refused` then names the user, what was refused and the permission MLflow's basic-auth app wants
for it (read from the REST endpoint refused), as :class:`PermissionRefused`; :func:`naming` adds the experiment or
registered model where the caller knows it. A 403 for everything (a proxy refusing the credentials) stays a
:class:`~nbmlops.exceptions.StoreAuthError`. mlflow is not imported here.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import json
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from nbmlops.exceptions import PermissionRefused

__all__ = [
    "NEGATIVE_ANSWER_TTL_S", "ServerCredentials", "authenticated_user", "claimed_user", "naming", "permission_refused",
    "recorded_user", "server_credentials", "tls_context",
]

CURRENT_USER_PATH = "/api/2.0/mlflow/users/current"
#: how long a ``users/current`` answer naming nobody (401, 403, 404) is believed: a proxy may answer so for a
#: moment while the server behind it restarts; an answer naming a user is kept for the process
NEGATIVE_ANSWER_TTL_S = 180.0

#: what a refused REST endpoint (the part after ``/mlflow/``) does: (pattern, verb phrase, the least permission
#: MLflow's basic-auth app wants for it, the kind of resource it acts on); the first match wins
_ENDPOINTS: tuple[tuple[re.Pattern[str], str, str, str], ...] = tuple(
    (re.compile(pattern), action, permission, kind)
    for pattern, action, permission, kind in (
        (r"^runs/create$", "create runs in", "EDIT", "experiment"),
        (r"^runs/(get|search)$|^metrics/", "read the runs of", "READ", "experiment"),
        (r"^runs/(delete|restore)$", "delete runs of", "MANAGE", "experiment"),
        (r"^runs/", "write to the runs of", "EDIT", "experiment"),
        (r"^logged-models", "log models in", "EDIT", "experiment"),
        (r"^experiments/create$", "create experiments in", "USE", "workspace"),
        (r"^experiments/(get|search|get-by-name)$", "read", "READ", "experiment"),
        (r"^experiments/delete$", "delete", "MANAGE", "experiment"),
        (r"^experiments/", "change", "EDIT", "experiment"),
        (r"^registered-models/create$", "create registered models in", "USE", "workspace"),
        (r"^registered-models/alias$", "set an alias of", "EDIT", "registered model"),
        (r"^registered-models/delete$", "delete", "MANAGE", "registered model"),
        (r"^model-versions/delete", "delete versions of", "MANAGE", "registered model"),
        (r"^model-versions/create$", "register a version of", "EDIT", "registered model"),
        (r"/(get|search|get-latest-versions|get-download-uri)$", "read", "READ", "registered model"),
        (r"^(registered-models|model-versions)/", "change", "EDIT", "registered model"),
    )
)
_ENDPOINT = re.compile(r"endpoint (\S*?/mlflow/([\w\-/]+))")
#: an artifact request proxied by the server (``mlflow-artifacts:/<experiment id>/<run id>/artifacts/...``), as
#: MLflow's artifact repository quotes its URL
_ARTIFACTS = re.compile(r"/mlflow-artifacts/(?:artifacts|mpu/\w+|presigned)/(?:(\d+)/([0-9a-f]{32})/)?")
#: what an artifact request does, by HTTP method: (verb phrase, permission on the run's experiment)
_ARTIFACT_METHODS = {"PUT": ("upload artifacts to", "EDIT"), "POST": ("upload artifacts to", "EDIT"),
                     "GET": ("download artifacts from", "READ"), "DELETE": ("delete artifacts of", "MANAGE")}


@dataclass(frozen=True)
class ServerCredentials:
    """A tracking server's base URL (credentials taken out), the headers carrying the credentials MLflow would
    send, and the user name they claim (None for a token, or none)."""

    base_url: str
    headers: dict[str, str] = field(repr=False)  # the password (or token) itself
    user: str | None


def server_credentials(uri: str) -> ServerCredentials:
    """What MLflow would send to the tracking server at ``uri`` (see the module's docstring for the order)."""
    parts = urllib.parse.urlsplit(uri.rstrip("/"))
    headers: dict[str, str] = {}
    user = password = None
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    else:
        from_file = _credentials_file()
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or from_file[0]
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or from_file[1]
        if not (user and password):
            user = password = None
            if os.environ.get("MLFLOW_TRACKING_TOKEN"):
                headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return ServerCredentials(urllib.parse.urlunsplit(parts), headers, user)


def claimed_user(uri: str) -> str | None:
    """The MLflow user name the client acts as at ``uri``, without asking anyone. For a tracking server, the user
    whose credentials MLflow sends (:func:`server_credentials`: none without a password, the server then
    authenticates nobody by that name); for any other store, what MLflow's default run context records in
    ``mlflow.user``: ``MLFLOW_TRACKING_USERNAME``, else ``~/.mlflow/credentials``'s. None when nothing names one
    (MLflow then records the OS user)."""
    if uri.startswith(("http://", "https://")):
        return server_credentials(uri).user or None
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or _credentials_file()[0] or None


#: (base URL, digest of the credentials) -> (user or None: no auth app / not let in, monotonic time it expires or
#: None: never)
_known: dict[tuple[str, str], tuple[str | None, float | None]] = {}
_known_lock = threading.Lock()


def authenticated_user(uri: str, timeout: float) -> str | None:
    """The user an authenticating tracking server at ``uri`` authenticated these credentials as (its
    ``users/current`` answer), or None: not a tracking server, no such endpoint (nothing there authenticates
    users by name), credentials refused, or no answer within ``timeout`` s. Remembered by server and
    credentials: a user for the process, an answer naming nobody for :data:`NEGATIVE_ANSWER_TTL_S`, a failure to
    ask (no answer, a 5xx) not at all."""
    if not uri.startswith(("http://", "https://")):
        return None
    credentials = server_credentials(uri)
    key = (credentials.base_url, hashlib.sha256(json.dumps(credentials.headers).encode()).hexdigest())
    with _known_lock:
        if key in _known:
            user, expires = _known[key]
            if expires is None or time.monotonic() < expires:
                return user
            del _known[key]
    url = credentials.base_url + CURRENT_USER_PATH
    context = tls_context() if url.startswith("https://") else None
    request = urllib.request.Request(url, headers=credentials.headers)
    try:
        with urllib.request.urlopen(request, timeout=max(timeout, 0.5), context=context) as reply:
            name = json.loads(reply.read().decode())["user"]["username"]
        found: str | None = str(name) if name else None
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403, 404):
            return None  # the server failed: ask again next time
        found = None  # no such endpoint, or these credentials are not let in: the same answer next time
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with _known_lock:
        _known[key] = (found, None if found else time.monotonic() + NEGATIVE_ANSWER_TTL_S)
    return found


def recorded_user(uri: str, timeout: float) -> str | None:
    """The name to record as the one acting on the store at ``uri``: the user an authenticating server
    confirms, else the user name the credentials claim (a server without MLflow's auth app may sit behind a
    proxy that authenticates them), else None (nothing names a user: record the OS user)."""
    return authenticated_user(uri, timeout) or claimed_user(uri)


def permission_refused(uri: str, display_uri: str, message: str, timeout: float,
                       method: str | None = None) -> PermissionRefused | None:
    """The :class:`PermissionRefused` for a 403 that MLflow raised with ``message`` (for a request with HTTP
    ``method``, when the caller knows it), when the server at ``uri`` knows the user it refused (else None: the
    credentials themselves are not let in)."""
    user = authenticated_user(uri, timeout)
    if user is None:
        return None
    artifacts = _ARTIFACTS.search(message)
    if artifacts is not None:
        return _artifacts_refused(display_uri, user, method, artifacts.group(1), artifacts.group(2))
    found = _ENDPOINT.search(message)
    if found is None:
        return PermissionRefused(display_uri, user, "make this request", None)
    endpoint = found.group(2).rstrip("/")
    for pattern, action, permission, kind in _ENDPOINTS:
        if pattern.search(endpoint):
            return PermissionRefused(display_uri, user, action, permission, kind)
    return PermissionRefused(display_uri, user, f"call {found.group(1).rstrip('/')}", None)


def _artifacts_refused(display_uri: str, user: str, method: str | None, experiment_id: str | None,
                       run_id: str | None) -> PermissionRefused:
    """A refused artifact upload or download: MLflow's basic-auth app checks the permission on the experiment
    of the run the artifacts belong to."""
    action, permission = _ARTIFACT_METHODS.get((method or "").upper(),
                                               ("upload or download artifacts of", "EDIT (upload) or READ (download)"))
    unnamed = "the run's experiment"
    if run_id and experiment_id:
        unnamed = f"run {run_id}'s experiment (id {experiment_id})"
    return PermissionRefused(display_uri, user, action, permission, "experiment", unnamed=unnamed)


@contextlib.contextmanager
def naming(kind: str, resource: str) -> Iterator[None]:
    """Within the block, a :class:`PermissionRefused` about a ``kind`` (``experiment``, ``registered model``)
    leaves naming ``resource``."""
    try:
        yield
    except PermissionRefused as refused:
        named = refused.about(kind, resource)
        if named is refused:
            raise
        raise named from None


def tls_context() -> ssl.SSLContext:
    """Certificate checks as MLflow makes them: ``MLFLOW_TRACKING_INSECURE_TLS`` skips them,
    ``MLFLOW_TRACKING_SERVER_CERT_PATH`` names the CA bundle."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


_parsed: dict[tuple[str, int, int], tuple[str | None, str | None]] = {}  # (path, mtime_ns, size) -> its names


def _credentials_file() -> tuple[str | None, str | None]:
    """``mlflow_tracking_username`` and ``_password`` of ``~/.mlflow/credentials``'s ``[mlflow]`` section, as
    MLflow reads them. Parsed once per version of the file (its modification time and size): a run start costs
    one ``stat``."""
    path = os.path.expanduser("~/.mlflow/credentials")
    try:
        status = os.stat(path)
    except OSError:
        return None, None
    key = (path, status.st_mtime_ns, status.st_size)
    if key not in _parsed:
        _parsed.clear()
        _parsed[key] = _parse_credentials(path)
    return _parsed[key]


def _parse_credentials(path: str) -> tuple[str | None, str | None]:
    config = configparser.ConfigParser()
    try:
        config.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None, None
    if "mlflow" not in config:
        return None, None
    section = config["mlflow"]
    return section.get("mlflow_tracking_username"), section.get("mlflow_tracking_password")
