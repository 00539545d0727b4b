"""The ``nbmlops serve`` command: several worker processes that each follow the alias, a graceful stop on SIGTERM,
and bad input answered in one line with the documented exit code."""

from __future__ import annotations

import json
import os
import signal

import pytest

import nbmlops
from nbmlops.cli import main
from tests.conftest import stop_group
from tests.serving.conftest import http, metric_samples, predictions, serve_process, split_body, wait_for


def _versions_by_worker(url: str) -> dict[str, float]:
    """``nbmlops_model_version`` of each live worker process, by its pid."""
    return {dict(labels)["pid"]: value for (name, labels), value in metric_samples(url).items()
            if name == "nbmlops_model_version"}


def test_two_workers_serve_and_each_follows_the_alias_then_sigterm_stops_gracefully(models, project, client):
    alias = models.point(1)
    process, url = serve_process(project, f"{models.name}@{alias}", "--workers", "2", "--poll", "0.3")
    try:
        workers = wait_for(lambda: len(found := _versions_by_worker(url)) == 2 and found, "two workers serving",
                           timeout=180)
        assert set(workers.values()) == {1.0} and len(set(workers)) == 2
        for _ in range(10):
            status, headers, body = http("POST", url + "/invocations", split_body(models.rows), "application/json")
            assert (status, headers["nbmlops-model-version"], predictions(body)) == (200, "1", models.v1.tolist())
        run_id = json.loads(http("GET", url + "/model")[2])["run_id"]

        nbmlops.promote(f"{models.name}/2", alias)
        wait_for(lambda: set(_versions_by_worker(url).values()) == {2.0}, "both workers on version 2")
        assert set(_versions_by_worker(url)) == set(workers)  # the same two processes swapped, none restarted
        for _ in range(10):
            status, headers, body = http("POST", url + "/invocations", split_body(models.rows), "application/json")
            assert (status, headers["nbmlops-model-version"], predictions(body)) == (200, "2", models.v2.tolist())
        samples = metric_samples(url)  # every worker's counts, whichever worker answers the scrape
        assert samples[("nbmlops_swaps_total", ())] == 2
        assert samples[("nbmlops_requests_total", (("status", "200"), ("version", "1")))] == 10
        assert samples[("nbmlops_requests_total", (("status", "200"), ("version", "2")))] == 10

        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(120) == 0
    finally:
        stop_group(process)
    out = (project / "serve.log").read_text()
    assert f"serving {models.name}@{alias} (version 1) at {url} with 2 worker(s)" in out, out
    assert "Traceback" not in out, out
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["requests"] == 20 and run.data.tags["nbmlops.serve.version"] == "2"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_worker_in_the_foreground_stops_gracefully_and_ends_its_serving_run(models, project, client, stop):
    process, url = serve_process(project, f"{models.name}@champion")
    try:
        status, _, body = http("POST", url + "/invocations", split_body(models.rows), "application/json")
        assert (status, predictions(body)) == (200, models.v1.tolist())
        run_id = json.loads(http("GET", url + "/model")[2])["run_id"]
        os.kill(process.pid, stop)
        assert process.wait(120) == 0
    finally:
        stop_group(process)
    out = (project / "serve.log").read_text()
    assert f"stopped; the traffic log went to serving run {run_id}" in out and "Traceback" not in out, out
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["requests"] == 1


@pytest.mark.parametrize(("arguments", "message"), [
    (["{name}"], "'{name}': serve follows an alias: give NAME@ALIAS (such as {name}@champion)"),
    (["{name}/1"], "'{name}/1': serve follows an alias: give NAME@ALIAS"),
    (["{name}@no-such-alias"], "no model {name}@no-such-alias in the registry"),
    (["{name}@champion", "--log-requests", "2"], "log_requests (from argument): expected a fraction from 0 to 1"),
    (["{name}@champion", "--workers", "0"], "workers (from argument): expected a whole number >= 1, got 0"),
    (["{name}@champion", "--port", "70000"], "port (from argument): expected a port number from 0 to 65535"),
    (["{name}@champion", "--shadow", "latest"], "alias 'latest' is reserved by MLflow"),
])
def test_bad_input_is_one_line_with_exit_code_2(models, project, capsys, arguments, message):
    code = main(["serve", *[a.format(name=models.name) for a in arguments]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("nbmlops: ") and "Traceback" not in err
    assert message.format(name=models.name) in err, err


def test_a_port_in_use_is_one_line_with_exit_code_2(models, project, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", f"{models.name}@champion", "--port", str(port)])
    err = capsys.readouterr().err
    assert (code, err) == (2, f"nbmlops: port (from argument): 127.0.0.1:{port} is in use (another server listens "
                              f"there); choose another with --port\n")


def test_a_pickled_model_is_refused_as_monitor_refuses_it_and_served_when_trusted(models, project, serving, capsys):
    alias = models.point(4)  # statsmodels: MLflow pickles it
    models.rows.to_csv(project / "rows.csv", index=False)
    assert main(["monitor", f"{models.name}@{alias}", "rows.csv"]) == 2
    refused_by_monitor = capsys.readouterr().err
    assert main(["serve", f"{models.name}@{alias}", "--port", "0"]) == 2
    refused = capsys.readouterr().err
    assert refused == refused_by_monitor and "statsmodels model, which MLflow pickles" in refused
    assert "--trust-pickle" in refused and refused.count("\n") == 1

    handle = serving(f"{models.name}@{alias}", trust_pickle=True)
    assert any("as trusted" in note for note in handle.notes)
    status, headers, body = http("POST", handle.url + "/invocations", split_body(models.rows), "application/json")
    assert (status, headers["nbmlops-model-version"]) == (200, "4")
    # statsmodels' pyfunc answers a frame: one record per row, its column named "0"
    assert [row["0"] for row in predictions(body)] == pytest.approx(models.v4.tolist(), rel=1e-9)
