"""Cross-user reproduction on a team server (``mlflow server`` on PostgreSQL, artifacts proxied by the server).

User A trains and registers a model from a project of their own (a notebook that reads ``data/train.csv`` and
registers from a ``%%track --register`` cell), run headlessly with ``nbmlops run``. Then A's project is gone (moved
away: B's machine has none of it) and user B, in an empty folder, reproduces A's model version and A's cell run:
the notebook comes from the run's artifacts, the data from the snapshot store on the server, by fingerprint. The
verdict must hold (metrics within tolerance, the same data fingerprints), and no version is registered unless B
asks with ``--register``, which tags the new version as a reproduction of A's.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from tests.reliability.faults import clean_env, nbmlops_cli, project_folder

SETUP = (
    "%load_ext nbmlops\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\n"
    "from sklearn.model_selection import train_test_split"
)
READ = (
    "df = pd.read_csv(data_path)\n"
    "X_train, X_test, y_train, y_test = train_test_split(df.drop(columns='target'), df['target'], random_state=0)"
)


def _alice_project(folder: Path, model: str) -> Path:
    from sklearn.datasets import load_iris

    project_folder(folder)
    (folder / "data").mkdir()
    features, target = load_iris(return_X_y=True, as_frame=True)
    features.assign(target=target).to_csv(folder / "data" / "train.csv", index=False)
    parameters = new_code_cell("data_path = 'data/train.csv'")
    parameters.metadata["tags"] = ["parameters"]
    train = new_code_cell(
        f"%%track --name train --register model {model}\n"
        "model = LogisticRegression(max_iter=1000).fit(X_train, y_train)\naccuracy = model.score(X_test, y_test)"
    )
    notebook = new_notebook(cells=[new_code_cell(SETUP), parameters, new_code_cell(READ), train])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "train.ipynb")
    return folder


def _versions(client, model: str) -> dict[int, object]:
    return {int(v.version): v for v in client.search_model_versions(f"name = '{model}'")}


def _digests(client, run_id: str) -> dict[str, str]:
    return {d.dataset.name: d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs}


def _cells_of(client, notebook_run_id: str) -> list:
    run = client.get_run(notebook_run_id)
    return client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{notebook_run_id}'")


def _reproduced(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.startswith("REPRODUCED: "), result.stdout
    assert "DIFF" not in result.stdout and "\ndata:" not in result.stdout, result.stdout  # same data fingerprints
    assert "ok    metric accuracy" in result.stdout, result.stdout
    return result.stdout


def test_user_b_reproduces_user_a_registered_model_from_an_empty_folder_without_registering_unless_asked(
    team_server, tmp_path
):
    from mlflow import MlflowClient

    client = MlflowClient(team_server.uri)
    model = f"iris-{uuid.uuid4().hex[:8]}"
    alice = _alice_project(tmp_path / "alice", model)
    alice_env = clean_env(NBMLOPS_TRACKING_URI=team_server.uri, LOGNAME="alice", USER="alice")
    trained = nbmlops_cli(alice, "run", "train.ipynb", "--no-progress", env=alice_env, timeout=600)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (version,) = _versions(client, model).values()
    cell_run = client.get_run(version.run_id)
    notebook_run_id = cell_run.data.tags["mlflow.parentRunId"]
    original_data = {**_digests(client, notebook_run_id), **_digests(client, version.run_id)}
    assert {"data_path", "X_train", "y_train", "X_test", "y_test"} <= original_data.keys()
    alice.rename(tmp_path / "elsewhere")  # none of A's files are where they were: B's machine has none of them

    bob = tmp_path / "bob"
    bob.mkdir()
    bob_env = clean_env(NBMLOPS_TRACKING_URI=team_server.uri, LOGNAME="bob", USER="bob")

    # the model version: its headless notebook run, from its input notebook, the data file from its snapshot
    report = _reproduced(nbmlops_cli(bob, "reproduce", f"{model}/1", "--no-progress", env=bob_env, timeout=900))
    assert report.startswith(f"REPRODUCED: notebook run {notebook_run_id}"), report
    assert "data_path: data/train.csv is gone; used snapshot" in report
    assert f"registration skipped: {model}" in report
    assert list(_versions(client, model)) == [1]
    new_notebook_run = report.split("new run: ")[1].split()[0]
    (new_cell,) = _cells_of(client, new_notebook_run)
    assert new_cell.data.tags["nbmlops.registration_skipped"] == model
    assert {**_digests(client, new_notebook_run), **_digests(client, new_cell.info.run_id)} == original_data

    # the cell run itself: a notebook rebuilt from its kernel history, its inputs restored from their snapshots
    report = _reproduced(nbmlops_cli(bob, "reproduce", version.run_id, "--no-progress", env=bob_env, timeout=900))
    assert "X_train is missing; restored from snapshot" in report
    assert list(_versions(client, model)) == [1]

    # asked to register: a new version, tagged as a reproduction of A's
    report = _reproduced(
        nbmlops_cli(bob, "reproduce", f"{model}/1", "--register", "--no-progress", env=bob_env, timeout=900)
    )
    versions = _versions(client, model)
    assert sorted(versions) == [1, 2], report
    assert versions[2].tags["nbmlops.reproduction_of"] == f"{model}/1"
    assert f"registered {model}/2 (nbmlops.reproduction_of={model}/1)" in report
    assert client.get_run(versions[2].run_id).data.tags["mlflow.user"] == "bob"
    assert sorted(p.name for p in bob.iterdir()) == [".nbmlops"]  # B never needed A's files
