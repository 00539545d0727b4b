"""A real Jupyter server with the nbmlops extension enabled, on the shared sqlite store.

pytest-jupyter's fixtures (``jp_fetch``, ``jp_serverapp``, ...) are imported here rather than declared as a
plugin, so that its autouse event loop only applies to the tests of this folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from pytest_jupyter.jupyter_server import *  # jupyter_server's fixtures, for this folder only
from traitlets.config import Config


@pytest.fixture
def jp_server_config() -> Config:
    """The server the extension is installed into: nbmlops enabled, as its jupyter-config file does."""
    return Config({"ServerApp": {"jpserver_extensions": {"nbmlops": True}}})


@pytest.fixture
def root(jp_root_dir: Path, project: Path) -> Path:
    """The server's root: a project of its own (its ``.nbmlops`` holds job logs and executed notebooks)."""
    (jp_root_dir / "pyproject.toml").write_text("[project]\nname = 'served'\n")
    return jp_root_dir


@pytest.fixture
def api(jp_fetch: Any, root: Path):
    """``await api(method, "runs", ...)`` -> ``(status, decoded JSON)``; never raises on an error status."""

    async def call(method: str, *parts: str, body: Any = None, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if method == "GET" else (body if isinstance(body, (str, bytes)) else json.dumps(body or {}))
        response = await jp_fetch("nbmlops", "api", *parts, method=method, body=data, params=params,
                                  headers=headers, raise_error=False)
        return response.code, json.loads(response.body) if response.body else None

    return call


@pytest.fixture
def jobs(jp_serverapp: Any):
    """The server's job manager; every job still running is stopped after the test."""
    manager = jp_serverapp.web_app.settings["nbmlops_jobs"]
    yield manager
    manager.stop_all(grace=5)


@pytest.fixture
def make_notebook(root: Path):
    """``make_notebook("a/b.ipynb", *cells, parameters=...)`` writes a notebook under the root; returns its path."""

    def make(relative: str, *cells: str, parameters: str | None = None) -> Path:
        return write_notebook(root / relative, *cells, parameters=parameters)

    return make


def write_notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    """A Python notebook with an optional ``parameters`` cell followed by ``cells``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path
