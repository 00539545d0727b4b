"""End to end: ``nbmlops serve`` answers real HTTP requests on 127.0.0.1, logs and delivers them, and ``nbmlops
monitor --traffic`` reads them back: unshifted traffic passes, shifted traffic drifts, feedback gives the online
accuracy."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import numpy as np

from nbmlops.cli import main
from tests.serving.conftest import http, split_body
from tests.serving.test_monitor_traffic import FEATURES, frame, monitoring_runs, registered_classifier


def _send(url: str, data, size: int = 25) -> list[tuple[str, np.ndarray]]:
    """Send ``data`` in requests of ``size`` rows; each request's id and the model's answers."""
    answered = []
    for start in range(0, len(data), size):
        status, headers, body = http("POST", url + "/invocations", split_body(data.iloc[start:start + size][FEATURES]),
                                     "application/json")
        assert status == 200, body
        answered.append((headers["nbmlops-request-id"], np.asarray(json.loads(body)["predictions"])))
    return answered


def test_served_traffic_is_monitored_ok_then_drifted_with_online_accuracy_from_feedback(project, serving, client,
                                                                                         capsys):
    name = f"served-live-{uuid.uuid4().hex[:8]}"
    model, _ = registered_classifier(name)
    server = serving(f"{name}@champion")
    _send(server.url, frame(1000, 11))
    server.stop()
    code = main(["monitor", f"{name}@champion", "--traffic", "--gate", "error_rate < 0.01 and latency_p95_ms < 5000"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK: no drift" in out and "40 request(s), 0 failed" in out

    since = datetime.now(timezone.utc).isoformat()
    server = serving(f"{name}@champion")
    shifted = frame(1000, 12, shift=1.5)
    answered = _send(server.url, shifted)
    labels = shifted.y.to_numpy()
    for i, (request_id, predicted) in enumerate(answered[:20]):  # feedback on half the requests
        assert np.array_equal(predicted, model.predict(shifted.iloc[i * 25:i * 25 + 25][FEATURES]))
        status, _, body = http("POST", server.url + "/feedback",
                               json.dumps({"request_id": request_id,
                                           "labels": labels[i * 25:i * 25 + 25].tolist()}).encode(),
                               "application/json")
        assert status == 200, body
    server.stop()
    code = main(["monitor", f"{name}@champion", "--traffic", "--since", since])
    out = capsys.readouterr().out
    assert code == 5, out
    assert "DRIFTED: 1 feature(s) and the predictions" in out
    metrics = monitoring_runs(client, name)[0].data.metrics
    expected = np.mean(model.predict(shifted.iloc[:500][FEATURES]) == labels[:500])
    assert metrics["labelled_rows"] == 500 and abs(metrics["online_accuracy"] - expected) < 1e-12
    assert metrics["requests"] == 40 and metrics["error_rate"] == 0 and metrics["latency_p50_ms"] > 0
