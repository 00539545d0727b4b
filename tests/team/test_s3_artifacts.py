"""Team mode with an S3-compatible artifact store: data snapshots, a registered model and ordinary artifacts (the
cell's code, a figure) go through a real S3 API (``moto`` in server mode on 127.0.0.1), read back with boto3.

Two server configurations, as teams run them:

- proxied: ``mlflow server --artifacts-destination s3://... --serve-artifacts``; clients hold no S3 credentials;
- direct: ``mlflow server --default-artifact-root s3://... --no-serve-artifacts``; clients write to S3
  themselves (``MLFLOW_S3_ENDPOINT_URL`` and AWS credentials in their environment).

One user trains and registers in a project of their own; another user, in a fresh project that has none of the
first one's files, fetches the data snapshot by its fingerprint and loads the model through nbmlops' safe load
path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.faults import clean_env, project_folder, run_python
from tests.team.servers import S3, TeamServer, mlflow_team_server, new_database

#: user A: a tracked cell that reads the training data (its snapshot), one that registers a model, both drawing a
#: figure; prints the data's fingerprint and what the runs recorded
TRAIN = """
import json, os, sys
from IPython.core.interactiveshell import InteractiveShell
import nbmlops
import nbmlops.data

model_name = sys.argv[1]
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "nbmlops")
setup = ip.run_cell(
    "import matplotlib\\nmatplotlib.use('Agg')\\nimport matplotlib.pyplot as plt\\n"
    "import numpy as np, pandas as pd\\nfrom sklearn.linear_model import LogisticRegression\\n"
    "rng = np.random.default_rng(0)\\n"
    "X_train = pd.DataFrame(rng.normal(size=(300, 3)), columns=['a', 'b', 'c'])\\n"
    "y_train = (X_train['a'] + X_train['b'] > 0).astype(int)"
)
assert setup.success, setup.error_in_exec
explore = ip.run_cell(
    "%%track --name explore\\n"
    "spread = float(X_train['a'].std())\\n"
    "fig, ax = plt.subplots()\\nax.hist(X_train['a'])"
)
assert explore.success, explore.error_in_exec
fit = ip.run_cell(
    f"%%track --name fit --register model {model_name}\\n"
    "C = 0.5\\nmodel = LogisticRegression(C=C).fit(X_train, y_train)\\n"
    "accuracy = model.score(X_train, y_train)\\n"
    "fig, ax = plt.subplots()\\nax.plot([1, 2, 3])"
)
assert fit.success, fit.error_in_exec
nbmlops.flush(300)
from mlflow import MlflowClient
client = MlflowClient(os.environ["NBMLOPS_TRACKING_URI"])
runs = {r.info.run_name: r for r in client.search_runs(
    [client.get_experiment_by_name(os.environ["NBMLOPS_EXPERIMENT"]).experiment_id])}
print(json.dumps({
    "fingerprint": nbmlops.fingerprint(ip.user_ns["X_train"]),
    "predictions": ip.user_ns["model"].predict(ip.user_ns["X_train"].head(20)).tolist(),
    "runs": {name: {"id": r.info.run_id, "artifact_uri": r.info.artifact_uri,
                    "snapshot_tags": {k: v for k, v in r.data.tags.items() if k.startswith("nbmlops.snapshot.")}}
             for name, r in runs.items()},
}))
"""

#: user B, in a fresh project: the snapshot by its fingerprint and the model through the safe load path
FETCH = """
import json, sys, tempfile
from pathlib import Path
import numpy as np, pandas as pd
import nbmlops
import nbmlops.data
from nbmlops.backend.models import download_model
from nbmlops.config import resolve_settings
from nbmlops.registry.models import get_version, registry_client
from nbmlops.registry.safe_load import check_model

fingerprint, model_name = sys.argv[1], sys.argv[2]
assert not Path(".nbmlops/data").exists() or not any(Path(".nbmlops/data").rglob(f"{fingerprint}.*"))
frame = nbmlops.data.load(fingerprint)
settings = resolve_settings()
client = registry_client(settings)
version = get_version(model_name, client=client)
with tempfile.TemporaryDirectory() as tmp:
    local = download_model(client, version.name, version.version, Path(tmp), settings.tracking_uri)
    model = check_model(local, version, trusted=False).load()
    predictions = model.predict(frame.head(20)).tolist()
