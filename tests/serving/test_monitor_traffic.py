"""``nbmlops monitor NAME@ALIAS --traffic``: drift, latency, errors, online metrics and shadow agreement of the live
traffic a served model answered, read from traffic datasets written to a real sqlite store exactly as a server
delivers them (a serving run in ``serve/NAME`` with Parquet artifacts made from request records by the backend's
own writer), against real registered models."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.cli import main
from nbmlops.data import SnapshotStore
from nbmlops.registry import get_version
from nbmlops.registry.monitor import monitor

FEATURES = ["a", "b"]


def frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1.0, n)
    b = rng.uniform(0, 10, n)
    return pd.DataFrame({"a": a, "b": b, "y": (a + b / 5 > 1).astype(int)})


def registered_classifier(name: str, seed: int = 0, alias: str | None = "champion", evaluation: Any = None) -> tuple[Any, int]:
    """A logistic regression on ``a, b`` registered as ``name`` with its training snapshot (and ``alias``)."""
    from sklearn.linear_model import LogisticRegression

    train = frame(3000, seed)
    X_train = train[FEATURES]
    SnapshotStore().save(X_train)
    with nbmlops.track("train"):
        model = LogisticRegression().fit(X_train, train.y)
        version = nbmlops.register(model, name, training_data=X_train, evaluation_data=evaluation, timeout=120)
    nbmlops.flush(60)
    if alias:
        nbmlops.promote(f"{name}/{version.version}", alias)
    return model, version.version


def request(version: int, rows: pd.DataFrame, predictions: Sequence[Any] | None, *, latency_ms: float = 5.0,
            status: int = 200, ts: float | None = None, request_id: str | None = None) -> dict[str, Any]:
    """A request record as the serving core logs it: a ``dataframe_split`` body and MLflow's response."""
    body = json.dumps({"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}})
    ok = status == 200
    return {"kind": "request", "id": request_id or uuid.uuid4().hex, "ts": time.time() if ts is None else ts,
            "version": version, "status": status, "latency_ms": latency_ms, "content_type": "application/json",
            "body": body, "body_b64": None,
            "response": json.dumps({"predictions": [np.asarray(p).item() for p in predictions]}) if ok else None,
            "error": None if ok else "Invalid input: a column is missing"}


def shadow(record: dict[str, Any], version: int, predictions: Sequence[Any], latency_ms: float) -> dict[str, Any]:
    """The shadow record of ``record``: version ``version`` scored the same rows."""
    return {"kind": "shadow", "id": record["id"], "ts": record["ts"], "version": version, "status": 200,
            "latency_ms": latency_ms, "response": json.dumps({"predictions": [np.asarray(p).item() for p in predictions]})}


def feedback(record: dict[str, Any], labels: Sequence[Any]) -> dict[str, Any]:
    return {"kind": "feedback", "id": record["id"], "ts": record["ts"] + 1.0,
            "labels": [np.asarray(v).item() for v in labels]}


def deliver(name: str, alias: str, requests: list[dict[str, Any]], shadows: Sequence[dict[str, Any]] = (),
            labels: Sequence[dict[str, Any]] = (), shadow_alias: str | None = None) -> str:
    """Deliver records to the store as one finished serving run of ``name@alias`` does: the traffic and feedback
    Parquet datasets the backend writes. Returns the serving run's id."""
    from nbmlops.backend.store import open_store
    from nbmlops.backend.traffic import create_serving_run, end_serving_run, feedback_frame, log_frame, request_frame
    from nbmlops.config import resolve_settings

    settings = resolve_settings()
    store = open_store(settings.tracking_uri, settings.artifact_root)
    tags = {"nbmlops.kind": "serve", "nbmlops.serve.model": name, "nbmlops.serve.alias": alias,
            "nbmlops.serve.url": "http://127.0.0.1:8080", "nbmlops.serve.version": str(requests[0]["version"])}
    if shadow_alias:
        tags["nbmlops.serve.shadow"] = shadow_alias
    run_id = create_serving_run(store, f"serve/{name}", f"serve {name}@{alias} 127.0.0.1:8080", tags)
    start = time.time_ns()
    log_frame(store, run_id, f"traffic/{start}-0.parquet", request_frame(requests, {s["id"]: s for s in shadows}),
              "traffic")
    if labels:
        log_frame(store, run_id, f"feedback/{start}-0.parquet", feedback_frame(labels), None)
    end_serving_run(store, run_id, "FINISHED")
    return run_id


def batches(model: Any, version: int, data: pd.DataFrame, size: int = 25, **kwargs: Any) -> list[dict[str, Any]]:
    """``data`` sent as requests of ``size`` rows, answered by ``model``."""
    chunks = [data.iloc[i:i + size][FEATURES] for i in range(0, len(data), size)]
    return [request(version, chunk, model.predict(chunk), **kwargs) for chunk in chunks]


def monitoring_runs(client, name: str) -> list:
    experiment = client.get_experiment_by_name(f"monitor/{name}")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])


