"""Identity and permissions on an authenticating tracking server (issue 13, "Identity").

A real ``mlflow server --app-name basic-auth`` (:mod:`tests.team.auth_server`; ``default_permission = READ``) with
two users made through MLflow's auth REST API: alice trains and registers a model, bob promotes it. Each user is a
process of its own with its credentials in ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``. What is recorded names the
MLflow user, not the OS user; what MLflow's permissions forbid is refused by the server and shown as one line
naming the user, the model or experiment and the permission needed (exit 3), never a traceback; a tracking write
the server refuses never breaks the script, is reported, set aside, and does not hold up the records after it.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import re
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmlops.backend import identity
from tests.reliability.faults import Fault, FaultProxy, nbmlops_cli, project_folder, run_python
from tests.team.auth_server import AuthServer, auth_server

TRAIN = textwrap.dedent("""
    import sys
    import nbmlops
    from sklearn.dummy import DummyClassifier
    name = sys.argv[1]
    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": 0.95})
        version = nbmlops.register(model, name, timeout=120)
    nbmlops.flush(120)
    print("registered", version.version, run.key)
""")

REGISTER = textwrap.dedent("""
    import sys
    import nbmlops
    from sklearn.dummy import DummyClassifier
    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    try:
        nbmlops.register(model, sys.argv[1], timeout=120)
        print("registered")
    except nbmlops.exceptions.NbmlopsError as exc:
        print("not registered:", type(exc).__name__)
""")

#: a run into an experiment the user may only read, then one into the user's own experiment
TRACK_TWO = textwrap.dedent("""
    import sys, time
    import nbmlops
    from nbmlops.exceptions import FlushTimeoutError
    with nbmlops.track("refused", experiment=sys.argv[1], params={"a": 1}) as refused:
        nbmlops.log_metric("m", 1.0)
    with nbmlops.track("mine", experiment=sys.argv[2], params={"a": 2}) as mine:
        nbmlops.log_metric("m", 2.0)
    start = time.monotonic()
    try:
        nbmlops.flush(120)
        print("flushed", refused.key, mine.key)
    except FlushTimeoutError as exc:
        print(f"flush returned after {time.monotonic() - start:.1f} s:", exc.reason)
    print("cell went on")
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """One basic-auth server for the module (``default_permission = READ``), users alice and bob."""
    with auth_server(tmp_path_factory.mktemp("auth-server"), default_permission="READ") as started:
        started.add_user("alice")
        started.add_user("bob")
        yield started


def model_name() -> str:
    return f"identity-{uuid.uuid4().hex[:8]}"


def train(server: AuthServer, folder: Path, name: str, user: str = "alice") -> tuple[int, str]:
    """``user`` trains and registers a version of ``name`` in a process of its own; its number and run key."""
    result = run_python(project_folder(folder), "-c", TRAIN, name, env=server.env(user, NBMLOPS_EXPERIMENT=name),
                        timeout=400)
    found = re.search(r"registered (\d+) ([0-9a-f]{32})", result.stdout)
    assert result.returncode == 0 and found, result.stdout + result.stderr
    return int(found.group(1)), found.group(2)


def version(server: AuthServer, name: str, number: int) -> dict:
    return server.call("GET", "/api/2.0/mlflow/model-versions/get", query=f"name={name}&version={number}")[
        "model_version"]


def decisions(server: AuthServer, name: str, number: int) -> list[dict]:
    tags = {t["key"]: t["value"] for t in version(server, name, number).get("tags", [])}
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith("nbmlops.decision.")]


def aliases(server: AuthServer, name: str) -> dict[str, str]:
    model = server.call("GET", "/api/2.0/mlflow/registered-models/get", query=f"name={name}")["registered_model"]
    return {a["alias"]: a["version"] for a in model.get("aliases", [])}


def promote(server: AuthServer, folder: Path, user: str, name: str, number: int):
    """``nbmlops models promote NAME NUMBER --alias champion`` as ``user``, a process of its own."""
    return nbmlops_cli(project_folder(folder), "models", "promote", name, str(number), "--alias", "champion",
                       "--gate", "accuracy >= 0.9", env=server.env(user), timeout=400)


