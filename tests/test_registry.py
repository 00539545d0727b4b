"""Registering models with their lineage, on a real MLflow registry (sqlite), from cells and from Python."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import uuid

import pandas as pd
import pytest

import nbmlops
from nbmlops.cli import main
from nbmlops.data import fingerprint
from nbmlops.registry import (
    ModelNotFoundError,
    ModelReferenceError,
    UnsupportedModelError,
    get_version,
    list_versions,
    parse_reference,
)

SETUP = """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
X, y = load_iris(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
"""


def _name(request) -> str:
    return f"m-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


def test_track_register_logs_sklearn_flavor_with_signature_and_lineage(shell, client, request, project):
    name = _name(request)
    shell.run_cell(SETUP)
    shell.run_cell_magic(
        "track", f"--register model {name}",
        "C = 0.5\nmodel = LogisticRegression(C=C, max_iter=500).fit(X_train, y_train)\n"
        "accuracy = model.score(X_test, y_test)",
    )
    nbmlops.flush(120)
    version = get_version(f"{name}/1")
    ns = shell.user_ns
    assert version.datasets("training") == {"X_train": fingerprint(ns["X_train"]), "y_train": fingerprint(ns["y_train"])}
    assert version.datasets("evaluation") == {"X_test": fingerprint(ns["X_test"]), "y_test": fingerprint(ns["y_test"])}
    assert version.tags["nbmlops.data.features"] == fingerprint(ns["X_train"])
    assert json.loads(version.tags["nbmlops.params"])["C"] == "0.5"
    assert version.tags["nbmlops.model_class"].endswith("LogisticRegression")
    run = client.get_run(version.run_id)
    assert run.data.tags["nbmlops.kind"] == "cell" and run.data.metrics["accuracy"] > 0.9
    assert version.run_id == version.tags["nbmlops.run_id"]

    import mlflow.pyfunc

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    finally:
        mlflow.set_tracking_uri(None)
    assert loaded.metadata.flavors["sklearn"]["serialization_format"] == "skops"
    assert loaded.metadata.signature.inputs.input_names() == list(ns["X_train"].columns)
    assert (loaded.predict(ns["X_test"]) == ns["model"].predict(ns["X_test"])).all()
    assert not list((project / ".nbmlops" / "models").glob("*"))  # staging files are removed once registered


def test_register_refuses_a_failed_cell_bad_names_and_foreign_models(shell, client, request, capsys):
    name = _name(request)
    shell.run_cell(SETUP)
    result = shell.run_cell(f"%%track --register model {name}\nmodel = LogisticRegression().fit(X_train, y_train)\n1/0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)  # the cell's own error, unchanged
    nbmlops.flush(60)
    with pytest.raises(ModelNotFoundError):
        list_versions(name)
    bad = shell.run_cell("%%track --register model a/b\nx = 1")
    assert "model name 'a/b'" in str(bad.error_before_exec or bad.error_in_exec)
    shell.run_cell_magic("track", f"--register thing {name}", "thing = object()")
    assert "nbmlops registers scikit-learn" in capsys.readouterr().err
    with pytest.raises(UnsupportedModelError):
        nbmlops.register({"not": "a model"}, name)
    with pytest.raises(ModelReferenceError):
        parse_reference("iris@latest")


def test_python_api_registers_outside_a_run_with_its_own_run(project, client, request):
    import numpy as np
    from sklearn.linear_model import LinearRegression

    name = _name(request)
    X = np.arange(20, dtype=float).reshape(10, 2)
    y = X @ [1.0, 2.0]
    version = nbmlops.register(LinearRegression().fit(X, y), name, training_data=X, timeout=120)
    assert (version.name, version.version) == (name, 1)
    run = client.get_run(version.run_id)
    assert run.info.run_name == f"register {name}" and run.info.status == "FINISHED"
    assert version.datasets("training") == {"training_data": fingerprint(X)}


def test_replayed_registration_creates_one_version(project, request):
    from sklearn.dummy import DummyClassifier

    from nbmlops.backend.models import deliver_model
    from nbmlops.registry.models import registry_client

    name = _name(request)
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    with nbmlops.track("train") as run:
        pass
    nbmlops.flush(60)
    run_id = get_run_id(run)
    import skops.io

    staged = project / "model.skops"
    data = skops.io.dumps(model)
    staged.write_bytes(data)
    record = {"t": "model", "run": run.key, "key": uuid.uuid4().hex, "name": name, "file": str(staged),
              "trusted": skops.io.get_untrusted_types(file=staged), "sha256": hashlib.sha256(data).hexdigest(),
              "training": {}, "evaluation": {}}
    client = registry_client()
    deliver_model(client, run_id, dict(record))
    deliver_model(client, run_id, dict(record))  # a replay after the staged file was consumed
    assert [v.version for v in list_versions(name)] == [1]


def test_a_staged_model_swapped_before_delivery_is_refused(project, request):
    import skops.io
    from sklearn.dummy import DummyClassifier

    from nbmlops.backend.models import deliver_model
    from nbmlops.backend.store import RecordRejected
    from nbmlops.registry.models import registry_client

    with nbmlops.track("train") as run:
        pass
    nbmlops.flush(60)
    staged = project / "model.skops"
    record = {"t": "model", "run": run.key, "key": uuid.uuid4().hex, "name": _name(request), "file": str(staged),
              "trusted": [], "training": {}, "evaluation": {},
              "sha256": hashlib.sha256(skops.io.dumps(DummyClassifier().fit([[0], [1]], [0, 1]))).hexdigest()}
    staged.write_bytes(skops.io.dumps(DummyClassifier(strategy="uniform").fit([[0], [1]], [0, 1])))
    with pytest.raises(RecordRejected, match="SHA-256 differs"):
        deliver_model(registry_client(), get_run_id(run), record)
    with pytest.raises(ModelNotFoundError):
        list_versions(record["name"])


def test_registration_records_the_sha256_of_the_logged_model(project, request, client, tmp_path):
    from mlflow.artifacts import download_artifacts
    from sklearn.linear_model import LogisticRegression

    from nbmlops.registry.safe_load import SHA256_TAG, model_digest

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    version = nbmlops.register(LogisticRegression().fit(X, [0, 0, 1, 1]), _name(request), training_data=X,
                               timeout=60)
    local = download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path))
    assert version.tags[SHA256_TAG] == model_digest(local)
    (logged,) = client.search_logged_models([client.get_run(version.run_id).info.experiment_id],
                                            filter_string=f"tags.`nbmlops.registered_as` = '{version.name}'")
    assert logged.tags[SHA256_TAG] == version.tags[SHA256_TAG]


def test_a_version_mlflow_itself_loaded_from_a_local_store_still_passes_its_digest_check(project, request, capsys,
                                                                                          store_uri, monkeypatch):
    """MLflow's loader of a ``models:/`` URI writes ``registered_model_meta`` into the stored model folder of a local
    artifact store (``mlflow models serve -m models:/...`` does): that file is no part of the model."""
    import mlflow.pyfunc
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    version = nbmlops.register(LogisticRegression().fit(X, [0, 0, 1, 1]), _name(request), training_data=X,
                               timeout=60)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    X.to_csv("live.csv", index=False)
    assert main(["monitor", f"{version.name}/{version.version}", "live.csv"]) == 0, capsys.readouterr().err


def get_run_id(run) -> str:
    from nbmlops.tracking.session import get_session

    return get_session().run_ids[run.key][0]


def test_concurrent_registrations_get_distinct_versions_none_lost(project, request):
    name = _name(request)
    script = textwrap.dedent(f"""
        import nbmlops
        from sklearn.dummy import DummyClassifier
        for i in range(3):
            nbmlops.register(DummyClassifier().fit([[0], [1]], [0, 1]), {name!r}, timeout=300)
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script], cwd=project, stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    versions = list_versions(name)
    assert sorted(v.version for v in versions) == list(range(1, 13))
    assert len({v.tags["nbmlops.registration_key"] for v in versions}) == 12


