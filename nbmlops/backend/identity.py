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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from nbmlops.exceptions import PermissionRefused

__all__ = [
    "PermissionRefused", "ServerCredentials", "authenticated_user", "claimed_user", "naming", "permission_refused",
    "recorded_user", "server_credentials", "tls_context",
]

CURRENT_USER_PATH = "/api/2.0/mlflow/users/current"

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
        (r"/(get|search|get-latest-versions|get-download-uri)$|^registered-models/alias/get",
         "read", "READ", "registered model"),
        (r"^(registered-models|model-versions)/", "change", "EDIT", "registered model"),
    )
)
_ENDPOINT = re.compile(r"endpoint \S*?/mlflow/([\w\-/]+)")


@dataclass(frozen=True)
class ServerCredentials:
    """A tracking server's base URL (credentials taken out), the headers carrying the credentials MLflow would
    send, and the user name they claim (None for a token, or none)."""

    base_url: str
    headers: dict[str, str]
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
    """The MLflow user name the client authenticates as at ``uri`` (a tracking server), without asking anyone:
    the user of the URI, else ``MLFLOW_TRACKING_USERNAME`` (else ``~/.mlflow/credentials``) as MLflow records it in
    ``mlflow.user``; None for any other store or when no name is given."""
    if not uri.startswith(("http://", "https://")):
        return None
    parts = urllib.parse.urlsplit(uri)
    if parts.username is not None:
        return urllib.parse.unquote(parts.username) or None
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or _credentials_file()[0] or None


_known: dict[tuple[str, str], str | None] = {}  # (base URL, digest of the credentials) -> user, None: no auth app
_known_lock = threading.Lock()


def authenticated_user(uri: str, timeout: float) -> str | None:
    """The user an authenticating tracking server at ``uri`` authenticated these credentials as (its
    ``users/current`` answer), or None: not a tracking server, no such endpoint (nothing there authenticates
    users by name), credentials refused, or no answer within ``timeout`` s. Remembered for the process, by
    server and credentials (but a failure to ask: no answer, a 5xx)."""
    if not uri.startswith(("http://", "https://")):
        return None
    credentials = server_credentials(uri)
    key = (credentials.base_url, hashlib.sha256(json.dumps(credentials.headers).encode()).hexdigest())
    with _known_lock:
        if key in _known:
            return _known[key]
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
        _known[key] = found
    return found


def recorded_user(uri: str, timeout: float) -> str | None:
    """The name to record as the one acting on the store at ``uri``: the user an authenticating server
    confirms, else the user name the credentials claim (a server without MLflow's auth app may sit behind a
    proxy that authenticates them), else None (nothing names a user: record the OS user)."""
    return authenticated_user(uri, timeout) or claimed_user(uri)


def permission_refused(uri: str, display_uri: str, message: str, timeout: float) -> PermissionRefused | None:
    """The :class:`PermissionRefused` for a 403 that MLflow raised with ``message``, when the server at ``uri``
    knows the user it refused (else None: the credentials themselves are not let in)."""
    user = authenticated_user(uri, timeout)
    if user is None:
        return None
    found = _ENDPOINT.search(message)
    endpoint = found.group(1).rstrip("/") if found else ""
    for pattern, action, permission, kind in _ENDPOINTS:
        if endpoint and pattern.search(endpoint):
            return PermissionRefused(display_uri, user, action, permission, kind)
    return PermissionRefused(display_uri, user, f"call {endpoint or 'this endpoint'} for", "more", None)


@contextlib.contextmanager
def naming(kind: str, resource: str) -> Iterator[None]:
    """Within the block, a :class:`PermissionRefused` about a ``kind`` (``experiment``, ``registered model``)
    leaves naming ``resource``."""
    try:
        yield
    except PermissionRefused as refused:
        named = refused.naming(kind, resource)
        if named is refused:
            raise
        raise named from None


def tls_context() -> ssl.SSLContext:
    """Certificate checks as MLflow makes them: ``MLFLOW_TRACKING_INSECURE_TLS`` skips them,
    ``MLFLOW_TRACKING_SERVER_CERT_PATH`` names the CA bundle."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def _credentials_file() -> tuple[str | None, str | None]:
    """``mlflow_tracking_username`` and ``_password`` of ``~/.mlflow/credentials``'s ``[mlflow]`` section, as
    MLflow reads them."""
    path = os.path.expanduser("~/.mlflow/credentials")
    if not os.path.isfile(path):
        return None, None
    config = configparser.ConfigParser()
    try:
        config.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None, None
    if "mlflow" not in config:
        return None, None
    section = config["mlflow"]
    return section.get("mlflow_tracking_username"), section.get("mlflow_tracking_password")