def test_bob_granted_edit_promotes_alices_model_and_the_records_name_alice_and_bob(
    server: AuthServer, tmp_path: Path
) -> None:
    name = model_name()
    number, run_key = train(server, tmp_path / "alice", name)
    server.grant("bob", "registered_model", name, "EDIT")
    result = promote(server, tmp_path / "bob", "bob", name, number)
    assert result.returncode == 0 and "PROMOTED" in result.stdout, result.stdout + result.stderr
    assert aliases(server, name) == {"champion": str(number)}
    [decision] = decisions(server, name, number)
    assert decision["accepted"] and decision["by"] == "bob", decision
    run = server.call("GET", "/api/2.0/mlflow/runs/get", query=f"run_id={version(server, name, number)['run_id']}")
    tags = {t["key"]: t["value"] for t in run["run"]["data"]["tags"]}
    assert tags["nbmlops.run_key"] == run_key
    assert tags["mlflow.user"] == "alice" and getpass.getuser() != "alice"  # not the OS user
    assert run["run"]["info"]["user_id"] == "alice"


def test_alice_promoting_her_own_model_is_recorded_as_alice(server: AuthServer, tmp_path: Path) -> None:
    name = model_name()
    number, _ = train(server, tmp_path / "alice", name)
    result = promote(server, tmp_path / "alice2", "alice", name, number)
    assert result.returncode == 0, result.stdout + result.stderr
    [decision] = decisions(server, name, number)
    assert decision["by"] == "alice", decision


def test_bob_with_read_only_is_refused_in_one_line_naming_him_the_model_and_edit_exit_3(
    server: AuthServer, tmp_path: Path
) -> None:
    name = model_name()
    number, _ = train(server, tmp_path / "alice", name)
    result = promote(server, tmp_path / "bob", "bob", name, number)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        rf"nbmlops: MLflow user 'bob' may not set an alias of registered model '{name}' on http://127\.0\.0\.1:\d+: "
        r"that needs EDIT permission on it .*", lines[0]), lines[0]
    assert server.passwords["bob"] not in result.stderr + result.stdout
    assert aliases(server, name) == {}  # nothing changed
    assert decisions(server, name, number) == []
    locks = server.call("GET", "/api/2.0/mlflow/registered-models/search", query="max_results=100")
    assert not [m for m in locks.get("registered_models", []) if m["name"].startswith("nbmlops-lock.")]


def test_bob_registering_a_version_of_alices_model_is_refused_and_reported(server: AuthServer, tmp_path: Path) -> None:
    name = model_name()
    train(server, tmp_path / "alice", name)
    result = run_python(project_folder(tmp_path / "bob"), "-c", REGISTER, name,
                        env=server.env("bob", NBMLOPS_EXPERIMENT=f"bob-{name}"), timeout=400)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "not registered" in result.stdout, result.stdout
    assert re.search(rf"MLflow user 'bob' may not register a version of registered model '{name}' .*"
                     r"needs EDIT permission", result.stderr), result.stderr
    versions = server.call("GET", "/api/2.0/mlflow/model-versions/search",
                           query=urllib.parse.urlencode({"filter": f"name = '{name}'"}))
    assert len(versions["model_versions"]) == 1  # alice's only


