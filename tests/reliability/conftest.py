"""Fixtures of the reliability tests (their helpers are in ``faults.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import mlflow_server
from tests.reliability.faults import clean_env, project_folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 shared by the tests of one module, started with a clean environment;
    yields its URI."""
    with mlflow_server(tmp_path_factory.mktemp("server"), env=clean_env()) as uri:
        yield uri


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A project folder of the test's own (``tmp_path/project``) for processes the test starts there."""
    return project_folder(tmp_path / "project")
