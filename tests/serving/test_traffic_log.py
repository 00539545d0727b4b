"""The traffic log of a serving process on a real disk: journal frames, one locked segment per process, rolled at
a size; secrets redacted before a byte is written; the disk bound stops writing, counts, and reports the count once
records fit again."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import pandas as pd

from nbmlops.journal import Damage, read_records, try_lock
from nbmlops.serving.traffic_log import TrafficLog, list_segments

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # a token shape, in a column whose name says nothing
PASSWORD = "hunter2-correct-horse"


def request(rid: str, body: str | None = None, *, content_type: str = "application/json", **extra: object) -> dict:
    record = {"kind": "request", "id": rid, "ts": time.time(), "version": 1, "status": 200, "latency_ms": 1.0,
              "content_type": content_type, "body": body, "body_b64": None, "response": None, "error": None}
    record.update(extra)
    return record


def records_of(folder: Path) -> list[dict]:
    found = []
    for segment in list_segments(folder):
        for _, record in read_records(segment):
            assert not isinstance(record, Damage), record
            found.append(record)
    return found


def all_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in folder.iterdir() if path.is_file())


def test_each_record_is_one_journal_frame_in_a_segment_of_this_process(tmp_path: Path):
    log = TrafficLog(tmp_path / "serve")
    body = json.dumps({"dataframe_split": {"columns": ["age", "city"], "data": [[42, "Lyon"]]}})
    assert log.append(request("a", body))
    assert log.append({"kind": "swap", "ts": 1.0, "from": 1, "to": 2})
    segments = list_segments(tmp_path / "serve")
    assert len(segments) == 1 and f"-{os.getpid()}-" in segments[0].name
    assert [r.get("id", r["kind"]) for r in records_of(tmp_path / "serve")] == ["a", "swap"]
    assert records_of(tmp_path / "serve")[0]["body"] == body  # nothing secret-looking: written as it came
    assert segments[0].stat().st_size == log.size
    log.close()


def test_segment_is_locked_while_its_writer_has_it_open_and_free_after_close(tmp_path: Path):
    log = TrafficLog(tmp_path)
    assert log.append(request("a"))
    assert log.path is not None
    assert try_lock(log.path) is None  # another reader learns the writer is alive
    log.close()
    fd = try_lock(log.path)
    assert fd is not None  # ... and that it is gone
    os.close(fd)
    assert not log.append(request("late"))  # a closed log writes nothing more and counts it
    assert log.unlogged == 1


def test_segment_rolls_past_its_size_and_releases_the_full_one(tmp_path: Path):
    log = TrafficLog(tmp_path, segment_bytes=1000)
    for i in range(30):
        assert log.append(request(f"r{i}", json.dumps({"inputs": {"x": [i] * 10}})))
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    assert [r["id"] for r in records_of(tmp_path)] == [f"r{i}" for i in range(30)]
    for segment in segments[:-1]:  # rolled: closed by their writer
        fd = try_lock(segment)
        assert fd is not None
        os.close(fd)
    assert try_lock(segments[-1]) is None
    log.close()


def test_secret_named_columns_and_token_shapes_never_reach_the_log(tmp_path: Path):
    log = TrafficLog(tmp_path)
    split = {"dataframe_split": {"columns": ["age", "api_key", "note"], "data": [[42, PASSWORD, GITHUB_TOKEN]]}}
    assert log.append(request("split", json.dumps(split),
                              response=json.dumps({"predictions": [f"echo {PASSWORD}"]}),
                              error=f"Failed to predict data '   age api_key\n0  42  {PASSWORD}'"))
    records = {"dataframe_records": [{"age": 1, "password": PASSWORD, "note": f"see {GITHUB_TOKEN}"}]}
    assert log.append(request("records", json.dumps(records)))
    assert log.append(request("inputs", json.dumps({"inputs": {"age": [3], "db_password": [PASSWORD]}})))
    assert log.append(request("csv", f"age,auth_token\n5,{PASSWORD}\n", content_type="text/csv"))
    log.close()
    raw = all_bytes(tmp_path)
    assert PASSWORD.encode() not in raw
    assert GITHUB_TOKEN.encode() not in raw
    logged = {r["id"]: r for r in records_of(tmp_path)}
    split_logged = json.loads(logged["split"]["body"])["dataframe_split"]
    assert split_logged["data"] == [[42, "***", "***"]]  # the age is kept
    assert json.loads(logged["records"]["body"])["dataframe_records"] == [{"age": 1, "password": "***", "note": "see ***"}]
    assert json.loads(logged["inputs"]["body"]) == {"inputs": {"age": [3], "db_password": ["***"]}}
    assert logged["csv"]["body"].splitlines() == ["age,auth_token", "5,***"]
    assert "***" in logged["split"]["error"] and "***" in logged["split"]["response"]


def test_parquet_body_secret_column_is_redacted_before_it_is_written(tmp_path: Path):
    frame = pd.DataFrame({"age": [1, 2], "session_id": [PASSWORD, PASSWORD + "x"], "note": ["ok", GITHUB_TOKEN]})
    out = io.BytesIO()
    frame.to_parquet(out)
    log = TrafficLog(tmp_path)
    assert log.append(request("pq", None, content_type="application/vnd.apache.parquet",
                              body_b64=base64.b64encode(out.getvalue()).decode()))
    log.close()
    (record,) = records_of(tmp_path)
    logged = pd.read_parquet(io.BytesIO(base64.b64decode(record["body_b64"])))
    assert list(logged["age"]) == [1, 2]
    assert list(logged["session_id"]) == ["***", "***"]
    assert list(logged["note"]) == ["ok", "***"]
    assert PASSWORD.encode() not in all_bytes(tmp_path)


def test_bound_stops_writing_counts_and_reports_the_count_once_records_fit_again(tmp_path: Path):
    folder = tmp_path / "serve"
    log = TrafficLog(folder, max_bytes=4000, segment_bytes=600)
    body = json.dumps({"inputs": {"x": list(range(40))}})
    written = refused = 0
    for i in range(60):
        if log.append(request(f"r{i}", body)):
            written += 1
        else:
            refused += 1
    assert written and refused
    assert log.unlogged == refused
    assert sum(p.stat().st_size for p in list_segments(folder)) <= 4000  # nothing past the bound
    assert len(records_of(folder)) == written
    for segment in list_segments(folder):  # the recorder delivered and deleted the closed segments
        fd = try_lock(segment)
        if fd is not None:
            segment.unlink()
            os.close(fd)
    time.sleep(1.2)  # the writer looks at the folder again at most once a second
    assert log.append(request("after", body))
    kinds = [(r["kind"], r.get("count"), r.get("id")) for r in records_of(folder)]
    assert ("unlogged", refused, None) in kinds
    assert kinds[-1] == ("request", None, "after")
    assert kinds.index(("unlogged", refused, None)) == len(kinds) - 2  # said first, before the next record
    log.close()


def test_a_record_that_is_not_json_is_counted_not_raised(tmp_path: Path):
    log = TrafficLog(tmp_path)
    assert not log.append(request("bad", latency_ms=object()))  # type: ignore[arg-type]
    assert log.unlogged == 1
    assert log.append(request("good"))
    log.close()
    assert [r["kind"] for r in records_of(tmp_path)] == ["unlogged", "request"]


TOKEN_SHAPES = [
    "ghp_" + "a" * 36, "github_pat_" + "B" * 30, "sk-proj-" + "c" * 30, "AKIA" + "ABCDEFGHIJKLMNOP",
    "xoxb-" + "1234567890-abc", "hf_" + "D" * 34, "AIza" + "E" * 35, "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4f",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "https://bob:hunter2hunter2@example.com/x",
]


def test_every_token_shape_the_redactor_knows_passes_the_cheap_test_and_is_redacted(tmp_path: Path):
    log = TrafficLog(tmp_path)
    for i, token in enumerate(TOKEN_SHAPES):
        body = json.dumps({"dataframe_split": {"columns": ["note"], "data": [[f"x {token} y"]]}})
        assert log.append(request(f"t{i}", body))
    log.close()
    raw = all_bytes(tmp_path)
    for token in TOKEN_SHAPES:
        secret = token.split("//")[-1].split("@")[0] if "://" in token else token
        assert json.dumps(secret)[1:-1].encode() not in raw, token


def test_a_forked_child_writes_a_segment_of_its_own_and_leaves_the_parent_s_lock(tmp_path: Path):
    log = TrafficLog(tmp_path)
    assert log.append(request("parent"))
    parent_segment = log.path
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is its exit code
        ok = log.append(request("child"))
        log.close()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    segments = list_segments(tmp_path)
    assert len(segments) == 2 and any(f"-{child}-" in s.name for s in segments)
    assert try_lock(parent_segment) is None  # still the parent's: the child closed only its copy
    assert log.append(request("parent again"))
    log.close()
    assert sorted(r["id"] for r in records_of(tmp_path)) == ["child", "parent", "parent again"]