def test_bobs_run_into_alices_experiment_is_refused_reported_set_aside_and_holds_nothing_up(
    server: AuthServer, tmp_path: Path
) -> None:
    experiment = f"alice-{uuid.uuid4().hex[:8]}"
    server.call("POST", "/api/2.0/mlflow/experiments/create", {"name": experiment}, user="alice")
    bobs = f"bob-{uuid.uuid4().hex[:8]}"
    project = project_folder(tmp_path / "bob")
    result = run_python(project, "-c", TRACK_TWO, experiment, bobs, env=server.env("bob"), timeout=400)
    assert result.returncode == 0 and "cell went on" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    said = re.findall(rf"MLflow user 'bob' may not create runs in experiment '{experiment}' .*needs EDIT permission",
                      result.stderr)
    assert len(said) == 1, result.stderr  # reported once, not once per record or per attempt
    flushed = re.search(r"flushed ([0-9a-f]{32}) ([0-9a-f]{32})", result.stdout)
    assert flushed, result.stdout + result.stderr  # nothing waits on a refusal
    # the run bob may write was delivered, with bob as its user
    found = server.call("POST", "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [server.call("GET", "/api/2.0/mlflow/experiments/get-by-name",
                                       query=f"experiment_name={bobs}")["experiment"]["experiment_id"]]})
    [run] = found["runs"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["nbmlops.run_key"] == flushed.group(2) and tags["mlflow.user"] == "bob"
    # the refused run's records are kept beside the journal, with the reason
    refused = [json.loads(line) for line in (project / ".nbmlops" / "journal" / "refused.jsonl").read_text().splitlines()]
    assert {r["record"]["run"] for r in refused} == {flushed.group(1)}
    assert {r["record"]["t"] for r in refused} >= {"start", "end"}
    assert all("may not create runs in experiment" in r["reason"] for r in refused)
    alices = server.call("GET", "/api/2.0/mlflow/experiments/get-by-name", query=f"experiment_name={experiment}")
    assert server.call("POST", "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [alices["experiment"]["experiment_id"]]}).get("runs", []) == []
    # a later sync does not try it again forever
    sync = nbmlops_cli(project, "sync", env=server.env("bob"), timeout=400)
    assert "Traceback" not in sync.stderr and "may not create runs" not in sync.stderr, sync.stderr


def test_bob_without_any_permission_is_refused_reading_the_model_in_one_line_exit_3(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with auth_server(tmp_path_factory.mktemp("closed-server"), default_permission="NO_PERMISSIONS") as closed:
        closed.add_user("alice")
        closed.add_user("bob")
        name = model_name()
        number, _ = train(closed, tmp_path / "alice", name)
        result = promote(closed, tmp_path / "bob", "bob", name, number)
        assert result.returncode == 3 and "Traceback" not in result.stderr, result.stdout + result.stderr
        [line] = result.stderr.strip().splitlines()
        assert re.fullmatch(rf"nbmlops: MLflow user 'bob' may not read registered model '{name}' on \S+: "
                            r"that needs READ permission on it .*", line), line
        assert aliases(closed, name) == {}
        closed.grant("bob", "registered_model", name, "MANAGE")
        closed.grant("bob", "experiment", _experiment_of(closed, name, number), "READ")  # the source run's gates
        granted = promote(closed, tmp_path / "bob", "bob", name, number)
        assert granted.returncode == 0, granted.stdout + granted.stderr
        [decision] = decisions(closed, name, number)
        assert decision["by"] == "bob"


def _experiment_of(server: AuthServer, name: str, number: int) -> str:
    run_id = version(server, name, number)["run_id"]
    return str(server.call("GET", "/api/2.0/mlflow/runs/get", query=f"run_id={run_id}")["run"]["info"]["experiment_id"])


def test_credentials_in_mlflows_credentials_file_name_the_user_who_promotes(server: AuthServer, tmp_path: Path) -> None:
    name = model_name()
    number, _ = train(server, tmp_path / "alice", name)
    server.grant("bob", "registered_model", name, "EDIT")
    home = tmp_path / "home"
    (home / ".mlflow").mkdir(parents=True)
    (home / ".mlflow" / "credentials").write_text(
        f"[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = {server.passwords['bob']}\n")
    env = {k: v for k, v in server.env("bob").items() if not k.startswith("MLFLOW_TRACKING_")} | {"HOME": str(home)}
    result = nbmlops_cli(project_folder(tmp_path / "bob"), "models", "promote", name, str(number), "--alias",
                         "champion", env=env, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    [decision] = decisions(server, name, number)
    assert decision["by"] == "bob", decision


@pytest.fixture
def no_mlflow_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``MLFLOW_TRACKING_*`` variables, and a home of its own (no ``~/.mlflow/credentials`` yet); the home."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".mlflow").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_server_credentials_print_no_password_nor_its_base64(no_mlflow_credentials: None) -> None:
    password = "S3cret-Pw-4711"
    token = base64.b64encode(f"bob:{password}".encode()).decode()
    credentials = identity.server_credentials(f"http://bob:{password}@127.0.0.1:5000")
    assert credentials.headers["Authorization"] == f"Basic {token}"  # what is sent
    for shown in (repr(credentials), str(credentials), f"{credentials}", f"{[credentials]}"):
        assert password not in shown and token not in shown and "Authorization" not in shown, shown
        assert "bob" in shown and "127.0.0.1:5000" in shown


def test_a_404_of_users_current_while_the_server_restarts_is_forgotten_after_a_while(
    server: AuthServer, monkeypatch: pytest.MonkeyPatch, no_mlflow_credentials: None
) -> None:
    monkeypatch.setattr(identity, "NEGATIVE_ANSWER_TTL_S", 2.0)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.passwords["bob"])
    with FaultProxy(server.uri) as proxy:
        proxy.add(Fault("status", path="users/current", status=404, body=b"restarting", times=1))
        assert identity.authenticated_user(proxy.uri, 30) is None  # the proxy's one 404
        assert identity.authenticated_user(proxy.uri, 30) is None  # believed for a while: not asked again
        assert proxy.count("users/current") == 1
        time.sleep(2.5)
        assert identity.authenticated_user(proxy.uri, 30) == "bob"  # asked again, and the server knows bob
        assert identity.authenticated_user(proxy.uri, 30) == "bob"
        assert proxy.count("users/current") == 2  # a user, once known, is kept


def test_a_user_name_without_a_password_is_not_claimed_on_a_server_as_mlflow_sends_no_credentials(
    server: AuthServer, monkeypatch: pytest.MonkeyPatch, no_mlflow_credentials: None
) -> None:
    from nbmlops.tracking.run import _user

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert identity.server_credentials(server.uri).headers == {}  # nothing authenticates bob
    assert identity.claimed_user(server.uri) is None
    assert identity.recorded_user(server.uri, 30) is None
    assert _user(server.uri) == getpass.getuser()
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.passwords["bob"])
    assert identity.claimed_user(server.uri) == "bob" == _user(server.uri)


@pytest.mark.parametrize("source", ["env", "file", "none"])
def test_the_user_recorded_for_a_local_store_is_the_one_mlflow_records(
    source: str, monkeypatch: pytest.MonkeyPatch, no_mlflow_credentials: Path, tmp_path: Path
) -> None:
    from mlflow.tracking.context.default_context import DefaultRunContext

    from nbmlops.tracking.run import _user

    if source == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
    elif source == "file":
        (no_mlflow_credentials / ".mlflow" / "credentials").write_text("[mlflow]\nmlflow_tracking_username = dave\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    expected = {"env": "carol", "file": "dave", "none": getpass.getuser()}[source]
    assert DefaultRunContext().tags()["mlflow.user"] == expected  # what MLflow itself records
    assert _user(uri) == expected


def test_the_credentials_file_is_read_again_only_when_it_changes(no_mlflow_credentials: Path, tmp_path: Path) -> None:
    from nbmlops.tracking.run import _user

    file = no_mlflow_credentials / ".mlflow" / "credentials"
    file.write_text("[mlflow]\nmlflow_tracking_username = ann\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _user(uri) == "ann"
    written = os.stat(file)
    file.write_text("[mlflow]\nmlflow_tracking_username = bob\n")  # same size, mtime put back: not parsed again
    os.utime(file, ns=(written.st_atime_ns, written.st_mtime_ns))
    assert _user(uri) == "ann"
    os.utime(file, ns=(written.st_atime_ns, written.st_mtime_ns + 1_000_000))
    assert _user(uri) == "bob"
    file.unlink()
    assert _user(uri) == getpass.getuser()


def test_bobs_refused_artifact_upload_names_him_the_run_and_edit_on_its_experiment(
    server: AuthServer, monkeypatch: pytest.MonkeyPatch, no_mlflow_credentials: None, tmp_path: Path
) -> None:
    from nbmlops.backend.store import Store
    from nbmlops.exceptions import PermissionRefused

    experiment = server.call("POST", "/api/2.0/mlflow/experiments/create", {"name": f"alice-{uuid.uuid4().hex[:8]}"},
                             user="alice")["experiment_id"]
    run_id = server.call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment}, user="alice")["run"][
        "info"]["run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.passwords["bob"])
    store = Store(server.uri, None)
    client = store.client
    artifact = tmp_path / "notes.txt"
    artifact.write_text("bob's")
    with pytest.raises(PermissionRefused) as refused:
        store._call(lambda: client.log_artifact(run_id, str(artifact)))
    assert str(refused.value).startswith(
        f"MLflow user 'bob' may not upload artifacts to run {run_id}'s experiment (id {experiment}) on {server.uri}: "
        "that needs EDIT permission on it (the server answered 403)"), str(refused.value)
    with pytest.raises(PermissionRefused) as named, identity.naming("experiment", "alices"):
        store._call(lambda: client.log_artifact(run_id, str(artifact)))
    assert f"may not upload artifacts to experiment 'alices' on {server.uri}: that needs EDIT" in str(named.value)


def test_a_refusal_of_an_endpoint_nbmlops_does_not_know_is_one_plain_sentence_naming_it(
    server: AuthServer, monkeypatch: pytest.MonkeyPatch, no_mlflow_credentials: None
) -> None:
    from nbmlops.backend.store import Store
    from nbmlops.exceptions import PermissionRefused

    experiment = server.call("POST", "/api/2.0/mlflow/experiments/create", {"name": f"alice-{uuid.uuid4().hex[:8]}"},
                             user="alice")["experiment_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.passwords["bob"])
    store = Store(server.uri, None)
    client = store.client
    with pytest.raises(PermissionRefused) as refused:
        store._call(lambda: client.delete_traces(experiment, max_timestamp_millis=int(time.time() * 1000)))
    assert re.fullmatch(
        rf"MLflow user 'bob' may not call /api/\d\.0/mlflow/traces/\S+ on {re.escape(server.uri)} "
        r"\(the server answered 403\); ask an MLflow admin which permission that needs and to grant it",
        str(refused.value)), str(refused.value)
