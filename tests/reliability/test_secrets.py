"""Item 2 of the trust issue: secrets planted every way a user leaks them never reach a stored byte or the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from nbmlops.config import resolve_settings
from nbmlops.tracking.summary import run_url

SECRETS = {
    "papermill parameter named db_password": "Pw9dbParamSecret",
    "tag named api_key on a %%track line": "TagSecretApiKey77",
    "GitHub token inside an exception message": "ghp_" + "Q7wErTy" * 6,
    "AWS access key id printed by a cell": "AKIA" + "ZXCVBNMASDFGHJKL",
    "JWT in a cell's output": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA",
}


def _notebook(path: Path) -> Path:
    jwt = SECRETS["JWT in a cell's output"]
    parameters = new_code_cell('C = 1.0\ndb_password = ""')
    parameters.metadata["tags"] = ["parameters"]
    failing = new_code_cell(
        "%%track --name failing\n"
        f"raise RuntimeError('login refused for {SECRETS['GitHub token inside an exception message']}')"
    )
    failing.metadata["tags"] = ["raises-exception"]
    cells = [
        parameters,
        new_code_cell("%load_ext nbmlops"),
        new_code_cell(
            f"%%track --name tagged --tag api_key={SECRETS['tag named api_key on a %%track line']} --tag team=ml\n"
            "connected = len(db_password) > 0\nscore = C * 2"
        ),
        failing,
        new_code_cell(
            f"key_id = 'AKIA' + '{SECRETS['AWS access key id printed by a cell'][4:]}'\nprint('using', key_id)\n"
            f"print({jwt!r})"
        ),
    ]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def _leaks(folder: Path, text: str, source: Path) -> dict[str, list[str]]:
    """Secret -> the files under ``folder`` but the user's own ``source`` (every byte, the sqlite store
    included) or the CLI output holding it."""
    found: dict[str, list[str]] = {}
    files = [p for p in folder.rglob("*") if p.is_file() and p != source]
    for label, secret in SECRETS.items():
        needle = secret.encode()
        where = [str(p.relative_to(folder)) for p in files if needle in p.read_bytes()]
        if secret in text:
            where.append("CLI output")
        if where:
            found[label] = where
    return found


def test_no_planted_secret_reaches_the_store_the_notebooks_or_the_cli(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'leaky'\n")
    _notebook(tmp_path / "leaky.ipynb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    result = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "run", "leaky.ipynb", "-p", "db_password",
         SECRETS["papermill parameter named db_password"]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert (tmp_path / ".nbmlops" / "mlflow.db").is_file()
    executed = list(tmp_path.rglob("leaky*.ipynb"))
    assert len(executed) >= 2  # the input and the executed notebook
    assert _leaks(tmp_path, shown, tmp_path / "leaky.ipynb") == {}
    # what was redacted is still recognisable as such, and the run still says what it did
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/.nbmlops/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (failing,) = client.search_runs(experiments, "attributes.run_name = 'failing'")
    assert failing.data.tags["nbmlops.error.type"] == "RuntimeError"
    assert failing.data.tags["nbmlops.error.message"] == "login refused for ***"
    (tagged,) = client.search_runs(experiments, "attributes.run_name = 'tagged'")
    assert tagged.data.tags["api_key"] == "***" and tagged.data.tags["team"] == "ml"


def test_links_printed_for_a_server_with_credentials_carry_none(monkeypatch):
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", "http://alice:Pa55wordXYZ@127.0.0.1:5999")
    monkeypatch.delenv("NBMLOPS_UI_URL", raising=False)
    settings = resolve_settings()
    assert settings.ui_url == "http://127.0.0.1:5999"
    assert "Pa55wordXYZ" not in run_url("https://bob:Pa55wordXYZ@mlflow.example/", "1", "abc")
