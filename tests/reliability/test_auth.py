"""Item 11 of the trust issue: credentials for the tracking server, and what a refusal of them does.

A real ``mlflow server`` sits behind a loopback proxy that lets through only requests with the right
``Authorization`` header (``/health`` stays open, as in MLflow's own auth app), or refuses everyone with 403.
Credentials in the URI and in ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` are sent; a 401/403 is its
own error naming those variables, never retried as an outage, and ``flush()`` does not wait on it.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.reliability.faults import FaultProxy, clean_env, nbmlops_cli, run_python

RIGHT, WRONG = "Right-Pw-4711", "Wrong-Pw-0815"

SCRIPT = textwrap.dedent("""
    import time
    import nbmlops
    from nbmlops.exceptions import FlushTimeoutError
    with nbmlops.track("auth", params={"a": 1}) as run:
        nbmlops.log_metric("m", 1.0)
    start = time.monotonic()
    try:
        nbmlops.flush(120)
        print("delivered", run.key)
    except FlushTimeoutError as exc:
        print(f"flush returned after {time.monotonic() - start:.1f} s:", exc.reason)
""")


def environment(uri: str, **extra: str) -> dict[str, str]:
    return clean_env(**{"NBMLOPS_TRACKING_URI": uri, "NBMLOPS_EXPERIMENT": "auth", "NBMLOPS_CALL_TIMEOUT": "5", **extra})


def script(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """:data:`SCRIPT` tracks one run in ``project``."""
    return run_python(project, "-c", SCRIPT, env=env, timeout=400)


def cli(project: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return nbmlops_cli(project, command, env=env, timeout=400)


def with_userinfo(uri: str, user: str, password: str) -> str:
    return uri.replace("http://", f"http://{user}:{password}@", 1)


def runs_on(server: str, key: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("auth")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`nbmlops.run_key` = '{key}'")


def assert_never_shown(project: Path, *outputs: str) -> None:
    for secret in (RIGHT, WRONG):
        assert not any(secret in text for text in outputs), f"{secret} was printed"
        stored = [p for p in (project / ".nbmlops").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not stored, f"{secret} was written to {stored}"


def test_credentials_in_the_uri_are_sent_and_never_shown(server: str, project_dir: Path) -> None:
    project = project_dir
    with FaultProxy(server) as proxy:
        proxy.require_basic("alice", RIGHT)
        uri = with_userinfo(proxy.uri, "alice", RIGHT)
        result = script(project, environment(uri))
        assert result.returncode == 0, result.stderr
        key = re.search(r"delivered ([0-9a-f]{32})", result.stdout)
        assert key, result.stdout + result.stderr
        status = cli(project, "status", environment(uri))
        assert status.returncode == 0, status.stderr
        assert re.search(r"\[\d+\] auth: 1 run\(s\)", status.stdout), status.stdout
        assert proxy.count("/api/", "unauthorized") == 0
        assert proxy.count("/mlflow-artifacts/", "forwarded") > 0  # artifacts went with the credentials too
    found = runs_on(server, key.group(1))
    assert len(found) == 1 and found[0].info.status == "FINISHED" and found[0].data.params == {"a": "1"}
    assert_never_shown(project, result.stdout, result.stderr, status.stdout, status.stderr)


# how the credentials are given: (proxy set-up, the wrong ones, the right ones)
KINDS = {
    "MLFLOW_TRACKING_USERNAME and PASSWORD": (
        lambda proxy: proxy.require_basic("alice", RIGHT),
        lambda uri: environment(uri, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=WRONG),
        lambda uri: environment(uri, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=RIGHT),
    ),
    "MLFLOW_TRACKING_TOKEN": (
        lambda proxy: proxy.require_bearer(RIGHT),
        lambda uri: environment(uri, MLFLOW_TRACKING_TOKEN=WRONG),
        lambda uri: environment(uri, MLFLOW_TRACKING_TOKEN=RIGHT),
    ),
    "credentials in the URI": (
        lambda proxy: proxy.require_basic("alice", RIGHT),
        lambda uri: environment(with_userinfo(uri, "alice", WRONG)),
        lambda uri: environment(with_userinfo(uri, "alice", RIGHT)),
    ),
    "no credentials": (lambda proxy: proxy.require_basic("alice", RIGHT), environment, None),
    "403 for these credentials": (
        lambda proxy: proxy.refuse_everyone(403),
        lambda uri: environment(uri, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=RIGHT),
        None,
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_refused_credentials_are_an_auth_error_that_never_blocks_and_the_right_ones_deliver(
    kind: str, server: str, project_dir: Path
) -> None:
    project = project_dir
    set_up, wrong, right = KINDS[kind]
    status = 403 if kind.startswith("403") else 401
    with FaultProxy(server) as proxy:
        set_up(proxy)
        result = script(project, wrong(proxy.uri))
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        flushed = re.search(r"flush returned after ([\d.]+) s: (.*)", result.stdout)
        assert flushed, result.stdout + result.stderr
        assert float(flushed.group(1)) < 30  # the flush did not wait out its 120 s
        for said in (flushed.group(2), result.stderr):
            assert f"HTTP {status}" in said and "MLFLOW_TRACKING_USERNAME" in said and "MLFLOW_TRACKING_TOKEN" in said
        assert "unavailable" not in result.stderr, result.stderr  # not an outage
        warnings = re.findall(rf"^nbmlops: tracking server .*\(HTTP {status}", result.stderr, re.MULTILINE)
        assert len(warnings) == 1, result.stderr  # one message, not one per attempt
        refused = proxy.count("/api/", "unauthorized")
        assert 1 <= refused <= 5, refused  # never retried as an outage
        journals = list((project / ".nbmlops" / "journal").glob("*.journal"))
        assert len(journals) == 1  # the records wait, safe

        sync = cli(project, "sync", wrong(proxy.uri))
        assert sync.returncode == 1 and "Traceback" not in sync.stderr, sync.stderr
        assert f"HTTP {status}" in sync.stderr and "MLFLOW_TRACKING_PASSWORD" in sync.stderr, sync.stderr
        assert journals[0].exists()
        outputs = [result.stdout, result.stderr, sync.stdout, sync.stderr]
        if right is not None:
            delivered = cli(project, "sync", right(proxy.uri))
            assert delivered.returncode == 0, delivered.stderr
            assert "delivered" in delivered.stdout and not journals[0].exists(), delivered.stdout
            outputs += [delivered.stdout, delivered.stderr]
    assert_never_shown(project, *outputs)
