"""A registered model's training data is snapshotted and its version's lineage points at that snapshot, whether the
model is registered by ``%%track --register`` or by ``nbmlops.register`` inside ``nbmlops.track()`` (real sqlite
store and registry, real IPython shell)."""

from __future__ import annotations

import uuid

import pandas as pd

import nbmlops
from nbmlops.data import SnapshotStore, fingerprint
from nbmlops.registry import get_version
from nbmlops.registry.lineage import lineage
from nbmlops.tracking.run import SNAPSHOT_TAG

IMPORTS = "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
#: the registering cell reads the file itself and builds the data it trains on
TRAIN_FROM_FILE = (
    "df = pd.read_csv('data/train.csv')\n"
    "X_train, y_train = df.drop(columns='target'), df['target']\n"
    "model = LogisticRegression(max_iter=1000).fit(X_train, y_train)\n"
    "accuracy = model.score(X_train, y_train)"
)


def _name(request) -> str:
    return f"m-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


def _write_training_file(project) -> pd.DataFrame:
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True, as_frame=True)
    frame = features.assign(target=target)
    (project / "data").mkdir(exist_ok=True)
    frame.to_csv(project / "data" / "train.csv", index=False)
    return pd.read_csv(project / "data" / "train.csv")


def _snapshot_tags(client, run_id: str) -> dict[str, str]:
    tags = client.get_run(run_id).data.tags
    return {k[len(SNAPSHOT_TAG):]: v for k, v in tags.items() if k.startswith(SNAPSHOT_TAG)}


def test_registering_cell_snapshots_its_training_data_as_a_plain_cell_does_and_lineage_points_at_it(
    shell, client, request, project
):
    frame = _write_training_file(project)
    features = fingerprint(frame.drop(columns="target"))
    name = _name(request)
    shell.run_cell(IMPORTS)
    shell.run_cell_magic("track", "--name plain", TRAIN_FROM_FILE)
    shell.run_cell_magic("track", f"--name registering --register model {name}", TRAIN_FROM_FILE)
    nbmlops.flush(120)

    version = get_version(f"{name}/1")
    experiment = client.get_run(version.run_id).info.experiment_id
    (plain,) = [r for r in client.search_runs([experiment]) if r.info.run_name == "plain"]
    assert _snapshot_tags(client, version.run_id) == _snapshot_tags(client, plain.info.run_id)
    assert _snapshot_tags(client, version.run_id)[features] == "stored"
    assert features in SnapshotStore(project / ".nbmlops" / "data")
    # the version names the data it was trained on, by the fingerprint whose snapshot the run stored
    assert version.datasets("training") == {"X_train": features, "y_train": fingerprint(frame["target"])}
    assert version.tags["nbmlops.data.features"] == features
    chain = lineage(f"{name}/1")
    assert {(link.name, link.snapshot) for link in chain.datasets if link.fingerprint == features} == {("X_train", True)}


def test_register_inside_track_uses_the_training_and_evaluation_data_the_run_logged(project, client, request):
    from mlflow.models import get_model_info
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    name = _name(request)
    with nbmlops.track("fit"):
        nbmlops.log_dataset(X_train, "X_train", context="training")
        nbmlops.log_dataset(X_test, "X_test", context="evaluation")
        model = LogisticRegression(max_iter=1000).fit(X_train, y_train)
        nbmlops.log_metric("accuracy", model.score(X_test, y_test))
        version = nbmlops.register(model, name, timeout=120)
    nbmlops.flush(120)

    assert version is not None and client.get_run(version.run_id).info.run_name == "fit"
    assert version.datasets("training") == {"X_train": fingerprint(X_train)}
    assert version.datasets("evaluation") == {"X_test": fingerprint(X_test)}
    assert version.tags["nbmlops.data.features"] == fingerprint(X_train)
    assert _snapshot_tags(client, version.run_id)[fingerprint(X_train)] == "stored"
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        info = get_model_info(f"models:/{name}/1")
    finally:
        mlflow.set_tracking_uri(None)
    assert info.signature is not None and info.signature.inputs.input_names() == list(X_train.columns)
    assert info.saved_input_example_info is not None