print(json.dumps({
    "fingerprint": nbmlops.fingerprint(frame),
    "shape": list(frame.shape),
    "kept": [str(p) for p in Path(".nbmlops/data").rglob(f"{fingerprint}.*")],
    "version": version.version,
    "source": client.get_model_version_download_uri(version.name, str(version.version)),
    "predictions": predictions,
}))
"""


@pytest.fixture(scope="module")
def direct_server(pg_uri: str, s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """A real ``mlflow server`` on PostgreSQL that does not serve artifacts: new experiments' artifacts go to
    ``s3://<bucket>/direct`` and clients write there themselves."""
    folder = tmp_path_factory.mktemp("direct-server")
    with mlflow_team_server(folder, new_database(pg_uri), s3.uri("direct"), env=clean_env(**s3.env),
                            proxied=False) as server:
        yield server


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _train_and_fetch(server: TeamServer, client_env: dict[str, str], tmp_path: Path, experiment: str,
                     model_name: str) -> tuple[dict, dict]:
    env = clean_env(NBMLOPS_TRACKING_URI=server.uri, NBMLOPS_EXPERIMENT=experiment, **client_env)
    ada = project_folder(tmp_path / "ada")
    trained = run_python(ada, "-c", TRAIN, model_name, env={**env, "IPYTHONDIR": str(ada / ".ipython")}, timeout=600)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-5000:]
    bob = project_folder(tmp_path / "bob")
    fetched = run_python(bob, "-c", FETCH, _last_json(trained.stdout)["fingerprint"], model_name, env=env,
                         timeout=600)
    assert fetched.returncode == 0, fetched.stdout[-3000:] + fetched.stderr[-5000:]
    return _last_json(trained.stdout), _last_json(fetched.stdout)


def _check_round_trip(trained: dict, fetched: dict) -> None:
    fingerprint = trained["fingerprint"]
    assert trained["runs"]["explore"]["snapshot_tags"] == {f"nbmlops.snapshot.{fingerprint}": "stored"}
    assert fetched["fingerprint"] == fingerprint and fetched["shape"] == [300, 3]
    assert sorted(Path(p).name for p in fetched["kept"]) == [f"{fingerprint}.json", f"{fingerprint}.parquet"]
    assert fetched["predictions"] == trained["predictions"]


def _check_bucket(keys: list[str], prefix: str, trained: dict, fetched: dict) -> None:
    """The bucket holds, under ``prefix``: each run's code and figure, the model's files, the data snapshot."""
    fingerprint = trained["fingerprint"]
    for name in ("explore", "fit"):
        run_id = trained["runs"][name]["id"]
        mine = [k for k in keys if f"/{run_id}/artifacts/" in k]
        assert any(k.endswith("/code/cell.py") for k in mine), (name, mine)
        assert any("figure" in k and k.endswith(".png") for k in mine), (name, mine)
    model_files = {k.rsplit("/", 1)[1] for k in keys if "/models/" in k}
    assert {"MLmodel", "model.skops", "input_example.json"} <= model_files, keys
    assert f"{fingerprint[:2]}/{fingerprint}.parquet" in {"/".join(k.split("/")[-2:]) for k in keys}, keys
    assert f"{fingerprint[:2]}/{fingerprint}.json" in {"/".join(k.split("/")[-2:]) for k in keys}, keys
    assert all(k.startswith(prefix + "/") for k in keys)


def test_proxied_s3_store_holds_snapshots_models_and_figures_and_another_user_gets_them_back(
    s3_team_server, s3, tmp_path, request
):
    experiment = request.node.name
    before = set(s3.keys("proxied/"))
    trained, fetched = _train_and_fetch(s3_team_server, {}, tmp_path, experiment, "s3-proxied-model")

    assert trained["runs"]["fit"]["artifact_uri"].startswith("mlflow-artifacts:")
    _check_round_trip(trained, fetched)
    _check_bucket(sorted(set(s3.keys("proxied/")) - before), "proxied", trained, fetched)


def test_direct_s3_store_written_by_the_clients_holds_snapshots_models_and_figures_and_another_user_gets_them_back(
    direct_server, s3, tmp_path, request
):
    experiment = request.node.name
    before = set(s3.keys("direct/"))
    trained, fetched = _train_and_fetch(direct_server, s3.env, tmp_path, experiment, "s3-direct-model")

    assert trained["runs"]["fit"]["artifact_uri"].startswith(s3.uri("direct"))
    assert fetched["source"].startswith(s3.uri("direct"))
    _check_round_trip(trained, fetched)
    _check_bucket(sorted(set(s3.keys("direct/")) - before), "direct", trained, fetched)