def test_unshifted_traffic_is_ok_and_shifted_traffic_drifts_with_its_logged_predictions(project, client, capsys):
    name = f"live-{uuid.uuid4().hex[:8]}"
    model, version = registered_classifier(name)
    deliver(name, "champion", batches(model, version, frame(1000, 1), ts=time.time() - 7200))
    assert main(["monitor", f"{name}@champion", "--traffic", "--since", "24h"]) == 0
    out = capsys.readouterr().out
    assert "OK: no drift" in out and "live traffic" in out and "40 request(s), 0 failed" in out
    deliver(name, "champion", batches(model, version, frame(1000, 2, shift=1.5)))
    code = main(["monitor", f"{name}@champion", "--traffic", "--since", "1h", "--report", "live.html"])
    out = capsys.readouterr().out
    assert code == 5, out
    assert "DRIFTED: 1 feature(s) and the predictions" in out
    latest, earlier = monitoring_runs(client, name)[:2]
    assert latest.data.tags["nbmlops.drifted"] == "true" and earlier.data.tags["nbmlops.drifted"] == "false"
    assert latest.data.metrics["psi.a"] > 0.2 > latest.data.metrics["psi.b"]
    assert latest.data.metrics["psi.prediction"] > 0.2 > earlier.data.metrics["psi.prediction"]
    assert latest.data.metrics["rows"] == 1000 and earlier.data.metrics["requests"] == 40
    assert len(latest.data.tags["nbmlops.traffic.runs"].split(",")) == 2 and latest.data.metrics["requests"] == 40
    html = (project / "live.html").read_text()
    assert "Live traffic" in html and "latency_p95_ms" in html


