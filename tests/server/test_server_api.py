"""Every read route of the REST API, and path rules, on a real Jupyter server and a real MLflow store."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

import nbmlops
from tests.server.registering import register_in_another_process


@pytest.fixture
def tracked(shell, root: Path, make_notebook, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two ``%%track`` runs of notebooks/train.ipynb (``second`` the newer), then one of other.ipynb."""
    train = make_notebook("notebooks/train.ipynb", "x = 1")
    other = make_notebook("other.ipynb", "y = 1")
    monkeypatch.setenv("NBMLOPS_NOTEBOOK", str(train))
    shell.run_cell("import pandas as pd\nframe = pd.DataFrame({'a': [1, 2, 3]})")
    shell.run_cell_magic("track", "--name first", "alpha = 0.5\nscore = float(frame['a'].sum()) * alpha")
    shell.run_cell_magic("track", "--name second", "alpha = 0.7\nscore = float(frame['a'].sum()) * alpha")
    monkeypatch.setenv("NBMLOPS_NOTEBOOK", str(other))
    shell.run_cell_magic("track", "--name elsewhere", "beta = 1")
    nbmlops.flush(60)
    return train


async def test_status_reports_the_store_and_the_ui(api):
    code, status = await api("GET", "status")
    assert code == 200
    assert status["reachable"] is True and status["error"] is None, status
    assert status["tracking_uri"] == os.environ["NBMLOPS_TRACKING_URI"]
    assert status["experiment_count"] >= 1 and status["ui_url"] == "http://127.0.0.1:5000"


async def test_status_of_an_unreachable_store_is_an_answer_without_credentials(api, monkeypatch):
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", "http://alice:s3cr3t-pass@127.0.0.1:9/")
    code, status = await api("GET", "status")
    assert code == 200
    assert status["reachable"] is False and status["experiment_count"] is None
    assert status["error"] and "s3cr3t" not in str(status)
    assert status["tracking_uri"].startswith("http://") and "127.0.0.1:9" in status["tracking_uri"]


async def test_reading_an_unreachable_store_is_503_without_credentials(api, monkeypatch):
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", "http://alice:s3cr3t-pass@127.0.0.1:9/")
    for route in (("runs",), ("runs", "0" * 32), ("models",), ("models", "m")):
        code, body = await api("GET", *route)
        assert code == 503, (route, body)
        assert "unavailable" in body["error"] and "s3cr3t" not in body["error"]


async def test_runs_of_a_notebook_are_its_own_newest_first(api, tracked):
    code, body = await api("GET", "runs", params={"notebook": "notebooks/train.ipynb"})
    assert code == 200 and body["notebook"] == "notebooks/train.ipynb"
    assert [run["name"] for run in body["runs"]] == ["second", "first"]
    second = body["runs"][0]
    assert second["kind"] == "cell" and second["status"] == "FINISHED"
    assert second["params"]["alpha"] == "0.7" and second["metrics"]["score"] == pytest.approx(4.2)
    assert second["cell_key"] and second["experiment"] and second["end_time"] >= second["start_time"]
    assert set(second) == {"run_id", "name", "status", "experiment", "start_time", "end_time", "cell_id", "cell_key",
                           "execution_count", "kind", "params", "metrics"}

    code, body = await api("GET", "runs")
    assert code == 200 and body["notebook"] is None
    assert [run["name"] for run in body["runs"][:3]] == ["elsewhere", "second", "first"]
    code, body = await api("GET", "runs", params={"limit": "1"})
    assert code == 200 and [run["name"] for run in body["runs"]] == ["elsewhere"]


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1", "1.5"])
async def test_a_bad_limit_is_refused(api, limit):
    code, body = await api("GET", "runs", params={"limit": limit})
    assert code == 400 and "limit" in body["error"]


async def test_run_detail_has_filtered_tags_datasets_artifacts_and_ui_link(api, tracked):
    _, listed = await api("GET", "runs", params={"notebook": "notebooks/train.ipynb"})
    run_id = listed["runs"][0]["run_id"]
    code, run = await api("GET", "runs", run_id)
    assert code == 200 and run["run_id"] == run_id and run["name"] == "second"
    assert run["tags"]["nbmlops.notebook"] == str(tracked) and run["tags"]["mlflow.source.name"] == str(tracked)
    assert all(key.startswith(("nbmlops.", "mlflow.source.")) for key in run["tags"])
    assert "mlflow.user" not in run["tags"]
    assert [d["name"] for d in run["datasets"]] == ["frame"] and len(run["datasets"][0]["digest"]) >= 8
    assert "code/cell.py" in run["artifacts"]
    assert run["ui_url"] == f"http://127.0.0.1:5000/#/experiments/{run['experiment_id']}/runs/{run_id}"
    assert run["params"] == {"alpha": "0.7"} and run["metrics"]["score"] == pytest.approx(4.2)