def test_models_cli_lists_and_shows(project, request, capsys):
    from sklearn.dummy import DummyRegressor

    name = _name(request)
    nbmlops.register(DummyRegressor().fit([[0], [1]], [0, 1]), name, timeout=120)
    assert main(["models", "list"]) == 0
    assert name in capsys.readouterr().out
    assert main(["models", "show", name]) == 0
    out = capsys.readouterr().out
    assert f"model {name}: 1 version(s)" in out and "no promotion was attempted" in out
    assert main(["models", "show", "no-such-model-here"]) == 2
    assert "no model no-such-model-here" in capsys.readouterr().err


def test_lineage_follows_model_to_run_cell_data_and_producer(shell, request, capsys, project):
    name = _name(request)
    shell.run_cell(SETUP)
    shell.run_cell_magic("track", "--data features", "features = X_train * 1.0")  # a run that outputs features
    shell.run_cell_magic(
        "track", f"--register model {name}", "model = LogisticRegression(max_iter=500).fit(features, y_train)"
    )
    nbmlops.flush(120)
    version = get_version(f"{name}/1")
    assert main(["lineage", f"{name}/1"]) == 0
    out = capsys.readouterr().out
    producer = [line for line in out.splitlines() if "produced by run" in line]
    assert f"model {name} version 1" in out and version.run_id in out
    assert fingerprint(shell.user_ns["features"]) in out and len(producer) == 1
    assert version.tags["nbmlops.data.features"] == fingerprint(shell.user_ns["features"])
    assert main(["lineage", version.run_id]) == 0
    assert fingerprint(shell.user_ns["y_train"]) in capsys.readouterr().out
    assert main(["lineage", f"{name}@champion"]) == 2


def test_register_called_inside_a_tracked_cell_registers_after_the_cell(shell, request):
    name = _name(request)
    shell.run_cell(SETUP + "import nbmlops")
    shell.run_cell_magic(
        "track", "",
        f"model = LogisticRegression(max_iter=500).fit(X_train, y_train)\n"
        f"registered = nbmlops.register(model, {name!r}, training_data=X_train, evaluation_data=X_test)",
    )
    assert shell.user_ns["registered"] is None
    nbmlops.flush(120)
    version = get_version(f"{name}/1")
    assert version.tags["nbmlops.data.features"] == fingerprint(shell.user_ns["X_train"])