def test_latency_and_error_gates_pass_and_fail_on_the_logged_requests(project, client, capsys):
    name = f"live-{uuid.uuid4().hex[:8]}"
    model, version = registered_classifier(name)
    data = frame(500, 3)
    records = [request(version, data.iloc[i * 5:i * 5 + 5][FEATURES], model.predict(data.iloc[i * 5:i * 5 + 5][FEATURES]),
                       latency_ms=float(i + 1), status=200 if i % 25 else 400) for i in range(100)]
    deliver(name, "champion", records)
    latencies = np.arange(1, 101, dtype=float)
    assert main(["monitor", f"{name}@champion", "--traffic", "--gate",
                 "latency_p95_ms < 200 and error_rate < 0.05"]) == 0
    out = capsys.readouterr().out
    assert "ok   gate" in out and "error rate 0.04" in out
    run = monitoring_runs(client, name)[0]
    assert run.data.metrics["latency_p95_ms"] == pytest.approx(np.percentile(latencies, 95))
    assert run.data.metrics["latency_p50_ms"] == pytest.approx(np.percentile(latencies, 50))
    assert run.data.metrics["latency_p99_ms"] == pytest.approx(np.percentile(latencies, 99))
    assert (run.data.metrics["requests"], run.data.metrics["errors"], run.data.metrics["error_rate"]) == (100, 4, 0.04)
    assert run.data.metrics["rows"] == 96 * 5 and run.data.tags["nbmlops.gates"] == "passed"
    code = main(["monitor", f"{name}@champion", "--traffic", "--gate", "latency_p95_ms < 50", "--gate",
                 "error_rate < 0.01"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "FAIL gate \"latency_p95_ms < 50\" failed: latency_p95_ms = 95.0" in out
    assert "FAIL gate \"error_rate < 0.01\" failed: error_rate = 0.04, not < 0.01" in out
    run = monitoring_runs(client, name)[0]
    assert run.data.tags["nbmlops.gates"] == "failed" and run.data.tags["nbmlops.gate.0.result"] == "failed"


def test_online_accuracy_from_feedback_and_agreement_with_the_shadow(project, client):
    name = f"live-{uuid.uuid4().hex[:8]}"
    model, version = registered_classifier(name)
    _, shadow_version = registered_classifier(name, seed=7, alias="challenger")
    data = frame(200, 4)
    records = batches(model, version, data, size=10)
    shadows, labels = [], []
    for i, record in enumerate(records):
        rows = data.iloc[i * 10:i * 10 + 10][FEATURES]
        served = model.predict(rows)
        theirs = served.copy()
        if i < 5:
            theirs[:2] = 1 - theirs[:2]  # the shadow disagrees on 2 rows of the first 5 requests: 10 of 200
        shadows.append(shadow(record, shadow_version, theirs, latency_ms=7.0))
        if i < 8:  # feedback on 8 requests: the served model is right on 8 of 10 rows of each
            truth = served.copy()
            truth[-2:] = 1 - truth[-2:]
            labels.append(feedback(record, truth))
    deliver(name, "champion", records, shadows, labels, shadow_alias="challenger")
    result = monitor(f"{name}@champion", traffic=True, since="1h", traffic_gates=["online_accuracy >= 0.8"])
    assert result.exit_code == 0, result.format()
    metrics = monitoring_runs(client, name)[0].data.metrics
    assert metrics["labelled_rows"] == 80 and metrics["online_accuracy"] == pytest.approx(0.8)
    assert metrics["shadow_rows"] == 200 and metrics["shadow_agreement"] == pytest.approx(190 / 200)
    assert metrics["shadow_latency_p50_ms"] == 7.0 and metrics["shadow_labelled_rows"] == 80
    # the shadow is wrong where the champion is (16 labelled rows) and on the 10 rows where it differs
    assert metrics["shadow_online_accuracy"] == pytest.approx((80 - 26) / 80)
    assert "shadow version 2: 200 row(s) scored by both, agreement 0.95" in result.format()
    assert result.live is not None and result.live.summary.task == "classification"
    failed = monitor(f"{name}@champion", traffic=True, since="1h", traffic_gates=["online_accuracy >= 0.9"])
    assert failed.exit_code == 3 and not failed.gates[0].passed


def test_online_mae_and_rmse_of_a_regressor_and_its_mean_difference_from_the_shadow(project, client):
    from sklearn.linear_model import Ridge

    name = f"live-{uuid.uuid4().hex[:8]}"
    train = frame(1000, 5)
    SnapshotStore().save(train[FEATURES])
    versions, models = [], []
    for alpha in (1.0, 50.0):
        with nbmlops.track("train"):
            models.append(Ridge(alpha=alpha).fit(train[FEATURES], train.a * 2 + train.b))
            versions.append(nbmlops.register(models[-1], name, training_data=train[FEATURES], timeout=120).version)
    nbmlops.flush(60)
    model = models[0]
    data = frame(100, 6)
    records = batches(model, versions[0], data, size=10)
    errors = np.tile([1.0, -3.0], 5)  # per row: prediction - label
    served = [model.predict(data.iloc[i * 10:i * 10 + 10][FEATURES]) for i in range(10)]
    labels = [feedback(r, served[i] - errors) for i, r in enumerate(records)]
    shadows = [shadow(r, versions[1], served[i] + 0.5, latency_ms=9.0) for i, r in enumerate(records)]
    deliver(name, "champion", records, shadows, labels)
    result = monitor(f"{name}/{versions[0]}", traffic=True)
    metrics = result.live.metrics()
    assert result.live.summary.task == "regression" and "online_accuracy" not in metrics
    assert metrics["online_mae"] == pytest.approx(2.0) and metrics["online_rmse"] == pytest.approx(np.sqrt(5.0))
    assert metrics["shadow_agreement"] == 0 and metrics["shadow_mean_abs_diff"] == pytest.approx(0.5)
    assert metrics["shadow_online_mae"] == pytest.approx(2.0)  # errors of 1.5 and -2.5
    assert metrics["shadow_online_rmse"] == pytest.approx(np.sqrt((1.5 ** 2 + 2.5 ** 2) / 2))
    assert monitoring_runs(client, name)[0].data.metrics["shadow_mean_abs_diff"] == pytest.approx(0.5)


def test_no_traffic_in_the_window_is_one_line_and_exit_2(project, capsys):
    name = f"live-{uuid.uuid4().hex[:8]}"
    model, version = registered_classifier(name)
    assert main(["monitor", f"{name}@champion", "--traffic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"nbmlops: no logged traffic of {name}/{version} since 24h" in err
    deliver(name, "champion", batches(model, version, frame(1000, 8), ts=time.time() - 3 * 86400))
    assert main(["monitor", f"{name}@champion", "--traffic", "--since", "2d"]) == 2
    assert "no logged traffic" in capsys.readouterr().err
    assert main(["monitor", f"{name}@champion", "--traffic", "--since", "yesterday"]) == 2
    assert "since" in capsys.readouterr().err
    assert main(["monitor", f"{name}@champion"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["monitor", f"{name}@champion", "--traffic", "--since", "7d"]) == 0


def test_drifted_traffic_retrains_and_the_retrain_gate_not_the_live_gate_decides_the_challenger(project, capsys):
    from tests.test_runner import notebook

    name = f"live-{uuid.uuid4().hex[:8]}"
    model, version = registered_classifier(name)
    shifted = frame(1000, 9, shift=1.5)
    deliver(name, "champion", batches(model, version, shifted, latency_ms=80.0))
    shifted.to_csv(project / "live.csv", index=False)
    notebook(
        project / "retrain.ipynb",
        "%load_ext nbmlops",
        "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression\nframe = pd.read_csv(data_path)\n"
        "X_train, y_train = frame[['a', 'b']], frame.y",
        f"%%track --register model {name}\nmodel = LogisticRegression().fit(X_train, y_train)\n"
        "accuracy = model.score(X_train, y_train)",
        parameters="data_path = 'train.csv'",
    )
    code = main(["monitor", f"{name}@champion", "--traffic", "--gate", "latency_p95_ms < 50", "--retrain",
                 "retrain.ipynb", "-p", "data_path", "live.csv", "--retrain-gate", "accuracy >= 0.8"])
    out = capsys.readouterr().out
    assert code == 3, out  # the live gate failed (80 ms); the retrained model passed its own gate
    assert "FAIL gate \"latency_p95_ms < 50\"" in out and f"registered {name}/2 as @challenger" in out
    assert get_version(f"{name}@challenger").version == 2
