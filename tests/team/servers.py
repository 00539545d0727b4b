"""The servers a team runs, started for real on 127.0.0.1 in temporary folders: a private PostgreSQL, an
``mlflow server`` on it (artifacts proxied by the server, or written by the clients themselves), and an S3 API
(``moto`` in server mode) with a bucket.

Plain context managers, for the tests of ``tests/team/`` and for ``benchmarks/bench_team.py``. Every wait is
bounded, everything listens on 127.0.0.1 only, and every process started here is ended on exit.

PostgreSQL refuses to run as root: when this process is root (CI, containers) the cluster is created and run as
the ``postgres`` system user that Debian's package makes (``nobody`` when there is none), in a data folder of its
own under the system's temporary directory (pytest's folders are private to root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import NO_JOB_RUNNER, free_port, stop_group

#: the PostgreSQL superuser of a private cluster (its password is made per cluster)
PG_USER = "nbmlops"
#: how long a server may take to come up (an ``mlflow server`` migrating a new PostgreSQL database takes a while
#: on a loaded 2-core machine)
START_TIMEOUT_S = 180.0


class MissingPostgres(RuntimeError):
    """No PostgreSQL server binaries on this machine (``.ci/run`` installs Debian's ``postgresql``)."""


def postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``postgres`` and ``pg_ctl``: the newest under /usr/lib/postgresql (Debian),
    else the one ``initdb`` on PATH is in; None when there is none."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
        key=lambda p: [int(part) if part.isdigit() else 0 for part in p.parent.name.split(".")],
    )
    candidates = [*reversed(found)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / name).exists() for name in ("initdb", "postgres", "pg_ctl")):
            return folder
    return None


def _unprivileged() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when this process is root; None when it is not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise MissingPostgres("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


def _as(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``account`` (nothing when None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1 (a free port; its unix socket in its own folder), password
    authentication over TCP; yields the superuser's URI ``postgresql://nbmlops:<pw>@127.0.0.1:<port>/postgres``
    (make a database of your own with :func:`new_database`). Its log is ``folder/postgres.log``.

    Raises :class:`MissingPostgres` when no PostgreSQL binaries are installed.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise MissingPostgres("no PostgreSQL server binaries (initdb, postgres, pg_ctl); `apt-get install postgresql`")
    account = _unprivileged()
    folder.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="nbmlops-pg-"))
    data, socket_dir, password_file = home / "data", home / "socket", home / "password"
    password = secrets.token_hex(12)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "HOME": str(home)}
    process: subprocess.Popen | None = None
    try:
        socket_dir.mkdir()
        password_file.write_text(password + "\n")
        if account is not None:
            for path in (home, socket_dir, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        with open(folder / "postgres.log", "w") as log:
            made = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={password_file}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                env=env, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=START_TIMEOUT_S, cwd=home,
                **_as(account),
            )
        if made.returncode != 0:
            raise AssertionError(f"initdb failed:\n{(folder / 'postgres.log').read_text()[-4000:]}")
        port = free_port()
        with open(folder / "postgres.log", "a") as log:
            process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(socket_dir),
                 "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home, **_as(account),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                             env=env, check=False, timeout=30).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start:\n{(folder / 'postgres.log').read_text()[-4000:]}")
            time.sleep(0.2)
        yield f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}/postgres"
    finally:
        if process is not None:
            # SIGTERM is PostgreSQL's "smart" shutdown, which waits for clients; SIGINT ("fast") does not
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 2)
            stop_group(process)
        shutil.rmtree(home, ignore_errors=True)


def database_uri(server_uri: str, name: str) -> str:
    """``server_uri`` (any database of the cluster) with the database ``name`` instead."""
    return server_uri.rsplit("/", 1)[0] + "/" + name


def new_database(server_uri: str, name: str | None = None) -> str:
    """Create the database ``name`` (a fresh unique name when None) in the cluster of ``server_uri``; its URI."""
    import psycopg

    name = name or f"db_{secrets.token_hex(6)}"
    with psycopg.connect(server_uri, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return database_uri(server_uri, name)


def query(uri: str, sql: str, *params: object) -> list[tuple]:
    """The rows ``sql`` returns in the database of ``uri`` (read straight from PostgreSQL, past MLflow)."""
    import psycopg

    with psycopg.connect(uri) as connection:
        return connection.execute(sql, params or None).fetchall()


@dataclass(frozen=True)
class TeamServer:
    """A running ``mlflow server`` of :func:`mlflow_team_server`."""

    uri: str  # http://127.0.0.1:<port>
    port: int
    backend_uri: str  # the PostgreSQL database it stores runs and models in
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def mlflow_team_server(
    folder: Path,
    backend_uri: str,
    artifacts_destination: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    app_name: str | None = None,
    proxied: bool = True,
) -> Iterator[TeamServer]:
    """A real ``mlflow server`` on 127.0.0.1 storing runs in ``backend_uri`` (PostgreSQL); yields it once its
    ``/health`` answers.

    ``proxied``: clients send artifacts to the server, which stores them at ``artifacts_destination`` (a folder or
    ``s3://bucket/prefix``: ``--artifacts-destination ... --serve-artifacts``). Not proxied: new experiments get
    ``artifacts_destination`` as their artifact root and clients write there themselves
    (``--default-artifact-root ... --no-serve-artifacts``; they need the store's credentials). ``app_name``: e.g.
    ``basic-auth``. The server's output goes to ``folder/server.log`` (appended: a restart keeps the first log).
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    artifacts = (["--artifacts-destination", artifacts_destination, "--serve-artifacts"] if proxied
                 else ["--default-artifact-root", artifacts_destination, "--no-serve-artifacts"])
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, *artifacts,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if app_name:
        command += ["--app-name", app_name]
    log = folder / "server.log"
    with open(log, "a") as out:
        process = subprocess.Popen(command, cwd=folder, env={**(os.environ if env is None else env), **NO_JOB_RUNNER},
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(uri, process, log)
        yield TeamServer(uri, port, backend_uri, process, log)
    finally:
        stop_group(process)


def _wait_healthy(uri: str, process: subprocess.Popen, log: Path) -> None:
    """Wait until ``/health`` answers, then for one answer of the API (its first request, which opens the
    database, takes seconds on a loaded machine: longer than a client's call budget may be)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        while True:
            try:
                with urllib.request.urlopen(f"{uri}{path}", timeout=30):
                    break
            except urllib.error.HTTPError:  # an answer all the same (an authenticating server's 401)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow server did not start:\n{log.read_text()[-6000:]}") from None
                time.sleep(0.25)


@dataclass(frozen=True)
class S3:
    """A running S3 API (:func:`s3_server`) and its bucket."""

    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    env: dict[str, str]  # what a client (MLflow, boto3) needs to reach it: endpoint and credentials

    def uri(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def client(self) -> Any:
        """A boto3 S3 client on this endpoint."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextlib.contextmanager
def s3_server(folder: Path, bucket: str = "nbmlops-team") -> Iterator[S3]:
    """A real S3 API on 127.0.0.1 (``moto`` in server mode, a process of its own) with ``bucket`` created by
    boto3; yields it. Its output goes to ``folder/s3.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "nbmlops-team-key",
        "AWS_SECRET_ACCESS_KEY": "nbmlops-team-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    with open(folder / "s3.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto server did not start:\n{(folder / 's3.log').read_text()}") from None
                time.sleep(0.2)
        store = S3(endpoint, bucket, env)
        store.client().create_bucket(Bucket=bucket)
        yield store
    finally:
        stop_group(process, grace=5)