@pytest.mark.parametrize(("run_id", "expected"), [("0" * 32, 404), ("xyz", 400), ("A" * 32, 400), ("0" * 33, 400)])
async def test_an_unknown_run_is_404_and_a_malformed_id_400(api, run_id, expected):
    code, body = await api("GET", "runs", run_id)
    assert code == expected and body["error"]


async def test_notebook_parameters_are_listed_with_type_default_and_help(api, make_notebook):
    make_notebook("p.ipynb", "print(alpha)", parameters="alpha = 0.5  # learning rate\nname: str = 'x'\nlayers = [64, 32]")
    code, body = await api("GET", "notebook", "parameters", params={"notebook": "p.ipynb"})
    assert code == 200 and body["notebook"] == "p.ipynb"
    assert body["parameters"] == [
        {"name": "alpha", "type": None, "default": "0.5", "help": "learning rate"},
        {"name": "name", "type": "str", "default": "'x'", "help": ""},
        {"name": "layers", "type": None, "default": "[64, 32]", "help": ""},
    ]


async def test_notebook_parameters_refuse_bad_requests(api, root, make_notebook):
    (root / "broken.ipynb").write_text("{not json")
    (root / "notes.txt").write_text("hello")
    make_notebook("plain.ipynb", "x = 1")
    assert (await api("GET", "notebook", "parameters"))[0] == 400  # no notebook given
    assert (await api("GET", "notebook", "parameters", params={"notebook": "missing.ipynb"}))[0] == 404
    code, body = await api("GET", "notebook", "parameters", params={"notebook": "broken.ipynb"})
    assert code == 400 and "broken.ipynb" in body["error"]
    code, body = await api("GET", "notebook", "parameters", params={"notebook": "notes.txt"})
    assert code == 400 and "not a notebook" in body["error"]
    code, body = await api("GET", "notebook", "parameters", params={"notebook": "plain.ipynb"})
    assert code == 200 and body["parameters"] == []


TRAVERSALS = [
    ("../outside.ipynb", "'..'"),
    ("a/../../outside.ipynb", "'..'"),
    ("%2e%2e/outside.ipynb", "double encoding"),
    ("%252e%252e%252foutside.ipynb", "double encoding"),
    ("/etc/passwd", "absolute"),
    (None, "absolute"),  # the real path of the outside notebook, filled in by the test
    ("link.ipynb", "symlink"),
    ("linked/inside.ipynb", "symlink"),
    ("a\\..\\..\\outside.ipynb", "backslash"),
    (".hidden/secret.ipynb", "hidden"),
]


@pytest.fixture
def traps(root: Path, make_notebook) -> Path:
    """A notebook outside the root, a symlink to it and a symlinked folder inside the root."""
    outside = make_notebook("../outside.ipynb", "x = 1", parameters="alpha = 1")
    (root / "link.ipynb").symlink_to(outside)
    (root / "linked").symlink_to(outside.parent, target_is_directory=True)
    make_notebook("../inside.ipynb", "x = 1", parameters="alpha = 1")
    make_notebook(".hidden/secret.ipynb", "x = 1", parameters="alpha = 1")
    (root / "a").mkdir()
    return outside.resolve()


@pytest.mark.parametrize(("path", "reason"), TRAVERSALS)
@pytest.mark.parametrize("route", ["runs", "parameters", "run detail", "jobs"])
async def test_paths_outside_the_root_are_refused(api, traps, jobs, path, reason, route):
    path = path if path is not None else str(traps)
    if route == "runs":
        code, body = await api("GET", "runs", params={"notebook": path})
    elif route == "parameters":
        code, body = await api("GET", "notebook", "parameters", params={"notebook": path})
    elif route == "run detail":
        code, body = await api("GET", "runs", "0" * 32, params={"notebook": path})
    else:
        code, body = await api("POST", "jobs", body={"notebook": path, "parameters": {"alpha": 2}})
    assert code == 400, body
    assert reason in body["error"]
    assert jobs.list() == []


@pytest.mark.parametrize(
    "query",
    ["notebook=%2e%2e/outside.ipynb", "notebook=..%2Foutside.ipynb", "notebook=%252e%252e%252Foutside.ipynb",
     "notebook=a/%2e%2e/%2e%2e/outside.ipynb", "notebook=%2Fetc%2Fpasswd"],
)
async def test_encoded_traversals_in_the_raw_query_are_refused(http_server_client, jp_auth_header, jp_base_url,
                                                               traps, query):
    url = f"{jp_base_url}nbmlops/api/notebook/parameters?{query}"
    response = await http_server_client.fetch(url, headers=jp_auth_header, raise_error=False)
    assert response.code == 400, response.body


