"""docs/examples/kserve_traffic.py, as docs/serving.md tells a user to run it: KServe inference-logger CloudEvents
(request and response bodies in KServe's V1 protocol, the Open Inference Protocol of MLServer's MLflow runtime and
MLflow's own ``/invocations`` formats) become a serving run with a traffic dataset in a real sqlite store, which
``read_traffic`` and ``nbmlops monitor NAME@ALIAS --traffic`` read like the traffic of ``nbmlops serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import nbmlops
from nbmlops.cli import main
from nbmlops.data import SnapshotStore
from nbmlops.serving.traffic import read_traffic
from tests.serving.test_monitor_traffic import FEATURES, frame

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "kserve_traffic.py"


def registered(name: str) -> tuple[Any, int]:
    from sklearn.linear_model import LogisticRegression

    train = frame(3000, 0)
    X_train = train[FEATURES]
    SnapshotStore().save(X_train)
    with nbmlops.track("train"):
        model = LogisticRegression().fit(X_train, train.y)
        version = nbmlops.register(model, name, training_data=X_train, timeout=120)
    nbmlops.flush(60)
    nbmlops.promote(f"{name}/{version.version}", "champion")
    return model, version.version


def _event(kind: str, event_id: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvent as KServe's logger sends it, in the CloudEvents JSON format."""
    return {"specversion": "1.0", "type": f"org.kubeflow.serving.inference.{kind}",
            "source": "http://localhost:9081/", "id": event_id, "time": at.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json", "inferenceservicename": "classifier", "namespace": "default",
            "component": "predictor", "endpoint": "", "data": data}


def kserve_events(model: Any, rows: pd.DataFrame, start: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Request and response events for ``rows``, in batches of 1-3 rows, each protocol in turn; the last request
    gets no response (KServe logs none for a failed request). Returns the events and, by id, what was sent."""
    events, sent = [], {}
    position, index = 0, 0
    while position < len(rows):
        batch = rows.iloc[position:position + 1 + index % 3]
        position += len(batch)
        event_id = str(uuid.uuid4())
        at = start + timedelta(seconds=index)
        values = batch[FEATURES].to_numpy()
        predicted = model.predict(batch[FEATURES]).tolist()
        protocol = index % 3
        if protocol == 0:  # KServe V1
            request, response = {"instances": values.tolist()}, {"predictions": predicted}
        elif protocol == 1:  # Open Inference Protocol, MLServer's MLflow runtime: one input per column
            request = {"inputs": [{"name": c, "shape": [len(batch), 1], "datatype": "FP64",
                                   "data": batch[c].tolist()} for c in FEATURES],
                       "parameters": {"content_type": "pd"}}
            response = {"model_name": "classifier", "id": event_id, "outputs": [
                {"name": "predict", "shape": [len(batch), 1], "datatype": "INT64", "data": predicted}]}
        else:  # MLflow's /invocations
            request = {"dataframe_split": {"columns": FEATURES, "data": values.tolist()}}
            response = {"predictions": predicted}
        events.append(_event("request", event_id, at, request))
        last = position >= len(rows)
        if not last:
            events.append(_event("response", event_id, at + timedelta(milliseconds=7 + index % 5), response))
        sent[event_id] = {"rows": batch[FEATURES].reset_index(drop=True), "predictions": predicted, "failed": last,
                          "latency_ms": 7 + index % 5}
        index += 1
    return events, sent


def run_example(events: list[dict[str, Any]], folder: Path, name: str, version: int, store_uri: str) -> str:
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(path), "--model", name, "--alias", "champion", "--version", str(version),
         "--endpoint", "http://classifier.default.example.com", "--tracking-uri", store_uri],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kserve_logger_events_become_traffic_that_monitor_reads(project, store_uri, client):
    name = f"kserve-{uuid.uuid4().hex[:8]}"
    model, version = registered(name)
    live = frame(400, 1)
    events, sent = kserve_events(model, live, datetime.now(timezone.utc) - timedelta(minutes=30))

    out = run_example(events, project, name, version, store_uri)
    assert f"{len(sent)} requests, {len(live)} rows" in out

    traffic = read_traffic(name, alias="champion")
    assert len(traffic.runs) == 1
    rows = traffic.requests
    assert len(rows) == len(live) and set(rows["request_id"]) == set(sent)
    for request_id, expected in sent.items():
        got = rows[rows["request_id"] == request_id].sort_values("row")
        assert got["row"].tolist() == list(range(len(expected["rows"])))
        np.testing.assert_allclose(got[["input.a", "input.b"]].to_numpy(), expected["rows"].to_numpy())
        assert (got["model_version"] == version).all()
        if expected["failed"]:
            assert got["status"].isna().all() and got["error"].notna().all() and got["prediction"].isna().all()
        else:
            assert (got["status"] == 200).all() and got["error"].isna().all()
            assert got["prediction"].astype(int).tolist() == expected["predictions"]
            np.testing.assert_allclose(got["latency_ms"], expected["latency_ms"])
    assert str(rows["timestamp"].dtype) == "datetime64[ns, UTC]"
    np.testing.assert_allclose(traffic.inputs().to_numpy(), live[FEATURES].iloc[:-len(sent[list(sent)[-1]]["rows"])])

    run = client.get_run(traffic.runs[0])
    assert run.info.status == "FINISHED"
    assert run.data.tags["nbmlops.kind"] == "serve" and run.data.tags["nbmlops.serve.version"] == str(version)
    assert run.data.metrics["requests"] == len(sent) and run.data.metrics["errors"] == 1
    assert next(d.dataset.name for d in run.inputs.dataset_inputs).startswith("traffic/")

    assert main(["monitor", f"{name}@champion", "--traffic", "--since", "24h"]) == 0


def test_shifted_kserve_traffic_drifts(project, store_uri):
    name = f"kserve-{uuid.uuid4().hex[:8]}"
    model, version = registered(name)
    events, _ = kserve_events(model, frame(400, 2, shift=1.5), datetime.now(timezone.utc) - timedelta(minutes=5))
    run_example(events, project, name, version, store_uri)
    assert main(["monitor", f"{name}@champion", "--traffic", "--since", "24h"]) == 5
