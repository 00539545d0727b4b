"""``nbmlops serve`` speaks MLflow's scoring protocol: real uvicorn servers on 127.0.0.1, real registered versions.

The reference is MLflow's own scoring app (``mlflow.pyfunc.scoring_server.init`` on the model MLflow's loader
reads, what ``mlflow models serve`` runs) served by uvicorn beside it: the same requests get the same status, body
and content type, good and bad ones alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.serving.conftest import http, metric_samples, predictions, split_body, traffic_records

PARQUET = "application/vnd.apache.parquet"


def _bodies(rows) -> dict[str, tuple[bytes, str]]:
    """The same rows in every input format MLflow's scoring server reads."""
    parquet = io.BytesIO()
    rows.to_parquet(parquet, index=False)
    records = rows.to_dict(orient="records")
    return {
        "dataframe_split": (split_body(rows), "application/json"),
        "dataframe_records": (json.dumps({"dataframe_records": records}).encode(), "application/json"),
        "instances": (json.dumps({"instances": records}).encode(), "application/json"),
        "inputs": (json.dumps({"inputs": rows.to_dict(orient="list")}).encode(), "application/json; charset=utf-8"),
        "csv": (rows.to_csv(index=False).encode(), "text/csv"),
        "parquet": (parquet.getvalue(), PARQUET),
    }


def _bad_requests(rows) -> list[tuple[str, str, bytes | None, str | None]]:
    """Requests MLflow refuses, one of each kind: ``(method, path, body, content type)``."""
    return [
        ("POST", "/invocations", split_body(rows[["a"]]), "application/json"),  # a column missing
        ("POST", "/invocations", split_body(rows.rename(columns={"b": "c"})), "application/json"),
        ("POST", "/invocations", b'{"dataframe_split": {"columns": ["a", "b"], "data": [["x", 1.0]]}}',
         "application/json"),  # a string where a double is expected
        ("POST", "/invocations", b"{not json", "application/json"),
        ("POST", "/invocations", b"[1, 2]", "application/json"),
        ("POST", "/invocations", b'{"rows": [[1, 2]]}', "application/json"),
        ("POST", "/invocations", b"a,b\n1,2\n", "application/xml"),
        ("POST", "/invocations", b"a,b\n1,2\n", "text/csv; charset=latin-1"),
        ("POST", "/invocations", b"a,b\n1,2\n", "text/csv; header=present"),
        ("POST", "/invocations", b"\x00\x01 not parquet", PARQUET),
        ("POST", "/invocations", b"a,b\nx,y,z\n", "text/csv"),
        ("POST", "/invocations", b"", "application/json"),
        ("GET", "/invocations", None, None),
        ("GET", "/no-such-route", None, None),
        ("GET", "/ping", None, None),
        ("GET", "/health", None, None),
        ("GET", "/version", None, None),
    ]


