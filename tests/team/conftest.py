"""Fixtures of the team tests: one private PostgreSQL per session, a database per ``mlflow server``, an S3 API.

The servers themselves are in ``servers.py`` (plain context managers; ``benchmarks/bench_team.py`` uses them too);
fault helpers and processes run in a project folder are in ``tests/reliability/faults.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.faults import clean_env
from tests.team.servers import S3, MissingPostgres, TeamServer, mlflow_team_server, new_database, postgres, s3_server


@pytest.fixture(scope="session")
def pg_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The superuser URI of a private PostgreSQL on 127.0.0.1 for the whole session (``postgresql://...``);
    make a database of your own with ``servers.new_database(pg_uri)``. Skips when PostgreSQL is not installed."""
    try:
        with postgres(tmp_path_factory.mktemp("postgres")) as uri:
            yield uri
    except MissingPostgres as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def team_server(pg_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """A real ``mlflow server`` on a PostgreSQL database of its own, artifacts proxied by the server into a
    folder (``--artifacts-destination <dir> --serve-artifacts``), started with a clean environment; shared by
    the session: name experiments after the test."""
    folder = tmp_path_factory.mktemp("team-server")
    with mlflow_team_server(folder, new_database(pg_uri, "team"), str(folder / "artifacts"), env=clean_env()) as server:
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A real S3 API on 127.0.0.1 (``moto`` in server mode) with a bucket; ``s3.env`` is what a client needs."""
    with s3_server(tmp_path_factory.mktemp("s3")) as store:
        yield store


@pytest.fixture(scope="session")
def s3_team_server(pg_uri: str, s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """A real ``mlflow server`` on PostgreSQL whose artifacts it stores in the S3 bucket under ``proxied/``
    (``--artifacts-destination s3://<bucket>/proxied --serve-artifacts``): clients need no S3 credentials."""
    folder = tmp_path_factory.mktemp("s3-team-server")
    with mlflow_team_server(folder, new_database(pg_uri, "team_s3"), s3.uri("proxied"),
                            env=clean_env(**s3.env)) as server:
        yield server