async def test_a_nul_in_a_path_is_refused(api, jobs, make_notebook):
    make_notebook("x.ipynb", "x = 1", parameters="alpha = 1")
    code, body = await api("POST", "jobs", body={"notebook": "x.ipynb\x00.txt"})
    assert code == 400 and "NUL" in body["error"]


REGISTER = """
import numpy as np
import nbmlops
from sklearn.dummy import DummyClassifier

evaluation = np.arange(12, dtype=float).reshape(6, 2)
for accuracy in (0.95, 0.80):
    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": accuracy})
        nbmlops.register(model, NAME, evaluation_data=evaluation, timeout=120)
nbmlops.flush(60)
"""


@pytest.fixture(scope="module")
def model_name(store_uri: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model with version 1 (accuracy 0.95) and version 2 (0.80) in the shared store, registered by another
    process, so that this one (where the server runs) never imports skops or a model flavour."""
    name = f"srv-{uuid.uuid4().hex[:8]}"
    return register_in_another_process(store_uri, tmp_path_factory.mktemp("register"), name, "server-models", REGISTER)


async def test_models_are_listed_shown_and_promoted_through_gates(api, model_name):
    loaded_before = {m for m in ("skops", "mlflow.sklearn") if m in sys.modules}

    code, body = await api("GET", "models")
    assert code == 200
    [listed] = [m for m in body["models"] if m["name"] == model_name]
    assert listed == {"name": model_name, "latest_version": 2, "aliases": {}}

    code, body = await api("POST", "models", model_name, "promote",
                           body={"version": 1, "alias": "champion", "gates": ["accuracy >= 0.9"]})
    assert code == 200 and body["accepted"] is True
    promotion = body["promotion"]
    assert promotion["version"] == 1 and promotion["alias"] == "champion" and promotion["previous"] is None
    assert {c["kind"] for c in promotion["checks"]} == {"run", "gate"} and all(c["passed"] for c in promotion["checks"])

    code, body = await api("POST", "models", model_name, "promote",
                           body={"version": 2, "alias": "champion", "gates": ["accuracy >= 0.9"],
                                 "beat": ["champion:accuracy"]})
    assert code == 409 and body["accepted"] is False and "accuracy" in body["error"]
    assert body["promotion"]["accepted"] is False and body["promotion"]["previous"] == 1
    failed = [c for c in body["promotion"]["checks"] if not c["passed"]]
    assert {c["kind"] for c in failed} == {"gate", "beat"}

    code, shown = await api("GET", "models", model_name)
    assert code == 200 and shown["name"] == model_name
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    v2, v1 = shown["versions"]
    assert v1["aliases"] == ["champion"] and v2["aliases"] == []  # the refusal changed nothing
    assert [d["accepted"] for d in v1["decisions"]] == [True] and [d["accepted"] for d in v2["decisions"]] == [False]
    assert v2["decisions"][0]["alias"] == "champion" and v2["decisions"][0]["checks"]
    assert v1["run_id"] and v1["created"] and v1["status"] == "READY"
    _, body = await api("GET", "models")
    assert [m["aliases"] for m in body["models"] if m["name"] == model_name] == [{"champion": 1}]

    for module in ("skops", "mlflow.sklearn"):  # no model was deserialized in the server's process
        assert module in loaded_before or module not in sys.modules


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"version": 1, "alias": "champion", "gates": ["accuracy >=== 1"]}, "accuracy"),
        ({"version": 1, "alias": "bad alias!"}, "alias"),
        ({"version": 1, "alias": "latest"}, "reserved"),
        ({"version": "1", "alias": "champion"}, "version"),
        ({"version": True, "alias": "champion"}, "version"),
        ({"version": 0, "alias": "champion"}, "version"),
        ({"version": 1, "alias": "champion", "gates": "accuracy > 1"}, "gates"),
        ({"version": 1, "alias": "champion", "beat": ["nometric"]}, "beat"),
        ({"version": 1, "alias": "champion", "allow_new_evaluation_data": "yes"}, "allow_new_evaluation_data"),
        ({"version": 1, "alias": "champion", "force": True}, "force"),
        ("[1, 2]", "JSON object"),
        ("{nope", "not valid JSON"),
    ],
)
async def test_a_malformed_promotion_is_400(api, body, reason):
    code, answer = await api("POST", "models", "any-model", "promote", body=body)
    assert code == 400, answer
    assert reason in answer["error"]


async def test_unknown_models_and_versions_are_404(api, model_name):
    assert (await api("GET", "models", "no-such-model"))[0] == 404
    code, body = await api("POST", "models", "no-such-model", "promote", body={"version": 1, "alias": "champion"})
    assert code == 404 and "no-such-model" in body["error"]
    code, body = await api("POST", "models", model_name, "promote", body={"version": 7, "alias": "champion"})
    assert code == 404
    code, body = await api("GET", "models", "a:b")
    assert code == 400 and "may not contain" in body["error"]
