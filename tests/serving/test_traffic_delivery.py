"""The traffic log delivered to a real sqlite MLflow store: the serving run, one row per input row of each logged
request (parsed as MLflow's scoring server parses it), predictions and shadow predictions on one row, feedback,
summary metrics and tags; a graceful stop ends the run FINISHED; read_traffic reads it back by alias and time;
secrets never reach the Parquet; the disk bound's count reaches the run."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nbmlops.exceptions import MonitoringDataError
from nbmlops.journal import read_records
from nbmlops.serving.recorder import ServingRecorder
from nbmlops.serving.traffic import read_traffic
from nbmlops.serving.traffic_log import TrafficLog, list_segments
from tests.conftest import runs_of

GITHUB_TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
PASSWORD = "opensesame-42-secret"


def request(rid: str, rows: list[list], *, ts: float | None = None, version: int = 1, status: int = 200,
            predictions: list | None = None, error: str | None = None, columns: tuple = ("age", "income")) -> dict:
    body = json.dumps({"dataframe_split": {"columns": list(columns), "data": rows}})
    response = json.dumps({"predictions": predictions}) if predictions is not None else None
    return {"kind": "request", "id": rid, "ts": time.time() if ts is None else ts, "version": version,
            "status": status, "latency_ms": 2.0, "content_type": "application/json", "body": body, "body_b64": None,
            "response": response, "error": error}


def unsampled(rid: str, latency_ms: float, status: int = 200) -> dict:
    return {"kind": "request", "id": rid, "ts": time.time(), "version": 1, "status": status,
            "latency_ms": latency_ms, "content_type": "application/json", "body": None, "body_b64": None,
            "response": None, "error": None}


@pytest.fixture
def recorders(project: Path):
    """Start serving runs (no thread rounds during the test: deliveries are the test's calls); stopped at the end."""
    started: list[ServingRecorder] = []

    def start(model: str, alias: str = "champion", shadow: str | None = None) -> ServingRecorder:
        recorder = ServingRecorder(interval=3600)
        recorder.start(model, alias, 1, "http://127.0.0.1:8080", "testhost", os.getpid(), shadow)
        started.append(recorder)
        return recorder

    yield start
    for recorder in started:
        recorder.stop()


def test_logged_requests_become_one_row_per_input_row_and_the_run_finishes(project: Path, recorders, client):
    recorder = recorders("churn")
    log = TrafficLog(recorder.folder)
    assert log.append({"kind": "start", "ts": time.time(), "version": 1, "pid": os.getpid()})
    assert log.append(request("a", [[30, 1000.5], [40, 2000.0]], predictions=[0, 1]))
    assert log.append(request("b", [[50, 10.0]], predictions=[1]))
    assert log.append(unsampled("c", 100.0))
    assert log.append(request("bad", [[1, None]], status=400, error="Failed to enforce schema: income missing"))
    garbled = {**request("garbled", []), "body": "{not json", "status": 400, "error": "Invalid input"}
    assert log.append(garbled)
    assert log.append({"kind": "feedback", "id": "a", "ts": time.time(), "labels": [0, 0]})
    assert log.append({"kind": "swap", "ts": time.time(), "from": 1, "to": 2})
    assert recorder.deliver()
    run = client.get_run(recorder.run_id)
    assert run.info.status == "RUNNING"
    assert run.data.metrics["requests"] == 5
    assert run.data.metrics["errors"] == 2
    assert run.data.metrics["error_rate"] == pytest.approx(0.4)
    assert run.data.metrics["latency_p50_ms"] == pytest.approx(2.0, rel=0.02)
    assert run.data.metrics["latency_p99_ms"] == pytest.approx(100.0, rel=0.02)
    tags = run.data.tags
    assert tags["nbmlops.kind"] == "serve" and tags["nbmlops.serve.alias"] == "champion"
    assert tags["nbmlops.serve.version"] == "2" and tags["nbmlops.serve.last_swap"].endswith("v1 -> v2")
    assert run.info.run_name == "serve churn@champion 127.0.0.1:8080"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.tags[0].value == "traffic" and dataset.dataset.name.startswith("traffic/")

    log.close()
    folder = recorder.folder
    assert recorder.stop()
    assert client.get_run(recorder.run_id).info.status == "FINISHED"
    assert not folder.exists()  # everything delivered: the segments and the folder are gone

    traffic = read_traffic("churn")
    rows = traffic.requests
    assert list(rows["request_id"]) == ["a", "a", "b", "bad", "garbled"]  # the unsampled request is no row
    assert list(rows["row"]) == [0, 1, 0, 0, 0]
    assert list(rows["input.age"].iloc[:4]) == [30, 40, 50, 1]
    assert rows.iloc[4][["input.age", "input.income"]].isna().all()  # a body that does not parse: no inputs
    assert list(rows["input.income"].iloc[:3]) == [1000.5, 2000.0, 10.0]
    assert list(rows["prediction"].iloc[:3]) == [0, 1, 1]
    assert list(rows["error"].iloc[3:]) == ["Failed to enforce schema: income missing", "Invalid input"]
    assert rows["error"].iloc[:3].isna().all()
    assert str(rows["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert traffic.runs == [recorder.run_id]
    assert list(traffic.inputs().columns) == ["age", "income"] and len(traffic.inputs()) == 3
    labelled = traffic.with_labels()
    assert list(labelled.loc[labelled["request_id"] == "a", "label"]) == [0, 0]
    assert labelled.loc[labelled["request_id"] == "b", "label"].isna().all()


def test_shadow_prediction_lands_on_its_request_row_and_the_request_waits_for_it(project: Path, recorders):
    recorder = recorders("shadowed", shadow="challenger")
    log = TrafficLog(recorder.folder)
    assert log.append(request("s1", [[1, 2.0]], predictions=[0]))
    assert recorder.deliver()
    assert read_traffic("shadowed").requests.empty  # its shadow has not answered yet: it waits
    assert log.append({"kind": "shadow", "id": "s1", "ts": time.time(), "version": 2, "status": 200,
                       "latency_ms": 7.5, "response": json.dumps({"predictions": [1]})})
    assert recorder.deliver()
    rows = read_traffic("shadowed").requests
    assert list(rows["request_id"]) == ["s1"]
    assert rows["prediction"].iloc[0] == 0 and rows["shadow.prediction"].iloc[0] == 1
    assert rows["shadow.model_version"].iloc[0] == 2 and rows["shadow.latency_ms"].iloc[0] == 7.5
    log.close()


def test_secret_column_and_token_never_reach_the_parquet(project: Path, recorders, client):
    recorder = recorders("secretive")
    log = TrafficLog(recorder.folder)
    assert log.append(request("x", [[1, PASSWORD, GITHUB_TOKEN]], predictions=[1], columns=("age", "password", "memo")))
    log.close()
    segment_bytes = b"".join(p.read_bytes() for p in list_segments(recorder.folder))
    assert PASSWORD.encode() not in segment_bytes and GITHUB_TOKEN.encode() not in segment_bytes
    assert recorder.stop()
    rows = read_traffic("secretive").requests
    assert rows["input.password"].iloc[0] == "***" and rows["input.memo"].iloc[0] == "***"
    artifacts = Path(client.get_run(recorder.run_id).info.artifact_uri.removeprefix("file://"))
    stored = b"".join(p.read_bytes() for p in artifacts.rglob("*") if p.is_file())
    assert stored and PASSWORD.encode() not in stored and GITHUB_TOKEN.encode() not in stored


def test_records_left_out_by_the_bound_are_counted_on_the_run(project: Path, recorders, client):
    recorder = recorders("bounded")
    log = TrafficLog(recorder.folder, max_bytes=3000, segment_bytes=700)
    refused = sum(not log.append(request(f"r{i}", [[i, float(i)]] * 5, predictions=[0] * 5)) for i in range(40))
    assert refused and log.unlogged == refused
    assert recorder.deliver()  # delivers and deletes the closed segments: room again
    time.sleep(1.2)
    assert log.append(request("after", [[1, 1.0]], predictions=[1]))
    log.close()
    assert recorder.stop()
    run = client.get_run(recorder.run_id)
    assert run.data.metrics["unlogged"] == refused
    assert run.data.metrics["requests"] == 40 - refused + 1
    assert len(read_traffic("bounded").requests) == (40 - refused) * 5 + 1


def test_read_traffic_filters_by_alias_and_since(project: Path, recorders):
    old = time.time() - 3 * 86400
    champion, challenger = recorders("filtered"), recorders("filtered", alias="challenger")
    for recorder, prefix in ((champion, "c"), (challenger, "h")):
        log = TrafficLog(recorder.folder)
        assert log.append(request(f"{prefix}-old", [[1, 1.0]], ts=old, predictions=[0]))
        assert log.append(request(f"{prefix}-new", [[2, 2.0]], predictions=[1]))
        log.append({"kind": "feedback", "id": f"{prefix}-old", "ts": old, "labels": [1]})
        log.close()
        assert recorder.deliver()
    assert sorted(read_traffic("filtered").requests["request_id"]) == ["c-new", "c-old", "h-new", "h-old"]
    assert sorted(read_traffic("filtered", alias="challenger").requests["request_id"]) == ["h-new", "h-old"]
    assert read_traffic("filtered", alias="challenger").runs == [challenger.run_id]
    assert sorted(read_traffic("filtered", since="24h").requests["request_id"]) == ["c-new", "h-new"]
    assert read_traffic("filtered", since="24h").feedback.empty
    assert len(read_traffic("filtered", since="7d").feedback) == 2
    since = datetime.now(timezone.utc) - timedelta(minutes=30)
    assert list(read_traffic("filtered", alias="champion", since=since).requests["request_id"]) == ["c-new"]
    assert list(read_traffic("filtered", alias="champion", since="30m").requests["request_id"]) == ["c-new"]
    assert read_traffic("no-such-model").requests.empty
    with pytest.raises(MonitoringDataError, match="since"):
        read_traffic("filtered", since="yesterday-ish")


def test_a_serving_run_that_ended_before_since_is_not_read(project: Path, recorders, client):
    earlier, current = recorders("windowed"), recorders("windowed")
    for recorder, rid in ((earlier, "earlier"), (current, "current")):
        log = TrafficLog(recorder.folder)
        assert log.append(request(rid, [[1, 1.0]], ts=time.time() - 3 * 3600 if rid == "earlier" else None,
                                  predictions=[0]))
        log.close()
        assert recorder.deliver()
    assert earlier.stop()
    client.set_terminated(earlier.run_id, "FINISHED", end_time=int((time.time() - 2 * 3600) * 1000))
    everything = read_traffic("windowed")
    assert sorted(everything.runs) == sorted([earlier.run_id, current.run_id])
    assert sorted(everything.requests["request_id"]) == ["current", "earlier"]
    window = read_traffic("windowed", since="1h")
    assert window.runs == [current.run_id]  # the run that ended two hours ago is not downloaded
    assert list(window.requests["request_id"]) == ["current"]
    assert read_traffic("windowed", since="4h").runs == everything.runs


def test_a_replayed_round_sends_the_same_rows_once(project: Path, recorders, client):
    """A round whose sending was cut short (its plan stays in the folder's state) is sent again whole: records
    appended meanwhile wait for the next round, and no row, dataset or metric point is doubled."""
    recorder = recorders("replayed")
    log = TrafficLog(recorder.folder)
    assert log.append(request("p1", [[1, 1.0]], predictions=[0]))
    delivery = recorder._delivery
    plan, batch, _ = delivery._plan(final=False)
    delivery.state.pending = plan
    delivery.state.save(recorder.folder)
    delivery._send(plan, batch)  # sent, then the process died before its commit
    assert log.append(request("p2", [[2, 2.0]], predictions=[1]))
    assert recorder.deliver()
    assert delivery.state.cursors[log.path.name] == log.size  # the replayed round, then the rest: all of it
    log.close()
    assert recorder.stop()
    rows = read_traffic("replayed").requests
    assert sorted(rows["request_id"]) == ["p1", "p2"]
    run = client.get_run(recorder.run_id)
    assert len(run.inputs.dataset_inputs) == 2
    history = client.get_metric_history(recorder.run_id, "requests")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0)]
    assert len(runs_of(client, "serve/replayed")) == 1


def test_segments_are_read_as_complete_frames_only(project: Path, recorders):
    """A frame cut short at the tail of a segment whose writer lives is left for the next round."""
    recorder = recorders("partial")
    log = TrafficLog(recorder.folder)
    assert log.append(request("whole", [[1, 1.0]], predictions=[0]))
    assert log.path is not None
    frame = log.path.read_bytes()
    with open(log.path, "ab") as fh:  # the first half of a frame, as a reader may see a write in progress
        fh.write(frame[: len(frame) // 2])
    assert recorder.deliver()
    assert list(read_traffic("partial").requests["request_id"]) == ["whole"]
    ends = [end for end, _ in read_records(log.path)]
    assert recorder._delivery.state.cursors[log.path.name] == ends[0]
    log.close()


def test_an_empty_segment_left_by_a_writer_killed_before_its_first_record_does_not_hold_the_folder(project, recorders,
                                                                                                   client):
    recorder = recorders("empty-segment")
    log = TrafficLog(recorder.folder)
    assert log.append(request("e1", [[1, 1.0]], predictions=[0]))
    log.close()
    (recorder.folder / f"{time.time_ns():020d}-host-999999-0badc0de.traffic").touch()  # named, never written
    folder = recorder.folder
    assert recorder.stop()
    assert not folder.exists()
    assert client.get_run(recorder.run_id).info.status == "FINISHED"
    assert list(read_traffic("empty-segment").requests["request_id"]) == ["e1"]


def _every_format_round() -> tuple[list[dict], dict[str, dict]]:
    """One round of logged requests in every input format MLflow's scoring server takes, with answers of every
    shape, errors, shadows, and columns that change type or go missing from one request to the next."""
    import base64
    import io

    import pandas as pd

    def logged(rid: str, body: str | None, response: object, *, content_type: str = "application/json",
               body_b64: str | None = None, status: int = 200, error: str | None = None) -> dict:
        return {"kind": "request", "id": rid, "ts": 1_700_000_000.123456 + len(rid), "version": 3, "status": status,
                "latency_ms": 1.25, "content_type": content_type, "body": body, "body_b64": body_b64,
                "response": None if response is None else json.dumps({"predictions": response}), "error": error}

    split = lambda columns, data: json.dumps({"dataframe_split": {"columns": columns, "data": data}})  # noqa: E731
    parquet = io.BytesIO()
    pd.DataFrame({"age": [7, 8], "income": [1.5, 2.5]}).to_parquet(parquet, index=False)
    records = [
        logged("split", split(["age", "income"], [[30, 1000.5], [40, 2000]]), [0, 1]),
        logged("split-again", split(["age", "income"], [[31, 1.0]]), [1]),
        logged("split-float-age", split(["age", "income"], [[31.5, 1.0]]), [0.25]),
        logged("split-text", split(["age", "city"], [[1, "Oslo"], [2, "Lima"]]), ["a", "b"]),
        logged("split-flag", split(["flag"], [[True], [False]]), [True, False]),
        logged("split-null", split(["age", "income"], [[None, 1.0]]), [None]),
        logged("split-index", json.dumps({"dataframe_split": {"columns": ["age"], "data": [[5]], "index": [9]}}), [1]),
        logged("split-no-columns", json.dumps({"dataframe_split": {"data": [[5, 6.0]]}}), [1]),
        logged("split-params", json.dumps({"dataframe_split": {"columns": ["age"], "data": [[6]]},
                                           "params": {"k": 1}}), [1]),
        logged("records", json.dumps({"dataframe_records": [{"age": 1, "income": 2.0}, {"age": 3, "income": 4.5}]}),
               [{"label": 0, "score": 0.1}, {"label": 1, "score": 0.9}]),
        logged("records-ragged", json.dumps({"dataframe_records": [{"age": 1}, {"income": 4.5}]}), [0, 1]),
        logged("instances-records", json.dumps({"instances": [{"age": 1, "city": "Rome"}, {"age": 2, "city": "Bern"}]}),
               [0, 1]),
        logged("instances-rows", json.dumps({"instances": [[1, 2], [3, 4.5]]}), [0, 1]),
        logged("instances-int-rows", json.dumps({"instances": [[1, 2], [3, 4]]}), [0, 1]),
        logged("instances-scalars", json.dumps({"instances": [1.5, 2.5, 3.5]}), [0, 1, 1]),
        logged("inputs-columns", json.dumps({"inputs": {"age": [1, 2], "city": ["Oslo", "Rome"]}}), [1, 0]),
        logged("inputs-rows", json.dumps({"inputs": [[True, False], [False, True]]}), [0, 1]),
        logged("inputs-tensor", json.dumps({"inputs": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}), [[0, 1], [1, 0]]),
        logged("inputs-scalar-column", json.dumps({"inputs": {"age": 5}}), [1]),
        logged("csv", "age,income\n5,6.5\n7,8.5\n", [1, 0], content_type="text/csv"),
        logged("parquet", None, [0, 1], content_type="application/vnd.apache.parquet",
               body_b64=base64.b64encode(parquet.getvalue()).decode()),
        logged("refused", split(["age", "income"], [[1, "x"]]), None, status=400, error="Failed to enforce schema"),
        logged("garbled", "{not json", None, status=400, error="Invalid input"),
        logged("two-formats", json.dumps({"instances": [1], "inputs": [1]}), None, status=400, error="Invalid input"),
        logged("short-answer", split(["age", "income"], [[1, 1.0], [2, 2.0]]), [1]),
        logged("column-answer", split(["age", "income"], [[1, 1.0]]), {"label": [1], "score": [0.5]}),
        logged("huge-int", split(["age", "income"], [[2**70, 1.0]]), [1]),
        logged("split-tail", split(["age", "income"], [[50, 10.0]]), [1]),
    ]
    shadows = {
        "split-again": {"kind": "shadow", "id": "split-again", "version": 4, "latency_ms": 2.5,
                        "response": json.dumps({"predictions": [0]})},
        "records": {"kind": "shadow", "id": "records", "version": 4, "latency_ms": 3.5,
                    "response": json.dumps({"predictions": [0.5, 0.75]})},
        "split-tail": {"kind": "shadow", "id": "split-tail", "version": 4, "latency_ms": None, "response": None},
    }
    return records, shadows


def test_a_round_in_every_input_format_gives_the_rows_and_types_of_mlflows_parsers(tmp_path: Path):
    """The round's frame (common JSON read straight into columns, the rest by MLflow's parsers) equals, column by
    column and type by type, the frame of every request read by MLflow's scoring-server parsers, and so does its
    Parquet; each run of consecutive requests alone too."""
    import pandas as pd
    import pyarrow.parquet as pq

    from nbmlops.backend import traffic

    records, shadows = _every_format_round()
    for part in (records, records[:5], records[9:12], records[12:20], records[20:]):
        got = traffic.request_frame(part, shadows)
        expected = traffic._request_frame(part, shadows, fast=False)
        assert list(got.columns) == list(expected.columns)
        assert dict(got.dtypes) == dict(expected.dtypes)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        for name in got.columns:  # the same Python values (None stays None, a str stays a str)
            assert [type(v) for v in got[name]] == [type(v) for v in expected[name]], name
        traffic._write_parquet(got, tmp_path / "got.parquet")
        traffic._write_parquet(expected, tmp_path / "expected.parquet")
        assert pq.read_schema(tmp_path / "got.parquet").equals(pq.read_schema(tmp_path / "expected.parquet"))
        assert pq.read_table(tmp_path / "got.parquet").equals(pq.read_table(tmp_path / "expected.parquet"))
    fast = [r["id"] for r in records if traffic._fast_record(r, shadows.get(r["id"])) is not None]
    assert fast == ["split", "split-again", "split-float-age", "split-text", "split-flag", "split-null",
                    "split-params", "records", "instances-records", "instances-rows", "instances-int-rows",
                    "instances-scalars", "inputs-columns", "inputs-rows", "refused", "garbled", "two-formats",
                    "split-tail"]  # the rest (CSV, Parquet, tensors, unusual shapes) are read by MLflow's parsers


def test_delivering_a_single_row_request_costs_a_fraction_of_serving_it():
    """Turning logged single-row requests into traffic rows costs well under the ~6 ms of CPU that serving
    one takes (it was ~1.1-1.9 ms: a few DataFrames and a concat per request, and MLflow's parser again)."""
    import resource

    from nbmlops.backend.traffic import request_frame

    columns = ["a", "b", "c", "d", "e", "f", "g", "h"]
    records = [{"kind": "request", "id": f"r{i}", "ts": time.time(), "version": 1, "status": 200, "latency_ms": 3.0,
                "content_type": "application/json", "body_b64": None, "error": None,
                "body": json.dumps({"dataframe_split": {"columns": columns, "data": [[i * 0.5] * 8]}}),
                "response": json.dumps({"predictions": [i % 2]})} for i in range(2000)]
    request_frame(records[:10], {})

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return usage.ru_utime + usage.ru_stime

    spent = cpu()
    frame = request_frame(records, {})
    spent = cpu() - spent
    assert len(frame) == 2000 and list(frame["input.a"].iloc[:3]) == [0.0, 0.5, 1.0]
    assert spent / len(records) < 0.5e-3, f"{spent / len(records) * 1000:.3f} ms of CPU per request"
