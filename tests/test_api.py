"""The Python API behaves the same in scripts as in cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.exceptions import TrackingError
from tests.conftest import runs_of


def test_track_context_manager_records_params_metrics_dataset_and_status(project, client, request):
    df = pd.DataFrame({"a": np.arange(50_000), "b": np.linspace(0, 1, 50_000)})
    with nbmlops.track("api", params={"lr": 0.1}, tags={"team": "x"}) as run:
        nbmlops.log_params({"depth": 3})
        nbmlops.log_metrics({"loss": 0.5, "acc": 0.9})
        nbmlops.log_metric("loss", 0.25)
        digest = nbmlops.log_dataset(df, "train", context="training")
    nbmlops.flush(60)
    (stored,) = runs_of(client, request.node.name)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {"lr": "0.1", "depth": "3"}
    assert stored.data.tags["team"] == "x" and stored.data.tags["nbmlops.run_key"] == run.key
    assert [m.value for m in client.get_metric_history(stored.info.run_id, "loss")] == [0.5, 0.25]
    (dataset_input,) = stored.inputs.dataset_inputs
    assert dataset_input.dataset.digest == digest == nbmlops.fingerprint(df)
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_nested_track_is_a_child_run(project, client, request):
    with nbmlops.track("parent"):
        with nbmlops.track("child"):
            nbmlops.log_metric("inner", 1.0)
        nbmlops.log_metric("outer", 2.0)
    nbmlops.flush(60)
    parent, child = sorted(runs_of(client, request.node.name), key=lambda r: r.info.run_name != "parent")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics == {"inner": 1.0} and parent.data.metrics == {"outer": 2.0}


def test_exception_in_block_fails_run_and_propagates(project, client, request):
    with pytest.raises(ZeroDivisionError):
        with nbmlops.track("bad"):
            _ = 1 / 0
    nbmlops.flush(60)
    (stored,) = runs_of(client, request.node.name)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["nbmlops.error.type"] == "ZeroDivisionError"


def test_misuse_is_a_clear_tracking_error(project):
    with pytest.raises(TrackingError, match="no run is active"):
        nbmlops.log_metric("x", 1.0)
    with nbmlops.track("conflict"):
        nbmlops.log_param("a", 1)
        nbmlops.log_param("a", 1)  # same value again is fine, as in MLflow
        with pytest.raises(TrackingError, match="already logged"):
            nbmlops.log_param("a", 2)
        with pytest.raises(TrackingError, match="must be a number"):
            nbmlops.log_metric("m", "high")


def test_script_run_records_script_source_git_state_and_environment(project: Path, client, store_uri):
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    script = project / "train.py"
    script.write_text(
        "import nbmlops\nwith nbmlops.track('script'):\n    nbmlops.log_metric('m', 3.0)\nprint('done')\n"
    )
    subprocess.run(["git", "add", "."], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "init"], cwd=project, check=True
    )
    (project / "notes.txt").write_text("uncommitted\n")
    env = {k: v for k, v in os.environ.items() if k != "NBMLOPS_EXPERIMENT"}
    result = subprocess.run(
        [sys.executable, "train.py"], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    (run,) = runs_of(client, f"{project.name}/train")  # the experiment is named after the project and the script
    tags = run.data.tags
    assert tags["mlflow.source.name"] == str(script.resolve())
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["nbmlops.git.dirty"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "code")}
    assert artifacts == {"code/train.py"}
    diff = Path(client.download_artifacts(run.info.run_id, "git/diff.patch")).read_text()
    assert "notes.txt" in diff
    env = json.loads(Path(client.download_artifacts(run.info.run_id, "environment/python.json")).read_text())
    assert env["python_version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert list((project / ".nbmlops" / "journal").glob("*.journal")) == []  # delivered, then removed at exit



def test_files_and_bytes_are_logged_as_datasets(project: Path, client, request):
    data = project / "data.csv"
    data.write_text("a,b\n1,2\n")
    with nbmlops.track("files"):
        file_digest = nbmlops.log_dataset(data, "csv")
        blob_digest = nbmlops.log_dataset(b"raw bytes", "blob")
    nbmlops.flush(60)
    (stored,) = runs_of(client, request.node.name)
    datasets = {d.dataset.name: d.dataset for d in stored.inputs.dataset_inputs}
    assert datasets["csv"].digest == file_digest == nbmlops.fingerprint(str(data))
    assert datasets["csv"].source_type == "local" and data.resolve().as_uri() in datasets["csv"].source
    assert datasets["blob"].digest == blob_digest