@contextlib.contextmanager
def _mlflow_models_serve(name: str, version: int, store_uri: str, tmp_path: Path) -> Iterator[str]:
    """MLflow's own scoring app for ``name/version`` (loaded by MLflow's loader), in uvicorn on 127.0.0.1."""
    import mlflow.pyfunc
    import uvicorn
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.pyfunc import scoring_server

    uri = MlflowClient(store_uri).get_model_version_download_uri(name, str(version))
    local = download_artifacts(artifact_uri=uri, dst_path=str(tmp_path), tracking_uri=store_uri)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(scoring_server.init(mlflow.pyfunc.load_model(local)), host="127.0.0.1",
                                          port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "MLflow's scoring app did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_predictions_equal_the_estimators_for_every_input_format(models, serving):
    handle = serving(f"{models.name}@champion")
    for kind, (body, content_type) in _bodies(models.rows).items():
        status, headers, answer = http("POST", handle.url + "/invocations", body, content_type)
        assert status == 200, (kind, answer)
        assert predictions(answer) == models.v1.tolist(), kind
        assert headers["nbmlops-model-version"] == "1"


def test_good_and_bad_requests_get_the_same_answers_as_mlflows_own_scoring_app(models, serving, store_uri, tmp_path):
    handle = serving(f"{models.name}@champion")
    requests = [("POST", "/invocations", body, content_type) for body, content_type in _bodies(models.rows).values()]
    requests += _bad_requests(models.rows)
    with _mlflow_models_serve(models.name, 1, store_uri, tmp_path) as mlflow_url:
        for method, path, body, content_type in requests:
            ours = http(method, handle.url + path, body, content_type)
            theirs = http(method, mlflow_url + path, body, content_type)
            shown = (method, path, body[:60] if body else body, content_type)
            assert ours[0] == theirs[0], shown
            assert ours[2] == theirs[2], shown
            assert ours[1].get("content-type") == theirs[1].get("content-type"), shown
    statuses = {http(m, handle.url + p, b, c)[0] for m, p, b, c in _bad_requests(models.rows)}
    assert {400, 404, 405, 415} <= statuses  # the bad requests are refused in each of MLflow's ways


def test_every_answer_carries_the_version_and_a_request_id_and_model_says_what_is_served(models, serving):
    handle = serving(f"{models.name}@champion")
    seen = set()
    for method, path, body, content_type in [*_bad_requests(models.rows), ("GET", "/model", None, None),
                                             ("GET", "/metrics", None, None),
                                             ("POST", "/feedback", b"{}", "application/json")]:
        status, headers, _ = http(method, handle.url + path, body, content_type)
        assert headers["nbmlops-model-version"] == "1", (method, path, status)
        assert re.fullmatch(r"[0-9a-f]{32}", headers["nbmlops-request-id"]), (method, path)
        seen.add(headers["nbmlops-request-id"])
    assert len(seen) == len(_bad_requests(models.rows)) + 3  # a new id for each request
    body, content_type = _bodies(models.rows)["csv"]
    _, headers, _ = http("POST", handle.url + "/invocations", body, content_type, {"X-Request-ID": "order-42"})
    assert headers["nbmlops-request-id"] == "order-42"
    status, _, answer = http("GET", handle.url + "/model")
    described = json.loads(answer)
    assert status == 200 and described.pop("since")
    assert described == {"name": models.name, "alias": "champion", "version": 1, "run_id": handle.run_id,
                         "shadow": None}


def test_each_request_is_recorded_before_its_answer_with_the_body_of_the_sampled_fraction(models, serving):
    handle = serving(f"{models.name}@champion")
    body, content_type = _bodies(models.rows)["dataframe_split"]
    _, headers, answer = http("POST", handle.url + "/invocations", body, content_type)
    bad = split_body(models.rows[["a"]])
    _, bad_headers, bad_answer = http("POST", handle.url + "/invocations", bad, "application/json")
    parquet, _ = _bodies(models.rows)["parquet"]
    _, parquet_headers, _ = http("POST", handle.url + "/invocations", parquet, PARQUET)
    requests = {r["id"]: r for r in traffic_records(handle.folder) if r["kind"] == "request"}
    ok = requests[headers["nbmlops-request-id"]]
    assert (ok["version"], ok["status"], ok["body"], ok["response"], ok["error"]) == (1, 200, body.decode(),
                                                                                      answer.decode(), None)
    assert ok["latency_ms"] > 0 and ok["content_type"] == "application/json" and abs(ok["ts"] - time.time()) < 60
    failed = requests[bad_headers["nbmlops-request-id"]]
    assert failed["status"] == 400 and failed["error"] == json.loads(bad_answer)["message"]
    assert "Model is missing inputs ['b']" in failed["error"]
    import base64

    assert base64.b64decode(requests[parquet_headers["nbmlops-request-id"]]["body_b64"]) == parquet
    starts = [r for r in traffic_records(handle.folder) if r["kind"] == "start"]
    assert [(s["version"], s["pid"]) for s in starts] == [(1, __import__("os").getpid())]

    unsampled = serving(f"{models.name}@champion", log_requests=0.0)
    _, headers, _ = http("POST", unsampled.url + "/invocations", body, content_type)
    [record] = [r for r in traffic_records(unsampled.folder) if r["kind"] == "request"]
    assert record["id"] == headers["nbmlops-request-id"] and record["status"] == 200
    assert record["body"] is None and record["body_b64"] is None and record["response"] is None


def test_metrics_parse_with_prometheus_parser_and_count_requests_errors_and_latency(models, serving):
    handle = serving(f"{models.name}@champion")
    body, content_type = _bodies(models.rows)["csv"]
    for _ in range(3):
        http("POST", handle.url + "/invocations", body, content_type)
    http("POST", handle.url + "/invocations", b"{not json", "application/json")
    assert http("GET", handle.url + "/metrics")[1]["content-type"].startswith("text/plain")
    samples = metric_samples(handle.url)
    assert samples[("nbmlops_requests_total", (("status", "200"), ("version", "1")))] == 3
    assert samples[("nbmlops_requests_total", (("status", "400"), ("version", "1")))] == 1
    assert samples[("nbmlops_request_errors_total", (("version", "1"),))] == 1
    assert samples[("nbmlops_request_latency_seconds_count", (("version", "1"),))] == 4
    assert samples[("nbmlops_request_latency_seconds_sum", (("version", "1"),))] > 0
    assert samples[("nbmlops_model_version", ())] == 1
    for name in ("nbmlops_swaps_total", "nbmlops_swap_refusals_total", "nbmlops_traffic_unlogged_total"):
        assert samples[(name, ())] == 0


def test_feedback_takes_the_three_shapes_and_refuses_bad_bodies_with_mlflows_error_shape(models, serving):
    handle = serving(f"{models.name}@champion")
    url = handle.url + "/feedback"
    good = [({"request_id": "r1", "labels": [1, 0]}, 1),
            ([{"request_id": "r2", "labels": [1]}, {"request_id": "r3", "labels": ["yes"]}], 2),
            ({"request_ids": ["r4", "r5", "r6"], "labels": [0, 1, None]}, 3)]
    for body, accepted in good:
        status, _, answer = http("POST", url, json.dumps(body).encode(), "application/json")
        assert (status, json.loads(answer)) == (200, {"accepted": accepted})
    for bad in (b"{not json", b"[]", b'{"request_id": "r1"}', b'{"request_id": 7, "labels": [1]}',
                b'{"request_id": "r1", "labels": []}', b'{"request_id": "r1", "labels": [[1]]}',
                b'{"request_ids": ["r1"], "labels": [1, 2]}'):
        status, headers, answer = http("POST", url, bad, "application/json")
        error = json.loads(answer)
        assert status == 400 and headers["content-type"] == "application/json", bad
        assert error["error_code"] == "BAD_REQUEST" and error["message"], bad
    assert http("GET", url)[0] == 405
    logged = [(r["id"], r["labels"]) for r in traffic_records(handle.folder) if r["kind"] == "feedback"]
    assert logged == [("r1", [1, 0]), ("r2", [1]), ("r3", ["yes"]), ("r4", [0]), ("r5", [1]), ("r6", [None])]


@pytest.mark.parametrize("host", ["127.0.0.1"])
def test_a_port_in_use_is_one_line_naming_it(models, project, host):
    import socket

    from nbmlops.exceptions import ConfigError
    from nbmlops.serving import serve

    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^port \(from argument\): {host}:{port} is in use"):
            serve(f"{models.name}@champion", host=host, port=port, block=False)


def test_answers_on_a_kept_alive_connection_are_as_quick_as_mlflows_own_app(models, serving, store_uri, tmp_path):
    """One request at a time on one connection: no answer waits for the client's delayed ACK (the 40 ms that
    Nagle's algorithm costs a server that does not set TCP_NODELAY on its connections)."""
    import http.client
    import statistics
    from urllib.parse import urlsplit

    def median_ms(url: str) -> float:
        address = urlsplit(url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        body, content_type = _bodies(models.rows)["dataframe_split"]
        times = []
        for _ in range(40):
            began = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": content_type})
            answer = connection.getresponse()
            assert answer.status == 200 and predictions(answer.read()) == models.v1.tolist()
            times.append((time.perf_counter() - began) * 1000)
        connection.close()
        return statistics.median(times[10:])

    handle = serving(f"{models.name}@champion")
    with _mlflow_models_serve(models.name, 1, store_uri, tmp_path) as mlflow_url:
        theirs, ours = median_ms(mlflow_url), median_ms(handle.url)
    assert ours < 2 * theirs + 10, (ours, theirs)  # 40 ms a request when delayed by Nagle's algorithm


def test_mlflows_request_timeout_applies_and_the_timed_out_request_is_recorded(models, serving, store_uri, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "0")  # every request runs out of time at once
    handle = serving(f"{models.name}@champion")
    body, content_type = _bodies(models.rows)["dataframe_split"]
    with _mlflow_models_serve(models.name, 1, store_uri, tmp_path) as mlflow_url:
        theirs = http("POST", mlflow_url + "/invocations", body, content_type)
    status, headers, answer = http("POST", handle.url + "/invocations", body, content_type)
    assert (status, answer) == (theirs[0], theirs[2]) == (504, b"Request processing time exceeded limit")
    [record] = [r for r in traffic_records(handle.folder) if r["kind"] == "request"]
    assert (record["id"], record["status"], record["error"]) == (headers["nbmlops-request-id"], 504,
                                                                 "Request processing time exceeded limit")


def test_past_its_disk_bound_the_traffic_log_counts_what_it_left_out_and_answers_go_on(models, serving):
    handle = serving(f"{models.name}@champion", log_max_mb=0.002)  # about 2 KB: a few records
    body, content_type = _bodies(models.rows)["dataframe_split"]
    ids = []
    for _ in range(8):
        status, headers, answer = http("POST", handle.url + "/invocations", body, content_type)
        assert (status, predictions(answer)) == (200, models.v1.tolist())
        ids.append(headers["nbmlops-request-id"])
    logged = [r["id"] for r in traffic_records(handle.folder) if r["kind"] == "request"]
    assert 0 < len(logged) < 8 and logged == ids[: len(logged)]
    samples = metric_samples(handle.url)
    assert samples[("nbmlops_traffic_unlogged_total", ())] == 8 - len(logged)
    assert samples[("nbmlops_requests_total", (("status", "200"), ("version", "1")))] == 8
