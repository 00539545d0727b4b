"""A real ``mlflow server --app-name basic-auth`` on 127.0.0.1 (sqlite stores in a temporary folder), with an admin
and the users a test asks for, made through MLflow's own auth REST API; permissions granted the same way.

A plain context manager: :func:`auth_server` yields an :class:`AuthServer`. The auth configuration is a file of
its own (``MLFLOW_AUTH_CONFIG_PATH``) with the ``default_permission`` the test chooses; every wait is bounded and
the server's process group is ended on exit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port, stop_group
from tests.reliability.faults import clean_env

START_TIMEOUT_S = 180.0
ADMIN = "admin"


@dataclass
class AuthServer:
    """A running basic-auth server: its URI (no credentials in it), the admin's password, the users made so far
    (name -> password)."""

    uri: str
    admin_password: str
    folder: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, user: str = ADMIN,
             query: str = "") -> Any:
        """One REST call as ``user`` (the admin by default); returns the JSON answer."""
        password = self.admin_password if user == ADMIN else self.passwords[user]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.uri}{path}{'?' + query if query else ''}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            text = reply.read().decode()
        return json.loads(text) if text.strip() else {}

    def add_user(self, name: str) -> str:
        """Make user ``name`` (not an admin); returns its password."""
        password = f"{name}-{secrets.token_hex(8)}"
        self.call("POST", "/api/2.0/mlflow/users/create", {"username": name, "password": password})
        self.passwords[name] = password
        return password

    def grant(self, user: str, resource_type: str, resource_id: str, permission: str) -> None:
        """Give ``user`` ``permission`` (READ, USE, EDIT, MANAGE) on a ``registered_model`` or ``experiment``."""
        self.call("POST", "/api/3.0/mlflow/users/permissions/grant",
                  {"username": user, "resource_type": resource_type, "resource_id": resource_id,
                   "permission": permission})

    def env(self, user: str, **extra: str) -> dict[str, str]:
        """A clean environment that tracks to this server as ``user`` (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``)."""
        return clean_env(NBMLOPS_TRACKING_URI=self.uri, MLFLOW_TRACKING_USERNAME=user,
                         MLFLOW_TRACKING_PASSWORD=self.passwords[user], **extra)


@contextlib.contextmanager
def auth_server(folder: Path, default_permission: str = "READ") -> Iterator[AuthServer]:
    """``mlflow server --app-name basic-auth`` on a sqlite store in ``folder``; yields it once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    admin_password = f"admin-{secrets.token_hex(8)}"
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = clean_env(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
                    MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        server = AuthServer(uri, admin_password, folder)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                server.call("GET", "/api/2.0/mlflow/users/current")
                break
            except (OSError, urllib.error.HTTPError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"basic-auth server did not start:\n{(folder / 'server.log').read_text()}") \
                        from None
                time.sleep(0.5)
        yield server
    finally:
        stop_group(process)
